//! `google.rpc.Code` and `google.rpc.Status` as Google's REST APIs put them on the wire.
//!
//! The code table and the HTTP mapping are copied from `google/rpc/code.proto`; every crate maps
//! its own error enum to a [`Code`] in exactly one function.

use serde::{Deserialize, Serialize};

/// The canonical error codes of Google APIs, with their numbers from `google/rpc/code.proto`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Code {
    /// Not an error.
    Ok,
    /// The operation was cancelled, typically by the caller.
    Cancelled,
    /// Unknown error.
    Unknown,
    /// The client specified an invalid argument.
    InvalidArgument,
    /// The deadline expired before the operation could complete.
    DeadlineExceeded,
    /// Some requested entity was not found.
    NotFound,
    /// The entity a client attempted to create already exists.
    AlreadyExists,
    /// The caller does not have permission to execute the operation.
    PermissionDenied,
    /// Some resource has been exhausted (quota).
    ResourceExhausted,
    /// The system is not in a state required for the operation's execution.
    FailedPrecondition,
    /// The operation was aborted, typically due to a concurrency issue.
    Aborted,
    /// The operation was attempted past the valid range.
    OutOfRange,
    /// The operation is not implemented or supported.
    Unimplemented,
    /// Internal error: an invariant is broken.
    Internal,
    /// The service is currently unavailable; retrying may succeed.
    Unavailable,
    /// Unrecoverable data loss or corruption.
    DataLoss,
    /// The request does not have valid authentication credentials.
    Unauthenticated,
}

impl Code {
    /// The numeric code of `google/rpc/code.proto`.
    pub const fn number(self) -> i32 {
        match self {
            Code::Ok => 0,
            Code::Cancelled => 1,
            Code::Unknown => 2,
            Code::InvalidArgument => 3,
            Code::DeadlineExceeded => 4,
            Code::NotFound => 5,
            Code::AlreadyExists => 6,
            Code::PermissionDenied => 7,
            Code::ResourceExhausted => 8,
            Code::FailedPrecondition => 9,
            Code::Aborted => 10,
            Code::OutOfRange => 11,
            Code::Unimplemented => 12,
            Code::Internal => 13,
            Code::Unavailable => 14,
            Code::DataLoss => 15,
            Code::Unauthenticated => 16,
        }
    }

    /// The HTTP status Google's REST mapping gives this code.
    pub const fn http_status(self) -> u16 {
        match self {
            Code::Ok => 200,
            Code::Cancelled => 499,
            Code::Unknown | Code::Internal | Code::DataLoss => 500,
            Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => 400,
            Code::DeadlineExceeded => 504,
            Code::NotFound => 404,
            Code::AlreadyExists | Code::Aborted => 409,
            Code::PermissionDenied => 403,
            Code::ResourceExhausted => 429,
            Code::Unimplemented => 501,
            Code::Unavailable => 503,
            Code::Unauthenticated => 401,
        }
    }

    /// The name used in the `status` field of the error JSON.
    pub const fn as_str(self) -> &'static str {
        match self {
            Code::Ok => "OK",
            Code::Cancelled => "CANCELLED",
            Code::Unknown => "UNKNOWN",
            Code::InvalidArgument => "INVALID_ARGUMENT",
            Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Code::NotFound => "NOT_FOUND",
            Code::AlreadyExists => "ALREADY_EXISTS",
            Code::PermissionDenied => "PERMISSION_DENIED",
            Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Code::FailedPrecondition => "FAILED_PRECONDITION",
            Code::Aborted => "ABORTED",
            Code::OutOfRange => "OUT_OF_RANGE",
            Code::Unimplemented => "UNIMPLEMENTED",
            Code::Internal => "INTERNAL",
            Code::Unavailable => "UNAVAILABLE",
            Code::DataLoss => "DATA_LOSS",
            Code::Unauthenticated => "UNAUTHENTICATED",
        }
    }

    /// Whether Google's client libraries retry this code (their default retry policy for KMS).
    pub const fn is_retryable(self) -> bool {
        matches!(self, Code::Unavailable | Code::DeadlineExceeded)
    }

    /// Parses the `status` name of the error JSON.
    pub fn from_name(s: &str) -> Option<Code> {
        ALL_CODES.iter().copied().find(|c| c.as_str() == s)
    }
}

const ALL_CODES: [Code; 17] = [
    Code::Ok,
    Code::Cancelled,
    Code::Unknown,
    Code::InvalidArgument,
    Code::DeadlineExceeded,
    Code::NotFound,
    Code::AlreadyExists,
    Code::PermissionDenied,
    Code::ResourceExhausted,
    Code::FailedPrecondition,
    Code::Aborted,
    Code::OutOfRange,
    Code::Unimplemented,
    Code::Internal,
    Code::Unavailable,
    Code::DataLoss,
    Code::Unauthenticated,
];

/// A `google.rpc.Status`: what the error JSON carries.
#[derive(Clone, Debug, PartialEq)]
pub struct Status {
    /// The canonical code.
    pub code: Code,
    /// A developer-facing message that says what was wrong and how to fix it.
    pub message: String,
    /// `google.rpc` detail messages (`PreconditionFailure`, `ErrorInfo`, ...), with `@type`.
    pub details: Vec<serde_json::Value>,
}

/// The JSON body of an error response: `{"error": {"code", "message", "status", "details"}}`.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct ErrorBody {
    /// The status.
    pub error: ErrorStatus,
}

/// The inside of [`ErrorBody`].
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct ErrorStatus {
    /// HTTP status code.
    pub code: u16,
    /// Message.
    pub message: String,
    /// Canonical code name.
    pub status: String,
    /// Detail messages.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<serde_json::Value>,
}

impl Status {
    /// A status with no details.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), details: Vec::new() }
    }

    /// Adds a `google.rpc.PreconditionFailure` detail with one violation.
    pub fn with_precondition_failure(mut self, kind: &str, subject: &str, description: &str) -> Self {
        let mut violation = serde_json::json!({ "type": kind, "subject": subject });
        if !description.is_empty() {
            violation["description"] = description.into();
        }
        self.details.push(serde_json::json!({
            "@type": "type.googleapis.com/google.rpc.PreconditionFailure",
            "violations": [violation],
        }));
        self
    }

    /// Adds a `google.rpc.ErrorInfo` detail (`reason`, `domain` and string `metadata`), as
    /// Google's quota errors carry (`RATE_LIMIT_EXCEEDED`, `googleapis.com`).
    pub fn with_error_info(mut self, reason: &str, domain: &str, metadata: &[(&str, String)]) -> Self {
        let metadata: serde_json::Map<String, serde_json::Value> =
            metadata.iter().map(|(k, v)| (k.to_string(), serde_json::Value::String(v.clone()))).collect();
        self.details.push(serde_json::json!({
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": reason,
            "domain": domain,
            "metadata": metadata,
        }));
        self
    }

    /// Adds a `google.rpc.RetryInfo` detail: how long the client should wait before retrying,
    /// rounded up to whole seconds (as `Retry-After` counts them), at least one.
    pub fn with_retry_info(mut self, delay: std::time::Duration) -> Self {
        let secs = (delay.as_secs() + u64::from(delay.subsec_nanos() > 0)).max(1);
        self.details.push(serde_json::json!({
            "@type": "type.googleapis.com/google.rpc.RetryInfo",
            "retryDelay": format!("{secs}s"),
        }));
        self
    }

    /// The `retryDelay` of a `google.rpc.RetryInfo` detail, in whole seconds, if there is one
    /// (what the HTTP layer puts in `Retry-After`).
    pub fn retry_delay_secs(&self) -> Option<u64> {
        self.details
            .iter()
            .filter(|d| d["@type"] == "type.googleapis.com/google.rpc.RetryInfo")
            .find_map(|d| d["retryDelay"].as_str()?.strip_suffix('s')?.parse().ok())
    }

    /// The error JSON body.
    pub fn to_body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorStatus {
                code: self.code.http_status(),
                message: self.message.clone(),
                status: self.code.as_str().to_string(),
                details: self.details.clone(),
            },
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping_matches_google() {
        assert_eq!(Code::FailedPrecondition.http_status(), 400);
        assert_eq!(Code::Aborted.http_status(), 409);
        assert_eq!(Code::Unavailable.http_status(), 503);
        assert_eq!(Code::ResourceExhausted.http_status(), 429);
        for c in ALL_CODES {
            assert_eq!(Code::from_name(c.as_str()), Some(c));
        }
        assert_eq!(ALL_CODES.iter().map(|c| c.number()).collect::<Vec<_>>(), (0..17).collect::<Vec<_>>());
    }

    #[test]
    fn body_shape() {
        let s = Status::new(Code::NotFound, "KeyRing x not found.");
        let v = serde_json::to_value(s.to_body()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"error": {"code": 404, "message": "KeyRing x not found.", "status": "NOT_FOUND"}})
        );
    }
}
