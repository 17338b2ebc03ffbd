//! The IAM messages of Google APIs (`google.iam.v1`): `Policy`, `Binding`, and the request
//! bodies of `:getIamPolicy`, `:setIamPolicy` and `:testIamPermissions`, as JSON.
//!
//! Keyhold accepts the same policy documents gcloud writes (`gcloud ... get-iam-policy
//! --format=json` output can be fed back to `set-iam-policy`).

use serde::{Deserialize, Serialize};

/// The etag of a resource that never had a policy, as Google answers it.
pub const EMPTY_POLICY_ETAG: &str = "ACAB";

/// `google.iam.v1.Policy`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Policy {
    /// Policy format version: 1 (no conditions). 0 in a request means "not given".
    #[serde(default, skip_serializing_if = "is_zero")]
    pub version: i32,
    /// Who has which role.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bindings: Vec<Binding>,
    /// Audit configuration (accepted and returned; Keyhold always audits everything).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audit_configs: Vec<AuditConfig>,
    /// Optimistic-concurrency token (base64). A `:setIamPolicy` carrying a stale etag fails
    /// with `ABORTED`; one without an etag overwrites, whatever is stored, the fields its
    /// update mask names.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub etag: String,
}

fn is_zero(v: &i32) -> bool {
    *v == 0
}

/// `google.iam.v1.Binding`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Binding {
    /// `roles/...`.
    pub role: String,
    /// `user:...`, `serviceAccount:...`, `group:...`, `domain:...`, `allUsers`,
    /// `allAuthenticatedUsers`.
    #[serde(default)]
    pub members: Vec<String>,
    /// IAM conditions are not supported; present only so a request naming one gets a clear
    /// error instead of a JSON error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<serde_json::Value>,
}

/// `google.iam.v1.AuditConfig`: which kinds of access a service logs, and who is exempted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuditConfig {
    /// A service name (`cloudkms.googleapis.com`) or `allServices`.
    #[serde(default)]
    pub service: String,
    /// One per kind of access.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audit_log_configs: Vec<AuditLogConfig>,
}

/// `google.iam.v1.AuditLogConfig`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuditLogConfig {
    /// The kind of access this config logs.
    #[serde(default)]
    pub log_type: LogType,
    /// Members (in `Binding.members` form) whose accesses of this kind are not logged.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exempted_members: Vec<String>,
}

/// `google.iam.v1.AuditLogConfig.LogType`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LogType {
    /// Not given.
    #[default]
    LogTypeUnspecified,
    /// Admin reads (`getIamPolicy`, `get`, `list`).
    AdminRead,
    /// Data writes.
    DataWrite,
    /// Data reads.
    DataRead,
}

/// Body of `:setIamPolicy`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SetIamPolicyRequest {
    /// The complete new policy.
    #[serde(default)]
    pub policy: Option<Policy>,
    /// Fields of `policy` to apply (`bindings`, `etag`, `auditConfigs`); empty means
    /// `bindings,etag`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub update_mask: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcloud_policy_round_trips() {
        let text = r#"{"bindings":[{"members":["serviceAccount:a@b.iam.gserviceaccount.com"],"role":"roles/cloudkms.cryptoKeyEncrypterDecrypter"}],"etag":"BwYCq0Sq4Ho=","version":1}"#;
        let p: Policy = serde_json::from_str(text).unwrap();
        assert_eq!(p.bindings[0].role, "roles/cloudkms.cryptoKeyEncrypterDecrypter");
        assert_eq!(p.etag, "BwYCq0Sq4Ho=");
        let back = serde_json::to_value(&p).unwrap();
        assert_eq!(back["version"], 1);
        assert!(back.get("auditConfigs").is_none());
        assert!(serde_json::from_str::<Policy>(r#"{"bindngs":[]}"#).is_err());
    }

    #[test]
    fn audit_configs_take_googles_shape_only() {
        let text = r#"{"auditConfigs":[{"service":"allServices","auditLogConfigs":[{"logType":"DATA_READ","exemptedMembers":["user:jose@example.com"]},{"logType":"ADMIN_READ"}]}]}"#;
        let p: Policy = serde_json::from_str(text).unwrap();
        assert_eq!(p.audit_configs[0].service, "allServices");
        assert_eq!(p.audit_configs[0].audit_log_configs[0].log_type, LogType::DataRead);
        assert_eq!(p.audit_configs[0].audit_log_configs[1].exempted_members, Vec::<String>::new());
        assert_eq!(serde_json::to_string(&p).unwrap(), text, "returned as sent");
        for bad in [
            r#"{"auditConfigs":[[0,0,0]]}"#,
            r#"{"auditConfigs":[{"service":"s","extra":{"deep":[1]}}]}"#,
            r#"{"auditConfigs":[{"service":"s","auditLogConfigs":[{"logType":"EVERYTHING"}]}]}"#,
        ] {
            assert!(serde_json::from_str::<Policy>(bad).is_err(), "{bad}");
        }
    }
}
