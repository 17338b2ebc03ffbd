//! IAM for Keyhold ([K8]): who may do what, decided the way Google Cloud decides it.
//!
//! * [`role`]: permissions and predefined roles, spelled as Google spells them;
//! * [`member`]: principals (who calls) and policy members (who is granted);
//! * [`policy`]: validating and normalising a `google.iam.v1.Policy`, etags, and evaluating a
//!   permission against the policies of a resource and its ancestors.
//!
//! Policies inherit downward: a binding on `organizations/keyhold` (the whole server) applies to
//! every project, one on `projects/P` to everything in P, one on a key ring to its keys. This
//! crate is pure (no I/O): the KMS loads the policies and asks.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod caller;
pub mod member;
pub mod policy;
pub mod role;

pub use caller::Caller;
pub use member::{MemberError, Principal};
pub use policy::{PolicyError, allows, etag_for_revision, normalize};
pub use role::{Permission, Role};

/// Whether a change of the IAM policy on `changed` can change what is allowed on `resource`:
/// it is the resource itself or one of its ancestors.
pub fn policy_change_affects(changed: &str, resource: &str) -> bool {
    resource == changed || policy_ancestors(resource).contains(&changed)
}

/// The resource at the top of the hierarchy: the whole Keyhold server. Its policy is where the
/// server's owner is bound (Google's equivalent is an organization).
pub const ROOT_RESOURCE: &str = "organizations/keyhold";

/// Collections whose members carry their own IAM policy.
const POLICY_COLLECTIONS: &[&str] = &["keyRings", "cryptoKeys", "importJobs", "instances"];

/// The resources whose policies apply to `resource`, from the root down to the nearest
/// policy-bearing resource (`resource` itself when it bears one).
///
/// `projects/p/locations/l/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1` gives the root,
/// `projects/p`, the key ring and the key: versions have no policy of their own, as in Cloud KMS.
/// Every name but the root's is a prefix of `resource`, borrowed from it: this runs for every
/// authorized call.
pub fn policy_ancestors(resource: &str) -> Vec<&str> {
    let mut out = Vec::with_capacity(4);
    out.push(ROOT_RESOURCE);
    let mut segments = resource.split('/');
    if segments.next() != Some("projects") {
        return out;
    }
    // `end` is where the segment just read ends in `resource`; ids follow their collection.
    let (mut end, mut collection) = ("projects".len(), "projects");
    for (n, segment) in segments.enumerate() {
        end += 1 + segment.len();
        if n % 2 == 1 {
            collection = segment;
        } else if n == 0 && segment.is_empty() {
            return out;
        } else if n == 0 || POLICY_COLLECTIONS.contains(&collection) {
            out.push(&resource[..end]);
        }
    }
    out
}

/// The project ID of a resource name (`projects/P/...`), if it has one.
pub fn project_of(resource: &str) -> Option<&str> {
    let rest = resource.strip_prefix("projects/")?;
    let p = rest.split('/').next()?;
    (!p.is_empty()).then_some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ancestors() {
        let v = "projects/p/locations/l/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1";
        assert_eq!(
            policy_ancestors(v),
            [
                ROOT_RESOURCE,
                "projects/p",
                "projects/p/locations/l/keyRings/r",
                "projects/p/locations/l/keyRings/r/cryptoKeys/k"
            ]
        );
        assert_eq!(policy_ancestors("projects/p/locations/l"), [ROOT_RESOURCE, "projects/p"]);
        assert_eq!(policy_ancestors("projects/p/locations/l/keyRings/r/cryptoKeys").len(), 3);
        assert_eq!(policy_ancestors(ROOT_RESOURCE), [ROOT_RESOURCE]);
        assert_eq!(policy_ancestors("projects/"), [ROOT_RESOURCE]);
        assert_eq!(policy_ancestors("projects"), [ROOT_RESOURCE]);
        assert_eq!(
            policy_ancestors("projects/p/instances/i/objects/o"),
            [ROOT_RESOURCE, "projects/p", "projects/p/instances/i"]
        );
        assert_eq!(policy_ancestors("keyRings/r/cryptoKeys/k"), [ROOT_RESOURCE]);
        assert_eq!(project_of(v), Some("p"));
        assert_eq!(project_of("organizations/keyhold"), None);
    }
}
