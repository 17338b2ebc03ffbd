//! IAM policies on the resource hierarchy ([K8]): the work of `:getIamPolicy`,
//! `:setIamPolicy` and `:testIamPermissions` (their evaluation is [`crate::authz`]).

use std::sync::Arc;

use keyhold_api::iam::{Policy, SetIamPolicyRequest};
use keyhold_api::{CryptoKeyName, ImportJobName, KeyRingName};
use keyhold_iam::role::{self, Permission};
use keyhold_iam::{Principal, ROOT_RESOURCE};

use crate::audit::AuditKind;
use crate::authz::Authorizer;
use crate::call::{Call, Op};
use crate::error::KmsError;
use crate::events::{EventBus, KmsEvent};
use crate::repo::{KmsRepository, PolicyRecord, RepoError};

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
    /// An import job.
    ImportJob(ImportJobName),
}

impl IamResource {
    /// The resource name.
    pub fn name(&self) -> String {
        match self {
            IamResource::Root => ROOT_RESOURCE.to_string(),
            IamResource::Project(p) => format!("projects/{p}"),
            IamResource::KeyRing(r) => r.to_string(),
            IamResource::CryptoKey(k) => k.to_string(),
            IamResource::ImportJob(j) => j.to_string(),
        }
    }

    pub(crate) fn get_permission(&self) -> Permission {
        match self {
            IamResource::Root => role::ORGANIZATIONS_GET_IAM_POLICY,
            IamResource::Project(_) => role::PROJECTS_GET_IAM_POLICY,
            IamResource::KeyRing(_) => role::KEY_RINGS_GET_IAM_POLICY,
            IamResource::CryptoKey(_) => role::CRYPTO_KEYS_GET_IAM_POLICY,
            IamResource::ImportJob(_) => role::IMPORT_JOBS_GET_IAM_POLICY,
        }
    }

    pub(crate) fn set_permission(&self) -> Permission {
        match self {
            IamResource::Root => role::ORGANIZATIONS_SET_IAM_POLICY,
            IamResource::Project(_) => role::PROJECTS_SET_IAM_POLICY,
            IamResource::KeyRing(_) => role::KEY_RINGS_SET_IAM_POLICY,
            IamResource::CryptoKey(_) => role::CRYPTO_KEYS_SET_IAM_POLICY,
            IamResource::ImportJob(_) => role::IMPORT_JOBS_SET_IAM_POLICY,
        }
    }

    /// The call of `method` on this resource (the service owning it, the log stream).
    pub(crate) fn op(&self, method: &'static str, kind: AuditKind) -> Op {
        let service = match self {
            IamResource::Root | IamResource::Project(_) => "cloudresourcemanager.googleapis.com",
            _ => "cloudkms.googleapis.com",
        };
        Op::of(service, method, kind)
    }
}

/// The IAM policies of KMS resources: reads and compare-and-set writes.
#[derive(Debug)]
pub(crate) struct Policies {
    repo: Arc<dyn KmsRepository>,
    authz: Arc<Authorizer>,
    events: EventBus,
}

impl Policies {
    pub(crate) fn new(repo: Arc<dyn KmsRepository>, authz: Arc<Authorizer>, events: EventBus) -> Self {
        Self { repo, authz, events }
    }

    /// Checks that a policy-bearing KMS resource exists.
    async fn require_exists(&self, resource: &IamResource) -> Result<(), KmsError> {
        match resource {
            IamResource::Root | IamResource::Project(_) => Ok(()),
            IamResource::KeyRing(r) => {
                self.repo.key_ring(r).await?.map(|_| ()).ok_or_else(|| KmsError::KeyRingNotFound(r.clone()))
            }
            IamResource::CryptoKey(k) => {
                self.repo.crypto_key(k).await?.map(|_| ()).ok_or_else(|| KmsError::CryptoKeyNotFound(k.clone()))
            }
            IamResource::ImportJob(j) => {
                self.repo.import_job(j).await?.map(|_| ()).ok_or_else(|| KmsError::ImportJobNotFound(j.clone()))
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
    pub(crate) async fn get(&self, resource: &IamResource) -> Result<Policy, KmsError> {
        self.require_exists(resource).await?;
        Ok(Self::render_policy(self.repo.policy(&resource.name()).await?.as_ref()))
    }

    /// `:setIamPolicy`: changes the fields `update_mask` names (without one, `bindings` and
    /// `etag`, as in Cloud IAM); the others keep what is stored. A stale `etag` fails with
    /// `ABORTED`; without one the change applies to whatever is stored when it is written: the
    /// fields kept are written only if the policy has not changed since they were read, and read
    /// again if it has, so a concurrent change (a revocation) is never written back over.
    /// Takes effect on the next request on every node.
    pub(crate) async fn set(
        &self,
        call: &Call<'_>,
        resource: &IamResource,
        request: &SetIamPolicyRequest,
    ) -> Result<Policy, KmsError> {
        /// How often a set without an etag reads again after a concurrent change.
        const ATTEMPTS: usize = 16;
        let name = resource.name();
        self.require_exists(resource).await?;
        let asked = request
            .policy
            .as_ref()
            .ok_or_else(|| KmsError::InvalidArgument("policy is required: send {\"policy\": {...}}.".into()))?;
        let mut mask: Vec<&str> = request.update_mask.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
        for m in &mask {
            if !matches!(*m, "bindings" | "etag" | "auditConfigs" | "audit_configs" | "version") {
                return Err(KmsError::InvalidArgument(format!(
                    "update_mask path \"{m}\" is not a field of Policy; use bindings, etag or auditConfigs."
                )));
            }
        }
        if mask.is_empty() {
            mask = vec!["bindings", "etag"];
        }
        let set_bindings = mask.contains(&"bindings");
        let set_audit_configs = mask.iter().any(|m| m.starts_with("audit"));
        // What the request sets is checked once; what is kept was checked when it was set.
        let checked = keyhold_iam::normalize(
            &name,
            &Policy {
                bindings: if set_bindings { asked.bindings.clone() } else { vec![] },
                audit_configs: if set_audit_configs { asked.audit_configs.clone() } else { vec![] },
                ..asked.clone()
            },
        )?;
        for _ in 0..ATTEMPTS {
            let current = self.repo.policy(&name).await?;
            let current_rev = current.as_ref().map_or(0, |c| c.revision);
            let current_etag = keyhold_iam::etag_for_revision(current_rev);
            if !asked.etag.is_empty() && asked.etag != current_etag {
                return Err(KmsError::StaleEtag { given: asked.etag.clone(), current: current_etag });
            }
            let kept = current.as_ref().map(|c| &c.policy);
            let policy = Policy {
                bindings: if set_bindings {
                    checked.bindings.clone()
                } else {
                    kept.map(|p| p.bindings.clone()).unwrap_or_default()
                },
                audit_configs: if set_audit_configs {
                    checked.audit_configs.clone()
                } else {
                    kept.map(|p| p.audit_configs.clone()).unwrap_or_default()
                },
                ..checked.clone()
            };
            match self.repo.set_policy(&name, &policy, Some(current_rev), &call.success_entry()).await {
                Ok(revision) => {
                    // Only this resource's policy: the chains of its descendants read it again.
                    self.authz.invalidate_policy(&name);
                    self.events.send(KmsEvent::PolicyChanged(name.clone()));
                    return Ok(Self::render_policy(Some(&PolicyRecord { policy, revision })));
                }
                Err(RepoError::Conflict) => {
                    // The resource was deleted meanwhile (a key), or the policy changed: with an
                    // etag that is the caller's to resolve, without one read it again.
                    self.require_exists(resource).await?;
                    if !asked.etag.is_empty() {
                        let now = self.repo.policy(&name).await?.map_or(0, |c| c.revision);
                        return Err(KmsError::StaleEtag {
                            given: asked.etag.clone(),
                            current: keyhold_iam::etag_for_revision(now),
                        });
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(KmsError::Contention(name))
    }

    /// `:testIamPermissions`: which of `permissions` `principal` holds on the resource (none,
    /// if it does not exist).
    pub(crate) async fn test(
        &self,
        principal: &Principal,
        anonymous: bool,
        resource: &IamResource,
        permissions: &[String],
    ) -> Result<Vec<String>, KmsError> {
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
        let name = resource.name();
        let mut held = Vec::new();
        for p in parsed {
            if self.authz.has_permission(principal, anonymous, p, &name).await? {
                held.push(p.as_str().to_string());
            }
        }
        Ok(held)
    }

    /// Sets the server-wide policy on first start, if none is set (the owner's bootstrap).
    pub(crate) async fn set_root_if_absent(
        &self,
        policy: &keyhold_api::iam::Policy,
        entry: &crate::audit::AuditRecord,
    ) -> Result<(), KmsError> {
        if self.repo.policy(ROOT_RESOURCE).await?.is_none() {
            match self.repo.set_policy(ROOT_RESOURCE, policy, Some(0), entry).await {
                Ok(_) | Err(RepoError::Conflict) | Err(RepoError::AlreadyExists) => {}
                Err(e) => return Err(e.into()),
            }
            self.authz.clear();
        }
        Ok(())
    }
}
