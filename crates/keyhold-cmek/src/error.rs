//! What can go wrong when a service talks to its KMS, classified by what the service must do.

use keyhold_api::{Code, Status};

/// An answer (or the lack of one) from the KMS.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct KmsClientError {
    /// The `google.rpc.Code` the KMS answered, or `Unavailable` when it could not be reached.
    pub code: Code,
    /// The KMS's message (Cloud KMS messages carry no secrets), or why it could not be reached.
    pub message: String,
    /// The `google.rpc` details of the KMS's answer (`PreconditionFailure`, ...), `@type`
    /// included; empty when it sent none or could not be reached.
    pub details: Vec<serde_json::Value>,
}

/// The `google.rpc.ErrorInfo` reason of [`KmsClientError::tls_configuration`].
pub const TLS_CONFIGURATION_REASON: &str = "TLS_CONFIGURATION";

/// What a failure means for data protected by the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The KMS answered that the key cannot be used: disabled or destroyed version, permission
    /// revoked, key gone. Data must be refused at once ([C5]).
    KeyUnusable,
    /// The KMS could not be reached or did not answer in time: the grace period applies ([C7]).
    Unreachable,
    /// Anything else (a bug on one side or the other, a malformed answer).
    Other,
}

impl KmsClientError {
    /// An error with this code and message.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), details: Vec::new() }
    }

    /// The KMS's answer, details included.
    pub fn from_status(status: Status) -> Self {
        let Status { code, message, details } = status;
        Self { code, message, details }
    }

    /// The KMS could not be reached.
    pub fn unreachable(message: impl Into<String>) -> Self {
        Self::new(Code::Unavailable, message)
    }

    /// A TLS handshake with the KMS failed because of the configuration of one side or the
    /// other (its certificate is not trusted, or it refused ours): `INTERNAL` with a
    /// `google.rpc.ErrorInfo` of reason [`TLS_CONFIGURATION_REASON`], so that it is told apart
    /// from an outage ([`Failure::Other`], not [`Failure::Unreachable`]: creating a resource
    /// fails with the message instead of "unavailable"). A key guard still treats it as it
    /// treats any failure that says nothing about the key: cached keys serve for the grace
    /// period, then the resource is suspended as unreachable. Trying again will not help until
    /// the CA file or the client certificate is fixed.
    pub fn tls_configuration(message: impl Into<String>) -> Self {
        Self::from_status(Status::new(Code::Internal, message).with_error_info(
            TLS_CONFIGURATION_REASON,
            "keyhold.dev",
            &[],
        ))
    }

    /// Whether this is a [`KmsClientError::tls_configuration`] error.
    pub fn is_tls_configuration(&self) -> bool {
        let status = Status { code: self.code, message: String::new(), details: self.details.clone() };
        status.error_info_reason() == Some(TLS_CONFIGURATION_REASON)
    }

    /// What the failure means for the protected data.
    pub fn failure(&self) -> Failure {
        match self.code {
            Code::PermissionDenied
            | Code::Unauthenticated
            | Code::FailedPrecondition
            | Code::NotFound
            | Code::InvalidArgument => Failure::KeyUnusable,
            Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted | Code::Aborted | Code::Cancelled => {
                Failure::Unreachable
            }
            _ => Failure::Other,
        }
    }

    /// The key (version) state the KMS reported, read from the answer's
    /// `google.rpc.PreconditionFailure` detail (a violation of type `KEY_<STATE>`, as Keyhold's
    /// KMS and external key manager send it; never from the message's wording), or the kind of
    /// refusal.
    pub fn observed_key_state(&self) -> Option<String> {
        let status = Status { code: self.code, message: String::new(), details: self.details.clone() };
        if let Some(state) = status.precondition_failure_types().into_iter().find_map(|t| t.strip_prefix("KEY_")) {
            return Some(state.to_string());
        }
        match self.code {
            Code::PermissionDenied => Some("PERMISSION_DENIED".into()),
            Code::NotFound => Some("NOT_FOUND".into()),
            Code::Unauthenticated => Some("UNAUTHENTICATED".into()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The server's answer to a use of a disabled version, as `keyhold-kms` renders it.
    fn refused(state: &str, message: &str) -> KmsClientError {
        let version = "projects/p/locations/l/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1";
        KmsClientError::from_status(Status::new(Code::FailedPrecondition, message).with_precondition_failure(
            &format!("KEY_{state}"),
            version,
            "",
        ))
    }

    #[test]
    fn classification() {
        let e = refused(
            "DISABLED",
            "projects/p/locations/l/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1 is not enabled, current state is: DISABLED.",
        );
        assert_eq!(e.failure(), Failure::KeyUnusable);
        assert_eq!(e.observed_key_state().as_deref(), Some("DISABLED"));
        let e =
            KmsClientError::new(Code::PermissionDenied, "Permission 'x' denied on resource 'y' (or it may not exist).");
        assert_eq!(e.failure(), Failure::KeyUnusable);
        assert_eq!(e.observed_key_state().as_deref(), Some("PERMISSION_DENIED"));
        let e = KmsClientError::unreachable("connection refused");
        assert_eq!(e.failure(), Failure::Unreachable);
        assert_eq!(e.observed_key_state(), None);
        assert_eq!(KmsClientError::new(Code::Internal, "x").failure(), Failure::Other);
        // A certificate the client does not trust is a configuration error, not an outage.
        let tls = KmsClientError::tls_configuration("the KMS's TLS certificate is not trusted");
        assert_eq!(tls.failure(), Failure::Other);
        assert!(tls.is_tls_configuration() && !KmsClientError::unreachable("x").is_tls_configuration());
    }

    /// The state comes from the typed detail, never from the message (review 3.4): a message
    /// in other words still gives it, and the old wording without the detail gives none.
    #[test]
    fn key_state_is_read_from_the_details_not_the_message() {
        let e = refused("DESTROY_SCHEDULED", "Die Schlüsselversion ist nicht aktiviert.");
        assert_eq!(e.observed_key_state().as_deref(), Some("DESTROY_SCHEDULED"));
        let e = refused("DISABLED", "");
        assert_eq!(e.observed_key_state().as_deref(), Some("DISABLED"));
        let e = KmsClientError::new(Code::FailedPrecondition, "v1 is not enabled, current state is: DISABLED.");
        assert_eq!(e.observed_key_state(), None);
        // Other precondition failures (a store's own KMS_KEY_ISSUE) are not key states.
        let other = Status::new(Code::FailedPrecondition, "x").with_precondition_failure("KMS_KEY_ISSUE", "k", "");
        assert_eq!(KmsClientError::from_status(other).observed_key_state(), None);
    }
}
