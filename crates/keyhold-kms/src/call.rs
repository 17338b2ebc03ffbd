//! The envelope of every call: who is calling, its authorization (IAM, then the project's
//! quota) and its one audit entry. [`Gate::run`] is the one combinator every method of the
//! [`crate::Kms`] façade goes through: check, run the body, record the outcome.
//!
//! The gate is made of parts that never see the façade: the [`Authorizer`] (IAM policies and
//! projects), the [`Quotas`] and the [`AuditWriter`].

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use keyhold_iam::{Permission, Principal};

use std::sync::Arc;

use crate::audit::{AccessDecision, AuditKind, AuditOperation, AuditRecord, AuditWriter};
use crate::authz::Authorizer;
use crate::clock::Clock;
use crate::error::KmsError;
use crate::quota::{KMS_SERVICE, QuotaMetric, Quotas};

pub use keyhold_iam::Caller;

/// What a method is, for its envelope: the service and method its audit entry names, and
/// which audit log stream it goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Op {
    pub(crate) service: &'static str,
    pub(crate) method: &'static str,
    pub(crate) kind: AuditKind,
}

impl Op {
    /// A Cloud KMS method that changes something (Admin Activity log).
    pub(crate) const fn kms_write(method: &'static str) -> Self {
        Self { service: KMS_SERVICE, method, kind: AuditKind::Activity }
    }
    /// A Cloud KMS method that reads or uses a key (Data Access log).
    pub(crate) const fn kms_read(method: &'static str) -> Self {
        Self { service: KMS_SERVICE, method, kind: AuditKind::DataAccess }
    }
    /// A method of another service the KMS hosts (Resource Manager, IAM, Logging, ...).
    pub(crate) const fn of(service: &'static str, method: &'static str, kind: AuditKind) -> Self {
        Self { service, method, kind }
    }
}

/// What [`Gate::run`] checks before the body runs.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Check<'r> {
    /// The caller must hold the permission on the resource (and its ancestors' policies).
    Permission(Permission, &'r str),
    /// The caller must be authenticated; the body decides the rest.
    Authenticated,
    /// The body checks (its order of checks is part of the method's contract, for example a
    /// name validated before the permission is looked up).
    InBody,
}

/// One call in progress: builds its audit entry and makes sure exactly one outcome is recorded.
#[derive(Debug)]
pub(crate) struct Call<'a> {
    pub(crate) caller: &'a Caller,
    service: &'static str,
    method: &'static str,
    resource: String,
    kind: AuditKind,
    permission: Mutex<Option<(Permission, bool)>>,
    key_version: Mutex<Option<String>>,
    access_decision: Mutex<Option<AccessDecision>>,
    warning: Mutex<Option<String>>,
    /// The long-running operation the call runs as (a store copy), once it has one.
    operation: Mutex<Option<String>>,
    committed: AtomicBool,
    /// The project's in-flight slot (quotas), held until the call is recorded.
    in_flight: Mutex<Option<tokio::sync::OwnedSemaphorePermit>>,
}

impl<'a> Call<'a> {
    pub(crate) fn new(caller: &'a Caller, op: Op, resource: String) -> Self {
        Self {
            caller,
            service: op.service,
            method: op.method,
            resource,
            kind: op.kind,
            permission: Mutex::new(None),
            key_version: Mutex::new(None),
            access_decision: Mutex::new(None),
            warning: Mutex::new(None),
            operation: Mutex::new(None),
            committed: AtomicBool::new(false),
            in_flight: Mutex::new(None),
        }
    }

    /// Notes the permission checked and whether it was granted.
    pub(crate) fn set_permission(&self, p: Permission, granted: bool) {
        *self.permission.lock().unwrap_or_else(|e| e.into_inner()) = Some((p, granted));
    }

    /// Notes the key version a cryptographic call used.
    pub(crate) fn set_key_version(&self, v: String) {
        *self.key_version.lock().unwrap_or_else(|e| e.into_inner()) = Some(v);
    }

    /// Notes the Key Access Justification decision of a cryptographic call.
    pub(crate) fn set_access_decision(&self, d: AccessDecision) {
        *self.access_decision.lock().unwrap_or_else(|e| e.into_inner()) = Some(d);
    }

    fn record(&self, outcome: Result<(), &KmsError>) -> AuditRecord {
        let (code, message) = match outcome {
            Ok(()) => (0, String::new()),
            Err(e) => (e.code().number(), e.to_status().message),
        };
        self.record_status(code, message)
    }

    fn record_status(&self, code: i32, message: String) -> AuditRecord {
        let permission = *self.permission.lock().unwrap_or_else(|e| e.into_inner());
        AuditRecord {
            time: keyhold_api::wire::Timestamp::now(),
            project: keyhold_iam::project_of(&self.resource).unwrap_or_default().to_string(),
            principal: self.caller.principal_str().to_string(),
            service: self.service.to_string(),
            method: self.method.to_string(),
            resource: self.resource.clone(),
            kind: self.kind,
            permission: permission.map(|(p, _)| p.as_str().to_string()),
            granted: permission.is_some_and(|(_, g)| g),
            key_version: self.key_version.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            justification: self.caller.justification.clone(),
            request_id: self.caller.request_id.clone(),
            code,
            message,
            anonymous: self.caller.anonymous,
            access_justification: self.access_decision.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            warning: self.warning.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            operation: self.operation.lock().unwrap_or_else(|e| e.into_inner()).clone().map(|id| AuditOperation {
                id,
                producer: self.service.to_string(),
                first: false,
                last: true,
            }),
        }
    }

    /// The entry to commit together with the call's change. Once the change commits, the call
    /// is recorded; if the transaction fails, [`Gate::finish`] records the failure instead.
    /// Undoes [`Call::success_entry`] when the transaction that carried the entry was rolled
    /// back but the call goes on to succeed another way.
    pub(crate) fn entry_rolled_back(&self) {
        self.committed.store(false, Ordering::Release);
    }

    pub(crate) fn success_entry(&self) -> AuditRecord {
        self.committed.store(true, Ordering::Release);
        self.record(Ok(()))
    }
}

/// The envelope of every call: authorization, quotas and the audit log.
#[derive(Debug)]
pub(crate) struct Gate {
    pub(crate) authz: Arc<Authorizer>,
    pub(crate) quotas: Quotas,
    pub(crate) audit: AuditWriter,
    clock: Arc<dyn Clock>,
}

impl Gate {
    pub(crate) fn new(authz: Arc<Authorizer>, quotas: Quotas, audit: AuditWriter, clock: Arc<dyn Clock>) -> Self {
        Self { authz, quotas, audit, clock }
    }

    /// The one envelope: starts the call's audit entry, makes `check`, runs `body`, and
    /// records the outcome (unless the body committed its success entry with its change).
    /// Every public method of the façade is one `run`.
    pub(crate) async fn run<T>(
        &self,
        caller: &Caller,
        op: Op,
        resource: String,
        check: Check<'_>,
        body: impl AsyncFnOnce(&Call<'_>) -> Result<T, KmsError>,
    ) -> Result<T, KmsError> {
        let call = Call::new(caller, op, resource);
        let result = async {
            match check {
                Check::Permission(permission, on) => self.authorize(&call, permission, on).await?,
                Check::Authenticated => {
                    self.authenticated(&call)?;
                }
                Check::InBody => {}
            }
            body(&call).await
        }
        .await;
        self.finish(call, result).await
    }

    /// Records the call's outcome unless its success entry was committed with its change, and
    /// passes the result on. If the entry cannot be written the call fails: an unaudited
    /// answer is never given.
    pub(crate) async fn finish<T>(&self, call: Call<'_>, result: Result<T, KmsError>) -> Result<T, KmsError> {
        let committed = call.committed.load(Ordering::Acquire) && result.is_ok();
        if !committed {
            self.write(call.record(result.as_ref().map(|_| ()))).await?;
        }
        result
    }

    /// Checks that the caller holds `permission` on `resource` (through the policies of the
    /// resource and its ancestors), before anything is looked up, so that a refusal reveals
    /// nothing about whether the resource exists.
    pub(crate) async fn authorize(
        &self,
        call: &Call<'_>,
        permission: Permission,
        resource: &str,
    ) -> Result<(), KmsError> {
        let granted = match &call.caller.principal {
            None => return Err(KmsError::Unauthenticated { missing: call.caller.credential_missing }),
            Some(p) => self.authz.has_permission(p, call.caller.anonymous, permission, resource).await?,
        };
        let first_check = call.permission.lock().unwrap_or_else(|e| e.into_inner()).is_none();
        call.set_permission(permission, granted);
        if !granted {
            return Err(KmsError::PermissionDenied { permission, resource: resource.to_string() });
        }
        if let Some(project) = keyhold_iam::project_of(resource) {
            self.authz.ensure_project(project).await?;
            // Quotas (hardening 15): once per call, only after the caller is authenticated and
            // allowed (so nobody spends another project's quota, and only existing projects
            // are counted); a refusal is audited like any other outcome.
            if first_check {
                let slot = self.quotas.enter_project(call.caller, call.service, project).await;
                *call.in_flight.lock().unwrap_or_else(|e| e.into_inner()) = slot;
                self.charge_quota(call, project).await?;
            }
        }
        Ok(())
    }

    /// Counts an authorized call of `project` against its quota, or refuses it with
    /// `RESOURCE_EXHAUSTED` (which the call's audit entry then records).
    async fn charge_quota(&self, call: &Call<'_>, project: &str) -> Result<(), KmsError> {
        if !self.quotas.counts(call.caller) {
            return Ok(());
        }
        let metric = QuotaMetric::of_call(call.service, call.method, call.kind);
        match self.quotas.take(project, call.service, metric, self.clock.now().unix_nanos()) {
            Ok(()) => Ok(()),
            Err(exhausted) => Err(KmsError::QuotaExceeded {
                service: call.service.to_string(),
                project_number: self.authz.project_record(project).await?.project_number,
                exhausted,
            }),
        }
    }

    /// Fails unless the caller authenticated (for calls that need no permission).
    pub(crate) fn authenticated<'c>(&self, call: &Call<'c>) -> Result<&'c Principal, KmsError> {
        call.caller.principal.as_ref().ok_or(KmsError::Unauthenticated { missing: call.caller.credential_missing })
    }

    /// Starts a call to `service`: checks that the caller holds `permission` on `resource`.
    /// A refusal is recorded at once and returned; on success the caller must hand the call
    /// to [`Gate::finish_service_call`] with its outcome.
    pub(crate) async fn begin_service_call<'a>(
        &self,
        caller: &'a Caller,
        op: Op,
        resource: String,
        permission: Permission,
    ) -> Result<ServiceCall<'a>, KmsError> {
        let call = Call::new(caller, op, resource.clone());
        match self.authorize(&call, permission, &resource).await {
            Ok(()) => Ok(ServiceCall(call)),
            Err(e) => self.finish(call, Err(e)).await,
        }
    }

    /// Records the outcome of a service call (see [`crate::Kms::finish_service_call`]).
    pub(crate) async fn finish_service_call(
        &self,
        call: ServiceCall<'_>,
        code: keyhold_api::Code,
        message: String,
    ) -> Result<(), KmsError> {
        if code == keyhold_api::Code::Ok && call.0.committed.load(Ordering::Acquire) {
            return Ok(());
        }
        self.write(call.0.record_status(code.number(), message)).await
    }

    /// Records that a service call now runs on as long-running operation `operation`: its
    /// first entry, written before the operation is answered. The call's last entry (its
    /// outcome) follows when it ends, under the same operation.
    pub(crate) async fn record_service_call_start(
        &self,
        call: &ServiceCall<'_>,
        operation: String,
    ) -> Result<(), KmsError> {
        *call.0.operation.lock().unwrap_or_else(|e| e.into_inner()) = Some(operation);
        let mut entry = call.0.record_status(0, String::new());
        if let Some(op) = &mut entry.operation {
            op.first = true;
            op.last = false;
        }
        self.write(entry).await
    }

    /// Writes `entry`; if it cannot be written the call fails: an unaudited answer is never
    /// given.
    async fn write(&self, entry: AuditRecord) -> Result<(), KmsError> {
        self.audit.record(entry).await.map_err(|e| {
            tracing::error!(error = %e, "cannot write the audit log; refusing the request");
            KmsError::Unavailable(e)
        })
    }
}

/// A call to another service built on the KMS's identities, IAM and audit log (the store):
/// authorized by [`crate::Kms::begin_service_call`], recorded by [`crate::Kms::finish_service_call`].
#[derive(Debug)]
pub struct ServiceCall<'a>(Call<'a>);

impl ServiceCall<'_> {
    /// Notes the key version the call used (for the audit entry).
    pub fn set_key_version(&self, version: String) {
        self.0.set_key_version(version);
    }

    /// Attaches a warning to the call's audit entry (which is then logged at `WARNING`).
    pub fn warn(&self, warning: String) {
        *self.0.warning.lock().unwrap_or_else(|e| e.into_inner()) = Some(warning);
    }

    /// The call's success entry, for the service to commit in the same transaction as the
    /// change that makes the call succeed (as the KMS's own changes do): a failing audit write
    /// then leaves no change. Once handed out, [`crate::Kms::finish_service_call`] records a success
    /// no more (a failure still is).
    pub fn success_entry(&self) -> AuditRecord {
        self.0.success_entry()
    }

    /// Marks the call as running as long-running operation `operation` without a first entry
    /// (an operation resumed after a crash: its first entry was written when it started).
    pub fn set_operation(&self, operation: String) {
        *self.0.operation.lock().unwrap_or_else(|e| e.into_inner()) = Some(operation);
    }
}
