//! What can go wrong when a service talks to its KMS, classified by what the service must do.

use keyhold_api::Code;

/// An answer (or the lack of one) from the KMS.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct KmsClientError {
    /// The `google.rpc.Code` the KMS answered, or `Unavailable` when it could not be reached.
    pub code: Code,
    /// The KMS's message (Cloud KMS messages carry no secrets), or why it could not be reached.
    pub message: String,
}

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
        Self { code, message: message.into() }
    }

    /// The KMS could not be reached.
    pub fn unreachable(message: impl Into<String>) -> Self {
        Self::new(Code::Unavailable, message)
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

    /// The key (version) state the KMS reported, read from Cloud KMS's wording
    /// (`... is not enabled, current state is: DISABLED.`), or the kind of refusal.
    pub fn observed_key_state(&self) -> Option<String> {
        if let Some(rest) = self.message.split("current state is: ").nth(1) {
            let state: String = rest.chars().take_while(|c| c.is_ascii_uppercase() || *c == '_').collect();
            if !state.is_empty() {
                return Some(state);
            }
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

    #[test]
    fn classification() {
        let e = KmsClientError::new(
            Code::FailedPrecondition,
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
    }
}
