//! Errors of the KMS domain, each mapped to a `google.rpc.Code` in exactly one place
//! ([`KmsError::code`]) and rendered with Cloud KMS's own messages where Cloud KMS has one.

use keyhold_api::resources::{AccessReason, Algorithm, Purpose, VersionState};
use keyhold_api::{Code, CryptoKeyName, CryptoKeyVersionName, ImportJobName, KeyRingName, NameError, Status};

use crate::backend::ports::BackendError;
use crate::repo::RepoError;

/// What can go wrong in a KMS call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KmsError {
    /// A request field is invalid; the message says which and why.
    #[error("{0}")]
    InvalidArgument(String),
    /// A resource name or ID is invalid.
    #[error(transparent)]
    InvalidName(#[from] NameError),
    /// The location is not one this server offers.
    #[error("Location {location} is not supported by this server. Supported locations: {supported}.")]
    UnsupportedLocation {
        /// The full location name.
        location: String,
        /// The configured list, comma-separated.
        supported: String,
    },
    /// No such key ring.
    #[error("KeyRing {0} not found.")]
    KeyRingNotFound(KeyRingName),
    /// No such crypto key.
    #[error("CryptoKey {0} not found.")]
    CryptoKeyNotFound(CryptoKeyName),
    /// No such crypto key version.
    #[error("CryptoKeyVersion {0} not found.")]
    VersionNotFound(CryptoKeyVersionName),
    /// No such import job.
    #[error("ImportJob {0} not found.")]
    ImportJobNotFound(ImportJobName),
    /// The import job ID is taken.
    #[error("ImportJob {0} already exists.")]
    ImportJobExists(ImportJobName),
    /// The key ring ID is taken.
    #[error("KeyRing {0} already exists.")]
    KeyRingExists(KeyRingName),
    /// The crypto key ID is taken.
    #[error("CryptoKey {0} already exists.")]
    CryptoKeyExists(CryptoKeyName),
    /// The crypto key ID was a deleted key's: its name is never used again.
    #[error(
        "CryptoKey {key} was deleted, and the names of deleted CryptoKeys cannot be used again (RetiredResource {retired})."
    )]
    CryptoKeyRetired {
        /// The name asked for.
        key: CryptoKeyName,
        /// The retired resource the deletion left.
        retired: String,
    },
    /// The version exists but is not `ENABLED` ([K7]).
    #[error("{version} is not enabled, current state is: {state}.")]
    VersionNotEnabled {
        /// The version.
        version: CryptoKeyVersionName,
        /// Its state.
        state: VersionState,
    },
    /// The key has no primary version to encrypt with.
    #[error(
        "CryptoKey {0} has no primary CryptoKeyVersion; create a version or set one as primary with :updatePrimaryVersion."
    )]
    NoPrimaryVersion(CryptoKeyName),
    /// The operation needs another key purpose.
    #[error("CryptoKey {key} has purpose {purpose}; this operation requires purpose {required}.")]
    WrongPurpose {
        /// The key.
        key: CryptoKeyName,
        /// Its purpose.
        purpose: Purpose,
        /// The purpose required.
        required: Purpose,
    },
    /// The version's algorithm is not one the operation takes (a signing key asked to
    /// decrypt, a symmetric key asked for its public key).
    #[error("{version} has algorithm {algorithm}, which may not be used for {operation}.")]
    WrongAlgorithm {
        /// The version.
        version: CryptoKeyVersionName,
        /// Its algorithm.
        algorithm: Algorithm,
        /// What was attempted ("signing", "asymmetric decryption", ...).
        operation: &'static str,
    },
    /// RSA-OAEP or raw AES-GCM decryption failed (wrong key, wrong length, tampered): Cloud
    /// KMS's words.
    #[error("Decryption failed.")]
    DecryptionFailed,
    /// A state change the state machine does not allow.
    #[error("CryptoKeyVersion {version} is in state {state}; {action} requires {allowed}.")]
    IllegalTransition {
        /// The version.
        version: CryptoKeyVersionName,
        /// Its state.
        state: VersionState,
        /// What was attempted.
        action: &'static str,
        /// The states it is allowed from.
        allowed: &'static str,
    },
    /// Decryption failed: wrong key, wrong AAD, tampered or foreign ciphertext. One message for
    /// all, Cloud KMS's, so the caller learns nothing about which.
    #[error("Decryption failed: verify that 'name' refers to the correct CryptoKey.")]
    DecryptFailed,
    /// A client-supplied CRC32C did not match the data it covers.
    #[error("The checksum in field {field}_crc32c did not match the data in field {field}.")]
    ChecksumMismatch {
        /// The field (`plaintext`, `ciphertext`, `additional_authenticated_data`).
        field: &'static str,
    },
    /// An input exceeds Cloud KMS's size limits.
    #[error("The {field} is {actual} bytes; the maximum is {max} bytes.")]
    TooLarge {
        /// The field.
        field: &'static str,
        /// The limit.
        max: usize,
        /// The size given.
        actual: usize,
    },
    /// No credentials, or credentials that are not (or no longer) valid.
    #[error(
        "Request {} Expected OAuth 2 access token, login cookie or other valid authentication credential: send 'Authorization: Bearer TOKEN' with a Keyhold token (see docs/operations.md).",
        if *.missing { "is missing required authentication credential." } else { "had invalid authentication credentials." }
    )]
    Unauthenticated {
        /// No credential at all (rather than an invalid one).
        missing: bool,
    },
    /// The caller lacks a permission on a resource (or the resource does not exist and the
    /// caller may not know that).
    #[error("Permission '{permission}' denied on resource '{resource}' (or it may not exist).")]
    PermissionDenied {
        /// The permission checked.
        permission: keyhold_iam::Permission,
        /// The resource it was checked on.
        resource: String,
    },
    /// `:setIamPolicy` with an etag that is no longer current ([K8]).
    #[error(
        "There were concurrent policy changes. Please retry the whole read-modify-write with exponential backoff. The request's ETag '{given}' did not match the current policy's ETag '{current}'."
    )]
    StaleEtag {
        /// The etag sent.
        given: String,
        /// The current etag.
        current: String,
    },
    /// A policy `:setIamPolicy` refuses.
    #[error(transparent)]
    InvalidPolicy(#[from] keyhold_iam::PolicyError),
    /// A precondition other than a key's state is not met; the message says which.
    #[error("{0}")]
    FailedPrecondition(String),
    /// Some other resource does not exist; the message names it.
    #[error("{0}")]
    NotFound(String),
    /// No such bearer token.
    #[error("Token {0} not found.")]
    TokenNotFound(String),
    /// A part of Cloud KMS this server does not implement (yet).
    #[error("{0}")]
    Unimplemented(String),
    /// Optimistic concurrency kept losing; the caller may retry.
    #[error("The resource {0} was modified concurrently too many times; retry the request.")]
    Contention(String),
    /// The database (or another dependency) is unreachable: retryable.
    #[error("The service is temporarily unavailable; retry the request.")]
    Unavailable(#[source] RepoError),
    /// The HSM or external key manager holding the key cannot be reached or is failing.
    #[error("{what} is not available: {detail}. Retry the request.")]
    KeyBackendUnavailable {
        /// "The HSM", "The external key manager at URI".
        what: String,
        /// What failed (never key material).
        detail: String,
    },
    /// The external key manager refused to wrap or unwrap.
    #[error("The external key manager refused the request for {version}: {detail}")]
    ExternalKeyRefused {
        /// The key version.
        version: String,
        /// The manager's words.
        detail: String,
        /// The manager's key state, when that is why it refused: answered as the
        /// `KEY_<STATE>` precondition violation, like a version that is not enabled.
        key_state: Option<VersionState>,
    },
    /// The request's access reason is not allowed by the key's `keyAccessJustificationsPolicy`.
    #[error(
        "The access reason {reason} is not allowed by the keyAccessJustificationsPolicy of CryptoKey {key} (allowed: {allowed})."
    )]
    JustificationDenied {
        /// The key's resource name.
        key: String,
        /// The reason the request carried.
        reason: AccessReason,
        /// The policy's reasons, comma-separated ("none" when empty).
        allowed: String,
    },
    /// A per-project quota ran out (hardening issue 15): Cloud KMS's words, so that clients
    /// recognize it and back off.
    #[error(
        "Quota exceeded for quota metric '{metric}' and limit '{metric} per minute' of service '{service}' for consumer 'project_number:{project_number}'.",
        metric = exhausted.metric.display_name()
    )]
    QuotaExceeded {
        /// The service whose quota it is (`cloudkms.googleapis.com`, `store.keyhold.dev`, ...).
        service: String,
        /// The number of the project charged.
        project_number: i64,
        /// Which quota, its limit, and when to retry.
        exhausted: crate::quota::Exhausted,
    },
    /// Stored state cannot be read (corruption, or a root key that does not fit the data).
    #[error("Internal error.")]
    Internal(String),
}

impl KmsError {
    /// The canonical code. Exhaustive on purpose: a new variant does not compile until someone
    /// decides what clients see.
    pub fn code(&self) -> Code {
        match self {
            KmsError::InvalidArgument(_)
            | KmsError::InvalidName(_)
            | KmsError::DecryptFailed
            | KmsError::DecryptionFailed
            | KmsError::ChecksumMismatch { .. }
            | KmsError::TooLarge { .. } => Code::InvalidArgument,
            KmsError::UnsupportedLocation { .. } => Code::InvalidArgument,
            KmsError::KeyRingNotFound(_)
            | KmsError::CryptoKeyNotFound(_)
            | KmsError::VersionNotFound(_)
            | KmsError::ImportJobNotFound(_) => Code::NotFound,
            KmsError::KeyRingExists(_)
            | KmsError::CryptoKeyExists(_)
            | KmsError::CryptoKeyRetired { .. }
            | KmsError::ImportJobExists(_) => Code::AlreadyExists,
            KmsError::VersionNotEnabled { .. }
            | KmsError::NoPrimaryVersion(_)
            | KmsError::WrongPurpose { .. }
            | KmsError::WrongAlgorithm { .. }
            | KmsError::IllegalTransition { .. } => Code::FailedPrecondition,
            KmsError::InvalidPolicy(_) => Code::InvalidArgument,
            KmsError::TokenNotFound(_) | KmsError::NotFound(_) => Code::NotFound,
            KmsError::FailedPrecondition(_) => Code::FailedPrecondition,
            KmsError::Unauthenticated { .. } => Code::Unauthenticated,
            KmsError::PermissionDenied { .. } => Code::PermissionDenied,
            KmsError::StaleEtag { .. } => Code::Aborted,
            KmsError::Unimplemented(_) => Code::Unimplemented,
            KmsError::Contention(_) => Code::Aborted,
            KmsError::Unavailable(_) | KmsError::KeyBackendUnavailable { .. } => Code::Unavailable,
            // The caller is authorized (IAM passed) but a policy on the key, or the external
            // manager's own, precludes the use: a precondition, not an IAM denial. CMEK
            // services treat it like a disabled key (KMS_KEY_ISSUE).
            KmsError::ExternalKeyRefused { .. } | KmsError::JustificationDenied { .. } => Code::FailedPrecondition,
            KmsError::QuotaExceeded { .. } => Code::ResourceExhausted,
            KmsError::Internal(_) => Code::Internal,
        }
    }

    /// The `google.rpc.Status` clients see. Internal details stay in the log, not the body.
    pub fn to_status(&self) -> Status {
        let status = Status::new(self.code(), self.to_string());
        match self {
            KmsError::VersionNotEnabled { version, state } => {
                status.with_precondition_failure(&format!("KEY_{}", state.as_str()), &version.to_string(), "")
            }
            KmsError::ExternalKeyRefused { version, key_state: Some(state), .. } => {
                status.with_precondition_failure(&format!("KEY_{}", state.as_str()), version, "")
            }
            KmsError::QuotaExceeded { service, project_number, exhausted } => {
                // The detail Google's quota errors carry (hashicorp/vault-plugin-secrets-gcpkms#30).
                let m = exhausted.metric;
                status
                    .with_error_info(
                        "RATE_LIMIT_EXCEEDED",
                        "googleapis.com",
                        &[
                            ("consumer", format!("projects/{project_number}")),
                            ("quota_limit", m.limit_name().to_string()),
                            ("quota_limit_value", exhausted.per_minute.to_string()),
                            ("quota_location", "global".to_string()),
                            ("quota_metric", format!("{service}/{}", m.id())),
                            ("service", service.clone()),
                        ],
                    )
                    .with_retry_info(exhausted.retry_after)
            }
            _ => status,
        }
    }
}

impl KmsError {
    /// A backend's failure while using `version`, where `what` names the backend for the
    /// message ("The HSM", "The external key manager at URI").
    pub fn from_backend(what: &str, version: &str, e: BackendError) -> Self {
        match e {
            BackendError::Unavailable(detail) => KmsError::KeyBackendUnavailable { what: what.to_string(), detail },
            BackendError::Refused { detail, key_state } => {
                KmsError::ExternalKeyRefused { version: version.to_string(), detail, key_state }
            }
            BackendError::KeyNotFound(detail) => KmsError::FailedPrecondition(format!(
                "The key material of {version} is gone from its backend: {detail}"
            )),
            BackendError::DecryptFailed => KmsError::DecryptFailed,
            BackendError::InvalidInput(detail) => KmsError::InvalidArgument(detail),
        }
    }
}

impl From<RepoError> for KmsError {
    fn from(e: RepoError) -> Self {
        match e {
            RepoError::Unavailable(_) => KmsError::Unavailable(e),
            RepoError::Corrupt(msg) => KmsError::Internal(msg),
            // AlreadyExists and Conflict are handled where they can happen; reaching here means
            // an invariant broke.
            other => KmsError::Internal(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_codes_match_cloud_kms() {
        let v: CryptoKeyVersionName =
            "projects/p/locations/global/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1".parse().unwrap();
        let e = KmsError::VersionNotEnabled { version: v.clone(), state: VersionState::Disabled };
        let s = e.to_status();
        assert_eq!(s.code, Code::FailedPrecondition);
        assert_eq!(s.message, format!("{v} is not enabled, current state is: DISABLED."));
        assert_eq!(s.details[0]["violations"][0]["type"], "KEY_DISABLED");
        assert_eq!(s.details[0]["violations"][0]["subject"], v.to_string());
        assert_eq!(
            KmsError::DecryptFailed.to_string(),
            "Decryption failed: verify that 'name' refers to the correct CryptoKey."
        );
        let r: KeyRingName = "projects/p/locations/global/keyRings/r".parse().unwrap();
        assert_eq!(KmsError::KeyRingNotFound(r.clone()).to_string(), format!("KeyRing {r} not found."));
        assert_eq!(KmsError::KeyRingExists(r).code().http_status(), 409);
        let v1 = v.to_string();
        assert_eq!(
            KmsError::from_backend("The HSM", &v1, BackendError::Unavailable("token removed".into())).code(),
            Code::Unavailable
        );
        let refused = KmsError::from_backend(
            "x",
            &v1,
            BackendError::Refused { detail: "reason not allowed".into(), key_state: None },
        );
        assert_eq!(refused.code(), Code::FailedPrecondition);
        assert!(refused.to_string().contains("reason not allowed"));
        assert!(refused.to_status().precondition_failure_types().is_empty(), "no state, no KEY_ detail");
        let disabled = KmsError::from_backend(
            "x",
            &v1,
            BackendError::Refused {
                detail: "the manager's key is off".into(),
                key_state: Some(VersionState::Disabled),
            },
        );
        assert_eq!(disabled.to_status().precondition_failure_types(), ["KEY_DISABLED"]);
        assert_eq!(KmsError::from_backend("x", &v1, BackendError::DecryptFailed).code(), Code::InvalidArgument);
        let denied = KmsError::JustificationDenied {
            key: v.crypto_key.to_string(),
            reason: AccessReason::GoogleInitiatedReview,
            allowed: "CUSTOMER_INITIATED_ACCESS".into(),
        };
        assert_eq!(denied.code().http_status(), 400);
        assert!(denied.to_string().contains("GOOGLE_INITIATED_REVIEW"), "{denied}");
        let u = KmsError::Unavailable(RepoError::Unavailable("db down".into()));
        assert_eq!(u.code().http_status(), 503);
        assert!(!u.to_status().message.contains("db down"), "causes stay out of the body");
        assert_eq!(KmsError::Internal("secret detail".into()).to_status().message, "Internal error.");
        let denied = KmsError::PermissionDenied {
            permission: keyhold_iam::role::VERSIONS_USE_TO_DECRYPT,
            resource: "projects/p/locations/l/keyRings/r/cryptoKeys/k".into(),
        };
        assert_eq!(denied.code().http_status(), 403);
        assert_eq!(
            denied.to_string(),
            "Permission 'cloudkms.cryptoKeyVersions.useToDecrypt' denied on resource 'projects/p/locations/l/keyRings/r/cryptoKeys/k' (or it may not exist)."
        );
        let stale = KmsError::StaleEtag { given: "a".into(), current: "b".into() };
        assert_eq!((stale.code(), stale.code().http_status()), (Code::Aborted, 409));
        assert!(stale.to_string().starts_with("There were concurrent policy changes."));
        let unauth = KmsError::Unauthenticated { missing: true };
        assert_eq!(unauth.code().http_status(), 401);
        assert!(unauth.to_string().starts_with("Request is missing required authentication credential."));
    }
}
