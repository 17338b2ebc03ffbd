//! Who is calling: the authenticated caller of one request, as every service built on Keyhold
//! (the KMS, the store) receives it from its front end.

use keyhold_api::resources::AccessReason;

use crate::Principal;

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Who, or `None` when the request carried no valid credential (it is then refused, and
    /// the refusal is audited).
    pub principal: Option<Principal>,
    /// Whether `--allow-anonymous` supplied the principal.
    pub anonymous: bool,
    /// Request ID, for the audit log.
    pub request_id: String,
    /// The caller's stated reason for the request, if any (`X-Goog-Request-Reason`).
    pub justification: Option<String>,
    /// The Key Access Justification reason of a cryptographic request ([K11]); `None` means
    /// `CUSTOMER_INITIATED_ACCESS`, a customer using their own key.
    pub access_reason: Option<AccessReason>,
    /// When `principal` is `None`: whether no credential was sent at all (rather than an
    /// invalid one).
    pub credential_missing: bool,
}

impl Caller {
    /// A caller authenticated as `principal`.
    pub fn new(principal: Principal, request_id: impl Into<String>) -> Self {
        Self {
            principal: Some(principal),
            anonymous: false,
            request_id: request_id.into(),
            justification: None,
            access_reason: None,
            credential_missing: false,
        }
    }

    /// A caller that could not be authenticated; every call it makes fails with
    /// `UNAUTHENTICATED` (and is audited).
    pub fn unauthenticated(credential_missing: bool, request_id: impl Into<String>) -> Self {
        Self {
            principal: None,
            anonymous: false,
            request_id: request_id.into(),
            justification: None,
            access_reason: None,
            credential_missing,
        }
    }

    /// Keyhold itself (the scheduler, the bootstrap), for audit entries of what it does on its own.
    pub fn system(what: &str) -> Self {
        Self::new(Principal::parse(&format!("service:{what}.keyhold.local")).expect("valid system principal"), "")
    }

    /// The principal, as recorded in audit entries.
    pub fn principal_str(&self) -> &str {
        self.principal.as_ref().map_or("", Principal::as_str)
    }
}
