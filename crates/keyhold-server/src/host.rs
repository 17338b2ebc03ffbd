//! The composition root's adapters: the KMS of this process as the platform of the services
//! hosted on it ([`KmsHost`], the store's [`ServiceHost`] port), and as a `keyhold-cmek`
//! [`KmsClient`] in process ([`LocalKmsClient`]). The services and the CMEK library depend on
//! their ports only; this module depends on both sides.

use std::sync::Arc;

use async_trait::async_trait;
use keyhold_api::Code;
use keyhold_audit::AuditRecord;
use keyhold_cmek::KmsClient;
use keyhold_crypto::KeyBytes;
use keyhold_kms::Caller;
use keyhold_kms::events::KmsEvent;
use keyhold_kms::{Kms, KmsError, ServiceCall};
use keyhold_store::host::{CallSpec, HostCall, HostError, KeyNotice, KeyNotices, ServiceHost};

mod local_client;

pub use local_client::LocalKmsClient;

/// The KMS of this process as a [`ServiceHost`].
#[derive(Debug, Clone)]
pub struct KmsHost(pub Arc<Kms>);

impl KmsHost {
    /// The host backed by `kms`.
    pub fn new(kms: Arc<Kms>) -> Self {
        Self(kms)
    }

    /// The host backed by `kms`, as the store takes it.
    pub fn shared(kms: Arc<Kms>) -> Arc<dyn ServiceHost> {
        Arc::new(Self(kms))
    }
}

/// A KMS error as the port reports it: the status the KMS renders, and the log's cause for
/// server-side failures (as [`crate::error::ApiError`] logs a KMS error).
pub(crate) fn host_error(e: KmsError) -> HostError {
    HostError { cause: crate::error::log_cause(&e), status: e.to_status() }
}

/// A service call in the KMS.
struct KmsCall<'a> {
    kms: &'a Kms,
    call: ServiceCall<'a>,
}

#[async_trait]
impl HostCall for KmsCall<'_> {
    fn set_key_version(&self, version: String) {
        self.call.set_key_version(version);
    }

    fn warn(&self, warning: String) {
        self.call.warn(warning);
    }

    fn success_entry(&self) -> AuditRecord {
        self.call.success_entry()
    }

    async fn finish(self: Box<Self>, code: Code, message: String) -> Result<(), HostError> {
        let KmsCall { kms, call } = *self;
        kms.finish_service_call(call, code, message).await.map_err(host_error)
    }

    async fn start_operation(&self, operation: String) -> Result<(), HostError> {
        self.kms.record_service_call_start(&self.call, operation).await.map_err(host_error)
    }

    fn continue_operation(&self, operation: String) {
        self.call.set_operation(operation);
    }
}

#[async_trait]
impl ServiceHost for KmsHost {
    async fn begin_call<'a>(&'a self, caller: &'a Caller, spec: CallSpec) -> Result<Box<dyn HostCall + 'a>, HostError> {
        let CallSpec { service, method, resource, kind, permission } = spec;
        let call =
            self.0.begin_service_call(caller, service, method, resource, kind, permission).await.map_err(host_error)?;
        Ok(Box::new(KmsCall { kms: &self.0, call }))
    }

    async fn check_cmek_org_policy(
        &self,
        project: &str,
        service: &str,
        kms_key: Option<&str>,
    ) -> Result<(), HostError> {
        self.0.check_cmek_org_policies(project, service, kms_key).await.map_err(host_error)
    }

    async fn seal_service_key(&self, key: &KeyBytes, context: &str) -> Result<Vec<u8>, HostError> {
        self.0.seal_service_key(key, context).await.map_err(host_error)
    }

    async fn unseal_service_key(&self, sealed: &[u8], context: &str) -> Result<KeyBytes, HostError> {
        self.0.unseal_service_key(sealed, context).await.map_err(host_error)
    }

    async fn project_number(&self, project: &str) -> Result<i64, HostError> {
        self.0.project_number(project).await.map_err(host_error)
    }

    async fn generate_service_identity(
        &self,
        caller: &Caller,
        project: &str,
        service: &str,
    ) -> Result<String, HostError> {
        Ok(self.0.generate_service_identity(caller, project, service).await.map_err(host_error)?.email)
    }

    fn kms_client(&self, identity: Caller) -> Arc<dyn KmsClient> {
        Arc::new(LocalKmsClient::new(self.0.clone(), identity))
    }

    fn subscribe(&self) -> KeyNotices {
        use tokio::sync::broadcast::error::RecvError;
        Box::pin(futures_util::stream::unfold(self.0.subscribe(), |mut events| async move {
            let notice = match events.recv().await {
                Ok(KmsEvent::KeyChanged(key)) => KeyNotice::KeyChanged(key),
                Ok(KmsEvent::PolicyChanged(resource)) => KeyNotice::PolicyChanged(resource),
                Ok(KmsEvent::StoreChanged) => KeyNotice::AnythingChanged,
                Err(RecvError::Lagged(_)) => KeyNotice::Missed,
                Err(RecvError::Closed) => return None,
            };
            Some((notice, events))
        }))
    }
}
