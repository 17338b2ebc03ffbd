//! IAM policies on the resource hierarchy ([K8]): evaluation with a cache that follows every
//! change (locally at once, from other nodes through the store's change counter), and the
//! `:getIamPolicy` / `:setIamPolicy` / `:testIamPermissions` methods; project numbers.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use keyhold_api::iam::{Policy, SetIamPolicyRequest};
use keyhold_api::{CryptoKeyName, KeyRingName};
use keyhold_iam::role::{self, Permission};
use keyhold_iam::{Principal, ROOT_RESOURCE, policy_ancestors};

use crate::audit::AuditKind;
use crate::caller::{Call, Caller};
use crate::error::KmsError;
use crate::service::Kms;
use crate::store::{PolicyRecord, ProjectRecord, StoreError};

/// A resource that carries an IAM policy.
#[derive(Debug, Clone, PartialEq)]
pub enum IamResource {
    /// The whole server (`organizations/keyhold`).
    Root,
    /// `projects/P`.
    Project(String),
    /// A key ring.
    KeyRing(KeyRingName),
    /// A crypto key.
    CryptoKey(CryptoKeyName),
}

impl IamResource {
    /// The resource name.
    pub fn name(&self) -> String {
        match self {
            IamResource::Root => ROOT_RESOURCE.to_string(),
            IamResource::Project(p) => format!("projects/{p}"),
            IamResource::KeyRing(r) => r.to_string(),
            IamResource::CryptoKey(k) => k.to_string(),
        }
    }

    fn get_permission(&self) -> Permission {
        match self {
            IamResource::Root => role::ORGANIZATIONS_GET_IAM_POLICY,
            IamResource::Project(_) => role::PROJECTS_GET_IAM_POLICY,
            IamResource::KeyRing(_) => role::KEY_RINGS_GET_IAM_POLICY,
            IamResource::CryptoKey(_) => role::CRYPTO_KEYS_GET_IAM_POLICY,
        }
    }

    fn set_permission(&self) -> Permission {
        match self {
            IamResource::Root => role::ORGANIZATIONS_SET_IAM_POLICY,
            IamResource::Project(_) => role::PROJECTS_SET_IAM_POLICY,
            IamResource::KeyRing(_) => role::KEY_RINGS_SET_IAM_POLICY,
            IamResource::CryptoKey(_) => role::CRYPTO_KEYS_SET_IAM_POLICY,
        }
    }

    fn service(&self) -> &'static str {
        match self {
            IamResource::Root | IamResource::Project(_) => "cloudresourcemanager.googleapis.com",
            _ => "cloudkms.googleapis.com",
        }
    }
}

/// Cached IAM state: policies by resource (including "none set"), and the projects known to
/// exist. Cleared whenever the store changes; a generation guard keeps a slow load that raced
/// with a change from being cached.
#[derive(Debug, Default)]
pub(crate) struct IamCache {
    policies: RwLock<HashMap<String, Option<Arc<PolicyRecord>>>>,
    projects: RwLock<HashSet<String>>,
    generation: AtomicU64,
}

impl IamCache {
    pub(crate) fn clear(&self) {
        let mut p = self.policies.write().unwrap_or_else(|e| e.into_inner());
        self.generation.fetch_add(1, Ordering::AcqRel);
        p.clear();
        self.projects.write().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// The policies of `resource` and its ancestors, root first.
    async fn chain(&self, kms: &Kms, resource: &str) -> Result<Vec<Arc<PolicyRecord>>, KmsError> {
        let mut out = Vec::with_capacity(4);
        for name in policy_ancestors(resource) {
            if let Some(p) = self.policy(kms, &name).await? {
                out.push(p);
            }
        }
        Ok(out)
    }

    async fn policy(&self, kms: &Kms, resource: &str) -> Result<Option<Arc<PolicyRecord>>, KmsError> {
        if let Some(hit) = self.policies.read().unwrap_or_else(|e| e.into_inner()).get(resource) {
            return Ok(hit.clone());
        }
        let generation = self.generation.load(Ordering::Acquire);
        let loaded = kms.store.policy(resource).await?.map(Arc::new);
        let mut map = self.policies.write().unwrap_or_else(|e| e.into_inner());
        if self.generation.load(Ordering::Acquire) == generation {
            map.insert(resource.to_string(), loaded.clone());
        }
        Ok(loaded)
    }

    pub(crate) async fn has_permission(
        &self,
        kms: &Kms,
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
        let chain = self.chain(kms, resource).await?;
        Ok(keyhold_iam::allows(chain.iter().map(|p| &p.policy), principal, permission))
    }

    /// Creates the project record (and its number) on first use.
    pub(crate) async fn ensure_project(&self, kms: &Kms, project_id: &str) -> Result<(), KmsError> {
        if self.projects.read().unwrap_or_else(|e| e.into_inner()).contains(project_id) {
            return Ok(());
        }
        kms.project_record(project_id).await?;
        self.projects.write().unwrap_or_else(|e| e.into_inner()).insert(project_id.to_string());
        Ok(())
    }
}

/// Project numbers are twelve digits, like Google's.
fn random_project_number() -> Result<i64, KmsError> {
    let mut b = [0u8; 8];
    keyhold_crypto::random_bytes(&mut b).map_err(|e| KmsError::Internal(e.to_string()))?;
    Ok(100_000_000_000 + (u64::from_be_bytes(b) % 900_000_000_000) as i64)
}

impl Kms {
    /// The project's record, created with a fresh number if it does not exist yet.
    pub(crate) async fn project_record(&self, project_id: &str) -> Result<ProjectRecord, KmsError> {
        for _ in 0..8 {
            if let Some(p) = self.store.project(project_id).await? {
                return Ok(p);
            }
            let p = ProjectRecord {
                project_id: project_id.to_string(),
                project_number: random_project_number()?,
                create_time: self.clock.now(),
            };
            match self.store.insert_project(&p).await {
                Ok(()) => return Ok(p),
                // Another request created it, or the number is taken: look again.
                Err(StoreError::AlreadyExists) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(KmsError::Contention(format!("projects/{project_id}")))
    }

    /// A project's number, for services naming it (`projects/NUMBER`); no permission needed:
    /// callers have already been authorized for something in the project.
    pub async fn project_number(&self, project_id: &str) -> Result<i64, KmsError> {
        Ok(self.project_record(project_id).await?.project_number)
    }

    /// `projects.get` (Resource Manager): the project's ID and number.
    pub async fn project(&self, caller: &Caller, project_id: &str) -> Result<ProjectRecord, KmsError> {
        let resource = format!("projects/{project_id}");
        let call = Call::for_service(
            caller,
            "cloudresourcemanager.googleapis.com",
            "GetProject",
            resource.clone(),
            AuditKind::DataAccess,
        );
        let r = async {
            keyhold_api::name::check_id("project", project_id)?;
            self.authorize(&call, role::PROJECTS_GET, &resource).await?;
            self.project_record(project_id).await
        }
        .await;
        self.finish(call, r).await
    }

    /// Checks that a policy-bearing KMS resource exists.
    async fn require_exists(&self, resource: &IamResource) -> Result<(), KmsError> {
        match resource {
            IamResource::Root | IamResource::Project(_) => Ok(()),
            IamResource::KeyRing(r) => {
                self.store.key_ring(r).await?.map(|_| ()).ok_or_else(|| KmsError::KeyRingNotFound(r.clone()))
            }
            IamResource::CryptoKey(k) => {
                self.store.crypto_key(k).await?.map(|_| ()).ok_or_else(|| KmsError::CryptoKeyNotFound(k.clone()))
            }
        }
    }

    fn render_policy(record: Option<&PolicyRecord>) -> Policy {
        match record {
            Some(r) => Policy { etag: keyhold_iam::etag_for_revision(r.revision), ..r.policy.clone() },
            None => Policy { etag: keyhold_iam::etag_for_revision(0), ..Default::default() },
        }
    }

    /// `:getIamPolicy`.
    pub async fn get_iam_policy(&self, caller: &Caller, resource: &IamResource) -> Result<Policy, KmsError> {
        let name = resource.name();
        let call = Call::for_service(caller, resource.service(), "GetIamPolicy", name.clone(), AuditKind::DataAccess);
        let r = async {
            self.authorize(&call, resource.get_permission(), &name).await?;
            self.require_exists(resource).await?;
            Ok(Self::render_policy(self.store.policy(&name).await?.as_ref()))
        }
        .await;
        self.finish(call, r).await
    }

    /// `:setIamPolicy`: replaces the policy; a stale `etag` fails with `ABORTED`, no etag
    /// overwrites. Takes effect on the next request on every node.
    pub async fn set_iam_policy(
        &self,
        caller: &Caller,
        resource: &IamResource,
        request: &SetIamPolicyRequest,
    ) -> Result<Policy, KmsError> {
        let name = resource.name();
        let call = Call::for_service(caller, resource.service(), "SetIamPolicy", name.clone(), AuditKind::Activity);
        let r = async {
            self.authorize(&call, resource.set_permission(), &name).await?;
            self.require_exists(resource).await?;
            let asked = request
                .policy
                .as_ref()
                .ok_or_else(|| KmsError::InvalidArgument("policy is required: send {\"policy\": {...}}.".into()))?;
            let mask: Vec<&str> = request.update_mask.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
            for m in &mask {
                if !matches!(*m, "bindings" | "etag" | "auditConfigs" | "audit_configs" | "version") {
                    return Err(KmsError::InvalidArgument(format!(
                        "update_mask path \"{m}\" is not a field of Policy; use bindings, etag or auditConfigs."
                    )));
                }
            }
            let current = self.store.policy(&name).await?;
            let mut wanted = asked.clone();
            if !mask.is_empty() && !mask.iter().any(|m| m.starts_with("audit")) {
                // Not asked to change audit configs: keep the stored ones.
                wanted.audit_configs = current.as_ref().map(|c| c.policy.audit_configs.clone()).unwrap_or_default();
            }
            let normalized = keyhold_iam::normalize(&name, &wanted)?;
            let expected = if asked.etag.is_empty() {
                None
            } else {
                let current_rev = current.as_ref().map_or(0, |c| c.revision);
                let current_etag = keyhold_iam::etag_for_revision(current_rev);
                if asked.etag != current_etag {
                    return Err(KmsError::StaleEtag { given: asked.etag.clone(), current: current_etag });
                }
                Some(current_rev)
            };
            match self.store.set_policy(&name, &normalized, expected, &call.success_entry()).await {
                Ok(revision) => {
                    self.iam.clear();
                    self.events.send(crate::events::KmsEvent::PolicyChanged(name.clone()));
                    Ok(Self::render_policy(Some(&PolicyRecord { policy: normalized, revision })))
                }
                Err(StoreError::Conflict) => {
                    let now = self.store.policy(&name).await?.map_or(0, |c| c.revision);
                    Err(KmsError::StaleEtag { given: asked.etag.clone(), current: keyhold_iam::etag_for_revision(now) })
                }
                Err(e) => Err(e.into()),
            }
        }
        .await;
        self.finish(call, r).await
    }

    /// `:testIamPermissions`: which of `permissions` the caller holds on the resource (none, if
    /// it does not exist). Needs no permission itself.
    pub async fn test_iam_permissions(
        &self,
        caller: &Caller,
        resource: &IamResource,
        permissions: &[String],
    ) -> Result<Vec<String>, KmsError> {
        let name = resource.name();
        let call =
            Call::for_service(caller, resource.service(), "TestIamPermissions", name.clone(), AuditKind::DataAccess);
        let r = async {
            let principal = self.authenticated(&call)?.clone();
            let mut parsed = Vec::with_capacity(permissions.len());
            for p in permissions {
                parsed.push(Permission::parse(p).ok_or_else(|| {
                    KmsError::InvalidArgument(format!(
                        "Permission '{p}' is not valid: Keyhold knows the Cloud KMS permissions listed in docs/api.md."
                    ))
                })?);
            }
            if self.require_exists(resource).await.is_err() {
                return Ok(Vec::new());
            }
            let mut held = Vec::new();
            for p in parsed {
                if self.iam.has_permission(self, &principal, caller.anonymous, p, &name).await? {
                    held.push(p.as_str().to_string());
                }
            }
            Ok(held)
        }
        .await;
        self.finish(call, r).await
    }
}
