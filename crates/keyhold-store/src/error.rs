//! The store's errors, and the one place they become `google.rpc.Status` (code, message,
//! details) and a log cause.

use crate::host::HostError;
use keyhold_api::name::InstanceName;
use keyhold_api::{Code, Status};

/// What the store answers when a call fails.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The request is malformed; the message says how.
    #[error("{0}")]
    InvalidArgument(String),
    /// No such instance.
    #[error("Instance {0} not found.")]
    InstanceNotFound(InstanceName),
    /// No such object in the instance.
    #[error("Object {object} not found in {instance}.")]
    ObjectNotFound {
        /// The object's name.
        object: String,
        /// The instance.
        instance: InstanceName,
    },
    /// No such resource (a backup, ...); the message says which.
    #[error("{0}")]
    NotFound(String),
    /// The name is taken.
    #[error("{0}")]
    AlreadyExists(String),
    /// The request cannot be carried out as things are (a key check at creation, an org policy);
    /// the message says what to fix.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The instance's key cannot be used now ([C5], [C7]): Spanner's wording, plus the key and why.
    #[error("KMS key required by the Keyhold resource is not accessible: {key} ({detail})")]
    KeyInaccessible {
        /// The customer's key.
        key: String,
        /// What the last key check saw.
        detail: String,
    },
    /// A concurrent change got in the way (another `:reencrypt`, an overwrite during a read);
    /// retrying the call succeeds. The message says what happened.
    #[error("{0}")]
    Aborted(String),
    /// The caller cancelled the long-running operation this call ran as.
    #[error("{0}")]
    Cancelled(String),
    /// Stored data failed authentication: tampered with, moved or truncated.
    #[error("{0}")]
    DataLoss(String),
    /// From the platform ([`crate::host::ServiceHost`]): authentication, permission, quota,
    /// org policy, audit log; carries the status as the platform renders it.
    #[error(transparent)]
    Host(#[from] HostError),
    /// The database is unreachable; retry.
    #[error("The service is temporarily unavailable; retry the request.")]
    Unavailable(String),
    /// A bug or corrupt state; details in the server log.
    #[error("Internal error.")]
    Internal(String),
}

impl StoreError {
    /// The canonical code.
    pub fn code(&self) -> Code {
        match self {
            StoreError::InvalidArgument(_) => Code::InvalidArgument,
            StoreError::NotFound(_) | StoreError::InstanceNotFound(_) | StoreError::ObjectNotFound { .. } => {
                Code::NotFound
            }
            StoreError::AlreadyExists(_) => Code::AlreadyExists,
            StoreError::FailedPrecondition(_) | StoreError::KeyInaccessible { .. } => Code::FailedPrecondition,
            StoreError::DataLoss(_) => Code::DataLoss,
            StoreError::Aborted(_) => Code::Aborted,
            StoreError::Cancelled(_) => Code::Cancelled,
            StoreError::Host(e) => e.code(),
            StoreError::Unavailable(_) => Code::Unavailable,
            StoreError::Internal(_) => Code::Internal,
        }
    }

    /// The status clients see.
    pub fn to_status(&self) -> Status {
        match self {
            StoreError::Host(e) => e.status.clone(),
            StoreError::KeyInaccessible { key, .. } => {
                Status::new(self.code(), self.to_string()).with_precondition_failure("KMS_KEY_ISSUE", key, "")
            }
            StoreError::InvalidArgument(_)
            | StoreError::NotFound(_)
            | StoreError::InstanceNotFound(_)
            | StoreError::ObjectNotFound { .. }
            | StoreError::AlreadyExists(_)
            | StoreError::FailedPrecondition(_)
            | StoreError::Aborted(_)
            | StoreError::Cancelled(_)
            | StoreError::DataLoss(_)
            | StoreError::Unavailable(_)
            | StoreError::Internal(_) => Status::new(self.code(), self.to_string()),
        }
    }

    /// What the server log gets when this error is answered (never sent to the client): the
    /// cause of a server-side failure, `None` for the caller's own.
    pub fn log_cause(&self) -> Option<String> {
        match self {
            StoreError::Host(e) => e.cause.clone(),
            StoreError::Internal(_) | StoreError::Unavailable(_) | StoreError::DataLoss(_) => Some(format!("{self:?}")),
            StoreError::InvalidArgument(_)
            | StoreError::NotFound(_)
            | StoreError::InstanceNotFound(_)
            | StoreError::ObjectNotFound { .. }
            | StoreError::AlreadyExists(_)
            | StoreError::FailedPrecondition(_)
            | StoreError::KeyInaccessible { .. }
            | StoreError::Aborted(_)
            | StoreError::Cancelled(_) => None,
        }
    }
}

/// A malformed resource name in a request (an instance name that is not one).
impl From<keyhold_api::NameError> for StoreError {
    fn from(e: keyhold_api::NameError) -> Self {
        StoreError::InvalidArgument(e.to_string())
    }
}
