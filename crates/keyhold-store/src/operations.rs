//! Long-running operations (issue 18, finding 7): backups, restores, clones, exports, imports
//! and `:reencrypt` answer with a `google.longrunning.Operation` as soon as their request is
//! checked, and run on in the background, as Spanner's and Cloud SQL's copies do.
//!
//! A call runs as a [`Job`]. Everything it checks before it starts copying (permissions, names,
//! keys, that the target is free) is answered as the call's own error, as before; the moment
//! it is about to copy, it calls [`Job::accept`], which records the operation and lets the
//! request answer with it. From then on its outcome is the operation's: `operations.get`
//! shows progress (objects and bytes, saved at most every [`SAVE_EVERY`]), then the response
//! (the `Backup`, `Instance` or `Export` the call used to answer) or the error.
//!
//! **Cancellation.** `operations/ID:cancel` sets a flag the job reads after each object (at
//! once on the node running it; within [`SAVE_EVERY`] on another); the copy stops, what it
//! built is deleted as after any failure, and the operation ends with `CANCELLED`.
//!
//! **Resumption.** An operation stores its request and caller. A node starting after a crash
//! (or, on a shared database, a node seeing another silent for
//! [`crate::service::OPERATION_TAKEOVER_AFTER`]) first deletes what the interrupted copy left,
//! then takes the operation over and runs the call again from the start, as the same caller
//! (authorized again), under the same operation name. Copies are atomic (a new instance or
//! backup appears only when complete), so running again is safe; if the copy had committed and
//! only the operation's end was lost, the operation ends with what it made
//! ([`Store::finished_before`]). A resumed backup shows the instance as it was when it resumed.
//! A node that cannot record its heartbeat for [`FENCE_AFTER`] stops its own copies (they end
//! `ABORTED` once it reaches the database again, unless taken over by then), long before
//! another node would take them over: one operation never runs on two nodes at once.
//!
//! **Throttling.** `--store-copy-bytes-per-second` caps how fast each copy reads, so that
//! background copies leave the disk to live traffic.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keyhold_api::wire::Timestamp;
use keyhold_audit::AuditKind;
use keyhold_iam::{Caller, Principal, role};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::error::StoreError;
use crate::model::*;
use crate::repo::{RepoError, StoreRepository};
use crate::service::{Audit, ListRequest, Op, Store, decode_token, encode_token, page_size};

/// How often a running job saves its progress (and reads whether it was cancelled elsewhere).
pub const SAVE_EVERY: Duration = Duration::from_millis(250);
/// Finished operations are deleted this long after they end (Google keeps them for days).
pub const KEEP_FINISHED: Duration = Duration::from_secs(30 * 86_400);
/// On a shared database, a node whose heartbeat has not been recorded for this long stops its
/// copies: another node may soon take their operations over.
pub const FENCE_AFTER: Duration = Duration::from_secs(60);

/// When this node last recorded its heartbeat.
#[derive(Debug)]
pub(crate) struct Liveness(Mutex<Instant>);

impl Default for Liveness {
    fn default() -> Self {
        Self(Mutex::new(Instant::now()))
    }
}

impl Liveness {
    pub(crate) fn beat(&self) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    fn silent_for(&self) -> Duration {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).elapsed()
    }
}

const METADATA_TYPE: &str = "type.googleapis.com/keyhold.store.v1.OperationMetadata";

/// A call that runs as an operation, as made: what a node runs again to resume it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "camelCase")]
pub enum OperationRequest {
    /// `backups.create`.
    #[serde(rename = "CreateBackup")]
    CreateBackup {
        /// The instance.
        instance: String,
        /// `backupId`.
        backup_id: String,
        /// The body.
        request: CreateBackupRequest,
    },
    /// `instances:restore`.
    #[serde(rename = "RestoreInstance")]
    RestoreInstance {
        /// `projects/P/locations/L`.
        parent: String,
        /// The body.
        request: RestoreInstanceRequest,
    },
    /// `instances/ID:clone`.
    #[serde(rename = "CloneInstance")]
    CloneInstance {
        /// The source instance.
        instance: String,
        /// The body.
        request: CloneInstanceRequest,
    },
    /// `instances/ID:export`.
    #[serde(rename = "ExportInstance")]
    ExportInstance {
        /// The instance.
        instance: String,
        /// The body.
        request: ExportInstanceRequest,
    },
    /// `instances:import`.
    #[serde(rename = "ImportInstance")]
    ImportInstance {
        /// `projects/P/locations/L`.
        parent: String,
        /// The body.
        request: ImportInstanceRequest,
    },
    /// `instances/ID:reencrypt`.
    #[serde(rename = "ReencryptInstance")]
    ReencryptInstance {
        /// The instance.
        instance: String,
    },
}

impl OperationRequest {
    /// The call's method name, as audited.
    pub fn method(&self) -> &'static str {
        match self {
            OperationRequest::CreateBackup { .. } => "CreateBackup",
            OperationRequest::RestoreInstance { .. } => "RestoreInstance",
            OperationRequest::CloneInstance { .. } => "CloneInstance",
            OperationRequest::ExportInstance { .. } => "ExportInstance",
            OperationRequest::ImportInstance { .. } => "ImportInstance",
            OperationRequest::ReencryptInstance { .. } => "ReencryptInstance",
        }
    }

    /// `projects/P/locations/L` the operation is named under, and what it makes or changes.
    fn parent_and_target(&self) -> Result<(String, String), StoreError> {
        use keyhold_api::name::InstanceName;
        Ok(match self {
            OperationRequest::CreateBackup { instance, backup_id, .. } => {
                let i: InstanceName = instance.parse()?;
                (i.parent(), format!("{i}/backups/{backup_id}"))
            }
            OperationRequest::CloneInstance { instance, request } => {
                let i: InstanceName = instance.parse()?;
                (i.parent(), format!("{}/instances/{}", i.parent(), request.destination_instance_id))
            }
            OperationRequest::ExportInstance { instance, .. } | OperationRequest::ReencryptInstance { instance } => {
                let i: InstanceName = instance.parse()?;
                (i.parent(), i.to_string())
            }
            OperationRequest::RestoreInstance { parent, request: RestoreInstanceRequest { instance_id, .. } }
            | OperationRequest::ImportInstance { parent, request: ImportInstanceRequest { instance_id, .. } } => {
                let parent = parse_location(parent)?.to_string();
                let target = format!("{parent}/instances/{instance_id}");
                (parent, target)
            }
        })
    }
}

/// The caller an operation runs as, kept to resume it.
#[derive(Debug, Serialize, Deserialize)]
struct StoredCaller {
    principal: String,
    anonymous: bool,
    request_id: String,
    justification: Option<String>,
}

impl StoredCaller {
    fn of(caller: &Caller) -> Self {
        Self {
            principal: caller.principal_str().to_string(),
            anonymous: caller.anonymous,
            request_id: caller.request_id.clone(),
            justification: caller.justification.clone(),
        }
    }

    fn caller(&self) -> Result<Caller, StoreError> {
        let principal = Principal::parse(&self.principal)
            .map_err(|e| StoreError::Internal(format!("stored operation caller does not parse: {e}")))?;
        let mut caller = Caller::new(principal, self.request_id.clone());
        caller.anonymous = self.anonymous;
        caller.justification = self.justification.clone();
        Ok(caller)
    }
}

/// Ties a job to its stored operation.
#[derive(Debug)]
struct Tie {
    repo: Arc<dyn StoreRepository>,
    record: OperationRecord,
}

#[derive(Debug)]
struct JobState {
    tie: Option<Tie>,
    /// This node's heartbeat, on a shared database (where others may take the job over).
    liveness: Option<Arc<Liveness>>,
    bytes_per_second: Option<std::num::NonZeroU64>,
    objects_done: AtomicU64,
    bytes_done: AtomicU64,
    /// -1 until known.
    objects_total: AtomicI64,
    cancelled: AtomicBool,
    /// A run of an operation a crash (or a dead node) interrupted.
    resumed: bool,
    /// Another node took the operation over (this one's heartbeat lapsed): this run stops
    /// and records nothing.
    taken_over: AtomicBool,
    accepted: AtomicBool,
    started: Mutex<Option<oneshot::Sender<()>>>,
    saved: Mutex<Instant>,
    /// When the copy began (accepted): the copy rate is kept from then.
    began: Mutex<Instant>,
}

/// What a copy reports through while it runs: [`Job::accept`] when its checks are done,
/// [`Job::step`] after each object. A detached job (no operation) reports nowhere and is not
/// throttled.
#[derive(Debug, Clone)]
pub struct Job(Arc<JobState>);

impl Job {
    fn new(
        tie: Option<Tie>,
        liveness: Option<Arc<Liveness>>,
        bytes_per_second: Option<std::num::NonZeroU64>,
        accepted: bool,
        started: Option<oneshot::Sender<()>>,
    ) -> Self {
        let resumed = accepted && tie.is_some();
        Self(Arc::new(JobState {
            tie,
            liveness,
            bytes_per_second,
            objects_done: AtomicU64::new(0),
            bytes_done: AtomicU64::new(0),
            objects_total: AtomicI64::new(-1),
            cancelled: AtomicBool::new(false),
            resumed,
            taken_over: AtomicBool::new(false),
            accepted: AtomicBool::new(accepted),
            started: Mutex::new(started),
            saved: Mutex::new(Instant::now()),
            began: Mutex::new(Instant::now()),
        }))
    }

    /// A job with no operation: the call answers when it is done (the store's own callers and
    /// tests).
    pub fn detached() -> Self {
        Self::new(None, None, None, true, None)
    }

    /// The call's checks passed and it starts copying: its first audit entry is written, the
    /// operation recorded, and the request answers with it. Errors after this are the
    /// operation's. On a resumed operation it only ties the call's audit entries to it.
    pub(crate) async fn accept(&self, audit: &Audit<'_>) -> Result<(), StoreError> {
        let Some(tie) = &self.0.tie else { return Ok(()) };
        if self.0.accepted.load(Ordering::SeqCst) {
            // Resumed: answered before the crash.
            return audit.start_operation(&tie.record.name, true).await;
        }
        audit.start_operation(&tie.record.name, false).await?;
        tie.repo.insert_operation(&tie.record).await?;
        *self.0.began.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        self.0.accepted.store(true, Ordering::SeqCst);
        if let Some(started) = self.0.started.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = started.send(());
        }
        Ok(())
    }

    /// How many objects the copy will go through.
    pub(crate) fn set_total(&self, objects: u64) {
        self.0.objects_total.store(objects.min(i64::MAX as u64) as i64, Ordering::SeqCst);
    }

    /// One object (of `bytes`) done: counts it, keeps to the copy rate, saves progress now and
    /// then, and stops the copy (`CANCELLED`) if it was cancelled.
    /// `bytes` is what the copy read for it (0 for an object it had nothing to do for).
    pub(crate) async fn step(&self, bytes: u64) -> Result<(), StoreError> {
        self.fence()?;
        self.0.objects_done.fetch_add(1, Ordering::SeqCst);
        let total_bytes = self.0.bytes_done.fetch_add(bytes, Ordering::SeqCst) + bytes;
        if let Some(rate) = self.0.bytes_per_second
            && bytes > 0
        {
            let due = Duration::try_from_secs_f64(total_bytes as f64 / rate.get() as f64).unwrap_or(Duration::MAX);
            let began = *self.0.began.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(wait) = due.checked_sub(began.elapsed()) {
                // Sleeping in slices keeps a cancellation prompt (and an hour at most per
                // object keeps the arithmetic in range).
                let until = Instant::now() + wait.min(Duration::from_secs(3600));
                while Instant::now() < until && !self.0.cancelled.load(Ordering::SeqCst) {
                    tokio::time::sleep((until - Instant::now()).min(SAVE_EVERY)).await;
                    self.save_if_due().await?;
                }
            }
        }
        self.save_if_due().await?;
        self.check_cancelled()
    }

    /// Refuses to go on when this node has not recorded its heartbeat for [`FENCE_AFTER`]:
    /// another node may soon take the operation over. Called after each object and before a
    /// copy commits its result. The operation then ends `ABORTED` (recorded once the database
    /// answers again), unless another node took it over first.
    pub(crate) fn fence(&self) -> Result<(), StoreError> {
        match &self.0.liveness {
            Some(l) if self.0.tie.is_some() && l.silent_for() > FENCE_AFTER => Err(StoreError::Aborted(format!(
                "The node running this operation could not record its heartbeat for {} s and stopped the copy, \
                 so that it never runs on two nodes at once; run it again.",
                FENCE_AFTER.as_secs()
            ))),
            _ => Ok(()),
        }
    }

    fn check_cancelled(&self) -> Result<(), StoreError> {
        if self.0.cancelled.load(Ordering::SeqCst) {
            return Err(StoreError::Cancelled("The operation was cancelled.".into()));
        }
        Ok(())
    }

    async fn save_if_due(&self) -> Result<(), StoreError> {
        {
            let mut saved = self.0.saved.lock().unwrap_or_else(|e| e.into_inner());
            if saved.elapsed() < SAVE_EVERY {
                return Ok(());
            }
            *saved = Instant::now();
        }
        self.save().await
    }

    /// Saves progress; learns of a cancellation made on another node.
    async fn save(&self) -> Result<(), StoreError> {
        let Some(tie) = &self.0.tie else { return Ok(()) };
        if !self.0.accepted.load(Ordering::SeqCst) {
            return Ok(());
        }
        let (done, total, bytes) = self.progress();
        match tie.repo.operation_progress(&tie.record.name, &tie.record.node, done, total, bytes).await {
            Ok(true) => {
                self.0.cancelled.store(true, Ordering::SeqCst);
                Ok(())
            }
            Ok(false) => Ok(()),
            Err(RepoError::Conflict) => {
                self.0.taken_over.store(true, Ordering::SeqCst);
                Err(StoreError::Aborted(format!(
                    "Operation {} was taken over by another node; it runs there.",
                    tie.record.name
                )))
            }
            Err(e) => Err(e.into()),
        }
    }

    fn progress(&self) -> (u64, Option<u64>, u64) {
        let total = self.0.objects_total.load(Ordering::SeqCst);
        (
            self.0.objects_done.load(Ordering::SeqCst),
            u64::try_from(total).ok(),
            self.0.bytes_done.load(Ordering::SeqCst),
        )
    }

    fn cancel(&self) {
        self.0.cancelled.store(true, Ordering::SeqCst);
    }
}

/// `projects/P/locations/L`, checked.
fn parse_location(parent: &str) -> Result<keyhold_api::LocationName, StoreError> {
    Ok(parent.parse::<keyhold_api::LocationName>()?)
}

/// The response of a finished call, packed with its type.
fn packed<T: Serialize>(type_name: &str, value: &T) -> Result<serde_json::Value, StoreError> {
    let mut v = serde_json::to_value(value).map_err(|e| StoreError::Internal(e.to_string()))?;
    if let serde_json::Value::Object(m) = &mut v {
        m.insert("@type".into(), format!("type.googleapis.com/keyhold.store.v1.{type_name}").into());
    }
    Ok(v)
}

fn status_json(e: &StoreError) -> serde_json::Value {
    let s = e.to_status();
    let mut v = serde_json::json!({"code": s.code.number(), "message": s.message});
    if !s.details.is_empty() {
        v["details"] = serde_json::Value::Array(s.details);
    }
    v
}

fn render(r: &OperationRecord) -> Operation {
    let request: Option<OperationRequest> = serde_json::from_str(&r.request).ok();
    let result: serde_json::Value = serde_json::from_str(&r.result).unwrap_or(serde_json::Value::Null);
    let percent = r.objects_total.map(|t| {
        if r.done && result.get("response").is_some() {
            100
        } else {
            ((r.objects_done.min(t) * 100).checked_div(t).unwrap_or(0)) as u32
        }
    });
    Operation {
        name: r.name.clone(),
        metadata: OperationMetadata {
            type_url: METADATA_TYPE,
            method: request.as_ref().map(OperationRequest::method).unwrap_or_default().to_string(),
            target: r.target.clone(),
            progress: OperationProgress {
                progress_percent: percent,
                objects_done: r.objects_done.to_string(),
                objects_total: r.objects_total.map(|t| t.to_string()),
                bytes_done: r.bytes_done.to_string(),
                start_time: r.create_time,
                end_time: r.end_time,
            },
            cancel_requested: r.cancel_requested,
        },
        done: r.done,
        error: result.get("error").cloned(),
        response: result.get("response").cloned(),
    }
}

/// A new operation ID: its creation time (so names sort oldest first), then randomness.
fn new_operation_id() -> Result<String, StoreError> {
    let mut b = [0u8; 6];
    keyhold_crypto::random_bytes(&mut b).map_err(|e| StoreError::Internal(e.to_string()))?;
    let random: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!("op-{:016x}-{random}", Timestamp::now().unix_nanos_i64()))
}

/// The operations this node runs, to cancel them at once.
#[derive(Debug, Default)]
pub(crate) struct Running(Mutex<HashMap<String, Job>>);

impl Running {
    fn insert(&self, name: &str, job: &Job) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).insert(name.to_string(), job.clone());
    }

    fn remove(&self, name: &str) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(name);
    }

    fn cancel(&self, name: &str) {
        if let Some(job) = self.0.lock().unwrap_or_else(|e| e.into_inner()).get(name) {
            job.cancel();
        }
    }
}

impl Store {
    /// Runs `request` for `caller` as an operation: answers with the call's own error if its
    /// checks fail, else with the operation as it was recorded when the copy started
    /// (`done: false`; `operations.get` follows it).
    pub async fn start_operation(
        self: &Arc<Self>,
        caller: &Caller,
        request: OperationRequest,
    ) -> Result<Operation, StoreError> {
        let (parent, target) = match request.parent_and_target() {
            Ok(p) => p,
            // A malformed name: the call itself refuses it, audited as every refusal is.
            Err(e) => return Err(self.execute(caller, request, &Job::detached()).await.err().unwrap_or(e)),
        };
        let record = OperationRecord {
            name: format!("{parent}/operations/{}", new_operation_id()?),
            target,
            request: serde_json::to_string(&request).map_err(|e| StoreError::Internal(e.to_string()))?,
            caller: serde_json::to_string(&StoredCaller::of(caller))
                .map_err(|e| StoreError::Internal(e.to_string()))?,
            node: self.node.clone(),
            done: false,
            cancel_requested: false,
            objects_done: 0,
            objects_total: None,
            bytes_done: 0,
            result: String::new(),
            create_time: Timestamp::now(),
            end_time: None,
        };
        let (started, accepted) = oneshot::channel();
        let job = self.job(record.clone(), false, Some(started));
        let run = self.spawn_job(caller.clone(), request, job);
        match accepted.await {
            Ok(()) => Ok(render(&record)),
            // The call ended before it was accepted: its error is the request's.
            Err(_) => match run.await {
                Ok(Err(e)) => Err(e),
                Ok(Ok(())) => Err(StoreError::Internal("an operation ended before it was recorded".into())),
                Err(e) => Err(StoreError::Internal(format!("an operation's task failed: {e}"))),
            },
        }
    }

    fn job(&self, record: OperationRecord, resumed: bool, started: Option<oneshot::Sender<()>>) -> Job {
        let liveness = (!self.repo.single_process()).then(|| self.liveness.clone());
        Job::new(
            Some(Tie { repo: self.repo.clone(), record }),
            liveness,
            self.config.copy_bytes_per_second,
            resumed,
            started,
        )
    }

    /// Runs the call on its own task; once accepted, its outcome is saved in the operation.
    /// Returns the call's error if it ended before it was accepted.
    fn spawn_job(
        self: &Arc<Self>,
        caller: Caller,
        request: OperationRequest,
        job: Job,
    ) -> tokio::task::JoinHandle<Result<(), StoreError>> {
        let store = self.clone();
        tokio::spawn(async move {
            let Some(tie) = &job.0.tie else { return Ok(()) };
            let name = tie.record.name.clone();
            store.running.insert(&name, &job);
            // On a task of its own, so that a panic in the call still ends the operation.
            let call = {
                let (store, job) = (store.clone(), job.clone());
                tokio::spawn(async move { store.execute(&caller, request, &job).await })
            };
            let outcome =
                call.await.unwrap_or_else(|e| Err(StoreError::Internal(format!("operation {name} failed: {e}"))));
            store.running.remove(&name);
            if !job.0.accepted.load(Ordering::SeqCst) {
                return outcome.map(|_| ());
            }
            if job.0.taken_over.load(Ordering::SeqCst) {
                tracing::info!(operation = %name, "operation taken over by another node");
                return Ok(());
            }
            let result = match &outcome {
                Ok(response) => serde_json::json!({ "response": response }),
                Err(e) => {
                    if let Some(cause) = e.log_cause() {
                        tracing::warn!(operation = %name, cause, "operation failed");
                    }
                    serde_json::json!({ "error": status_json(e) })
                }
            };
            // Final progress first (the save at the end of the copy may not have been due).
            if let Err(e) = job.save().await {
                tracing::warn!(operation = %name, error = %e, "cannot save an operation's final progress");
            }
            store.record_end(&name, &result.to_string()).await;
            Ok(())
        })
    }

    /// Records the end of this node's operation `name`, retrying while the database is
    /// unavailable (an operation left running on a live node would never end).
    async fn record_end(&self, name: &str, result: &str) {
        let mut pause = Duration::from_millis(200);
        loop {
            match self.repo.finish_operation(name, &self.node, result, Timestamp::now()).await {
                Ok(()) => return,
                Err(RepoError::Conflict) => {
                    tracing::info!(operation = %name, "operation ended elsewhere (taken over, or ended already)");
                    return;
                }
                Err(e) => {
                    tracing::warn!(operation = %name, error = %e, "cannot record the end of an operation; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    /// The call itself, by method; its answer packed with its type.
    async fn execute(
        self: &Arc<Self>,
        caller: &Caller,
        request: OperationRequest,
        job: &Job,
    ) -> Result<serde_json::Value, StoreError> {
        if let Some(tie) = job.0.tie.as_ref().filter(|_| job.0.resumed)
            && let Some(done) = self.finished_before(caller, &request, tie.record.create_time).await?
        {
            tracing::info!(operation = %tie.record.name, "the interrupted operation had finished its copy");
            return Ok(done);
        }
        match request {
            OperationRequest::CreateBackup { instance, backup_id, request } => {
                packed("Backup", &self.create_backup(caller, &instance, &backup_id, request, job).await?)
            }
            OperationRequest::RestoreInstance { parent, request } => {
                packed("Instance", &self.restore_instance(caller, &parent, request, job).await?)
            }
            OperationRequest::CloneInstance { instance, request } => {
                packed("Instance", &self.clone_instance(caller, &instance, request, job).await?)
            }
            OperationRequest::ExportInstance { instance, request } => {
                packed("Export", &self.export_instance(caller, &instance, request, job).await?)
            }
            OperationRequest::ImportInstance { parent, request } => {
                packed("Instance", &self.import_instance(caller, &parent, request, job).await?)
            }
            OperationRequest::ReencryptInstance { instance } => {
                packed("Instance", &self.reencrypt(caller, &instance, job).await?)
            }
        }
    }

    /// What an interrupted operation had already made, if its copy committed before the crash
    /// and only the operation's end was lost: run again, the call would find its own result in
    /// the way (`ALREADY_EXISTS`). Made after `began`, the operation's start, so it is not
    /// something older of the same name.
    async fn finished_before(
        self: &Arc<Self>,
        caller: &Caller,
        request: &OperationRequest,
        began: Timestamp,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        let (_, target) = request.parent_and_target()?;
        match request {
            OperationRequest::CreateBackup { .. } => match self.repo.backup(&target).await? {
                Some(b) if b.state == "READY" && b.create_time >= began => {
                    Ok(Some(packed("Backup", &self.get_backup(caller, &target).await?)?))
                }
                _ => Ok(None),
            },
            OperationRequest::RestoreInstance { .. }
            | OperationRequest::CloneInstance { .. }
            | OperationRequest::ImportInstance { .. } => match self.repo.instance(&target).await? {
                Some(i) if i.create_time >= began => {
                    Ok(Some(packed("Instance", &self.get_instance(caller, &target).await?)?))
                }
                _ => Ok(None),
            },
            OperationRequest::ExportInstance { instance, request } => {
                let name: keyhold_api::name::InstanceName = instance.parse()?;
                let path = self.archive_path(&name.project, &request.destination)?;
                let shown = path.display().to_string();
                let exports = self.repo.exports_under(&format!("{instance}/exports/")).await?;
                let found = exports.iter().find(|(e, _)| e.destination == shown && e.create_time >= began);
                if found.is_none() && !exports.iter().any(|(e, _)| e.destination == shown) {
                    self.remove_unregistered_archive(instance, &path, began).await?;
                }
                found.map(|(e, _)| packed("Export", &Export::of(e))).transpose()
            }
            // Running it again does what is left (objects already resealed are skipped).
            OperationRequest::ReencryptInstance { .. } => Ok(None),
        }
    }

    /// An export interrupted after its archive was linked at `path` but before the export was
    /// registered left a file that would make the run again fail with `ALREADY_EXISTS`. The
    /// path was free when the operation began (it is checked before), so an archive there of
    /// `instance` taken since `began` (the caller has found no export registered at `path`) is
    /// that run's own: it is removed, and the run writes it again. Anything else at the path is
    /// left alone.
    async fn remove_unregistered_archive(
        &self,
        instance: &str,
        path: &std::path::Path,
        began: Timestamp,
    ) -> Result<(), StoreError> {
        let Ok(meta) = tokio::fs::symlink_metadata(path).await else { return Ok(()) };
        if !meta.file_type().is_file() {
            return Ok(());
        }
        let header = match tokio::fs::File::open(path).await {
            Ok(file) => crate::archive::read_header(&mut tokio::io::BufReader::new(file)).await,
            Err(_) => return Ok(()),
        };
        let Ok(header) = header else { return Ok(()) };
        if header.source != instance || header.create_time < began {
            return Ok(());
        }
        tracing::warn!(
            path = %path.display(),
            "an interrupted export had written its archive but not registered it; the archive is written again"
        );
        tokio::fs::remove_file(path)
            .await
            .map_err(|e| StoreError::Internal(format!("cannot remove {}: {e}", path.display())))
    }

    /// Takes over the operations that nodes silent since `dead_before` were running (at start
    /// on SQLite: every earlier process's) and runs each again. Call after the work those
    /// nodes left is deleted ([`Store::clean_up_after_crash`]). Returns how many.
    pub async fn resume_operations(self: &Arc<Self>, dead_before: Timestamp) -> Result<usize, StoreError> {
        let claimed = self.repo.claim_operations(&self.node, dead_before).await?;
        for record in &claimed {
            let name = record.name.clone();
            let parsed = serde_json::from_str::<OperationRequest>(&record.request)
                .map_err(|e| StoreError::Internal(format!("stored operation request does not parse: {e}")))
                .and_then(|r| {
                    let c: StoredCaller = serde_json::from_str(&record.caller)
                        .map_err(|e| StoreError::Internal(format!("stored operation caller does not parse: {e}")))?;
                    Ok((r, c.caller()?))
                });
            let ended = match parsed {
                Err(e) => {
                    tracing::warn!(operation = %name, error = %e, "cannot resume an operation; it is ended as failed");
                    Some(e)
                }
                // Cancelled before the crash: it ends so, without running again.
                Ok(_) if record.cancel_requested => Some(StoreError::Cancelled("The operation was cancelled.".into())),
                Ok((request, caller)) => {
                    tracing::warn!(operation = %name, method = request.method(), "resuming an operation a crash interrupted");
                    let mut record = record.clone();
                    record.node = self.node.clone();
                    drop(self.spawn_job(caller, request, self.job(record, true, None)));
                    None
                }
            };
            if let Some(e) = ended {
                let result = serde_json::json!({ "error": status_json(&e) }).to_string();
                self.record_end(&name, &result).await;
            }
        }
        Ok(claimed.len())
    }

    fn operation_name_checked(name: &str) -> Result<(), StoreError> {
        let ok = name.split_once("/operations/").is_some_and(|(parent, id)| {
            parse_location(parent).is_ok()
                && !id.is_empty()
                && id.len() <= 64
                && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
        if ok {
            Ok(())
        } else {
            Err(StoreError::InvalidArgument(format!(
                "\"{}\" is not an operation name (projects/PROJECT/locations/LOCATION/operations/ID).",
                name.chars().take(200).collect::<String>()
            )))
        }
    }

    async fn operation_record(&self, name: &str) -> Result<OperationRecord, StoreError> {
        self.repo.operation(name).await?.ok_or_else(|| StoreError::NotFound(format!("Operation {name} not found.")))
    }

    /// `operations.get`.
    pub async fn get_operation(&self, caller: &Caller, name: &str) -> Result<Operation, StoreError> {
        let op = Op {
            method: "GetOperation",
            resource: name.to_string(),
            permission: role::OPERATIONS_GET,
            kind: AuditKind::DataAccess,
        };
        self.call(caller, op, async {
            Self::operation_name_checked(name)?;
            Ok(render(&self.operation_record(name).await?))
        })
        .await
    }

    /// `operations.list` under `projects/P/locations/L`, oldest first.
    pub async fn list_operations(
        &self,
        caller: &Caller,
        parent: &str,
        req: &ListRequest,
    ) -> Result<ListOperationsResponse, StoreError> {
        let op = Op {
            method: "ListOperations",
            resource: format!("{parent}/operations"),
            permission: role::OPERATIONS_LIST,
            kind: AuditKind::DataAccess,
        };
        self.call(caller, op, async {
            parse_location(parent)?;
            let limit = page_size(req)?;
            let after = decode_token(&req.page_token)?;
            let mut rows = self.repo.list_operations(parent, &after, limit + 1).await?;
            let more = rows.len() as u64 > limit;
            rows.truncate(limit as usize);
            let next_page_token = match (more, rows.last()) {
                (true, Some(last)) => encode_token(&last.name),
                _ => String::new(),
            };
            Ok(ListOperationsResponse { operations: rows.iter().map(render).collect(), next_page_token })
        })
        .await
    }

    /// `operations/ID:cancel`: the copy stops after the object it is on, what it built is
    /// deleted, and the operation ends with `CANCELLED`. `FAILED_PRECONDITION` once finished.
    pub async fn cancel_operation(&self, caller: &Caller, name: &str) -> Result<(), StoreError> {
        let op = Op {
            method: "CancelOperation",
            resource: name.to_string(),
            permission: role::OPERATIONS_CANCEL,
            kind: AuditKind::Activity,
        };
        self.mutate(caller, op, async |audit| {
            Self::operation_name_checked(name)?;
            self.operation_record(name).await?;
            if !self.repo.cancel_operation(name, &audit.entries()).await? {
                return Err(StoreError::FailedPrecondition(format!("Operation {name} has already finished.")));
            }
            self.running.cancel(name);
            Ok(())
        })
        .await
    }
}
