//! Authorization: evaluates IAM policies along the resource hierarchy ([K8]) with a cache that
//! follows every change (locally at once, from other nodes through the store's change log),
//! and keeps the projects the server has seen (each created with its number on first use).
//!
//! A part of the KMS that never sees the façade: it reads policies and projects from the
//! repository and nothing else.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use keyhold_api::iam::Policy;
use keyhold_iam::role::{self, Permission};
use keyhold_iam::{Principal, policy_ancestors};

use crate::bounded_cache::BoundedCache;
use crate::clock::Clock;
use crate::error::KmsError;
use crate::repo::{KmsRepository, PolicyRecord, ProjectRecord, RepoError};

/// The default byte budget of the IAM policy cache: about 180,000 resources with no policy of
/// their own (keys named like `projects/P/locations/L/keyRings/R/cryptoKeys/K`), fewer with
/// policies.
pub const DEFAULT_POLICY_CACHE_BYTES: u64 = 32 * 1024 * 1024;
/// What an entry costs besides its name's bytes and its policy's strings: the name's `String`,
/// the `Arc`, the slot and quick_cache's bookkeeping (an estimate, on the generous side).
const ENTRY_OVERHEAD: u64 = 112;
/// What a binding and a member cost besides their strings.
const BINDING_OVERHEAD: u64 = 96;
const MEMBER_OVERHEAD: u64 = 32;
/// What an audit config and one of its log configs cost besides their strings.
const AUDIT_CONFIG_OVERHEAD: u64 = 48;
const LOG_CONFIG_OVERHEAD: u64 = 32;
/// The shared record behind a set policy: the `Arc`'s counts, the revision, the vectors.
const RECORD_OVERHEAD: u64 = 96;

/// The weight of a cached policy: the bytes its entry holds, estimated from its strings.
#[derive(Clone, Copy, Debug)]
struct PolicyWeight;

impl quick_cache::Weighter<String, Option<Arc<PolicyRecord>>> for PolicyWeight {
    fn weight(&self, resource: &String, policy: &Option<Arc<PolicyRecord>>) -> u64 {
        ENTRY_OVERHEAD
            + resource.len() as u64
            + policy.as_ref().map_or(0, |p| RECORD_OVERHEAD + policy_weight(&p.policy))
    }
}

fn policy_weight(policy: &Policy) -> u64 {
    let bindings: u64 =
        policy.bindings.iter().map(|b| BINDING_OVERHEAD + b.role.len() as u64 + members_weight(&b.members)).sum();
    let log_configs = |c: &keyhold_api::iam::AuditConfig| -> u64 {
        c.audit_log_configs.iter().map(|l| LOG_CONFIG_OVERHEAD + members_weight(&l.exempted_members)).sum()
    };
    let audit_configs: u64 =
        policy.audit_configs.iter().map(|c| AUDIT_CONFIG_OVERHEAD + c.service.len() as u64 + log_configs(c)).sum();
    bindings + audit_configs
}

/// Members, bound or exempted: their strings and what each costs besides.
fn members_weight(members: &[String]) -> u64 {
    members.iter().map(|m| MEMBER_OVERHEAD + m.len() as u64).sum()
}

/// Decides whether a principal holds a permission on a resource.
pub(crate) struct Authorizer {
    repo: Arc<dyn KmsRepository>,
    clock: Arc<dyn Clock>,
    /// Policies by resource (including "none set"), within a byte budget: each forgotten when
    /// its policy changes (and all when the store changed in a way the change log does not
    /// name). A request may name any resource, existing or not; the budget is what keeps a
    /// client naming millions of them from growing this without end.
    policies: BoundedCache<String, Option<Arc<PolicyRecord>>, PolicyWeight>,
    /// The projects known to exist.
    projects: RwLock<HashSet<String>>,
}

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (held, weight) = self.policies.usage();
        f.debug_struct("Authorizer").field("policies", &held).field("policy_bytes", &weight).finish_non_exhaustive()
    }
}

impl Authorizer {
    /// An authorizer whose policy cache holds at most `policy_cache_bytes`.
    pub(crate) fn new(repo: Arc<dyn KmsRepository>, clock: Arc<dyn Clock>, policy_cache_bytes: u64) -> Self {
        let typical = ENTRY_OVERHEAD + 64;
        Self {
            repo,
            clock,
            policies: BoundedCache::new(policy_cache_bytes, typical, PolicyWeight),
            projects: RwLock::default(),
        }
    }

    /// Forgets every cached policy and project: after another node's change the log does not
    /// name, and when the root policy is first set.
    pub(crate) fn clear(&self) {
        self.policies.clear();
        self.projects.write().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Forgets the cached policy of one resource (its policy changed, here or on another node);
    /// the chains of its descendants read it again.
    pub(crate) fn invalidate_policy(&self, resource: &str) {
        self.policies.invalidate(resource);
    }

    /// The policies held and their weight in bytes.
    pub(crate) fn policy_cache_usage(&self) -> (usize, u64) {
        self.policies.usage()
    }

    /// The policies of `resource` and its ancestors, root first.
    async fn chain(&self, resource: &str) -> Result<Vec<Arc<PolicyRecord>>, KmsError> {
        let mut out = Vec::with_capacity(4);
        for name in policy_ancestors(resource) {
            if let Some(p) = self.policy(name).await? {
                out.push(p);
            }
        }
        Ok(out)
    }

    /// One resource's policy: from the cache, or read once however many requests miss it.
    async fn policy(&self, resource: &str) -> Result<Option<Arc<PolicyRecord>>, KmsError> {
        self.policies.get_or_load(resource, || async { Ok(self.repo.policy(resource).await?.map(Arc::new)) }).await
    }

    /// Whether `principal` holds `permission` on `resource`.
    pub(crate) async fn has_permission(
        &self,
        principal: &Principal,
        anonymous: bool,
        permission: Permission,
        resource: &str,
    ) -> Result<bool, KmsError> {
        // Emulator mode: the anonymous principal owns every project, and nothing outside them
        // (whatever the server-wide policy says).
        if anonymous {
            return Ok(keyhold_iam::project_of(resource).is_some()
                && role::role("roles/owner").is_some_and(|r| r.grants(permission)));
        }
        let chain = self.chain(resource).await?;
        Ok(keyhold_iam::allows(chain.iter().map(|p| &p.policy), principal, permission))
    }

    /// Creates the project record (and its number) on first use.
    pub(crate) async fn ensure_project(&self, project_id: &str) -> Result<(), KmsError> {
        if self.projects.read().unwrap_or_else(|e| e.into_inner()).contains(project_id) {
            return Ok(());
        }
        self.project_record(project_id).await?;
        self.projects.write().unwrap_or_else(|e| e.into_inner()).insert(project_id.to_string());
        Ok(())
    }

    /// The project's record, created with a fresh number if it does not exist yet.
    pub(crate) async fn project_record(&self, project_id: &str) -> Result<ProjectRecord, KmsError> {
        for _ in 0..8 {
            if let Some(p) = self.repo.project(project_id).await? {
                return Ok(p);
            }
            let p = ProjectRecord {
                project_id: project_id.to_string(),
                project_number: random_project_number()?,
                create_time: self.clock.now(),
            };
            match self.repo.insert_project(&p).await {
                Ok(()) => return Ok(p),
                // Another request created it, or the number is taken: look again.
                Err(RepoError::AlreadyExists) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(KmsError::Contention(format!("projects/{project_id}")))
    }
}

/// Project numbers are twelve digits, like Google's.
fn random_project_number() -> Result<i64, KmsError> {
    let mut b = [0u8; 8];
    keyhold_crypto::random_bytes(&mut b).map_err(|e| KmsError::Internal(e.to_string()))?;
    Ok(100_000_000_000 + (u64::from_be_bytes(b) % 900_000_000_000) as i64)
}

#[cfg(test)]
mod tests {
    use keyhold_api::iam::{AuditConfig, AuditLogConfig, Binding, LogType};

    use super::*;

    /// A policy weighs at least the bytes of every string it holds, audit configs' included.
    #[test]
    fn a_policy_weighs_what_its_strings_and_audit_configs_hold() {
        let members: Vec<String> = (0..1_000).map(|i| format!("user:member-{i:04}@example.com")).collect();
        let strings: u64 = members.iter().map(|m| m.len() as u64).sum();
        let exempting = Policy {
            audit_configs: vec![AuditConfig {
                service: "allServices".into(),
                audit_log_configs: vec![AuditLogConfig {
                    log_type: LogType::DataRead,
                    exempted_members: members.clone(),
                }],
            }],
            ..Default::default()
        };
        let binding = Policy {
            bindings: vec![Binding { role: "roles/cloudkms.viewer".into(), members, condition: None }],
            ..Default::default()
        };
        for p in [exempting, binding] {
            let w = policy_weight(&p);
            assert!(w > strings + 1_000 * MEMBER_OVERHEAD, "{w} for {strings} bytes of members");
            assert!(w < 2 * (strings + 1_000 * MEMBER_OVERHEAD), "{w}: not wildly over either");
        }
    }
}
