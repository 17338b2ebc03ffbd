//! The wire protocol between a KMS and an external key manager (`docs/ekm-protocol.md`).
//!
//! ```text
//! GET  {base}/v1/keys/{keyId}          -> KeyMetadata          (bearer token)
//! POST {base}/v1/keys/{keyId}:wrap     WrapRequest   -> WrapResponse
//! POST {base}/v1/keys/{keyId}:unwrap   UnwrapRequest -> UnwrapResponse
//! GET  {base}/healthz                  -> {"status": "SERVING"}   (no token)
//! ```
//!
//! The external key URI stored in the KMS is the full URL of the key,
//! `http://host:port/v1/keys/{keyId}`; `:wrap` and `:unwrap` are appended to it, as Google's
//! EKM protocol does. Bodies are JSON in proto3 style (camelCase, bytes as base64, durations as
//! `"300s"`, enums as names). Errors are Google's error JSON,
//! `{"error": {"code", "message", "status"}}`. Unknown fields are ignored, so either side may
//! add fields without breaking the other.

use keyhold_api::resources::AccessReason;
use keyhold_api::wire::{Bytes, ProtoDuration, SecretBytes, Timestamp};
use serde::{Deserialize, Serialize};

/// Longest key ID (as in the XKS specification).
pub const KEY_ID_MAX_LEN: usize = 128;
/// Largest plaintext a manager accepts for `:wrap` (Cloud KMS's limit for EXTERNAL keys).
pub const MAX_PLAINTEXT_BYTES: usize = 64 * 1024;
/// Largest additional authenticated data (Cloud KMS's limit for EXTERNAL keys).
pub const MAX_AAD_BYTES: usize = 64 * 1024;
/// Largest request body: the base64 of the largest plaintext and AAD plus the context.
pub const MAX_REQUEST_BODY_BYTES: usize = 256 * 1024;
/// Longest resource name, principal, request ID, operation or service name accepted.
pub const MAX_NAME_LEN: usize = 2048;
/// Longest `allowedCacheDuration` a manager may grant (one day); longer grants are cut to it.
pub const MAX_ALLOWED_CACHE_DURATION: std::time::Duration = std::time::Duration::from_secs(86_400);

/// Whether `s` is a valid key ID: 1 to 128 characters from `A-Z a-z 0-9 . _ -` (the XKS
/// `externalKeyId` alphabet). No `:` or `/`, so `{keyId}:wrap` parses unambiguously.
pub fn is_valid_key_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= KEY_ID_MAX_LEN
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && s != "."
        && s != ".."
}

fn unspecified() -> AccessReason {
    AccessReason::Unspecified
}

fn is_unspecified(r: &AccessReason) -> bool {
    *r == AccessReason::Unspecified
}

/// Why the data is accessed: a Cloud KMS `AccessReason` (Key Access Justifications). Google's
/// `AccessReasonContext`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessReasonContext {
    /// The reason; absent means `REASON_UNSPECIFIED`. Names or proto numbers are accepted.
    #[serde(default = "unspecified", skip_serializing_if = "is_unspecified")]
    pub reason: AccessReason,
}

impl Default for AccessReasonContext {
    fn default() -> Self {
        Self { reason: AccessReason::Unspecified }
    }
}

/// Google's `RequestContext` (`additionalContext`): which KMS resource the request is for and
/// why.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdditionalContext {
    /// The Cloud KMS resource the call serves: the crypto key version name
    /// (`projects/P/locations/L/keyRings/R/cryptoKeys/K/cryptoKeyVersions/V`). Required.
    #[serde(default)]
    pub relative_resource_name: String,
    /// The access reason.
    #[serde(default)]
    pub access_reason_context: AccessReasonContext,
}

/// Who is asking, modelled on the XKS `requestMetadata`: the manager logs it and its policy
/// decides on it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestMetadata {
    /// The KMS's request ID, to correlate the KMS's audit log with the manager's. Optional:
    /// the manager makes one up when it is absent.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub request_id: String,
    /// The principal who called the KMS (`user:alice@example.com`,
    /// `serviceAccount:service-1@gcp-sa-store.iam.gserviceaccount.com`). Required.
    #[serde(default)]
    pub caller_principal: String,
    /// The KMS method that led to this call (`Encrypt`, `Decrypt`, ...). Informational: the
    /// manager must not refuse a value it does not know.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub operation: String,
    /// The service the caller acted through, if any (`store.keyhold.dev`). Informational.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub via_service: String,
}

/// `POST {keyUri}:wrap`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WrapRequest {
    /// The bytes to wrap (at most [`MAX_PLAINTEXT_BYTES`]). Required; may be empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plaintext: Option<SecretBytes>,
    /// Additional authenticated data: unwrap must present the same bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_authenticated_data: Option<Bytes>,
    /// Resource and reason.
    #[serde(default)]
    pub additional_context: AdditionalContext,
    /// Caller and request ID.
    #[serde(default)]
    pub request_metadata: RequestMetadata,
}

/// Answer to `:wrap`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WrapResponse {
    /// The wrapped blob: opaque to the KMS, stored inside its ciphertext.
    pub wrapped_blob: Bytes,
}

/// `POST {keyUri}:unwrap`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UnwrapRequest {
    /// What `:wrap` returned. Required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wrapped_blob: Option<Bytes>,
    /// The additional authenticated data given to `:wrap`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_authenticated_data: Option<Bytes>,
    /// Resource and reason.
    #[serde(default)]
    pub additional_context: AdditionalContext,
    /// Caller and request ID.
    #[serde(default)]
    pub request_metadata: RequestMetadata,
}

/// Answer to `:unwrap`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UnwrapResponse {
    /// The unwrapped bytes.
    pub plaintext: SecretBytes,
    /// How long the KMS may keep this plaintext to answer the same unwrap again without asking
    /// (Google's `allowedCacheDuration`). Absent: do not cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_cache_duration: Option<ProtoDuration>,
}

/// The state of a key in the manager.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum KeyState {
    /// Usable.
    Enabled,
    /// Refuses every wrap and unwrap (`FAILED_PRECONDITION`) until enabled again.
    Disabled,
    /// Key material erased; refuses forever. The ID stays taken.
    Destroyed,
}

impl KeyState {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Enabled => "ENABLED",
            KeyState::Disabled => "DISABLED",
            KeyState::Destroyed => "DESTROYED",
        }
    }
}

impl std::fmt::Display for KeyState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Answer to `GET {keyUri}`: the key's metadata (XKS `GetKeyMetadata`). The KMS uses it to
/// check an external key URI and the manager's health.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyMetadata {
    /// The key ID.
    pub key_id: String,
    /// Always `AES_256`.
    pub key_spec: String,
    /// Always `["WRAP", "UNWRAP"]`.
    pub key_usage: Vec<String>,
    /// The key's state.
    pub state: KeyState,
    /// When the key was created.
    pub create_time: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids() {
        for ok in ["k", "key-1", "A.b_c-9", &"x".repeat(128)] {
            assert!(is_valid_key_id(ok), "{ok}");
        }
        for bad in ["", ".", "..", "a:wrap", "a/b", "a b", "é", &"x".repeat(129), "a%20"] {
            assert!(!is_valid_key_id(bad), "{bad}");
        }
    }

    #[test]
    fn wrap_request_shape() {
        let json = serde_json::json!({
            "plaintext": "aGVsbG8=",
            "additionalAuthenticatedData": "YWFk",
            "additionalContext": {
                "relativeResourceName": "projects/p/locations/l/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1",
                "fullResourceName": "ignored",
                "accessReasonContext": {"reason": "CUSTOMER_INITIATED_ACCESS"},
                "isKeyHealthCheck": false
            },
            "requestMetadata": {"requestId": "r1", "callerPrincipal": "user:a@example.com", "operation": "Encrypt"},
            "keyUriPrefix": "ignored too"
        });
        let req: WrapRequest = serde_json::from_value(json).unwrap();
        assert_eq!(req.plaintext.as_ref().unwrap().0.expose(), b"hello");
        assert_eq!(req.additional_context.access_reason_context.reason, AccessReason::CustomerInitiatedAccess);
        assert_eq!(req.request_metadata.caller_principal, "user:a@example.com");
        // Numbers are accepted for the reason, and absence means unspecified.
        let req: WrapRequest =
            serde_json::from_value(serde_json::json!({"additionalContext": {"accessReasonContext": {"reason": 2}}}))
                .unwrap();
        assert_eq!(req.additional_context.access_reason_context.reason, AccessReason::GoogleInitiatedService);
        let req: WrapRequest = serde_json::from_value(serde_json::json!({})).unwrap();
        assert_eq!(req.additional_context.access_reason_context.reason, AccessReason::Unspecified);
        assert!(req.plaintext.is_none());
    }

    #[test]
    fn unwrap_response_shape() {
        let r = UnwrapResponse {
            plaintext: SecretBytes(keyhold_crypto::Secret::new(b"hi".to_vec())),
            allowed_cache_duration: Some(ProtoDuration::from_secs(300)),
        };
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            serde_json::json!({"plaintext": "aGk=", "allowedCacheDuration": "300s"})
        );
        assert!(!format!("{r:?}").contains("aGk"));
    }
}
