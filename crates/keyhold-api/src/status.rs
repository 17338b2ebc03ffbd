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

    /// The code of a numeric `google/rpc/code.proto` value (a `google.rpc.Status.code`, as in
    /// a long-running operation's error); `None` for a number it does not define.
    pub const fn from_number(n: i32) -> Option<Code> {
        Some(match n {
            0 => Code::Ok,
            1 => Code::Cancelled,
            2 => Code::Unknown,
            3 => Code::InvalidArgument,
            4 => Code::DeadlineExceeded,
            5 => Code::NotFound,
            6 => Code::AlreadyExists,
            7 => Code::PermissionDenied,
            8 => Code::ResourceExhausted,
            9 => Code::FailedPrecondition,
            10 => Code::Aborted,
            11 => Code::OutOfRange,
            12 => Code::Unimplemented,
            13 => Code::Internal,
            14 => Code::Unavailable,
            15 => Code::DataLoss,
            16 => Code::Unauthenticated,
            _ => return None,
        })
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

    /// The code of an error answer from its HTTP status alone, for answers without Google's
    /// error JSON (a proxy's 502, an empty 404): Google's REST mapping read backwards, where
    /// 409 is taken as `ABORTED` (a retryable conflict) and anything unlisted as `INTERNAL`.
    pub const fn from_http(status: u16) -> Code {
        match status {
            400 => Code::InvalidArgument,
            401 => Code::Unauthenticated,
            403 => Code::PermissionDenied,
            404 => Code::NotFound,
            409 => Code::Aborted,
            429 => Code::ResourceExhausted,
            501 => Code::Unimplemented,
            502 | 503 => Code::Unavailable,
            504 => Code::DeadlineExceeded,
            _ => Code::Internal,
        }
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

/// What the body of an error answer was, as [`Status::decode_http`] found it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorBodyKind {
    /// Google's error JSON with a known `status` name: the status is the server's own (its
    /// message empty if the body had none).
    Google,
    /// `{"error": {"message": ...}}` without a known `status` name: the message is the
    /// server's, the code comes from the HTTP status.
    MessageOnly,
    /// Anything else (an HTML page from a proxy, plain text, nothing): the code comes from the
    /// HTTP status, the message is the start of the body, or the HTTP reason phrase when the
    /// body is blank.
    Foreign,
}

/// How much of a foreign body a decoded message keeps, in characters.
const FOREIGN_SNIPPET_CHARS: usize = 200;

/// The loose shape of Google's error JSON: every field optional, so that a body with only
/// some of them still gives what it has.
#[derive(Deserialize)]
struct LooseBody {
    error: LooseStatus,
}

#[derive(Deserialize)]
struct LooseStatus {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    status: String,
    #[serde(default)]
    details: Vec<serde_json::Value>,
}

impl Status {
    /// Decodes a non-2xx answer of a Google-style REST API (Keyhold's own, an external key
    /// manager, or a proxy in front of either): the one decoder every client of these APIs
    /// uses, so that they agree on what an error was. See [`Status::decode_http`].
    pub fn from_http(http_status: u16, body: &[u8]) -> Status {
        Self::decode_http(http_status, body).0
    }

    /// [`Status::from_http`], also saying what the body was, for clients that show a foreign
    /// answer differently (the CLI prints `HTTP 502: ...` instead of a code name).
    ///
    /// Reads `error.status` (the code name), `error.message` and `error.details` (kept whole,
    /// `@type` included, so [`Status::retry_delay_secs`] and the other readers work on them);
    /// `error.code` repeats the HTTP status and is not needed. No I/O: the caller reads the body.
    pub fn decode_http(http_status: u16, body: &[u8]) -> (Status, ErrorBodyKind) {
        if let Ok(b) = serde_json::from_slice::<LooseBody>(body) {
            let LooseStatus { message, status, details } = b.error;
            match (Code::from_name(&status), message) {
                (Some(code), message) => {
                    return (Status { code, message: message.unwrap_or_default(), details }, ErrorBodyKind::Google);
                }
                (None, Some(message)) => {
                    let code = Code::from_http(http_status);
                    return (Status { code, message, details }, ErrorBodyKind::MessageOnly);
                }
                (None, None) => {}
            }
        }
        let text = String::from_utf8_lossy(body);
        let mut message: String =
            text.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(FOREIGN_SNIPPET_CHARS).collect();
        if message.is_empty() {
            message = reason_phrase(http_status).unwrap_or("no response body").to_string();
        }
        (Status::new(Code::from_http(http_status), message), ErrorBodyKind::Foreign)
    }

    /// The `type`s of the violations of the `google.rpc.PreconditionFailure` details
    /// (`KEY_DISABLED`, ...): what a refused call's precondition was, as a type, not as text.
    pub fn precondition_failure_types(&self) -> Vec<&str> {
        self.details
            .iter()
            .filter(|d| d["@type"] == "type.googleapis.com/google.rpc.PreconditionFailure")
            .filter_map(|d| d["violations"].as_array())
            .flatten()
            .filter_map(|v| v["type"].as_str())
            .collect()
    }

    /// The `reason` of the `google.rpc.ErrorInfo` detail, if there is one.
    pub fn error_info_reason(&self) -> Option<&str> {
        self.details
            .iter()
            .filter(|d| d["@type"] == "type.googleapis.com/google.rpc.ErrorInfo")
            .find_map(|d| d["reason"].as_str())
    }
}

/// The reason phrase of an HTTP status (RFC 9110 and the registered extensions), for the
/// message of an error answer with an empty body.
pub const fn reason_phrase(status: u16) -> Option<&'static str> {
    Some(match status {
        100 => "Continue",
        101 => "Switching Protocols",
        102 => "Processing",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        207 => "Multi-Status",
        208 => "Already Reported",
        226 => "IM Used",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        305 => "Use Proxy",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Payload Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        418 => "I'm a teapot",
        421 => "Misdirected Request",
        422 => "Unprocessable Entity",
        423 => "Locked",
        424 => "Failed Dependency",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        451 => "Unavailable For Legal Reasons",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        506 => "Variant Also Negotiates",
        507 => "Insufficient Storage",
        508 => "Loop Detected",
        510 => "Not Extended",
        511 => "Network Authentication Required",
        _ => return None,
    })
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
            assert_eq!(Code::from_number(c.number()), Some(c));
        }
        assert_eq!(Code::from_number(17), None);
        assert_eq!(Code::from_number(-1), None);
        assert_eq!(ALL_CODES.iter().map(|c| c.number()).collect::<Vec<_>>(), (0..17).collect::<Vec<_>>());
    }

    /// Keyhold's own error JSON, as `keyhold-server/src/error.rs` writes it: `Status::to_body`.
    #[test]
    fn decodes_keyhold_error_json() {
        let sent = Status::new(
            Code::FailedPrecondition,
            "projects/p/.../cryptoKeyVersions/1 is not enabled, current state is: DISABLED.",
        )
        .with_precondition_failure("KEY_DISABLED", "projects/p/locations/l/keyRings/r/cryptoKeys/k", "")
        .with_error_info("RATE_LIMIT_EXCEEDED", "googleapis.com", &[("service", "cloudkms.googleapis.com".into())])
        .with_retry_info(std::time::Duration::from_millis(1500));
        let body = serde_json::to_vec(&sent.to_body()).unwrap();
        let (got, kind) = Status::decode_http(400, &body);
        assert_eq!(kind, ErrorBodyKind::Google);
        assert_eq!(got, sent);
        assert_eq!(got.precondition_failure_types(), ["KEY_DISABLED"]);
        assert_eq!(got.error_info_reason(), Some("RATE_LIMIT_EXCEEDED"));
        assert_eq!(got.retry_delay_secs(), Some(2));
        // The code name wins over the HTTP status (a 409 is ALREADY_EXISTS or ABORTED).
        let body = br#"{"error":{"code":409,"message":"KeyRing r already exists.","status":"ALREADY_EXISTS"}}"#;
        assert_eq!(Status::from_http(409, body), Status::new(Code::AlreadyExists, "KeyRing r already exists."));
    }

    #[test]
    fn decodes_what_is_not_google_json() {
        // A message without a known code name: the code from the HTTP status.
        let (s, kind) = Status::decode_http(409, br#"{"error":{"code":409,"message":"busy","status":""}}"#);
        assert_eq!((s, kind), (Status::new(Code::Aborted, "busy"), ErrorBodyKind::MessageOnly));
        let (s, kind) = Status::decode_http(403, br#"{"error":{"message":"no","status":"NOPE"}}"#);
        assert_eq!((s, kind), (Status::new(Code::PermissionDenied, "no"), ErrorBodyKind::MessageOnly));
        // Plain text: its start, whitespace collapsed, at most 200 characters.
        let long = format!("upstream   connect error\n{}", "x".repeat(500));
        let (s, kind) = Status::decode_http(503, long.as_bytes());
        assert_eq!(kind, ErrorBodyKind::Foreign);
        assert_eq!(s.code, Code::Unavailable);
        assert!(s.message.starts_with("upstream connect error x"), "{}", s.message);
        assert_eq!(s.message.chars().count(), 200);
        // An HTML 502 from a proxy.
        let html = b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n";
        let (s, kind) = Status::decode_http(502, html);
        assert_eq!(kind, ErrorBodyKind::Foreign);
        assert_eq!(s.code, Code::Unavailable);
        assert_eq!(
            s.message,
            "<html> <head><title>502 Bad Gateway</title></head> <body> <center><h1>502 Bad Gateway</h1></center> <hr><center>nginx</center> </body> </html>"
        );
        // JSON that is not an error body, and an `error` that is not an object.
        assert_eq!(Status::from_http(500, br#"{"ok":true}"#), Status::new(Code::Internal, r#"{"ok":true}"#));
        assert_eq!(Status::decode_http(500, br#"{"error":"x"}"#).1, ErrorBodyKind::Foreign);
        assert_eq!(Status::decode_http(500, br#"{"error":{}}"#).1, ErrorBodyKind::Foreign);
        let (s, kind) = Status::decode_http(400, br#"{"error":{"status":"PERMISSION_DENIED"}}"#);
        assert_eq!((s, kind), (Status::new(Code::PermissionDenied, ""), ErrorBodyKind::Google));
        // An empty or blank body: the reason phrase.
        assert_eq!(Status::decode_http(404, b""), (Status::new(Code::NotFound, "Not Found"), ErrorBodyKind::Foreign));
        assert_eq!(Status::from_http(504, b" \n "), Status::new(Code::DeadlineExceeded, "Gateway Timeout"));
        assert_eq!(Status::from_http(599, b""), Status::new(Code::Internal, "no response body"));
    }

    #[test]
    fn codes_from_http_status() {
        for c in ALL_CODES {
            // Every code but the ambiguous ones (409, 400, 500 name several) maps back.
            if !matches!(
                c,
                Code::Ok
                    | Code::Cancelled
                    | Code::Unknown
                    | Code::FailedPrecondition
                    | Code::OutOfRange
                    | Code::AlreadyExists
                    | Code::DataLoss
            ) {
                assert_eq!(Code::from_http(c.http_status()), c, "{c:?}");
            }
        }
        assert_eq!(Code::from_http(409), Code::Aborted);
        assert_eq!(Code::from_http(502), Code::Unavailable);
        assert_eq!(Code::from_http(418), Code::Internal);
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
