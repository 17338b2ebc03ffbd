//! Policies: validation, normalisation, etags and evaluation.

use keyhold_api::iam::{Binding, EMPTY_POLICY_ETAG, Policy};

use crate::member::{MemberError, Principal, validate_member};
use crate::role::{Permission, role};

/// Why a policy is refused by `:setIamPolicy`. The messages say what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// Unknown role, or one that cannot be granted on this kind of resource.
    #[error("Role {role} is not supported for this resource.")]
    RoleNotSupported {
        /// The role asked for.
        role: String,
    },
    /// A member string is malformed.
    #[error(transparent)]
    Member(#[from] MemberError),
    /// IAM conditions are not implemented.
    #[error("IAM conditions are not supported by Keyhold; remove the condition from the binding for role {role}.")]
    Conditions {
        /// The binding's role.
        role: String,
    },
    /// Too many members overall (Google's limit is 1,500 principals per policy).
    #[error("A policy may contain at most 1500 members; this one has {0}.")]
    TooManyMembers(usize),
}

/// Google's limit on principals per allow policy.
const MAX_MEMBERS: usize = 1500;

/// Validates `policy` for `resource` and puts it in canonical form: one binding per role, roles
/// sorted, members sorted and de-duplicated, empty bindings dropped, `version` 1, no etag.
pub fn normalize(resource: &str, policy: &Policy) -> Result<Policy, PolicyError> {
    let mut by_role: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> = Default::default();
    let mut count = 0;
    for b in &policy.bindings {
        if b.condition.is_some() {
            return Err(PolicyError::Conditions { role: b.role.clone() });
        }
        if !grantable_on(resource, &b.role) {
            return Err(PolicyError::RoleNotSupported { role: b.role.clone() });
        }
        for m in &b.members {
            validate_member(m)?;
            count += 1;
        }
        by_role.entry(b.role.clone()).or_default().extend(b.members.iter().cloned());
    }
    if count > MAX_MEMBERS {
        return Err(PolicyError::TooManyMembers(count));
    }
    Ok(Policy {
        version: 1,
        bindings: by_role
            .into_iter()
            .filter(|(_, m)| !m.is_empty())
            .map(|(role, members)| Binding { role, members: members.into_iter().collect(), condition: None })
            .collect(),
        audit_configs: policy.audit_configs.clone(),
        etag: String::new(),
    })
}

/// Whether a role may be bound on a resource: basic and service roles on the root and on
/// projects; Cloud KMS roles anywhere; Keyhold's token admin only on the root.
fn grantable_on(resource: &str, role_name: &str) -> bool {
    let Some(r) = role(role_name) else { return false };
    let is_root = resource == crate::ROOT_RESOURCE;
    let is_project = resource.starts_with("projects/") && resource.matches('/').count() == 1;
    if r.name == "roles/keyhold.tokenAdmin" {
        return is_root;
    }
    is_root || is_project || r.name.starts_with("roles/cloudkms.")
}

/// The etag of a stored policy revision (0 = never set, which Google spells `ACAB`).
pub fn etag_for_revision(revision: i64) -> String {
    if revision <= 0 {
        return EMPTY_POLICY_ETAG.to_string();
    }
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(revision.to_be_bytes())
}

/// Whether any of `policies` (a resource's own and its ancestors') grants `permission` to
/// `principal`.
pub fn allows<'a>(
    policies: impl IntoIterator<Item = &'a Policy>,
    principal: &Principal,
    permission: Permission,
) -> bool {
    policies.into_iter().any(|p| {
        p.bindings.iter().any(|b| {
            b.condition.is_none()
                && role(&b.role).is_some_and(|r| r.grants(permission))
                && b.members.iter().any(|m| principal.matched_by(m))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::role::*;

    fn binding(role: &str, members: &[&str]) -> Binding {
        Binding { role: role.into(), members: members.iter().map(|s| s.to_string()).collect(), condition: None }
    }

    #[test]
    fn normalizes() {
        let p = Policy {
            bindings: vec![
                binding("roles/cloudkms.viewer", &["user:b@x.io", "user:a@x.io"]),
                binding("roles/cloudkms.admin", &[]),
                binding("roles/cloudkms.viewer", &["user:a@x.io"]),
            ],
            etag: "abc".into(),
            ..Default::default()
        };
        let n = normalize("projects/p/locations/l/keyRings/r", &p).unwrap();
        assert_eq!(n.version, 1);
        assert!(n.etag.is_empty());
        assert_eq!(n.bindings, vec![binding("roles/cloudkms.viewer", &["user:a@x.io", "user:b@x.io"])]);
    }

    #[test]
    fn refuses() {
        let key = "projects/p/locations/l/keyRings/r/cryptoKeys/k";
        let bad = |b: Binding| normalize(key, &Policy { bindings: vec![b], ..Default::default() }).unwrap_err();
        assert_eq!(
            bad(binding("roles/nope", &["user:a@x.io"])).to_string(),
            "Role roles/nope is not supported for this resource."
        );
        assert!(matches!(bad(binding("roles/owner", &["user:a@x.io"])), PolicyError::RoleNotSupported { .. }));
        assert!(
            normalize(
                "projects/p",
                &Policy { bindings: vec![binding("roles/owner", &["user:a@x.io"])], ..Default::default() }
            )
            .is_ok()
        );
        assert!(matches!(bad(binding("roles/cloudkms.admin", &["alice"])), PolicyError::Member(_)));
        let mut c = binding("roles/cloudkms.admin", &["user:a@x.io"]);
        c.condition = Some(serde_json::json!({"expression": "true"}));
        assert!(matches!(bad(c), PolicyError::Conditions { .. }));
        assert!(
            normalize(
                "projects/p",
                &Policy { bindings: vec![binding("roles/keyhold.tokenAdmin", &["user:a@x.io"])], ..Default::default() }
            )
            .is_err()
        );
    }

    #[test]
    fn evaluates() {
        let alice = Principal::parse("user:alice@x.io").unwrap();
        let project =
            Policy { bindings: vec![binding("roles/cloudkms.viewer", &["user:alice@x.io"])], ..Default::default() };
        let key = Policy {
            bindings: vec![binding("roles/cloudkms.cryptoKeyEncrypter", &["domain:x.io"])],
            ..Default::default()
        };
        assert!(allows([&project], &alice, CRYPTO_KEYS_GET));
        assert!(!allows([&project], &alice, VERSIONS_USE_TO_ENCRYPT));
        assert!(allows([&project, &key], &alice, VERSIONS_USE_TO_ENCRYPT));
        assert!(!allows([&project, &key], &alice, VERSIONS_USE_TO_DECRYPT));
        assert_eq!(etag_for_revision(0), "ACAB");
        assert_ne!(etag_for_revision(1), etag_for_revision(2));
    }
}
