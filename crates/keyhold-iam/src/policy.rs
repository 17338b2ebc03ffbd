//! Policies: validation, normalisation, etags and evaluation.

use keyhold_api::iam::{AuditConfig, Binding, EMPTY_POLICY_ETAG, LogType, Policy};

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
    /// An audit config Keyhold cannot keep.
    #[error("Invalid auditConfigs: {0}")]
    AuditConfig(&'static str),
}

/// Google's limit on principals per allow policy.
const MAX_MEMBERS: usize = 1500;
/// Audit configs a policy may carry (one per service is all they mean).
pub const MAX_AUDIT_CONFIGS: usize = 100;
/// The longest service name an audit config may carry.
pub const MAX_SERVICE_NAME: usize = 256;
/// Members audit configs may exempt, in all.
pub const MAX_EXEMPTED_MEMBERS: usize = 1500;
/// The longest exempted member.
pub const MAX_EXEMPTED_MEMBER: usize = 512;

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
    check_audit_configs(&policy.audit_configs)?;
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

/// Checks audit configs as Google shapes them (each names a service and logs each kind of
/// access at most once) within Keyhold's limits. Keyhold audits everyone, so an exemption
/// changes nothing: any member Google writes (`group:`, `deleted:`, `principal://...`) is kept,
/// checked only for its form and size.
fn check_audit_configs(configs: &[AuditConfig]) -> Result<(), PolicyError> {
    use PolicyError::AuditConfig as Bad;
    if configs.len() > MAX_AUDIT_CONFIGS {
        return Err(Bad("a policy may carry at most 100 audit configs."));
    }
    let mut members = 0;
    for c in configs {
        if c.service.is_empty() || c.service.len() > MAX_SERVICE_NAME {
            return Err(Bad(
                "each needs a service (allServices or a name like cloudkms.googleapis.com), at most 256 bytes.",
            ));
        }
        if c.audit_log_configs.is_empty() {
            return Err(Bad("each needs at least one auditLogConfig."));
        }
        let mut seen = Vec::with_capacity(3);
        for l in &c.audit_log_configs {
            if l.log_type == LogType::LogTypeUnspecified {
                return Err(Bad("logType must be ADMIN_READ, DATA_WRITE or DATA_READ."));
            }
            if seen.contains(&l.log_type) {
                return Err(Bad("a service names each logType at most once."));
            }
            seen.push(l.log_type);
            for m in &l.exempted_members {
                if m.is_empty()
                    || m.len() > MAX_EXEMPTED_MEMBER
                    || m.chars().any(|c| c.is_whitespace() || c.is_control())
                {
                    return Err(Bad("each exempted member is a member string of at most 512 bytes, without spaces."));
                }
                members += 1;
            }
        }
    }
    if members > MAX_EXEMPTED_MEMBERS {
        return Err(Bad("audit configs may exempt at most 1500 members in all."));
    }
    Ok(())
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
    fn audit_configs_are_checked_and_kept() {
        use keyhold_api::iam::AuditLogConfig;
        let log = |t: LogType, exempt: &[&str]| AuditLogConfig {
            log_type: t,
            exempted_members: exempt.iter().map(|s| s.to_string()).collect(),
        };
        let config =
            |service: &str, logs: Vec<AuditLogConfig>| AuditConfig { service: service.into(), audit_log_configs: logs };
        let with = |configs: Vec<AuditConfig>| {
            normalize("projects/p", &Policy { audit_configs: configs, ..Default::default() })
        };
        let good = vec![config(
            "allServices",
            vec![log(LogType::DataRead, &["user:jose@x.io"]), log(LogType::AdminRead, &[])],
        )];
        assert_eq!(with(good.clone()).unwrap().audit_configs, good, "kept as given");
        let bad = |configs: Vec<AuditConfig>| with(configs).unwrap_err().to_string();
        assert!(bad(vec![config("", vec![log(LogType::DataRead, &[])])]).contains("needs a service"));
        assert!(bad(vec![config(&"s".repeat(257), vec![log(LogType::DataRead, &[])])]).contains("at most 256"));
        assert!(bad(vec![config("allServices", vec![])]).contains("at least one"));
        assert!(bad(vec![config("allServices", vec![log(LogType::LogTypeUnspecified, &[])])]).contains("logType must"));
        assert!(
            bad(vec![config("a", vec![log(LogType::DataRead, &[]), log(LogType::DataRead, &[])])])
                .contains("at most once")
        );
        assert!(bad(vec![config("a", vec![log(LogType::DataRead, &[]); 1]); 101]).contains("at most 100"));
        // Whatever Google writes is kept; only the form and size are checked.
        let google = vec![config(
            "allServices",
            vec![log(
                LogType::DataRead,
                &["group:admins@x.io", "deleted:user:old@x.io?uid=1", "principal://iam.googleapis.com/x"],
            )],
        )];
        assert_eq!(with(google.clone()).unwrap().audit_configs, google);
        assert!(bad(vec![config("a", vec![log(LogType::DataRead, &["user: a@x.io"])])]).contains("without spaces"));
        assert!(bad(vec![config("a", vec![log(LogType::DataRead, &[&"u".repeat(513)])])]).contains("512 bytes"));
        // At most 1,500 exempted in all, apart from the 1,500 bound.
        let many: Vec<String> = (0..1_500).map(|i| format!("user:u{i}@x.io")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let p = |exempted: &[&str]| Policy {
            bindings: vec![binding("roles/cloudkms.viewer", &many)],
            audit_configs: vec![config("a", vec![log(LogType::DataRead, exempted)])],
            ..Default::default()
        };
        assert!(normalize("projects/p", &p(&many)).is_ok());
        let more = [&many[..], &["user:one-more@x.io"]].concat();
        assert!(normalize("projects/p", &p(&more)).unwrap_err().to_string().contains("at most 1500 members in all"));
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
