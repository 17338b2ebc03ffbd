//! Deletion (issue 19): `cryptoKeyVersions.delete` and `cryptoKeys.delete`, Cloud KMS's
//! long-running operations, and the retired resources deleted keys leave.
//!
//! As Cloud KMS states them: a version can be deleted once its material is gone (`DESTROYED`,
//! `IMPORT_FAILED` or `GENERATION_FAILED`), unless it holds imported material (a successfully
//! imported version, which can be imported into again); a key once every version is deleted.
//! A deleted key leaves a retired resource, and its name is never used again. Both deletions
//! are done when they answer: the operation is returned `done`, and `operations.get` reads it
//! back.

use std::sync::Arc;

use keyhold_api::page::Page;
use keyhold_api::resources::{Operation, RetiredResource, VersionState};
use keyhold_api::{CryptoKeyName, CryptoKeyVersionName, LocationName};
use serde_json::json;

use crate::call::Call;
use crate::clock::Clock;
use crate::error::KmsError;
use crate::keys::{Keys, ListQuery};
use crate::listing::{self, Listing};
use crate::repo::{KmsRepository, RepoError};

/// The prefix of the IDs of the KMS's operations (the store's begin `op-`).
pub const OPERATION_PREFIX: &str = "kms-";
/// The `resourceType` of a deleted key's retired resource.
const CRYPTO_KEY_TYPE: &str = "cloudkms.googleapis.com/CryptoKey";
const TYPE_PREFIX: &str = "type.googleapis.com/";

fn random_id() -> Result<String, KmsError> {
    let mut b = [0u8; 16];
    keyhold_crypto::random_bytes(&mut b).map_err(|e| KmsError::Internal(e.to_string()))?;
    Ok(keyhold_crypto::hex(&b))
}

/// A finished operation of `location` with `metadata`, answering `google.protobuf.Empty`.
fn finished(location: &LocationName, metadata: serde_json::Value) -> Result<Operation, KmsError> {
    Ok(Operation {
        name: format!("{location}/operations/{OPERATION_PREFIX}{}", random_id()?),
        metadata: Some(metadata),
        done: true,
        response: Some(json!({"@type": format!("{TYPE_PREFIX}google.protobuf.Empty")})),
    })
}

/// Deletions, retired resources and operations.
#[derive(Debug)]
pub(crate) struct Deletions {
    repo: Arc<dyn KmsRepository>,
    clock: Arc<dyn Clock>,
    keys: Arc<Keys>,
}

impl Deletions {
    pub(crate) fn new(repo: Arc<dyn KmsRepository>, clock: Arc<dyn Clock>, keys: Arc<Keys>) -> Self {
        Self { repo, clock, keys }
    }

    /// `cryptoKeyVersions.delete`.
    pub(crate) async fn delete_version(
        &self,
        call: &Call<'_>,
        name: &CryptoKeyVersionName,
    ) -> Result<Operation, KmsError> {
        let version = match self.repo.version(name).await? {
            Some(v) => v,
            None => {
                self.repo
                    .crypto_key(&name.crypto_key)
                    .await?
                    .ok_or_else(|| KmsError::CryptoKeyNotFound(name.crypto_key.clone()))?;
                return Err(KmsError::VersionNotFound(name.clone()));
            }
        };
        let state = version.version.state.unwrap_or(VersionState::Unspecified);
        if !matches!(state, VersionState::Destroyed | VersionState::ImportFailed | VersionState::GenerationFailed) {
            return Err(KmsError::IllegalTransition {
                version: name.clone(),
                state,
                action: "delete",
                allowed: "DESTROYED, IMPORT_FAILED or GENERATION_FAILED",
            });
        }
        if version.version.reimport_eligible && state != VersionState::ImportFailed {
            return Err(KmsError::FailedPrecondition(format!(
                "{name} holds imported key material: successfully imported CryptoKeyVersions cannot be deleted (it \
                 can be imported into again)."
            )));
        }
        let operation = finished(
            &name.crypto_key.key_ring.location,
            json!({"@type": format!("{TYPE_PREFIX}google.cloud.kms.v1.DeleteCryptoKeyVersionMetadata")}),
        )?;
        call.set_key_version(name.to_string());
        match self.repo.delete_version(&version, &operation, &call.success_entry()).await {
            Ok(()) => {}
            Err(RepoError::Conflict) => {
                // Deleted by another request meanwhile, or changed (then retrying may do).
                return Err(match self.repo.version(name).await? {
                    None => KmsError::VersionNotFound(name.clone()),
                    Some(_) => KmsError::Contention(format!("{name} changed while it was being deleted; retry")),
                });
            }
            Err(e) => return Err(e.into()),
        }
        self.keys.key_changed(&name.crypto_key);
        Ok(operation)
    }

    /// `cryptoKeys.delete`.
    pub(crate) async fn delete_key(&self, call: &Call<'_>, name: &CryptoKeyName) -> Result<Operation, KmsError> {
        let key = self.repo.crypto_key(name).await?.ok_or_else(|| KmsError::CryptoKeyNotFound(name.clone()))?;
        let versions = self.repo.count_versions(name).await?;
        if versions > 0 {
            return Err(KmsError::FailedPrecondition(format!(
                "CryptoKey {name} still has {versions} CryptoKeyVersion{}: delete each with DeleteCryptoKeyVersion \
                 (once destroyed) first.",
                if versions == 1 { "" } else { "s" }
            )));
        }
        let location = &name.key_ring.location;
        let retired = RetiredResource {
            name: format!("{location}/retiredResources/{}", random_id()?),
            original_resource: name.to_string(),
            resource_type: CRYPTO_KEY_TYPE.into(),
            delete_time: Some(self.clock.now()),
        };
        let operation = finished(
            location,
            json!({
                "@type": format!("{TYPE_PREFIX}google.cloud.kms.v1.DeleteCryptoKeyMetadata"),
                "retiredResource": retired.name,
            }),
        )?;
        match self.repo.delete_crypto_key(&key, &retired, &operation, &call.success_entry()).await {
            Ok(()) => {}
            Err(RepoError::Conflict) => {
                // Deleted by another request meanwhile, or given a version meanwhile.
                return Err(match self.repo.crypto_key(name).await? {
                    None => KmsError::CryptoKeyNotFound(name.clone()),
                    Some(_) => KmsError::FailedPrecondition(format!(
                        "CryptoKey {name} changed while it was being deleted (a version was added); delete its \
                         versions first."
                    )),
                });
            }
            Err(e) => return Err(e.into()),
        }
        self.keys.key_changed(name);
        Ok(operation)
    }

    /// `retiredResources.get`.
    pub(crate) async fn retired_resource(&self, name: &str) -> Result<RetiredResource, KmsError> {
        self.repo
            .retired_resource(name)
            .await?
            .ok_or_else(|| KmsError::NotFound(format!("RetiredResource {name} not found.")))
    }

    /// `retiredResources.list`.
    pub(crate) async fn list_retired(
        &self,
        parent: &LocationName,
        q: &ListQuery,
    ) -> Result<Page<RetiredResource>, KmsError> {
        self.keys.check_location(parent)?;
        listing::page(&RetiredResources { repo: &*self.repo, parent }, q, &parent.to_string()).await
    }

    /// `operations.get` of an operation of the KMS.
    pub(crate) async fn operation(&self, name: &str) -> Result<Operation, KmsError> {
        self.repo.kms_operation(name).await?.ok_or_else(|| KmsError::NotFound(format!("Operation {name} not found.")))
    }
}

/// A location's retired resources, by name.
struct RetiredResources<'a> {
    repo: &'a dyn KmsRepository,
    parent: &'a LocationName,
}

impl Listing for RetiredResources<'_> {
    type Item = RetiredResource;
    async fn fetch(&self, after: &str, n: usize) -> Result<Vec<(String, RetiredResource)>, KmsError> {
        let limit = i64::try_from(n).unwrap_or(i64::MAX);
        let items = self.repo.list_retired_resources(self.parent, after, limit).await?;
        Ok(items.into_iter().map(|r| (r.name.clone(), r)).collect())
    }
    async fn count(&self) -> Result<i64, KmsError> {
        Ok(self.repo.count_retired_resources(self.parent).await?)
    }
}
