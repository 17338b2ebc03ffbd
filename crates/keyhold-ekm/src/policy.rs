//! The manager's policy file: per key, who may use it, for which reasons, from which KMS
//! resources and clients, and how long an unwrapped result may be cached.
//!
//! ```json
//! {
//!   "keys": {
//!     "payroll-kek": {
//!       "allowedCallers": ["user:alice@example.com",
//!                          "serviceAccount:*@gcp-sa-store.iam.gserviceaccount.com"],
//!       "allowedReasons": ["CUSTOMER_INITIATED_ACCESS", "GOOGLE_INITIATED_SYSTEM_OPERATION"],
//!       "allowedResources": ["projects/acme/locations/*/keyRings/hr/cryptoKeys/*/cryptoKeyVersions/*"],
//!       "allowedClients": ["keyhold-prod"],
//!       "allowedCacheDuration": "300s"
//!     }
//!   },
//!   "default": {"allowedCallers": [], "allowedReasons": []}
//! }
//! ```
//!
//! A key without an entry uses `default`; with neither, everything is refused. In each rule
//! `allowedCallers` and `allowedReasons` are required (an empty list refuses everything), so a
//! rule never opens a key by omission; `allowedResources` and `allowedClients` are optional
//! (absent: any). Patterns match the whole string and `*` stands for any run of characters;
//! `"*"` alone matches everything, in `allowedReasons` too. Unknown fields are errors: a typo
//! in a security policy must not pass silently.

use std::collections::HashMap;
use std::time::Duration;

use keyhold_api::resources::AccessReason;
use keyhold_api::wire::ProtoDuration;
use serde::Deserialize;

use crate::protocol::{MAX_ALLOWED_CACHE_DURATION, is_valid_key_id};

/// Why a policy file cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid policy: {0}")]
pub struct PolicyError(pub String);

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    keys: HashMap<String, RuleFile>,
    #[serde(default)]
    default: Option<RuleFile>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RuleFile {
    allowed_callers: Vec<String>,
    allowed_reasons: Vec<String>,
    #[serde(default)]
    allowed_resources: Option<Vec<String>>,
    #[serde(default)]
    allowed_clients: Option<Vec<String>>,
    #[serde(default)]
    allowed_cache_duration: Option<ProtoDuration>,
}

/// A parsed, validated policy.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    keys: HashMap<String, Rule>,
    default: Option<Rule>,
}

/// The rule of one key.
#[derive(Debug, Clone)]
struct Rule {
    callers: Vec<String>,
    /// `None`: any reason (`"*"`).
    reasons: Option<Vec<AccessReason>>,
    resources: Option<Vec<String>>,
    clients: Option<Vec<String>>,
    cache: Option<Duration>,
}

/// What a request asks for, as the policy sees it.
#[derive(Debug, Clone, Copy)]
pub struct AccessRequest<'a> {
    /// The manager's key.
    pub key_id: &'a str,
    /// The end caller's principal (`requestMetadata.callerPrincipal`).
    pub caller: &'a str,
    /// The access reason.
    pub reason: AccessReason,
    /// The KMS resource (`additionalContext.relativeResourceName`).
    pub resource: &'a str,
    /// The label of the bearer token the client authenticated with.
    pub client: &'a str,
}

/// The policy's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed; an unwrapped result may be cached this long (`None`: not at all).
    Allow {
        /// The key's `allowedCacheDuration`.
        allowed_cache_duration: Option<Duration>,
    },
    /// Refused, and why (a sentence fragment naming the failed condition).
    Deny {
        /// Why.
        why: String,
    },
}

impl Policy {
    /// Parses and validates a policy file's text.
    pub fn parse(text: &[u8]) -> Result<Self, PolicyError> {
        let file: PolicyFile = serde_json::from_slice(text).map_err(|e| PolicyError(e.to_string()))?;
        let mut keys = HashMap::new();
        for (id, rule) in file.keys {
            if !is_valid_key_id(&id) {
                return Err(PolicyError(format!("\"keys\" names an invalid key ID {id:?}")));
            }
            let rule = Rule::from_file(rule).map_err(|e| PolicyError(format!("key {id}: {e}")))?;
            keys.insert(id, rule);
        }
        let default =
            file.default.map(Rule::from_file).transpose().map_err(|e| PolicyError(format!("default: {e}")))?;
        Ok(Self { keys, default })
    }

    /// Number of keys with their own rule.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// Decides on `req`. Conditions are checked in the order client, resource, caller,
    /// reason; the first that fails is named.
    pub fn evaluate(&self, req: &AccessRequest<'_>) -> Decision {
        let Some(rule) = self.keys.get(req.key_id).or(self.default.as_ref()) else {
            return Decision::Deny { why: "the manager's policy has no rule for this key and no default rule".into() };
        };
        if let Some(clients) = &rule.clients
            && !clients.iter().any(|c| c == "*" || c == req.client)
        {
            return Decision::Deny { why: format!("client {} is not in the key's allowedClients", req.client) };
        }
        if let Some(resources) = &rule.resources
            && !resources.iter().any(|p| glob_match(p, req.resource))
        {
            return Decision::Deny { why: format!("resource {} is not in the key's allowedResources", req.resource) };
        }
        if !rule.callers.iter().any(|p| glob_match(p, req.caller)) {
            return Decision::Deny { why: "the caller is not in the key's allowedCallers".into() };
        }
        if let Some(reasons) = &rule.reasons
            && !reasons.contains(&req.reason)
        {
            return Decision::Deny { why: "the reason is not in the key's allowedReasons".into() };
        }
        Decision::Allow { allowed_cache_duration: rule.cache }
    }
}

impl Rule {
    fn from_file(f: RuleFile) -> Result<Self, String> {
        let check_patterns = |field: &str, list: &[String]| {
            for p in list {
                if p.is_empty() || p.len() > crate::protocol::MAX_NAME_LEN || p.chars().any(char::is_whitespace) {
                    return Err(format!("{field}: {p:?} is not a valid pattern"));
                }
            }
            Ok(())
        };
        check_patterns("allowedCallers", &f.allowed_callers)?;
        if let Some(r) = &f.allowed_resources {
            check_patterns("allowedResources", r)?;
        }
        if let Some(c) = &f.allowed_clients {
            check_patterns("allowedClients", c)?;
        }
        let reasons = if f.allowed_reasons.iter().any(|r| r == "*") {
            None
        } else {
            let mut out = Vec::new();
            for name in &f.allowed_reasons {
                let reason = AccessReason::from_name(name).ok_or_else(|| {
                    let names: Vec<&str> = AccessReason::ALL.iter().map(|r| r.as_str()).collect();
                    format!("allowedReasons: unknown reason {name:?}; use \"*\" or one of {}", names.join(", "))
                })?;
                out.push(reason);
            }
            Some(out)
        };
        let cache = match f.allowed_cache_duration {
            None => None,
            Some(d) if d.as_nanos() < 0 => return Err("allowedCacheDuration must not be negative".into()),
            Some(d) if d.to_std() > MAX_ALLOWED_CACHE_DURATION => {
                return Err(format!("allowedCacheDuration must be at most {}s", MAX_ALLOWED_CACHE_DURATION.as_secs()));
            }
            Some(d) if d.as_nanos() == 0 => None,
            Some(d) => Some(d.to_std()),
        };
        Ok(Self {
            callers: f.allowed_callers,
            reasons,
            resources: f.allowed_resources,
            clients: f.allowed_clients,
            cache,
        })
    }
}

/// Whether `text` matches `pattern` as a whole, `*` standing for any run of characters.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    // Where the last `*` was, and the text position it currently absorbs up to.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        for (p, t, m) in [
            ("*", "", true),
            ("*", "anything", true),
            ("user:alice@example.com", "user:alice@example.com", true),
            ("user:alice@example.com", "user:alice@example.co", false),
            ("user:alice@example.com", "user:alice@example.comm", false),
            (
                "serviceAccount:*@gcp-sa-store.iam.gserviceaccount.com",
                "serviceAccount:service-1@gcp-sa-store.iam.gserviceaccount.com",
                true,
            ),
            (
                "serviceAccount:*@gcp-sa-store.iam.gserviceaccount.com",
                "serviceAccount:x@evil.com#@gcp-sa-store.iam.gserviceaccount.com.evil",
                false,
            ),
            (
                "serviceAccount:*@gcp-sa-store.iam.gserviceaccount.com",
                "user:service-1@gcp-sa-store.iam.gserviceaccount.com",
                false,
            ),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("*a", "bbba", true),
            ("a**", "a", true),
        ] {
            assert_eq!(glob_match(p, t), m, "{p} vs {t}");
        }
    }

    fn req<'a>(key: &'a str, caller: &'a str, reason: AccessReason) -> AccessRequest<'a> {
        AccessRequest {
            key_id: key,
            caller,
            reason,
            resource: "projects/p/locations/global/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1",
            client: "kms",
        }
    }

    #[test]
    fn evaluate() {
        let p = Policy::parse(
            br#"{"keys": {
                "k1": {"allowedCallers": ["user:alice@example.com", "serviceAccount:*@gcp-sa-store.iam.gserviceaccount.com"],
                       "allowedReasons": ["CUSTOMER_INITIATED_ACCESS"], "allowedCacheDuration": "300s"},
                "k2": {"allowedCallers": ["*"], "allowedReasons": ["*"],
                       "allowedResources": ["projects/p/*/cryptoKeys/k/*"], "allowedClients": ["kms"]},
                "k3": {"allowedCallers": ["*"], "allowedReasons": []}
            }}"#,
        )
        .unwrap();
        use AccessReason::*;
        assert_eq!(
            p.evaluate(&req("k1", "user:alice@example.com", CustomerInitiatedAccess)),
            Decision::Allow { allowed_cache_duration: Some(Duration::from_secs(300)) }
        );
        assert!(matches!(
            p.evaluate(&req(
                "k1",
                "serviceAccount:service-9@gcp-sa-store.iam.gserviceaccount.com",
                CustomerInitiatedAccess
            )),
            Decision::Allow { .. }
        ));
        let Decision::Deny { why } = p.evaluate(&req("k1", "user:bob@example.com", CustomerInitiatedAccess)) else {
            panic!()
        };
        assert!(why.contains("allowedCallers"), "{why}");
        let Decision::Deny { why } = p.evaluate(&req("k1", "user:alice@example.com", GoogleInitiatedService)) else {
            panic!()
        };
        assert!(why.contains("allowedReasons"), "{why}");
        assert_eq!(p.evaluate(&req("k2", "anyone", Unspecified)), Decision::Allow { allowed_cache_duration: None });
        let mut other_client = req("k2", "anyone", Unspecified);
        other_client.client = "other";
        assert!(matches!(p.evaluate(&other_client), Decision::Deny { why } if why.contains("allowedClients")));
        let mut other_resource = req("k2", "anyone", Unspecified);
        other_resource.resource = "projects/q/locations/global/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1";
        assert!(matches!(p.evaluate(&other_resource), Decision::Deny { why } if why.contains("allowedResources")));
        assert!(
            matches!(p.evaluate(&req("k3", "anyone", CustomerInitiatedAccess)), Decision::Deny { .. }),
            "empty list"
        );
        assert!(
            matches!(p.evaluate(&req("k4", "anyone", CustomerInitiatedAccess)), Decision::Deny { why } if why.contains("no rule"))
        );

        let with_default =
            Policy::parse(br#"{"default": {"allowedCallers": ["*"], "allowedReasons": ["REASON_NOT_EXPECTED"]}}"#)
                .unwrap();
        assert!(matches!(with_default.evaluate(&req("any", "x", ReasonNotExpected)), Decision::Allow { .. }));
        assert!(matches!(with_default.evaluate(&req("any", "x", CustomerInitiatedAccess)), Decision::Deny { .. }));
    }

    #[test]
    fn invalid_policies() {
        for bad in [
            &b"not json"[..],
            br#"{"keys": {"k": {"allowedReasons": ["*"]}}}"#,
            br#"{"keys": {"k": {"allowedCallers": ["*"]}}}"#,
            br#"{"keys": {"k": {"allowedCallers": ["*"], "allowedReasons": ["BECAUSE"]}}}"#,
            br#"{"keys": {"k": {"allowedCallers": ["*"], "allowedReasons": [], "allowedCaller": []}}}"#,
            br#"{"keys": {"bad/id": {"allowedCallers": ["*"], "allowedReasons": []}}}"#,
            br#"{"keys": {"k": {"allowedCallers": [""], "allowedReasons": []}}}"#,
            br#"{"keys": {"k": {"allowedCallers": ["*"], "allowedReasons": [], "allowedCacheDuration": "-1s"}}}"#,
            br#"{"keys": {"k": {"allowedCallers": ["*"], "allowedReasons": [], "allowedCacheDuration": "90000s"}}}"#,
            br#"{"key": {}}"#,
        ] {
            assert!(Policy::parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let e =
            Policy::parse(br#"{"keys": {"k": {"allowedCallers": ["*"], "allowedReasons": ["BECAUSE"]}}}"#).unwrap_err();
        assert!(e.0.contains("CUSTOMER_INITIATED_ACCESS"), "the error lists the valid reasons: {e}");
        assert_eq!(Policy::parse(b"{}").unwrap().key_count(), 0);
    }
}
