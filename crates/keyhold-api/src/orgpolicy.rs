//! Organization policies as the Org Policy API v2 writes them (`google.cloud.orgpolicy.v2`),
//! restricted to the list constraints Keyhold enforces ([C12]).

use serde::{Deserialize, Serialize};

use crate::wire::Timestamp;

/// `constraints/gcp.restrictNonCmekServices`: services listed as denied must use CMEK for new
/// resources.
pub const RESTRICT_NON_CMEK_SERVICES: &str = "gcp.restrictNonCmekServices";
/// `constraints/gcp.restrictCmekCryptoKeyProjects`: CMEK keys must come from allowed projects.
pub const RESTRICT_CMEK_CRYPTO_KEY_PROJECTS: &str = "gcp.restrictCmekCryptoKeyProjects";
/// Constraints Keyhold knows.
pub const KNOWN_CONSTRAINTS: &[&str] = &[RESTRICT_NON_CMEK_SERVICES, RESTRICT_CMEK_CRYPTO_KEY_PROJECTS];

/// `Policy`: `projects/P/policies/CONSTRAINT`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrgPolicy {
    /// `projects/P/policies/gcp.restrictNonCmekServices`.
    #[serde(default)]
    pub name: String,
    /// The rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<PolicySpec>,
    /// Output only: changes with every update.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub etag: String,
}

/// `PolicySpec`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicySpec {
    /// Output only.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub etag: String,
    /// Output only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_time: Option<Timestamp>,
    /// The rules; for list constraints, their values are merged.
    #[serde(default)]
    pub rules: Vec<PolicyRule>,
    /// Accepted for compatibility; a project has no parent policy in Keyhold.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub inherit_from_parent: bool,
    /// Resets the policy to the constraint's default (no restriction).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reset: bool,
}

/// `PolicyRule`: exactly one of `values`, `allowAll`, `denyAll` (and `enforce`, for boolean
/// constraints, which Keyhold does not have).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyRule {
    /// Allowed / denied values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<StringValues>,
    /// Allow every value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_all: Option<bool>,
    /// Deny every value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deny_all: Option<bool>,
    /// For boolean constraints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enforce: Option<bool>,
    /// Conditions are not supported (refused on write).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<serde_json::Value>,
}

/// `StringValues`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StringValues {
    /// Values allowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_values: Vec<String>,
    /// Values denied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub denied_values: Vec<String>,
}

/// `ListPoliciesResponse`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListOrgPoliciesResponse {
    /// The project's policies.
    pub policies: Vec<OrgPolicy>,
    /// Always empty: a project has at most a few policies.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub next_page_token: String,
}
