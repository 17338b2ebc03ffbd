//! Principals (the authenticated caller) and policy members (who a binding grants to).

/// Who is calling: `user:alice@example.com`, `serviceAccount:...@...`, or `service:NAME` for a
/// Keyhold-integrated service acting as itself (it may then only mint tokens for its own
/// service agent; it holds no role).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Principal(String);

/// Why a member or principal string is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MemberError {
    /// Not of the form `type:value`.
    #[error("Policy members must be of the form \"<type>:<value>\"; '{0}' is not.")]
    Invalid(String),
    /// `type:value` with a type Keyhold does not know.
    #[error(
        "The member {0} is of an unknown type. Please set a valid type prefix for the member: user:, serviceAccount: or domain: (or use allUsers or allAuthenticatedUsers)."
    )]
    UnknownType(String),
    /// `group:` members need a directory, which Keyhold does not have.
    #[error("Member '{0}' is a group; Keyhold has no group directory, so bind the users or service accounts directly.")]
    Group(String),
    /// The email or domain part is malformed.
    #[error("Member '{0}' does not contain a valid email address or domain.")]
    BadAddress(String),
}

fn valid_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else { return false };
    !local.is_empty()
        && valid_domain(domain)
        && s.len() <= 254
        && local.chars().all(|c| c.is_ascii_alphanumeric() || "._%+-".contains(c))
}

fn valid_domain(d: &str) -> bool {
    d.contains('.')
        && d.len() <= 253
        && d.split('.').all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
}

impl Principal {
    /// Parses `user:EMAIL`, `serviceAccount:EMAIL` or `service:NAME`.
    pub fn parse(s: &str) -> Result<Principal, MemberError> {
        let (kind, value) = s.split_once(':').ok_or_else(|| MemberError::Invalid(s.to_string()))?;
        match kind {
            "user" | "serviceAccount" if valid_email(value) => Ok(Principal(s.to_string())),
            "service" if valid_domain(value) => Ok(Principal(s.to_string())),
            "user" | "serviceAccount" | "service" => Err(MemberError::BadAddress(s.to_string())),
            _ => Err(MemberError::UnknownType(s.to_string())),
        }
    }

    /// The whole principal, `user:alice@example.com`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// What Cloud Audit Logs shows as `principalEmail`: the part after the type.
    pub fn email(&self) -> &str {
        self.0.split_once(':').map_or(&self.0, |(_, e)| e)
    }

    /// The service name when this is a service acting as itself (`service:NAME`).
    pub fn service(&self) -> Option<&str> {
        self.0.strip_prefix("service:")
    }

    /// Whether a policy member names this principal.
    pub fn matched_by(&self, member: &str) -> bool {
        if self.service().is_some() {
            // A service acting as itself holds no role; it acts on data through its agent.
            return false;
        }
        match member {
            "allUsers" | "allAuthenticatedUsers" => true,
            m if m == self.0 => true,
            m => match m.strip_prefix("domain:") {
                Some(d) => self.email().rsplit_once('@').is_some_and(|(_, ed)| ed.eq_ignore_ascii_case(d)),
                None => false,
            },
        }
    }
}

impl std::fmt::Display for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks a policy member.
pub fn validate_member(m: &str) -> Result<(), MemberError> {
    match m {
        "allUsers" | "allAuthenticatedUsers" => Ok(()),
        _ => {
            let (kind, value) = m.split_once(':').ok_or_else(|| MemberError::Invalid(m.to_string()))?;
            match kind {
                "user" | "serviceAccount" if valid_email(value) => Ok(()),
                "domain" if valid_domain(value) => Ok(()),
                "user" | "serviceAccount" | "domain" => Err(MemberError::BadAddress(m.to_string())),
                "group" => Err(MemberError::Group(m.to_string())),
                _ => Err(MemberError::UnknownType(m.to_string())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principals() {
        let p = Principal::parse("user:alice@example.com").unwrap();
        assert_eq!(p.email(), "alice@example.com");
        assert!(p.matched_by("user:alice@example.com"));
        assert!(!p.matched_by("user:bob@example.com"));
        assert!(!p.matched_by("serviceAccount:alice@example.com"));
        assert!(p.matched_by("domain:EXAMPLE.com"));
        assert!(!p.matched_by("domain:ample.com"));
        assert!(p.matched_by("allAuthenticatedUsers"));
        let s = Principal::parse("service:store.keyhold.dev").unwrap();
        assert_eq!(s.service(), Some("store.keyhold.dev"));
        assert!(!s.matched_by("allUsers"));
        assert!(Principal::parse("alice").is_err());
        assert!(Principal::parse("user:alice").is_err());
        assert!(Principal::parse("group:g@example.com").is_err());
    }

    #[test]
    fn members() {
        for ok in
            ["user:a@b.co", "serviceAccount:service-1@gcp-sa-x.iam.gserviceaccount.com", "domain:b.co", "allUsers"]
        {
            validate_member(ok).unwrap();
        }
        assert!(matches!(validate_member("group:g@b.co"), Err(MemberError::Group(_))));
        assert!(matches!(validate_member("robot:x"), Err(MemberError::UnknownType(_))));
        assert!(matches!(validate_member("alice"), Err(MemberError::Invalid(_))));
        assert!(matches!(validate_member("user:nobody"), Err(MemberError::BadAddress(_))));
        assert!(matches!(validate_member("user:a b@c.d"), Err(MemberError::BadAddress(_))));
    }
}
