//! Authorization: evaluates IAM policies along the resource hierarchy ([K8]) with a cache that
//! follows every change (locally at once, from other nodes through the store's change log),
//! and keeps the projects the server has seen (each created with its number on first use).
//!
//! A part of the KMS that never sees the façade: it reads policies and projects from the
//! repository and nothing else.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use keyhold_iam::role::{self, Permission};
use keyhold_iam::{Principal, policy_ancestors};

use crate::clock::Clock;
use crate::error::KmsError;
use crate::repo::{KmsRepository, PolicyRecord, ProjectRecord, RepoError};

/// Decides whether a principal holds a permission on a resource.
#[derive(Debug)]
pub(crate) struct Authorizer {
    repo: Arc<dyn KmsRepository>,
    clock: Arc<dyn Clock>,
    /// Policies by resource (including "none set"), each forgotten when its policy changes (and
    /// all when the store changed in a way the change log does not name); a generation guard
    /// keeps a slow load that raced with a change from being cached.
    policies: RwLock<HashMap<String, Option<Arc<PolicyRecord>>>>,
    /// The projects known to exist.
    projects: RwLock<HashSet<String>>,
    generation: AtomicU64,
}

impl Authorizer {
    pub(crate) fn new(repo: Arc<dyn KmsRepository>, clock: Arc<dyn Clock>) -> Self {
        Self { repo, clock, policies: RwLock::default(), projects: RwLock::default(), generation: AtomicU64::new(0) }
    }

    /// Forgets every cached policy and project (after a policy change, or another node's change).
    pub(crate) fn clear(&self) {
        let mut p = self.policies.write().unwrap_or_else(|e| e.into_inner());
        self.generation.fetch_add(1, Ordering::AcqRel);
        p.clear();
        self.projects.write().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Forgets the cached policy of one resource (its policy changed, here or on another node);
    /// the chains of its descendants read it again.
    pub(crate) fn invalidate_policy(&self, resource: &str) {
        let mut p = self.policies.write().unwrap_or_else(|e| e.into_inner());
        self.generation.fetch_add(1, Ordering::AcqRel);
        p.remove(resource);
    }

    /// The policies of `resource` and its ancestors, root first.
    async fn chain(&self, resource: &str) -> Result<Vec<Arc<PolicyRecord>>, KmsError> {
        let mut out = Vec::with_capacity(4);
        for name in policy_ancestors(resource) {
            if let Some(p) = self.policy(&name).await? {
                out.push(p);
            }
        }
        Ok(out)
    }

    async fn policy(&self, resource: &str) -> Result<Option<Arc<PolicyRecord>>, KmsError> {
        if let Some(hit) = self.policies.read().unwrap_or_else(|e| e.into_inner()).get(resource) {
            return Ok(hit.clone());
        }
        let generation = self.generation.load(Ordering::Acquire);
        let loaded = self.repo.policy(resource).await?.map(Arc::new);
        let mut map = self.policies.write().unwrap_or_else(|e| e.into_inner());
        if self.generation.load(Ordering::Acquire) == generation {
            map.insert(resource.to_string(), loaded.clone());
        }
        Ok(loaded)
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
