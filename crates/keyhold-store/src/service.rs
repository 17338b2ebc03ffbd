//! The store service: instances of objects encrypted under the instance's key ([C1]–[C7],
//! [C12]). Authorization and audit go through the KMS's IAM and audit log; keys are reached
//! only through the project's service agent.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::{Stream, StreamExt};
use keyhold_api::resources::{Purpose, VersionState};
use keyhold_api::wire::Timestamp;
use keyhold_api::{Code, CryptoKeyName, LocationName};
use keyhold_audit::{AuditKind, AuditRecord};
use keyhold_cmek::{
    Access, AccessReason, ChunkId, CmekWrapper, Failure, GuardConfig, GuardError, GuardRegistry, GuardStatus, Kek,
    KekWrapper, KeyGuard, KmsClientError, SealedChunk, WrappedKek, open_chunk, seal_chunk,
};
use keyhold_crypto::KeyBytes;
use keyhold_iam::Caller;
use keyhold_iam::{Permission, role};

use crate::agents::AgentProvider;
use crate::error::StoreError;
use crate::host::{CallSpec, HostCall, HostError, KeyNotice, ServiceHost};
use crate::model::*;
use crate::operations::Job;
use crate::repo::{RepoError, StoreRepository};

/// Settings of the store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Refuse instances without a `kmsKey` (`--store-require-cmek`), as AML AI always does.
    pub require_cmek: bool,
    /// Key check period and KMS-unreachable grace.
    pub guard: GuardConfig,
    /// Locations instances may be created in.
    pub locations: Vec<String>,
    /// The directory exports are written to and imports read from (`--store-export-dir`);
    /// `None` turns export and import off.
    pub export_dir: Option<std::path::PathBuf>,
    /// How often replicas catch up with their primaries besides right after a write on this
    /// node (writes made on other nodes are seen at the next round).
    pub replication_period: Duration,
    /// Most bytes a second each copy (backup, restore, clone, export, import, `:reencrypt`)
    /// reads (`--store-copy-bytes-per-second`); `None` for as fast as it goes.
    pub copy_bytes_per_second: Option<std::num::NonZeroU64>,
}

/// A stream of object contents.
pub type ContentStream = Pin<Box<dyn Stream<Item = Result<Vec<u8>, StoreError>> + Send>>;

/// Page of a list call.
#[derive(Debug, Clone, Default)]
pub struct ListRequest {
    /// At most this many (default 100, at most 1000).
    pub page_size: Option<i64>,
    /// From a previous answer.
    pub page_token: String,
    /// Objects only: name prefix.
    pub prefix: String,
}

/// Service-managed encryption: KEKs sealed by the platform's root key (never leaving this
/// process's KMS), bound to the resource. Always usable.
#[derive(Debug)]
struct ServiceManaged {
    host: Arc<dyn ServiceHost>,
}

#[async_trait]
impl KekWrapper for ServiceManaged {
    fn key_name(&self) -> Option<&str> {
        None
    }
    async fn wrap(&self, resource: &str, kek: &Kek, _: AccessReason) -> Result<WrappedKek, KmsClientError> {
        let bytes = KeyBytes::from_slice(kek.expose()).expect("a KEK is 32 bytes");
        let sealed =
            self.host.seal_service_key(&bytes, &format!("{SERVICE}/{resource}")).await.map_err(kms_client_error)?;
        Ok(WrappedKek { ciphertext: sealed, key_version: None })
    }
    async fn unwrap(&self, resource: &str, wrapped: &WrappedKek, _: AccessReason) -> Result<Kek, KmsClientError> {
        let bytes = self
            .host
            .unseal_service_key(&wrapped.ciphertext, &format!("{SERVICE}/{resource}"))
            .await
            .map_err(kms_client_error)?;
        Ok(Kek::from_bytes(bytes))
    }
}

fn kms_client_error(e: HostError) -> KmsClientError {
    KmsClientError::from_status(e.status)
}

/// The store.
#[derive(Debug)]
pub struct Store {
    pub(crate) host: Arc<dyn ServiceHost>,
    pub(crate) repo: Arc<dyn StoreRepository>,
    pub(crate) agents: Arc<dyn AgentProvider>,
    pub(crate) guards: GuardRegistry,
    pub(crate) config: StoreConfig,
    service_managed: Arc<ServiceManaged>,
    /// Wakes the replication task (a primary was written on this node).
    pub(crate) replication: Arc<tokio::sync::Notify>,
    /// When each replica last caught up completely (on this node).
    pub(crate) sync_times: std::sync::Mutex<std::collections::HashMap<String, Timestamp>>,
    /// This process's node ID (random per start): the owner of the uploads and builds it does,
    /// kept alive by a heartbeat (finding 6).
    pub(crate) node: String,
    /// One lock per instance, held by `:rewrap` and `:reencrypt` so that one node runs them
    /// one at a time (hardening review: concurrent reencrypts deleted each other's KEKs).
    /// Across nodes, the database keeps it safe ([`StoreRepository::commit_upload`] checks
    /// the KEK, [`StoreRepository::delete_kek_if_unused`] excludes commits).
    key_locks: std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// The long-running operations this node runs (to cancel them at once).
    pub(crate) running: crate::operations::Running,
    /// When this node last recorded its heartbeat: its copies stop if that grows old.
    pub(crate) liveness: Arc<crate::operations::Liveness>,
}

/// How often a node records that it is alive (and looks for work crashed nodes left).
pub const HEARTBEAT_PERIOD: Duration = Duration::from_secs(5);
/// A node silent this long is dead: what it was writing is deleted by the others. Three
/// heartbeats, so that a node busy for a moment is not taken for dead.
pub const NODE_LEASE: Duration = Duration::from_secs(15);
/// Work with no recorded node (written by a build before nodes were recorded) is deleted after
/// this long, the rule that build itself follows.
const OWNERLESS_AGE: Duration = Duration::from_secs(3600);
/// On a shared database, a node silent this long has its running operations taken over and run
/// again by another. Much longer than [`NODE_LEASE`]: a node that cannot record its heartbeat
/// stops its own copies after [`crate::operations::FENCE_AFTER`], long before another node
/// starts them again, so one operation never runs on two nodes at once.
pub const OPERATION_TAKEOVER_AFTER: Duration = Duration::from_secs(300);
/// A dead node's row is dropped after this long (node IDs are new at every start).
const FORGET_NODES_AFTER: Duration = Duration::from_secs(86_400);

fn ago(d: Duration) -> Timestamp {
    Timestamp::now().add(keyhold_api::wire::ProtoDuration::from_nanos(-(d.as_nanos() as i128)))
}

/// What a call was, for its authorization and audit entry.
pub(crate) struct Op {
    pub method: &'static str,
    pub resource: String,
    pub permission: Permission,
    pub kind: AuditKind,
}

/// A mutating call in progress, handed to the step that makes its change visible: that step
/// commits [`Audit::entries`] in the same transaction as the change ([K10], hardening issue
/// #15), so that a change is never visible without its entry and a failing audit write leaves
/// no change (the call then answers `UNAVAILABLE`). A failure is recorded after, as for every
/// call.
pub(crate) struct Audit<'c> {
    call: &'c dyn HostCall,
    /// The call this one runs inside (the destination's call around a copy's check on its
    /// source, in another project): its entry commits with the same change.
    outer: Option<&'c Audit<'c>>,
}

impl Audit<'_> {
    /// The call now runs on as long-running operation `name`: the first entry of the call the
    /// request is about (the outermost) is written now; every call's outcome will carry the
    /// operation. On a resumed operation (`resumed`), no first entry is written again.
    pub(crate) async fn start_operation(&self, name: &str, resumed: bool) -> Result<(), StoreError> {
        match self.outer {
            Some(outer) => {
                self.call.continue_operation(name.to_string());
                Box::pin(outer.start_operation(name, resumed)).await
            }
            None if resumed => {
                self.call.continue_operation(name.to_string());
                Ok(())
            }
            None => Ok(self.call.start_operation(name.to_string()).await?),
        }
    }

    /// The success entries of the call and of the calls it runs inside, oldest call first;
    /// once taken, the calls' successes are not recorded again after.
    pub(crate) fn entries(&self) -> Vec<AuditRecord> {
        let mut entries = self.outer.map(Audit::entries).unwrap_or_default();
        entries.push(self.call.success_entry());
        entries
    }
}

fn random_node_id() -> String {
    let mut b = [0u8; 8];
    // Without randomness two nodes could share an ID; the time and process ID keep them apart.
    if keyhold_crypto::random_bytes(&mut b).is_err() {
        b = (Timestamp::now().unix_nanos_i64() as u64 ^ u64::from(std::process::id())).to_be_bytes();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn random_generation() -> Result<u64, StoreError> {
    let mut b = [0u8; 8];
    keyhold_crypto::random_bytes(&mut b).map_err(|e| StoreError::Internal(e.to_string()))?;
    // Positive as an int64 (stored in BIGINT columns); never 0.
    Ok((u64::from_be_bytes(b) >> 1).max(1))
}

pub(crate) fn page_size(req: &ListRequest) -> Result<u64, StoreError> {
    match req.page_size {
        None | Some(0) => Ok(100),
        Some(n) if n < 0 => Err(StoreError::InvalidArgument("pageSize must not be negative.".into())),
        Some(n) => Ok(n.min(1000) as u64),
    }
}

pub(crate) fn decode_token(token: &str) -> Result<String, StoreError> {
    use base64::Engine;
    if token.is_empty() {
        return Ok(String::new());
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| StoreError::InvalidArgument("pageToken is not valid: pass nextPageToken as returned.".into()))
}

pub(crate) fn encode_token(last: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(last.as_bytes())
}

impl Store {
    /// The store over `repo`, authorizing and auditing through `host`, reaching keys through
    /// `agents`. Starts the task that turns the host's key-change notices into immediate key
    /// checks.
    pub fn new(
        host: Arc<dyn ServiceHost>,
        repo: Arc<dyn StoreRepository>,
        agents: Arc<dyn AgentProvider>,
        config: StoreConfig,
    ) -> Arc<Self> {
        let store = Arc::new(Self {
            service_managed: Arc::new(ServiceManaged { host: host.clone() }),
            host,
            repo,
            agents,
            guards: GuardRegistry::default(),
            config,
            replication: Arc::new(tokio::sync::Notify::new()),
            sync_times: Default::default(),
            node: random_node_id(),
            key_locks: Default::default(),
            running: Default::default(),
            liveness: Default::default(),
        });
        store.spawn_heartbeat();
        store.spawn_replication();
        let weak = Arc::downgrade(&store);
        let mut notices = store.host.subscribe();
        tokio::spawn(async move {
            loop {
                let notice = notices.next().await;
                let Some(store) = weak.upgrade() else { return };
                match notice {
                    Some(KeyNotice::Missed) => store.guards.wake_all(),
                    Some(n) => store.guards.key_may_have_changed(|key| n.concerns(key)),
                    None => return,
                }
            }
        });
        store
    }

    /// Deletes what a crash left (finding 6), at start: unfinished uploads, backups and
    /// builds (restores, clones, imports, replicas). On a database only this process uses
    /// (SQLite) that is every one not this process's; on a shared one (PostgreSQL), those of
    /// nodes whose heartbeat stopped more than [`NODE_LEASE`] ago (the heartbeat task then
    /// catches those of a node that died less than a lease ago within a lease), never one a
    /// live node is writing. Returns how many were deleted.
    /// The operations those copies ran as are then taken over and run again
    /// ([`Store::resume_operations`]); they are not counted.
    pub async fn clean_up_after_crash(self: &Arc<Self>) -> Result<usize, StoreError> {
        self.repo.heartbeat(&self.node, Timestamp::now(), ago(FORGET_NODES_AFTER)).await?;
        let (cleaned, dead_before) = if self.repo.single_process() {
            let everything = Timestamp::now().add(keyhold_api::wire::ProtoDuration::from_secs(1));
            (self.clean_orphans(everything, everything).await?, everything)
        } else {
            (self.clean_orphans(ago(NODE_LEASE), ago(OWNERLESS_AGE)).await?, ago(NODE_LEASE))
        };
        // On a shared database a node's operations wait for OPERATION_TAKEOVER_AFTER (see
        // there); at start on SQLite every earlier process is gone.
        let takeover = if self.repo.single_process() { dead_before } else { ago(OPERATION_TAKEOVER_AFTER) };
        self.resume_operations(takeover).await?;
        Ok(cleaned)
    }

    async fn clean_orphans(&self, dead_before: Timestamp, ownerless_before: Timestamp) -> Result<usize, StoreError> {
        let (uploads, builds) = self.repo.orphaned_work(&self.node, dead_before, ownerless_before).await?;
        for (instance, object, generation) in &uploads {
            tracing::warn!(%instance, %object, generation, "deleting the chunks of an upload a crash interrupted");
            self.repo.abort_upload(instance, object, *generation).await?;
        }
        for name in &builds {
            tracing::warn!(resource = %name, "deleting what an interrupted backup, restore, clone, import or replica left");
            self.repo.discard(name, &[]).await?;
        }
        Ok(uploads.len() + builds.len())
    }

    /// Starts the task that keeps this node alive in the database, and the one that, on a
    /// shared database, deletes what nodes that died left and takes their operations over.
    /// Apart, so that a long cleanup never delays this node's own heartbeat (it would then
    /// look dead to the others).
    fn spawn_heartbeat(self: &Arc<Self>) {
        self.every(HEARTBEAT_PERIOD, |store| async move {
            match store.repo.heartbeat(&store.node, Timestamp::now(), ago(FORGET_NODES_AFTER)).await {
                Ok(()) => store.liveness.beat(),
                Err(e) => tracing::warn!(error = %e, "store: cannot record this node's heartbeat"),
            }
        });
        self.every(HEARTBEAT_PERIOD, |store| async move {
            if !store.repo.single_process() {
                // What a dead node left is deleted long before its operations are run again
                // (OPERATION_TAKEOVER_AFTER against NODE_LEASE).
                if let Err(e) = store.clean_orphans(ago(NODE_LEASE), ago(OWNERLESS_AGE)).await {
                    tracing::warn!(error = %e, "store: cannot clean up after a node that died");
                }
                if let Err(e) = store.resume_operations(ago(OPERATION_TAKEOVER_AFTER)).await {
                    tracing::warn!(error = %e, "store: cannot take over the operations of a node that died");
                }
            }
            if let Err(e) = store.repo.prune_operations(ago(crate::operations::KEEP_FINISHED)).await {
                tracing::warn!(error = %e, "store: cannot delete old finished operations");
            }
        });
    }

    /// Runs `tick` every `period` (the first at once; a late one delays the next) until the
    /// store is dropped.
    fn every<F, Fut>(self: &Arc<Self>, period: Duration, tick: F)
    where
        F: Fn(Arc<Self>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(period);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                let Some(store) = weak.upgrade() else { return };
                tick(store).await;
            }
        });
    }

    /// When `replica` last caught up with its primary (on this node).
    pub(crate) fn last_sync(&self, replica: &str) -> Option<Timestamp> {
        self.sync_times.lock().unwrap_or_else(|e| e.into_inner()).get(replica).copied()
    }

    /// Runs `f` as `op` for `caller`: authorized first, audited after (for calls that change
    /// nothing; see [`Store::mutate`]).
    pub(crate) async fn call<T>(
        &self,
        caller: &Caller,
        op: Op,
        f: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        self.run(caller, op, None, None, async |_| f.await).await
    }

    /// Runs `f` as `op` for `caller`, a call that changes something: authorized first; its
    /// success entry committed by `f` with the change ([`Audit`]), a failure recorded after.
    pub(crate) async fn mutate<T>(
        &self,
        caller: &Caller,
        op: Op,
        f: impl AsyncFnOnce(&Audit<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.run(caller, op, None, None, f).await
    }

    /// Runs `f`, a copy into project `dest_project` that reads `source` (a backup, an instance,
    /// an archive's source instance), once the caller is found to hold `permission` on the
    /// source too (finding 2(b)): a copy must never let a caller read what it could not read
    /// where it is. Store permissions are granted on projects (store resources carry no policy
    /// of their own), so within one project the destination's check already decided; across
    /// projects the source's is a call of its own, refused with `PERMISSION_DENIED` before the
    /// source is looked up and audited in the source's project, so that its owners see who
    /// copied (or tried to copy) their data.
    /// The source's entry commits with the copy's change, together with the destination's
    /// (`audit`, the destination's call).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn on_source<T>(
        &self,
        caller: &Caller,
        audit: &Audit<'_>,
        method: &'static str,
        dest_project: &str,
        source: &str,
        permission: Permission,
        f: impl AsyncFnOnce(&Audit<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if keyhold_iam::project_of(source) == Some(dest_project) {
            return f(audit).await;
        }
        let op = Op { method, resource: source.to_string(), permission, kind: AuditKind::Activity };
        self.run(caller, op, None, Some(audit), f).await
    }

    /// [`Store::mutate`], with a warning in the audit entry.
    pub(crate) async fn mutate_warned<T>(
        &self,
        caller: &Caller,
        op: Op,
        warning: Option<String>,
        f: impl AsyncFnOnce(&Audit<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.run(caller, op, warning, None, f).await
    }

    /// Authorizes `op`, runs `f` (inside the call `outer`, if given) and records the outcome
    /// unless `f` committed the success entry with its change.
    async fn run<T>(
        &self,
        caller: &Caller,
        op: Op,
        warning: Option<String>,
        outer: Option<&Audit<'_>>,
        f: impl AsyncFnOnce(&Audit<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let spec = CallSpec {
            service: SERVICE,
            method: op.method,
            resource: op.resource,
            kind: op.kind,
            permission: op.permission,
        };
        let call = self.host.begin_call(caller, spec).await?;
        if let Some(w) = warning {
            call.warn(w);
        }
        let r = f(&Audit { call: &*call, outer }).await;
        let (code, message) = match &r {
            Ok(_) => (Code::Ok, String::new()),
            Err(e) => {
                let s = e.to_status();
                (s.code, s.message)
            }
        };
        call.finish(code, message).await?;
        r
    }

    /// Holds `instance`'s `:rewrap`/`:reencrypt` lock on this node.
    async fn lock_keys(&self, instance: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.key_locks.lock().unwrap_or_else(|e| e.into_inner());
            locks.retain(|_, l| Arc::strong_count(l) > 1);
            locks.entry(instance.to_string()).or_default().clone()
        };
        lock.lock_owned().await
    }

    // ---- instances ----------------------------------------------------------------------------

    /// `instances.create` ([C1], [C12]).
    pub async fn create_instance(
        &self,
        caller: &Caller,
        parent: &str,
        instance_id: &str,
        req: CreateInstanceRequest,
    ) -> Result<Instance, StoreError> {
        let op = Op {
            method: "CreateInstance",
            resource: parent.to_string(),
            permission: role::INSTANCES_CREATE,
            kind: AuditKind::Activity,
        };
        self.mutate(caller, op, async |audit| self.provision_instance(audit, caller, parent, instance_id, req).await)
            .await
    }

    /// The work of `instances.create`, once the caller is authorized.
    async fn provision_instance(
        &self,
        audit: &Audit<'_>,
        caller: &Caller,
        parent: &str,
        instance_id: &str,
        req: CreateInstanceRequest,
    ) -> Result<Instance, StoreError> {
        crate::model::check_labels(&req.labels)?;
        let name = self.new_instance_name(parent, instance_id)?;
        let resource = name.to_string();
        if self.repo.instance(&resource).await?.is_some() {
            return Err(StoreError::AlreadyExists(format!("Instance {resource} already exists.")));
        }
        let kms_key = req.kms_key.filter(|k| !k.is_empty());
        if let Some(primary) = req.replica_of.filter(|p| !p.is_empty()) {
            return self.create_replica(audit, caller, name, &primary, kms_key, req.labels).await;
        }
        let wrapper = self.new_instance_wrapper(&name, kms_key.as_deref()).await?;
        let guard = KeyGuard::new(resource.clone(), wrapper, self.config.guard, []);
        let (kek, wrapped) = guard.new_kek().await.map_err(|e| creation_key_error(kms_key.as_deref(), e))?;
        let record = InstanceRecord {
            name: name.clone(),
            kms_key: kms_key.clone(),
            labels: req.labels,
            create_time: Timestamp::now(),
            replica_of: None,
        };
        let kek_record = KekRecord { id: 1, wrapped: wrapped.clone(), create_time: record.create_time };
        match self.repo.insert_instance(&record, &kek_record, &audit.entries()).await {
            Ok(()) => {}
            Err(RepoError::AlreadyExists) => {
                return Err(StoreError::AlreadyExists(format!("Instance {resource} already exists.")));
            }
            Err(e) => return Err(e.into()),
        }
        guard.insert(1, kek, wrapped);
        let guard = self.guards.insert(guard, &incarnation(&record));
        guard.spawn_monitor();
        tracing::info!(instance = %resource, key = ?kms_key, "instance created");
        self.render_instance(&record, &guard).await
    }

    /// The name of a new instance, checked: parent, ID, offered location.
    pub(crate) fn new_instance_name(&self, parent: &str, instance_id: &str) -> Result<InstanceName, StoreError> {
        let parent: LocationName = parent.parse().map_err(|_| {
            StoreError::InvalidArgument(format!("\"{parent}\" is not projects/PROJECT/locations/LOCATION."))
        })?;
        if instance_id.is_empty() {
            return Err(StoreError::InvalidArgument(
                "instanceId is required: POST .../instances?instanceId=ID.".into(),
            ));
        }
        check_instance_id(instance_id)?;
        if !self.config.locations.contains(&parent.location) {
            return Err(StoreError::InvalidArgument(format!(
                "Location {} is not offered; use one of: {}.",
                parent.location,
                self.config.locations.join(", ")
            )));
        }
        Ok(InstanceName { project: parent.project, location: parent.location, instance: instance_id.to_string() })
    }

    /// The checks of a new resource's encryption ([C1], [C12]) and, if they pass, what wraps
    /// its KEKs.
    pub(crate) async fn new_instance_wrapper(
        &self,
        name: &InstanceName,
        kms_key: Option<&str>,
    ) -> Result<Arc<dyn KekWrapper>, StoreError> {
        if kms_key.is_none() && self.config.require_cmek {
            return Err(StoreError::FailedPrecondition(
                "This store requires customer-managed encryption (--store-require-cmek): give kmsKey, a key in the instance's location that the store's service agent may use.".into(),
            ));
        }
        self.host.check_cmek_org_policy(&name.project, SERVICE, kms_key).await?;
        match kms_key {
            None => Ok(self.service_managed.clone()),
            Some(key) => self.check_key_for_instance(name, key).await,
        }
    }

    /// The [C1] checks of a key, each failing with what to fix.
    async fn check_key_for_instance(&self, name: &InstanceName, key: &str) -> Result<Arc<dyn KekWrapper>, StoreError> {
        let key_name: CryptoKeyName = key.parse().map_err(|_| {
            StoreError::InvalidArgument(format!(
                "kmsKey \"{key}\" is not a crypto key name: projects/PROJECT/locations/LOCATION/keyRings/RING/cryptoKeys/KEY."
            ))
        })?;
        let key_location = &key_name.key_ring.location.location;
        if *key_location != name.location {
            return Err(StoreError::FailedPrecondition(format!(
                "The KMS key {key} is in location {key_location}, but the instance is in {}: use a key in {}.",
                name.location, name.location
            )));
        }
        let agent = self.agents.agent(&name.project).await.map_err(|e| match e.failure() {
            Failure::Unreachable => StoreError::Unavailable(format!("the KMS cannot be reached: {}", e.message)),
            _ => StoreError::FailedPrecondition(format!("The store's service agent cannot be set up: {}", e.message)),
        })?;
        match agent.client.describe_key(&key_name).await {
            Ok(Some(d)) => {
                if d.purpose != Purpose::EncryptDecrypt {
                    return Err(StoreError::FailedPrecondition(format!(
                        "The KMS key {key} has purpose {}; CMEK needs a key with purpose ENCRYPT_DECRYPT.",
                        d.purpose
                    )));
                }
                match &d.primary {
                    None => {
                        return Err(StoreError::FailedPrecondition(format!(
                            "The KMS key {key} has no primary version; create one or set one as primary."
                        )));
                    }
                    Some((v, state)) if *state != VersionState::Enabled => {
                        return Err(StoreError::FailedPrecondition(format!(
                            "The primary version {v} of the KMS key is {state}; enable it (keyhold kms keys versions enable) or make an enabled version primary."
                        )));
                    }
                    Some(_) => {}
                }
            }
            Ok(None) => {}
            Err(e) if e.code == keyhold_api::Code::NotFound => {
                return Err(StoreError::FailedPrecondition(format!(
                    "The KMS key {key} does not exist; create it first (keyhold kms keys create) or check the name."
                )));
            }
            Err(e) if e.failure() == Failure::Unreachable => {
                return Err(StoreError::Unavailable(format!("the KMS cannot be reached: {}", e.message)));
            }
            Err(_) => {}
        }
        let wanted = [role::VERSIONS_USE_TO_ENCRYPT.as_str(), role::VERSIONS_USE_TO_DECRYPT.as_str()];
        let held = agent.client.test_permissions(&key_name, &wanted).await.map_err(|e| match e.failure() {
            Failure::Unreachable => StoreError::Unavailable(format!("the KMS cannot be reached: {}", e.message)),
            _ => StoreError::FailedPrecondition(format!(
                "Cannot check the service agent's access to {key}: {}",
                e.message
            )),
        })?;
        if wanted.iter().any(|w| !held.iter().any(|h| h == w)) {
            return Err(StoreError::FailedPrecondition(format!(
                "The store's service agent {email} cannot use the KMS key {key} (or the key does not exist). Grant it roles/cloudkms.cryptoKeyEncrypterDecrypter:\n  keyhold kms keys add-iam-policy-binding {k} --keyring={r} --location={l} --project={p} --member=serviceAccount:{email} --role=roles/cloudkms.cryptoKeyEncrypterDecrypter",
                email = agent.email,
                k = key_name.crypto_key,
                r = key_name.key_ring.key_ring,
                l = key_name.key_ring.location.location,
                p = key_name.key_ring.location.project,
            )));
        }
        Ok(Arc::new(CmekWrapper::new(agent.client, key)))
    }

    /// What wraps KEKs under `key` (`None`: the service's own key) for `project`'s service agent.
    pub(crate) async fn wrapper_for(
        &self,
        project: &str,
        key: Option<&str>,
    ) -> Result<Arc<dyn KekWrapper>, StoreError> {
        Ok(match key {
            None => self.service_managed.clone(),
            Some(key) => {
                let agent = self.agents.agent(project).await.map_err(|e| StoreError::KeyInaccessible {
                    key: key.to_string(),
                    detail: format!("the store's service agent is not available: {}", e.message),
                })?;
                Arc::new(CmekWrapper::new(agent.client, key.to_string()))
            }
        })
    }

    /// Every key version that wrapped one of `resource`'s KEKs, oldest version first.
    pub(crate) async fn kek_versions(&self, resource: &str) -> Result<Vec<String>, StoreError> {
        let mut versions: Vec<String> =
            self.repo.keks(resource).await?.into_iter().filter_map(|k| k.wrapped.key_version).collect();
        versions.sort_by_key(|v| version_number(v));
        versions.dedup();
        Ok(versions)
    }

    /// The guard of an instance, loaded and checked once if it is not in memory yet (or if the
    /// one in memory belongs to an earlier instance of the same name, deleted since, maybe by
    /// another node).
    async fn guard(&self, record: &InstanceRecord) -> Result<Arc<KeyGuard>, StoreError> {
        let resource = record.name.to_string();
        if let Some(g) = self.guards.get(&resource, &incarnation(record)) {
            return Ok(g);
        }
        let keks = self.repo.keks(&resource).await?;
        let wrapper = self.wrapper_for(&record.name.project, record.kms_key.as_deref()).await?;
        let guard = KeyGuard::new(resource, wrapper, self.config.guard, keks.into_iter().map(|k| (k.id, k.wrapped)));
        guard.check().await;
        let registered = self.guards.insert(guard.clone(), &incarnation(record));
        if Arc::ptr_eq(&registered, &guard) {
            guard.spawn_monitor();
        }
        Ok(registered)
    }

    /// An instance's objects with its guard.
    pub(crate) async fn vault(&self, record: &InstanceRecord) -> Result<Vault, StoreError> {
        Ok(Vault {
            resource: record.name.to_string(),
            kms_key: record.kms_key.clone(),
            guard: self.guard(record).await?,
        })
    }

    pub(crate) async fn instance_record(&self, name: &str) -> Result<InstanceRecord, StoreError> {
        let parsed: InstanceName = name.parse()?;
        self.repo.instance(&parsed.to_string()).await?.ok_or(StoreError::InstanceNotFound(parsed))
    }

    pub(crate) async fn render_instance(
        &self,
        record: &InstanceRecord,
        guard: &KeyGuard,
    ) -> Result<Instance, StoreError> {
        let status = guard.status();
        let cmek = record.kms_key.is_some();
        let (state, reason, state_reason) = match status.access {
            Access::Usable | Access::Grace { .. } => ("READY", None, None),
            Access::Unknown => ("READY", None, Some("The key has not been checked yet.".to_string())),
            Access::Suspended(r) => ("SUSPENDED", Some(r.as_str()), Some(inaccessible_detail(&status))),
        };
        let encryption_status = match status.access {
            Access::Suspended(_) => Some(serde_json::json!({
                "code": keyhold_api::Code::FailedPrecondition.number(),
                "message": format!("KMS key required by the Keyhold resource is not accessible: {}", inaccessible_detail(&status)),
            })),
            Access::Grace { until } => Some(serde_json::json!({
                "code": keyhold_api::Code::Unavailable.number(),
                "message": format!("The KMS cannot be reached ({}); serving from the cached key until {until}.", status.message),
            })),
            _ => None,
        };
        Ok(Instance {
            name: record.name.to_string(),
            kms_key: record.kms_key.clone(),
            labels: record.labels.clone(),
            state,
            suspension_reason: reason,
            state_reason,
            encryption_info: EncryptionInfo {
                encryption_type: if cmek { "CUSTOMER_MANAGED_ENCRYPTION" } else { "GOOGLE_DEFAULT_ENCRYPTION" },
                kms_key_versions: guard.key_versions(),
                encryption_status,
            },
            key_status: cmek.then(|| KeyStatus {
                observed_key_state: status.observed_key_state.clone(),
                last_check_time: status.last_check,
                last_usable_time: status.last_usable,
                grace_expire_time: match status.access {
                    Access::Grace { until } => Some(until),
                    _ => None,
                },
            }),
            replica_of: record.replica_of.clone(),
            replica_names: self.repo.replicas_of(&record.name.to_string()).await?,
            last_sync_time: match record.replica_of {
                Some(_) => self.last_sync(&record.name.to_string()),
                None => None,
            },
            create_time: record.create_time,
        })
    }

    /// `instances.get`.
    pub async fn get_instance(&self, caller: &Caller, name: &str) -> Result<Instance, StoreError> {
        let op = Op {
            method: "GetInstance",
            resource: name.to_string(),
            permission: role::INSTANCES_GET,
            kind: AuditKind::DataAccess,
        };
        self.call(caller, op, async {
            let record = self.instance_record(name).await?;
            let guard = self.guard(&record).await?;
            self.render_instance(&record, &guard).await
        })
        .await
    }

    /// [K12] What `key` protects in this store: every instance under it (optionally only those
    /// in project `project`), with the key versions whose wrapping protects its data now.
    /// Anyone who may read the key (`cloudkms.cryptoKeys.get`) may ask: the answer is about the
    /// key, and it is what its owner needs before disabling or destroying a version.
    pub async fn protected_resources(
        &self,
        caller: &Caller,
        key: &str,
        project: Option<&str>,
    ) -> Result<Vec<ProtectedResource>, StoreError> {
        let op = Op {
            method: "SearchProtectedResources",
            resource: key.to_string(),
            permission: role::CRYPTO_KEYS_GET,
            kind: AuditKind::DataAccess,
        };
        self.call(caller, op, async {
            let _: keyhold_api::CryptoKeyName =
                key.parse().map_err(|_| StoreError::InvalidArgument(format!("\"{key}\" is not a crypto key name.")))?;
            // Everything under the key: instances and replicas with the versions protecting
            // them now; backups and exports with the version(s) that wrapped their KEK when
            // they were taken.
            let wanted = |i: &InstanceName| project.is_none_or(|p| p == i.project);
            let mut entries = Vec::new();
            for r in self.repo.instances_by_key(key).await? {
                if wanted(&r.name) {
                    let resource = r.name.to_string();
                    let versions = self.kek_versions(&resource).await?;
                    let kind = if r.replica_of.is_some() { "Replica" } else { "Instance" };
                    entries.push((resource, r.name, kind, r.labels, versions, r.create_time));
                }
            }
            for b in self.repo.backups_by_key(key).await? {
                if let Ok(instance) = b.instance.parse::<InstanceName>()
                    && wanted(&instance)
                {
                    let versions = self.kek_versions(&b.name).await?;
                    entries.push((b.name, instance, "Backup", BTreeMap::new(), versions, b.create_time));
                }
            }
            for e in self.repo.exports_by_key(key).await? {
                if let Ok(instance) = e.instance.parse::<InstanceName>()
                    && wanted(&instance)
                {
                    let versions = e.key_version.into_iter().collect();
                    entries.push((e.name, instance, "Export", BTreeMap::new(), versions, e.create_time));
                }
            }
            let mut numbers = std::collections::HashMap::new();
            let mut found = Vec::with_capacity(entries.len());
            for (resource, instance, kind, labels, versions, create_time) in entries {
                let number = match numbers.get(&instance.project) {
                    Some(n) => *n,
                    None => {
                        let n = self.host.project_number(&instance.project).await?;
                        numbers.insert(instance.project.clone(), n);
                        n
                    }
                };
                found.push(ProtectedResource {
                    name: format!("//{SERVICE}/{resource}"),
                    project: format!("projects/{number}"),
                    project_id: instance.project,
                    cloud_product: "keyhold-store".into(),
                    resource_type: format!("{SERVICE}/{kind}"),
                    location: instance.location,
                    labels,
                    crypto_key_version: versions.last().cloned().unwrap_or_default(),
                    crypto_key_versions: versions,
                    create_time,
                });
            }
            found.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(found)
        })
        .await
    }

    /// `instances.list`.
    pub async fn list_instances(
        &self,
        caller: &Caller,
        parent: &str,
        req: &ListRequest,
    ) -> Result<ListInstancesResponse, StoreError> {
        let op = Op {
            method: "ListInstances",
            resource: parent.to_string(),
            permission: role::INSTANCES_LIST,
            kind: AuditKind::DataAccess,
        };
        self.call(caller, op, async {
            let _: LocationName = parent.parse().map_err(|_| {
                StoreError::InvalidArgument(format!("\"{parent}\" is not projects/PROJECT/locations/LOCATION."))
            })?;
            let size = page_size(req)? as usize;
            let after = decode_token(&req.page_token)?;
            let all = self.repo.list_instances(parent).await?;
            let rest: Vec<InstanceRecord> = all.into_iter().filter(|r| r.name.to_string() > after).collect();
            let more = rest.len() > size;
            let mut instances = Vec::new();
            for r in rest.iter().take(size) {
                let guard = self.guard(r).await?;
                instances.push(self.render_instance(r, &guard).await?);
            }
            let next_page_token =
                if more { instances.last().map(|i| encode_token(&i.name)).unwrap_or_default() } else { String::new() };
            Ok(ListInstancesResponse { instances, next_page_token })
        })
        .await
    }

    /// `instances.delete`: works whatever the key's state (an admin can always delete).
    pub async fn delete_instance(&self, caller: &Caller, name: &str) -> Result<(), StoreError> {
        let op = Op {
            method: "DeleteInstance",
            resource: name.to_string(),
            permission: role::INSTANCES_DELETE,
            kind: AuditKind::Activity,
        };
        self.mutate(caller, op, async |audit| {
            let parsed: InstanceName = name.parse()?;
            let resource = parsed.to_string();
            let replicas = self.repo.replicas_of(&resource).await?;
            if !replicas.is_empty() {
                return Err(StoreError::FailedPrecondition(format!(
                    "Instance {resource} has read replicas ({}); delete them first.",
                    replicas.join(", ")
                )));
            }
            if !self.repo.delete_instance(&resource, &audit.entries()).await? {
                return Err(StoreError::InstanceNotFound(parsed));
            }
            self.guards.remove(&resource);
            Ok(())
        })
        .await
    }

    /// `:rewrap` ([C4]): every KEK wrapped again with the key's current primary version. One
    /// KMS call per KEK, whatever the amount of data.
    pub async fn rewrap(&self, caller: &Caller, name: &str) -> Result<Instance, StoreError> {
        let op = Op {
            method: "RewrapInstance",
            resource: name.to_string(),
            permission: role::INSTANCES_UPDATE,
            kind: AuditKind::Activity,
        };
        self.mutate(caller, op, async |audit| {
            let _serialized = self.lock_keys(name).await;
            let record = self.instance_record(name).await?;
            let guard = self.guard(&record).await?;
            let resource = record.name.to_string();
            let rewrapped = guard.rewrap().await.map_err(|e| guard_error(record.kms_key.as_deref(), e))?;
            if let Err(e) = self.repo.update_keks(&resource, &rewrapped, &audit.entries()).await {
                // Not stored (its entry could not be written, say): the guard's new wrappings
                // are forgotten with it, and the stored ones loaded again at the next use.
                self.guards.remove(&resource);
                return Err(e.into());
            }
            self.render_instance(&record, &guard).await
        })
        .await
    }

    /// `:reencrypt` ([C4]): a new KEK under the current primary version, every object's data
    /// sealed again under fresh DEKs, the old KEKs deleted. Cost grows with the data.
    pub async fn reencrypt(&self, caller: &Caller, name: &str, job: &Job) -> Result<Instance, StoreError> {
        let op = Op {
            method: "ReencryptInstance",
            resource: name.to_string(),
            permission: role::INSTANCES_UPDATE,
            kind: AuditKind::Activity,
        };
        self.mutate(caller, op, async |audit| {
            let _serialized = self.lock_keys(name).await;
            let record = self.instance_record(name).await?;
            let vault = self.vault(&record).await?;
            let guard = vault.guard.clone();
            let resource = record.name.to_string();
            let (kek, wrapped) = guard.new_kek().await.map_err(|e| guard_error(record.kms_key.as_deref(), e))?;
            job.accept(audit).await?;
            job.set_total(self.repo.count_objects(&resource).await?);
            // KEK IDs only grow: the newest KEK has the largest ID, and a reencrypt deletes only
            // smaller ones, so the largest ID ever given stays and an ID is never given twice
            // (a reused ID would pair another reencrypt's sealed data with the wrong KEK).
            let new_id = self.repo.keks(&resource).await?.iter().map(|k| k.id).max().unwrap_or(0) + 1;
            let inserted = self
                .repo
                .insert_kek(
                    &resource,
                    &KekRecord { id: new_id, wrapped: wrapped.clone(), create_time: Timestamp::now() },
                )
                .await;
            match inserted {
                // Another node's reencrypt took this ID at the same moment.
                Err(RepoError::AlreadyExists) => return Err(concurrent_reencrypt(&resource)),
                r => r?,
            }
            guard.insert(new_id, kek, wrapped);
            let mut after = String::new();
            loop {
                let batch = self.repo.list_objects(&resource, "", &after, 100).await?;
                let Some(last) = batch.last() else { break };
                after = last.name.clone();
                for obj in batch {
                    // One under a newer KEK was resealed by a newer reencrypt (another node's).
                    let resealed = obj.kek_id < new_id;
                    if resealed {
                        self.reencrypt_object(&vault, &obj, new_id).await?;
                    }
                    job.step(if resealed { obj.size } else { 0 }).await?;
                }
            }
            job.fence()?;
            // A newer reencrypt (another node's) may have deleted this one's KEK before its
            // objects were committed: those commits were refused, the objects kept their KEK,
            // and this call did not do what it says. Retrying does.
            let keks = self.repo.keks(&resource).await?;
            if !keks.iter().any(|k| k.id == new_id) {
                guard.remove(new_id);
                return Err(concurrent_reencrypt(&resource));
            }
            for old in keks.iter().map(|k| k.id).filter(|id| *id < new_id) {
                if self.repo.delete_kek_if_unused(&resource, old).await? {
                    guard.remove(old);
                }
            }
            self.render_instance(&record, &guard).await
        })
        .await
    }

    async fn reencrypt_object(&self, vault: &Vault, obj: &ObjectRecord, new_kek: u64) -> Result<(), StoreError> {
        let generation = random_generation()?;
        let new = ObjectRecord { generation, kek_id: new_kek, ..obj.clone() };
        let mut batch = ChunkBatch::new(COPY_CHUNKS_PER_WRITE);
        let result = async {
            for index in 0..obj.chunk_count {
                let data = self.open_stored_chunk(vault, obj, index).await?;
                let last = index + 1 == obj.chunk_count;
                let id = ChunkId { resource: &vault.resource, object: &obj.name, generation, index, last };
                let sealed = self.seal(vault, new_kek, &id, data.expose()).await?;
                if last {
                    let first = if batch.chunks.is_empty() { index } else { batch.first_index };
                    batch.chunks.push(sealed);
                    return match self
                        .repo
                        .commit_upload(&vault.resource, &new, first, &batch.chunks, Some(obj.generation), &[])
                        .await
                    {
                        Ok(()) => Ok(()),
                        // Overwritten meanwhile (the newer upload wins, and it used a live KEK),
                        // or this reencrypt's KEK was deleted by a newer one: nothing
                        // committed, the object keeps its KEK. Its earlier chunks go.
                        Err(RepoError::Conflict) => {
                            if batch.upload_recorded {
                                let _ = self.repo.abort_upload(&vault.resource, &obj.name, generation).await;
                            }
                            Ok(())
                        }
                        Err(e) => Err(e.into()),
                    };
                }
                self.store_chunk(&id, sealed, &mut batch).await?;
            }
            Ok(())
        }
        .await;
        if result.is_err() && batch.upload_recorded {
            let _ = self.repo.abort_upload(&vault.resource, &obj.name, generation).await;
        }
        match result {
            // Overwritten (or resealed by another node's reencrypt) while being read: the
            // newer generation used a live KEK; nothing to do.
            Err(StoreError::Aborted(_)) => Ok(()),
            r => r,
        }
    }

    /// Seals one chunk under KEK `kek_id` (loaded if it was made on another node).
    async fn seal(&self, vault: &Vault, kek_id: u64, id: &ChunkId<'_>, data: &[u8]) -> Result<SealedChunk, StoreError> {
        let kek = self.kek(vault, kek_id).await?;
        seal_chunk(&kek, id, data).map_err(|e| StoreError::Internal(e.to_string()))
    }

    /// Queues a chunk that is not the last of its upload. Chunks are written
    /// `batch.per_write` at a time, recording the upload first (so that an interrupted one can
    /// be cleaned up) before its first write.
    async fn store_chunk(
        &self,
        id: &ChunkId<'_>,
        sealed: SealedChunk,
        batch: &mut ChunkBatch,
    ) -> Result<(), StoreError> {
        if batch.chunks.is_empty() {
            batch.first_index = id.index;
        }
        batch.chunks.push(sealed);
        if batch.chunks.len() < batch.per_write {
            return Ok(());
        }
        if !batch.upload_recorded {
            self.repo.begin_upload(id.resource, id.object, id.generation, &self.node, Timestamp::now()).await?;
            batch.upload_recorded = true;
        }
        self.repo.put_chunks(id.resource, id.object, id.generation, batch.first_index, &batch.chunks).await?;
        batch.chunks.clear();
        Ok(())
    }

    /// The KEK `id` of a vault, loading it if it was made on another node.
    async fn kek(&self, vault: &Vault, id: u64) -> Result<Arc<Kek>, StoreError> {
        match vault.guard.kek(id) {
            Ok(k) => Ok(k),
            Err(GuardError::UnknownKek(_)) => {
                let kek = self
                    .repo
                    .keks(&vault.resource)
                    .await?
                    .into_iter()
                    .find(|k| k.id == id)
                    .ok_or_else(|| StoreError::DataLoss(format!("KEK {id} of {} is missing", vault.resource)))?;
                vault.guard.add_wrapped(id, kek.wrapped).await.map_err(|e| guard_error(vault.kms_key.as_deref(), e))
            }
            Err(e) => Err(guard_error(vault.kms_key.as_deref(), e)),
        }
    }

    // ---- objects ------------------------------------------------------------------------------

    fn object_resource(instance: &str, object: &str) -> String {
        format!("{instance}/objects/{object}")
    }

    fn render_object(vault: &Vault, obj: &ObjectRecord) -> Object {
        Object {
            name: Self::object_resource(&vault.resource, &obj.name),
            size: obj.size.to_string(),
            content_type: obj.content_type.clone(),
            generation: obj.generation.to_string(),
            create_time: obj.create_time,
            update_time: obj.update_time,
            kms_key_version: vault.guard.key_version(obj.kek_id),
        }
    }

    /// `objects.insert` (`PUT .../objects/NAME`): streams `body` into chunks; the object appears
    /// whole when the last chunk is stored, or not at all.
    pub async fn put_object<S, E>(
        &self,
        caller: &Caller,
        instance: &str,
        object: &str,
        content_type: &str,
        body: S,
    ) -> Result<Object, StoreError>
    where
        S: Stream<Item = Result<Vec<u8>, E>> + Send + Unpin,
        E: std::fmt::Display,
    {
        let op = Op {
            method: "InsertObject",
            resource: Self::object_resource(instance, object),
            permission: role::OBJECTS_CREATE,
            kind: AuditKind::DataAccess,
        };
        self.mutate(caller, op, async |audit| {
            check_object_name(object)?;
            let record = self.instance_record(instance).await?;
            refuse_replica_write(&record)?;
            let vault = self.vault(&record).await?;
            let now = Timestamp::now();
            let create_time = self.repo.object(&vault.resource, object).await?.map_or(now, |o| o.create_time);
            let meta = ObjectMeta { name: object, content_type, create_time, update_time: now };
            let body = body
                .map(|part| part.map_err(|e| StoreError::InvalidArgument(format!("the upload was interrupted: {e}"))));
            let obj = self.write_object(&vault, &meta, body, CHUNKS_PER_WRITE, Some(audit)).await?;
            self.replication.notify_one();
            Ok(Self::render_object(&vault, &obj))
        })
        .await
    }

    /// Writes an object into `vault` under its newest KEK, from a stream of plaintext: the
    /// object appears whole when the last chunk is stored, or not at all (an interrupted write
    /// leaves nothing behind). With `audit` (an upload; not a copy's step), the call's entry
    /// commits with the last chunk.
    pub(crate) async fn write_object<S>(
        &self,
        vault: &Vault,
        meta: &ObjectMeta<'_>,
        body: S,
        chunks_per_write: usize,
        audit: Option<&Audit<'_>>,
    ) -> Result<ObjectRecord, StoreError>
    where
        S: Stream<Item = Result<Vec<u8>, StoreError>> + Send + Unpin,
    {
        vault.require_access()?;
        let kek_id =
            vault.guard.wrapped().keys().copied().max().ok_or_else(|| StoreError::Internal("no KEK".into()))?;
        let generation = random_generation()?;
        let mut batch = ChunkBatch::new(chunks_per_write);
        let r = self.upload(vault, meta, kek_id, generation, body, &mut batch, audit).await;
        if r.is_err()
            && batch.upload_recorded
            && let Err(e) = self.repo.abort_upload(&vault.resource, meta.name, generation).await
        {
            tracing::warn!(resource = %vault.resource, error = %e, "cannot clean up a failed upload; it is retried at the next start");
        }
        r
    }

    #[allow(clippy::too_many_arguments)]
    async fn upload<S>(
        &self,
        vault: &Vault,
        meta: &ObjectMeta<'_>,
        kek_id: u64,
        generation: u64,
        mut body: S,
        batch: &mut ChunkBatch,
        audit: Option<&Audit<'_>>,
    ) -> Result<ObjectRecord, StoreError>
    where
        S: Stream<Item = Result<Vec<u8>, StoreError>> + Send + Unpin,
    {
        let resource = vault.resource.as_str();
        let object = meta.name;
        let mut buf: Vec<u8> = Vec::with_capacity(keyhold_cmek::CHUNK_SIZE);
        let mut index = 0u64;
        let mut size = 0u64;
        // A full chunk is held back until more data (or the end) says whether it is the last.
        let mut full: Option<Vec<u8>> = None;
        while let Some(part) = body.next().await {
            let part = part?;
            let mut part = part.as_slice();
            size += part.len() as u64;
            while !part.is_empty() {
                if let Some(prev) = full.take() {
                    let id = ChunkId { resource, object, generation, index, last: false };
                    let sealed = self.seal(vault, kek_id, &id, &prev).await?;
                    self.store_chunk(&id, sealed, batch).await?;
                    index += 1;
                }
                let room = keyhold_cmek::CHUNK_SIZE - buf.len();
                let take = room.min(part.len());
                buf.extend_from_slice(&part[..take]);
                part = &part[take..];
                if buf.len() == keyhold_cmek::CHUNK_SIZE {
                    full = Some(std::mem::replace(&mut buf, Vec::with_capacity(keyhold_cmek::CHUNK_SIZE)));
                }
            }
        }
        // The last chunk: a held-back full one, or what is in the buffer (possibly empty).
        let last_data = full.unwrap_or(buf);
        let id = ChunkId { resource, object, generation, index, last: true };
        let sealed = self.seal(vault, kek_id, &id, &last_data).await?;
        let obj = ObjectRecord {
            name: object.to_string(),
            generation,
            size,
            chunk_count: index + 1,
            kek_id,
            content_type: if meta.content_type.is_empty() {
                "application/octet-stream".into()
            } else {
                meta.content_type.into()
            },
            create_time: meta.create_time,
            update_time: meta.update_time,
        };
        let first = if batch.chunks.is_empty() { index } else { batch.first_index };
        batch.chunks.push(sealed);
        let entries = audit.map(Audit::entries).unwrap_or_default();
        match self.repo.commit_upload(resource, &obj, first, &batch.chunks, None, &entries).await {
            Err(RepoError::Conflict) => {
                // The instance is still there: either its KEK was deleted (a `:reencrypt` on
                // another node finished while this upload sealed under it), or this upload was
                // taken for interrupted and cleaned up by another node (its heartbeat looked
                // stale). Nothing was written either way.
                if self.repo.instance(resource).await?.is_some() {
                    return Err(StoreError::Aborted(format!(
                        "{resource} was re-encrypted, or this upload was cleaned up as interrupted, while {object} \
                         was being written; nothing was written. Upload it again."
                    )));
                }
                return Err(StoreError::NotFound(format!("{resource} was deleted while {object} was being written.")));
            }
            r => r?,
        }
        batch.upload_recorded = false;
        Ok(obj)
    }

    async fn object_record(&self, record: &InstanceRecord, object: &str) -> Result<ObjectRecord, StoreError> {
        let resource = record.name.to_string();
        self.repo
            .object(&resource, object)
            .await?
            .ok_or_else(|| StoreError::ObjectNotFound { object: object.to_string(), instance: record.name.clone() })
    }

    /// `objects.get` (metadata): works while the key is unusable.
    pub async fn get_object(&self, caller: &Caller, instance: &str, object: &str) -> Result<Object, StoreError> {
        let op = Op {
            method: "GetObject",
            resource: Self::object_resource(instance, object),
            permission: role::OBJECTS_GET,
            kind: AuditKind::DataAccess,
        };
        self.call(caller, op, async {
            let record = self.instance_record(instance).await?;
            let obj = self.object_record(&record, object).await?;
            let vault = self.vault(&record).await?;
            Ok(Self::render_object(&vault, &obj))
        })
        .await
    }

    pub(crate) async fn open_stored_chunk(
        &self,
        vault: &Vault,
        obj: &ObjectRecord,
        index: u64,
    ) -> Result<keyhold_crypto::Secret, StoreError> {
        let resource = &vault.resource;
        let kek = match self.kek(vault, obj.kek_id).await {
            Err(StoreError::DataLoss(m)) => return Err(self.overwritten_or(vault, obj, m).await),
            r => r?,
        };
        let Some(sealed) = self.repo.chunk(resource, &obj.name, obj.generation, index).await? else {
            let m =
                format!("Object {} of {resource} is missing chunk {index}: the stored data was truncated.", obj.name);
            return Err(self.overwritten_or(vault, obj, m).await);
        };
        let id = ChunkId {
            resource,
            object: &obj.name,
            generation: obj.generation,
            index,
            last: index + 1 == obj.chunk_count,
        };
        open_chunk(&kek, &id, &sealed).map_err(|_| {
            tracing::error!(resource = %resource, object = %obj.name, index, "a stored chunk failed authentication");
            StoreError::DataLoss(format!(
                "Object {} of {resource}: stored chunk {index} failed authentication (tampered with, moved or truncated).",
                obj.name
            ))
        })
    }

    /// What a missing chunk or KEK of `obj` means (hardening review): the generation being
    /// read was replaced meanwhile (an overwrite or a `:reencrypt` committed, deleting its
    /// chunks, and its KEK with a reencrypt), so `ABORTED` (read it again); or, if `obj` is
    /// still the object, data loss (`message`).
    async fn overwritten_or(&self, vault: &Vault, obj: &ObjectRecord, message: String) -> StoreError {
        match self.repo.object(&vault.resource, &obj.name).await {
            Ok(Some(now)) if now.generation == obj.generation => StoreError::DataLoss(message),
            Ok(_) => StoreError::Aborted(format!(
                "Object {} of {} was overwritten while being read; read it again.",
                obj.name, vault.resource
            )),
            Err(e) => e.into(),
        }
    }

    /// The plaintext of an object, chunk by chunk, starting with `first` (chunk 0, already
    /// opened) if given. The key is checked before every chunk, so a disable stops a stream
    /// under way; after an error the stream ends.
    pub(crate) fn object_stream(
        self: &Arc<Self>,
        vault: Vault,
        obj: ObjectRecord,
        first: Option<keyhold_crypto::Secret>,
    ) -> ContentStream {
        let next = if first.is_some() { 1 } else { 0 };
        let count = obj.chunk_count;
        let state = (self.clone(), vault, obj, next, first);
        let stream = futures_util::stream::unfold(state, move |(store, vault, obj, next, first)| async move {
            if let Some(first) = first {
                let data = first.expose().to_vec();
                return Some((Ok(data), (store, vault, obj, next, None)));
            }
            if next >= count {
                return None;
            }
            match store.open_stored_chunk(&vault, &obj, next).await {
                Ok(data) => Some((Ok(data.expose().to_vec()), (store, vault, obj, next + 1, None))),
                Err(e) => Some((Err(e), (store, vault, obj, count, None))),
            }
        });
        Box::pin(stream)
    }

    /// `objects.get?alt=media`: the contents, streamed chunk by chunk. The key is checked
    /// before the first byte and before every chunk, so a disable stops a download under way.
    pub async fn read_object(
        self: &Arc<Self>,
        caller: &Caller,
        instance: &str,
        object: &str,
    ) -> Result<(Object, ContentStream), StoreError> {
        let op = Op {
            method: "ReadObject",
            resource: Self::object_resource(instance, object),
            permission: role::OBJECTS_GET,
            kind: AuditKind::DataAccess,
        };
        self.call(caller, op, async {
            let record = self.instance_record(instance).await?;
            let obj = self.object_record(&record, object).await?;
            let vault = self.vault(&record).await?;
            vault.require_access()?;
            // The first chunk is opened before answering, so that tampering or a key problem is
            // an error status, not a cut-off download.
            let first = self.open_stored_chunk(&vault, &obj, 0).await?;
            let meta = Self::render_object(&vault, &obj);
            Ok((meta, self.object_stream(vault, obj, Some(first))))
        })
        .await
    }

    /// `objects.list`: works while the key is unusable.
    pub async fn list_objects(
        &self,
        caller: &Caller,
        instance: &str,
        req: &ListRequest,
    ) -> Result<ListObjectsResponse, StoreError> {
        let op = Op {
            method: "ListObjects",
            resource: instance.to_string(),
            permission: role::OBJECTS_LIST,
            kind: AuditKind::DataAccess,
        };
        self.call(caller, op, async {
            let record = self.instance_record(instance).await?;
            let size = page_size(req)?;
            let after = decode_token(&req.page_token)?;
            let mut rows = self.repo.list_objects(&record.name.to_string(), &req.prefix, &after, size + 1).await?;
            let more = rows.len() as u64 > size;
            rows.truncate(size as usize);
            let vault = self.vault(&record).await?;
            let next_page_token =
                if more { rows.last().map(|o| encode_token(&o.name)).unwrap_or_default() } else { String::new() };
            Ok(ListObjectsResponse {
                objects: rows.iter().map(|o| Self::render_object(&vault, o)).collect(),
                next_page_token,
            })
        })
        .await
    }

    /// `objects.delete`: works while the key is unusable (it reads no contents).
    pub async fn delete_object(&self, caller: &Caller, instance: &str, object: &str) -> Result<(), StoreError> {
        let op = Op {
            method: "DeleteObject",
            resource: Self::object_resource(instance, object),
            permission: role::OBJECTS_DELETE,
            kind: AuditKind::Activity,
        };
        self.mutate(caller, op, async |audit| {
            let record = self.instance_record(instance).await?;
            refuse_replica_write(&record)?;
            if !self.repo.delete_object(&record.name.to_string(), object, &audit.entries()).await? {
                return Err(StoreError::ObjectNotFound { object: object.to_string(), instance: record.name.clone() });
            }
            self.replication.notify_one();
            Ok(())
        })
        .await
    }
}

/// The answer to a `:reencrypt` that lost a race with another one: retryable.
fn concurrent_reencrypt(resource: &str) -> StoreError {
    StoreError::Aborted(format!("Another :reencrypt of {resource} ran at the same time; retry the request."))
}

fn inaccessible_detail(status: &GuardStatus) -> String {
    let state = status.observed_key_state.as_deref().unwrap_or("UNKNOWN");
    let when = status.last_check.map(|t| t.to_string()).unwrap_or_else(|| "never".into());
    match status.access {
        Access::Suspended(keyhold_cmek::SuspensionReason::KmsUnreachable) => {
            format!(
                "the KMS has not answered since {} and the grace period is over: {}",
                status.last_usable.map(|t| t.to_string()).unwrap_or_else(|| "start".into()),
                status.message
            )
        }
        _ => format!("key state {state} at the key check of {when}: {}", status.message),
    }
}

/// The store's error for a guard's.
pub(crate) fn guard_error(key: Option<&str>, e: GuardError) -> StoreError {
    let key = key.unwrap_or("(service-managed)").to_string();
    match e {
        GuardError::Inaccessible { status, .. } => {
            StoreError::KeyInaccessible { key, detail: inaccessible_detail(&status) }
        }
        GuardError::Kms(e) => StoreError::KeyInaccessible { key, detail: e.message },
        other => StoreError::Internal(other.to_string()),
    }
}

/// Replicas change only by following their primary.
fn refuse_replica_write(record: &InstanceRecord) -> Result<(), StoreError> {
    match &record.replica_of {
        Some(primary) => Err(StoreError::FailedPrecondition(format!(
            "Instance {} is a read replica of {primary}: it is read-only; write to the primary.",
            record.name
        ))),
        None => Ok(()),
    }
}

/// Objects sealed under one resource's KEKs (an instance, a backup, or an instance being
/// built), with the guard that holds those KEKs.
#[derive(Debug, Clone)]
pub(crate) struct Vault {
    /// The resource name the chunks and KEKs are bound to.
    pub resource: String,
    /// Its customer key (`None`: service-managed).
    pub kms_key: Option<String>,
    /// Its KEKs and key checks.
    pub guard: Arc<KeyGuard>,
}

impl Vault {
    /// Whether its data may be read or written now (the store's error if not).
    pub(crate) fn require_access(&self) -> Result<(), StoreError> {
        self.guard.require_access().map_err(|e| guard_error(self.kms_key.as_deref(), e))
    }
}

/// What a written object is, besides its contents.
pub(crate) struct ObjectMeta<'a> {
    pub name: &'a str,
    pub content_type: &'a str,
    pub create_time: Timestamp,
    pub update_time: Timestamp,
}

fn creation_key_error(key: Option<&str>, e: GuardError) -> StoreError {
    match e {
        GuardError::Kms(e) if e.failure() == Failure::Unreachable => {
            StoreError::Unavailable(format!("the KMS cannot be reached: {}", e.message))
        }
        GuardError::Kms(e) => StoreError::FailedPrecondition(format!(
            "The KMS refused to wrap the instance's key with {}: {}",
            key.unwrap_or("the service key"),
            e.message
        )),
        other => StoreError::Internal(other.to_string()),
    }
}

/// How many sealed chunks an upload writes per transaction: fewer commits (each an fsync on
/// SQLite) for a bounded amount of memory (4 MiB per upload).
pub(crate) const CHUNKS_PER_WRITE: usize = 4;
/// The same for bulk copies (backup, restore, clone, import, replica catch-up, `:reencrypt`):
/// there are few of them at once, so they hold more (16 MiB) and commit less often.
pub(crate) const COPY_CHUNKS_PER_WRITE: usize = 16;

/// The sealed chunks of an upload not written yet, and whether the upload is recorded (so that
/// its chunks can be cleaned up if it fails).
struct ChunkBatch {
    first_index: u64,
    chunks: Vec<SealedChunk>,
    upload_recorded: bool,
    /// Chunks per transaction.
    per_write: usize,
}

impl ChunkBatch {
    fn new(per_write: usize) -> Self {
        Self { first_index: 0, chunks: Vec::with_capacity(per_write), upload_recorded: false, per_write }
    }
}

/// Which instance of a name a guard belongs to: names can be reused after a delete.
fn incarnation(record: &InstanceRecord) -> String {
    record.create_time.to_string()
}

/// The ID at the end of a key version name (for ordering versions 2 before 10).
fn version_number(version: &str) -> u64 {
    version.rsplit('/').next().and_then(|v| v.parse().ok()).unwrap_or(0)
}
