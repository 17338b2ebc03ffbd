//! The trait every protection level implements, and what it is handed.

use std::fmt;

use async_trait::async_trait;
use keyhold_api::CryptoKeyVersionName;
use keyhold_api::resources::{AccessReason, ExternalProtectionLevelOptions, KeyOperationAttestation};
use keyhold_crypto::Secret;

use crate::cache::CachedVersion;
use crate::call::Call;
use crate::error::KmsError;
use crate::material::VersionMaterial;

/// The material of a new version, and what its backend tells about it.
#[derive(Debug)]
pub(crate) struct NewMaterial {
    pub(crate) material: VersionMaterial,
    pub(crate) attestation: Option<KeyOperationAttestation>,
    pub(crate) external_options: Option<ExternalProtectionLevelOptions>,
}

/// One use of a version: which, by whom, and why.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeyUse<'a> {
    /// The crypto key's full name, bound into every ciphertext.
    pub(crate) key_name: &'a str,
    /// The version used (its material, its cached unsealed key).
    pub(crate) version: &'a CachedVersion,
    /// The call, for what an external key manager is told.
    pub(crate) call: &'a Call<'a>,
    /// The access reason, checked against the key's policy.
    pub(crate) reason: AccessReason,
}

impl KeyUse<'_> {
    pub(crate) fn id(&self) -> u64 {
        self.version.record.name.version
    }

    pub(crate) fn version_name(&self) -> &str {
        &self.version.record.version.name
    }
}

/// Why material is being erased, for the log line that follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Erasing {
    /// The version is DESTROYED (committed): its material must go.
    Destroyed,
    /// The version's insert failed for sure: the material of a version that does not exist.
    NotCreated,
}

/// What a protection level does with key material.
#[async_trait]
pub(crate) trait KeyBackend: Send + Sync + fmt::Debug {
    /// Checks the options a new version of this level is created with, before a version ID
    /// is used up (so a refused request leaves no gap).
    fn check_options(&self, options: Option<&ExternalProtectionLevelOptions>) -> Result<(), KmsError> {
        let _ = options;
        Ok(())
    }
    /// Makes the material of a new version.
    async fn create(
        &self,
        name: &CryptoKeyVersionName,
        options: Option<&ExternalProtectionLevelOptions>,
    ) -> Result<NewMaterial, KmsError>;
    /// Encrypts `plaintext`, binding `aad`; the result is the ciphertext clients see.
    async fn encrypt(&self, using: KeyUse<'_>, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, KmsError>;
    /// Decrypts what [`KeyBackend::encrypt`] made with the same version and `aad`.
    async fn decrypt(&self, using: KeyUse<'_>, ciphertext: &[u8], aad: &[u8]) -> Result<Secret, KmsError>;
    /// Removes material that lives outside the database (an HSM object); best effort, logged.
    /// Nothing to do for material the database holds.
    async fn erase(&self, name: &CryptoKeyVersionName, material: &VersionMaterial, why: Erasing) {
        let _ = (name, material, why);
    }
}
