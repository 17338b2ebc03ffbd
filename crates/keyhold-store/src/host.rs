//! The store's port to its platform: what a service hosted on Keyhold needs of it, and
//! nothing more. The store owns this trait; the composition root (`keyhold-server`'s
//! `host::KmsHost`) implements it for the KMS of the process, so that dependencies point from
//! the adapter to both sides and never from the store to the KMS.
//!
//! A call to the service runs as: [`ServiceHost::begin_call`] (authenticate, authorize, charge
//! the quota; a refusal is audited by the host and returned), the service's work, then
//! [`HostCall::finish`] with the outcome's code and message (audited unless the success entry
//! was committed with the change, [`HostCall::success_entry`]).

use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use futures_util::Stream;
use keyhold_api::{Code, CryptoKeyName, Status};
use keyhold_audit::{AuditKind, AuditRecord};
use keyhold_cmek::KmsClient;
use keyhold_crypto::KeyBytes;
use keyhold_iam::{Caller, Permission};

/// What a call is, for its authorization, quota and audit entry.
#[derive(Debug, Clone)]
pub struct CallSpec {
    /// The service's DNS name (`store.keyhold.dev`).
    pub service: &'static str,
    /// The method, as audited (`CreateInstance`).
    pub method: &'static str,
    /// The resource the call is on (and the permission is checked on).
    pub resource: String,
    /// Which audit log the call goes to.
    pub kind: AuditKind,
    /// The permission the caller needs on `resource`.
    pub permission: Permission,
}

/// A failure the platform reports: the status the client is to see (code, message and
/// details, as the platform renders them) and, for server-side failures, what the log gets.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", .status.message)]
pub struct HostError {
    /// What the client sees.
    pub status: Status,
    /// What the server log gets (never sent to the client), for 5xx failures.
    pub cause: Option<String>,
}

impl HostError {
    /// A failure with this status and no cause for the log.
    pub fn new(status: Status) -> Self {
        Self { status, cause: None }
    }

    /// The canonical code.
    pub fn code(&self) -> Code {
        self.status.code
    }
}

/// A call in progress, authorized by [`ServiceHost::begin_call`].
#[async_trait]
pub trait HostCall: Send + Sync {
    /// Notes the key version the call used (for the audit entry).
    fn set_key_version(&self, version: String);
    /// Attaches a warning to the call's audit entry.
    fn warn(&self, warning: String);
    /// The call's success entry, for the service to commit in the same transaction as the
    /// change that makes the call succeed: a failing audit write then leaves no change. Once
    /// handed out, [`HostCall::finish`] records a success no more (a failure still is).
    fn success_entry(&self) -> AuditRecord;
    /// Records the call's outcome: `Code::Ok` for success, else the code and the message the
    /// caller was given. Fails if the entry cannot be written: the service must then not
    /// answer as if the call had succeeded.
    async fn finish(self: Box<Self>, code: Code, message: String) -> Result<(), HostError>;
    /// The call runs on as long-running operation `operation`: records its first entry now
    /// (its outcome, recorded by [`HostCall::finish`] or committed with its change, is the
    /// operation's last). Fails if the entry cannot be written: the operation must then not
    /// start.
    async fn start_operation(&self, operation: String) -> Result<(), HostError>;
    /// The call continues long-running operation `operation` (resumed after a crash): its
    /// outcome is recorded as the operation's last entry; no first entry is written again.
    fn continue_operation(&self, operation: String);
}

/// What may have changed about keys, as the platform announces it (the key guards re-check
/// the keys concerned; notices say only *what* may have changed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyNotice {
    /// A crypto key or one of its versions changed state.
    KeyChanged(CryptoKeyName),
    /// An IAM policy changed on this resource (and so on everything below it).
    PolicyChanged(String),
    /// Anything may have changed (another node changed the shared database).
    AnythingChanged,
    /// Notices were missed (the listener fell behind): anything may have changed.
    Missed,
}

impl KeyNotice {
    /// Whether a listener guarding `key` (a crypto key name) should re-check it.
    pub fn concerns(&self, key: &str) -> bool {
        match self {
            KeyNotice::KeyChanged(k) => k.to_string() == key,
            KeyNotice::PolicyChanged(resource) => keyhold_iam::policy_change_affects(resource, key),
            KeyNotice::AnythingChanged | KeyNotice::Missed => true,
        }
    }
}

/// The platform's key-change notices; the stream ends when the platform shuts down.
pub type KeyNotices = Pin<Box<dyn Stream<Item = KeyNotice> + Send>>;

/// What a service hosted on Keyhold needs of its platform.
#[async_trait]
pub trait ServiceHost: Send + Sync + std::fmt::Debug {
    /// Starts a call: authenticates the caller, checks `spec.permission` on `spec.resource`
    /// and charges the quota. A refusal is audited by the host and returned.
    async fn begin_call<'a>(&'a self, caller: &'a Caller, spec: CallSpec) -> Result<Box<dyn HostCall + 'a>, HostError>;

    /// Checks a new resource of `service` in `project` against the project's CMEK org
    /// policies: `kms_key` is the key it will use (`None`: service-managed encryption).
    async fn check_cmek_org_policy(&self, project: &str, service: &str, kms_key: Option<&str>)
    -> Result<(), HostError>;

    /// Seals a service-managed key with the platform's root key, bound to `context`.
    async fn seal_service_key(&self, key: &KeyBytes, context: &str) -> Result<Vec<u8>, HostError>;

    /// Unseals what [`ServiceHost::seal_service_key`] sealed with the same `context`.
    async fn unseal_service_key(&self, sealed: &[u8], context: &str) -> Result<KeyBytes, HostError>;

    /// A project's number (`projects/NUMBER`).
    async fn project_number(&self, project: &str) -> Result<i64, HostError>;

    /// The email of `service`'s agent in `project` (created on first call), asked as `caller`.
    async fn generate_service_identity(
        &self,
        caller: &Caller,
        project: &str,
        service: &str,
    ) -> Result<String, HostError>;

    /// A client of the platform's KMS acting as `identity` (a service agent), in process.
    fn kms_client(&self, identity: Caller) -> Arc<dyn KmsClient>;

    /// Subscribes to key-change notices.
    fn subscribe(&self) -> KeyNotices;
}
