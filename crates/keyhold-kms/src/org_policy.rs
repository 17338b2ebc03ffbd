//! Organization policies ([C12]), Org Policy API v2 style, per project: the two CMEK list
//! constraints, which services built on the KMS (the store) check when they create a resource.

use keyhold_api::orgpolicy::{
    KNOWN_CONSTRAINTS, OrgPolicy, PolicySpec, RESTRICT_CMEK_CRYPTO_KEY_PROJECTS, RESTRICT_NON_CMEK_SERVICES,
};
use keyhold_api::wire::Timestamp;
use std::sync::Arc;

use crate::call::Call;
use crate::error::KmsError;
use crate::repo::{KmsRepository, OrgPolicyRecord};

/// The service of the organization-policy methods.
pub(crate) const SERVICE: &str = "orgpolicy.googleapis.com";

/// `projects/P/policies/C`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgPolicyName {
    /// The project ID.
    pub project: String,
    /// The constraint, without `constraints/`.
    pub constraint: String,
}

impl OrgPolicyName {
    /// Parses `projects/P/policies/C`; the constraint must be one Keyhold enforces.
    pub fn parse(name: &str) -> Result<Self, KmsError> {
        let seg: Vec<&str> = name.split('/').collect();
        let [projects, project, policies, constraint] = seg.as_slice() else {
            return Err(KmsError::InvalidArgument(format!(
                "Policy name \"{name}\" is not of the form projects/PROJECT_ID/policies/CONSTRAINT."
            )));
        };
        if *projects != "projects" || *policies != "policies" || project.is_empty() {
            return Err(KmsError::InvalidArgument(format!(
                "Policy name \"{name}\" is not of the form projects/PROJECT_ID/policies/CONSTRAINT."
            )));
        }
        let constraint = constraint.strip_prefix("constraints/").unwrap_or(constraint);
        if !KNOWN_CONSTRAINTS.contains(&constraint) {
            return Err(KmsError::InvalidArgument(format!(
                "Constraint constraints/{constraint} does not exist or is not supported; Keyhold enforces constraints/{} and constraints/{}.",
                RESTRICT_NON_CMEK_SERVICES, RESTRICT_CMEK_CRYPTO_KEY_PROJECTS
            )));
        }
        Ok(Self { project: project.to_string(), constraint: constraint.to_string() })
    }
}

impl std::fmt::Display for OrgPolicyName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "projects/{}/policies/{}", self.project, self.constraint)
    }
}

/// Why a creation is refused by policy.
fn violation(message: String) -> KmsError {
    KmsError::FailedPrecondition(message)
}

fn render(record: &OrgPolicyRecord) -> OrgPolicy {
    let etag = keyhold_iam::etag_for_revision(record.revision);
    let mut p = record.policy.clone();
    p.name = record.name.clone();
    p.etag = etag.clone();
    if let Some(spec) = p.spec.as_mut() {
        spec.etag = etag;
        spec.update_time = Some(record.update_time);
    }
    p
}

fn validate_spec(spec: &PolicySpec) -> Result<(), KmsError> {
    for rule in &spec.rules {
        if rule.condition.is_some() {
            return Err(KmsError::InvalidArgument(
                "Conditional rules are not supported; remove \"condition\" from the rule.".into(),
            ));
        }
        if rule.enforce.is_some() {
            return Err(KmsError::InvalidArgument(
                "\"enforce\" is for boolean constraints; the CMEK constraints are list constraints: use values, allowAll or denyAll.".into(),
            ));
        }
        let kinds = [rule.values.is_some(), rule.allow_all == Some(true), rule.deny_all == Some(true)];
        if kinds.iter().filter(|k| **k).count() > 1 {
            return Err(KmsError::InvalidArgument("A rule sets exactly one of values, allowAll and denyAll.".into()));
        }
    }
    Ok(())
}

/// Whether a `restrictCmekCryptoKeyProjects` value names `project`.
fn value_names_project(value: &str, project: &str) -> bool {
    let v = value.strip_prefix("under:").unwrap_or(value);
    v == format!("projects/{project}") || v == keyhold_iam::ROOT_RESOURCE
}

/// Whether `gcp.restrictNonCmekServices` makes `service` use CMEK.
pub fn requires_cmek(spec: &PolicySpec, service: &str) -> bool {
    if spec.reset {
        return false;
    }
    spec.rules.iter().any(|r| {
        r.deny_all == Some(true) || r.values.as_ref().is_some_and(|v| v.denied_values.iter().any(|d| d == service))
    })
}

/// Whether `gcp.restrictCmekCryptoKeyProjects` lets keys of `key_project` be used.
pub fn key_project_allowed(spec: &PolicySpec, key_project: &str) -> bool {
    if spec.reset || spec.rules.is_empty() {
        return true;
    }
    if spec.rules.iter().any(|r| r.deny_all == Some(true)) {
        return false;
    }
    if spec.rules.iter().any(|r| r.allow_all == Some(true)) {
        return true;
    }
    let values = spec.rules.iter().filter_map(|r| r.values.as_ref());
    let (mut allowed, mut denied) = (Vec::new(), Vec::new());
    for v in values {
        allowed.extend(v.allowed_values.iter());
        denied.extend(v.denied_values.iter());
    }
    if denied.iter().any(|v| value_names_project(v, key_project)) {
        return false;
    }
    allowed.is_empty() || allowed.iter().any(|v| value_names_project(v, key_project))
}

/// The organization policies of projects (the two CMEK constraints). A part of the KMS that
/// never sees the façade.
#[derive(Debug)]
pub(crate) struct OrgPolicies {
    repo: Arc<dyn KmsRepository>,
}

impl OrgPolicies {
    pub(crate) fn new(repo: Arc<dyn KmsRepository>) -> Self {
        Self { repo }
    }

    /// `policies.get`.
    pub(crate) async fn get(&self, name: &OrgPolicyName) -> Result<OrgPolicy, KmsError> {
        match self.repo.org_policy(&name.to_string()).await? {
            Some(r) => Ok(render(&r)),
            None => Err(KmsError::NotFound(format!("Policy {name} is not set."))),
        }
    }

    /// `policies.list`.
    pub(crate) async fn list(&self, project: &str) -> Result<Vec<OrgPolicy>, KmsError> {
        Ok(self.repo.list_org_policies(project).await?.iter().map(render).collect())
    }

    /// `policies.create` / `policies.patch`: sets the policy named `parsed`. A non-empty `etag`
    /// must match the stored one.
    pub(crate) async fn set(
        &self,
        call: &Call<'_>,
        parsed: &OrgPolicyName,
        policy: &OrgPolicy,
    ) -> Result<OrgPolicy, KmsError> {
        let spec = policy.spec.clone().unwrap_or_default();
        validate_spec(&spec)?;
        let name = parsed.to_string();
        let current = self.repo.org_policy(&name).await?;
        if !policy.etag.is_empty() {
            let current_etag = keyhold_iam::etag_for_revision(current.as_ref().map_or(0, |c| c.revision));
            if policy.etag != current_etag {
                return Err(KmsError::StaleEtag { given: policy.etag.clone(), current: current_etag });
            }
        }
        let stored_spec = PolicySpec { etag: String::new(), update_time: None, ..spec };
        let mut record = OrgPolicyRecord {
            name: name.clone(),
            project: parsed.project.clone(),
            policy: OrgPolicy { name, spec: Some(stored_spec), etag: String::new() },
            update_time: Timestamp::now(),
            revision: current.map_or(0, |c| c.revision),
        };
        record.revision = self.repo.put_org_policy(&record, &call.success_entry()).await?;
        Ok(render(&record))
    }

    /// `policies.delete`.
    pub(crate) async fn delete(&self, call: &Call<'_>, parsed: &OrgPolicyName) -> Result<(), KmsError> {
        if self.repo.delete_org_policy(&parsed.to_string(), &call.success_entry()).await? {
            Ok(())
        } else {
            call.entry_rolled_back();
            Err(KmsError::NotFound(format!("Policy {parsed} is not set.")))
        }
    }

    /// Checks a new resource of `service` in `project` against the project's CMEK policies:
    /// `kms_key` is the key it will use (`None`: service-managed encryption). Read as the
    /// service itself, so the caller needs no org-policy permission.
    pub(crate) async fn check_cmek(&self, project: &str, service: &str, kms_key: Option<&str>) -> Result<(), KmsError> {
        let non_cmek =
            self.repo.org_policy(&format!("projects/{project}/policies/{RESTRICT_NON_CMEK_SERVICES}")).await?;
        let key_projects =
            self.repo.org_policy(&format!("projects/{project}/policies/{RESTRICT_CMEK_CRYPTO_KEY_PROJECTS}")).await?;
        match kms_key {
            None => {
                if non_cmek.and_then(|p| p.policy.spec).is_some_and(|s| requires_cmek(&s, service)) {
                    return Err(violation(format!(
                        "Constraint constraints/{RESTRICT_NON_CMEK_SERVICES} violated for projects/{project} attempting to create a resource without specifying a KMS CryptoKey."
                    )));
                }
            }
            Some(key) => {
                let key_project = keyhold_iam::project_of(key).unwrap_or_default();
                if let Some(spec) = key_projects.and_then(|p| p.policy.spec)
                    && !key_project_allowed(&spec, key_project)
                {
                    return Err(violation(format!(
                        "Constraint constraints/{RESTRICT_CMEK_CRYPTO_KEY_PROJECTS} violated for projects/{project} attempting to use the KMS CryptoKey {key}: keys from projects/{key_project} are not allowed. Use a key from an allowed project (keyhold org-policies describe {RESTRICT_CMEK_CRYPTO_KEY_PROJECTS} --project={project})."
                    )));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use keyhold_api::orgpolicy::{PolicyRule, StringValues};

    use super::*;

    fn values(allowed: &[&str], denied: &[&str]) -> PolicySpec {
        PolicySpec {
            rules: vec![PolicyRule {
                values: Some(StringValues {
                    allowed_values: allowed.iter().map(|s| s.to_string()).collect(),
                    denied_values: denied.iter().map(|s| s.to_string()).collect(),
                }),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn names() {
        let n = OrgPolicyName::parse("projects/p/policies/constraints/gcp.restrictNonCmekServices");
        assert!(n.is_err(), "a slash inside the constraint is not a name");
        let n = OrgPolicyName::parse("projects/p/policies/gcp.restrictNonCmekServices").unwrap();
        assert_eq!(n.to_string(), "projects/p/policies/gcp.restrictNonCmekServices");
        assert!(OrgPolicyName::parse("projects/p/policies/gcp.resourceLocations").is_err());
        assert!(OrgPolicyName::parse("folders/1/policies/gcp.restrictNonCmekServices").is_err());
    }

    #[test]
    fn non_cmek_services() {
        assert!(requires_cmek(&values(&[], &["store.keyhold.dev"]), "store.keyhold.dev"));
        assert!(!requires_cmek(&values(&[], &["sqladmin.googleapis.com"]), "store.keyhold.dev"));
        let deny_all =
            PolicySpec { rules: vec![PolicyRule { deny_all: Some(true), ..Default::default() }], ..Default::default() };
        assert!(requires_cmek(&deny_all, "anything"));
        assert!(!requires_cmek(&PolicySpec { reset: true, ..deny_all }, "anything"));
    }

    #[test]
    fn key_projects() {
        let spec = values(&["under:projects/keys"], &[]);
        assert!(key_project_allowed(&spec, "keys"));
        assert!(!key_project_allowed(&spec, "other"));
        assert!(key_project_allowed(&values(&["projects/keys"], &[]), "keys"));
        assert!(!key_project_allowed(&values(&[], &["projects/bad"]), "bad"));
        assert!(key_project_allowed(&values(&[], &["projects/bad"]), "good"));
        assert!(key_project_allowed(&values(&["under:organizations/keyhold"], &[]), "any"));
        assert!(key_project_allowed(&PolicySpec::default(), "any"));
    }
}
