//! Every error becomes Google's error JSON here, and only here.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use keyhold_api::{Code, Status};
use keyhold_kms::KmsError;

/// An error on its way to the client.
#[derive(Debug)]
pub struct ApiError {
    status: Status,
    /// What the log gets for 5xx answers (never sent to the client).
    cause: Option<String>,
    /// Whether the KMS already wrote the audit entry of this outcome.
    pub(crate) audited: bool,
}

impl ApiError {
    /// An error with a code and message.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self { status: Status::new(code, message), cause: None, audited: false }
    }

    /// `INVALID_ARGUMENT`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(Code::InvalidArgument, message)
    }

    /// An error with a status, a cause for the log, and whether it was audited.
    pub(crate) fn from_status(status: Status, cause: Option<String>, audited: bool) -> Self {
        Self { status, cause, audited }
    }

    /// A KMS error that the KMS did not audit (raised by the server itself).
    pub(crate) fn unaudited(e: KmsError) -> Self {
        Self { audited: false, ..Self::from(e) }
    }

    /// This error, its audit entry written.
    pub(crate) fn now_audited(self) -> Self {
        Self { audited: true, ..self }
    }

    /// The status this error carries.
    pub fn status(&self) -> &Status {
        &self.status
    }

    /// The status to send, once the cause of a server error is logged (it never goes to the
    /// client): what a front end other than REST answers with.
    pub fn into_status(self) -> Status {
        self.log_cause();
        self.status
    }

    fn log_cause(&self) {
        if let Some(cause) = &self.cause {
            tracing::error!(status = self.status.code.as_str(), cause = %cause, "request failed");
        }
    }
}

/// What the log gets for a KMS error answered with a 5xx (never sent to the client).
pub(crate) fn log_cause(e: &KmsError) -> Option<String> {
    matches!(e.code(), Code::Internal | Code::Unavailable | Code::DataLoss | Code::Unknown).then(|| {
        let mut s = format!("{e:?}");
        if let Some(src) = std::error::Error::source(e) {
            s.push_str(&format!(": {src}"));
        }
        s
    })
}

impl From<KmsError> for ApiError {
    fn from(e: KmsError) -> Self {
        Self { cause: log_cause(&e), status: e.to_status(), audited: true }
    }
}

/// A status raised by the server itself (a request message that does not cross to the model):
/// not yet audited. A server error's message goes to the log as its cause.
impl From<Status> for ApiError {
    fn from(status: Status) -> Self {
        let cause = matches!(status.code, Code::Internal | Code::Unavailable | Code::DataLoss | Code::Unknown)
            .then(|| status.message.clone());
        Self { status, cause, audited: false }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.status.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        self.log_cause();
        let body = serde_json::to_vec_pretty(&self.status.to_body()).unwrap_or_default();
        let mut resp = (code, body).into_response();
        if self.status.code == Code::Unauthenticated {
            resp.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"keyhold\""),
            );
        }
        // Quotas (hardening 15): when to come back, for clients that read HTTP rather than
        // the RetryInfo detail.
        if let Some(secs) = self.status.retry_delay_secs() {
            resp.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from(secs));
        }
        resp.headers_mut().insert(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/json; charset=UTF-8"),
        );
        resp
    }
}
