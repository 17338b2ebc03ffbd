//! [`EkmClient`] as the KMS's [`ExternalKeyManager`]: how the KMS domain reaches external key
//! managers for `EXTERNAL` key versions, and how the manager's answers become KMS errors.

use async_trait::async_trait;
use keyhold_api::Code;
use keyhold_crypto::Secret;
use keyhold_kms::{BackendError, ExternalKeyManager, ExternalRequest};

use crate::client::{EkmClient, EkmError, ExternalKeyUri, RequestContext};

fn context(req: &ExternalRequest, operation: &str) -> RequestContext {
    RequestContext {
        key_version_name: req.key_version.clone(),
        caller_principal: req.caller.clone(),
        reason: req.reason,
        request_id: req.request_id.clone(),
        operation: operation.to_string(),
        via_service: String::new(),
    }
}

/// The KMS's view of a manager's failure. A refusal by the manager (its policy, a disabled
/// key, a rejected token) is `Refused`: the caller gets `FAILED_PRECONDITION` and CMEK services
/// suspend as for a disabled key. Anything that may pass by itself is `Unavailable` (503, and
/// the CMEK grace period). A blob the manager cannot unwrap is a failed decryption.
fn backend_error(e: EkmError, unwrapping: bool) -> BackendError {
    match e {
        EkmError::Refused { code: Code::NotFound, message, .. } => BackendError::KeyNotFound(message),
        EkmError::Refused { code: Code::InvalidArgument, .. } if unwrapping => BackendError::DecryptFailed,
        EkmError::Refused { code: Code::InvalidArgument, message, .. } => BackendError::InvalidInput(message),
        EkmError::Refused { message, key_state, .. } => BackendError::Refused { detail: message, key_state },
        EkmError::InvalidUri { .. } => BackendError::InvalidInput(e.to_string()),
        // A TLS configuration error (the manager's certificate not trusted, ours refused) is
        // answered as an unreachable manager, with the message naming what to configure.
        other @ EkmError::Tls { .. } => BackendError::Unavailable(other.to_string()),
        other => BackendError::Unavailable(other.to_string()),
    }
}

#[async_trait]
impl ExternalKeyManager for EkmClient {
    fn check_uri(&self, uri: &str) -> Result<(), String> {
        ExternalKeyUri::parse(uri).map(|_| ()).map_err(|e| e.to_string())
    }

    async fn wrap(
        &self,
        uri: &str,
        plaintext: &[u8],
        aad: &[u8],
        req: &ExternalRequest,
    ) -> Result<Vec<u8>, BackendError> {
        EkmClient::wrap(self, uri, plaintext, aad, &context(req, "Encrypt")).await.map_err(|e| backend_error(e, false))
    }

    async fn unwrap(&self, uri: &str, blob: &[u8], aad: &[u8], req: &ExternalRequest) -> Result<Secret, BackendError> {
        EkmClient::unwrap(self, uri, blob, aad, &context(req, "Decrypt"))
            .await
            .map(|u| u.plaintext)
            .map_err(|e| backend_error(e, true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manager_answers_map_to_kms_outcomes() {
        let refused = |code| EkmError::Refused { code, message: "no".into(), key_state: None };
        assert_eq!(
            backend_error(refused(Code::PermissionDenied), false),
            BackendError::Refused { detail: "no".into(), key_state: None }
        );
        assert_eq!(
            backend_error(refused(Code::FailedPrecondition), true),
            BackendError::Refused { detail: "no".into(), key_state: None }
        );
        assert_eq!(backend_error(refused(Code::NotFound), true), BackendError::KeyNotFound("no".into()));
        assert_eq!(backend_error(refused(Code::InvalidArgument), true), BackendError::DecryptFailed);
        assert!(matches!(backend_error(refused(Code::InvalidArgument), false), BackendError::InvalidInput(_)));
        let down = EkmError::Unavailable { detail: "timed out".into() };
        assert!(matches!(backend_error(down, true), BackendError::Unavailable(_)));
    }
}
