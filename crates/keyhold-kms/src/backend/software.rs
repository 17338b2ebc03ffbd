//! `SOFTWARE` keys: AES-256 generated here, sealed by the root key before the database sees
//! it, unsealed once into the key cache on first use.

use std::sync::Arc;

use async_trait::async_trait;
use keyhold_api::CryptoKeyVersionName;
use keyhold_api::resources::ExternalProtectionLevelOptions;
use keyhold_crypto::{AeadKey, KeyBytes, Secret, ciphertext};

use super::key_backend::{KeyBackend, KeyUse, NewMaterial};
use super::ports::BackendError;
use crate::cache::CachedVersion;
use crate::error::KmsError;
use crate::material::VersionMaterial;
use crate::root_key::RootKey;

/// The `SOFTWARE` protection level over the root key.
#[derive(Debug)]
pub(crate) struct SoftwareKeys {
    root: Arc<dyn RootKey>,
}

impl SoftwareKeys {
    pub(crate) fn new(root: Arc<dyn RootKey>) -> Self {
        Self { root }
    }

    /// Seals a key of an in-process service (service-managed encryption), bound to `context`.
    pub(crate) async fn seal_service_key(&self, key: &KeyBytes, context: &str) -> Result<Vec<u8>, KmsError> {
        self.root
            .seal(key, &format!("service-key/{context}"))
            .await
            .map_err(|e| KmsError::from_backend("The root key", context, e))
    }

    /// Unseals what [`SoftwareKeys::seal_service_key`] sealed with the same `context`.
    pub(crate) async fn unseal_service_key(&self, sealed: &[u8], context: &str) -> Result<KeyBytes, KmsError> {
        self.root.unseal(sealed, &format!("service-key/{context}")).await.map_err(|e| match e {
            BackendError::Unavailable(_) => KmsError::from_backend("The root key", context, e),
            other => KmsError::Internal(format!("cannot unseal a service key: {other}")),
        })
    }

    /// The unsealed AEAD key of a cached version (unsealed once, then kept in the cache).
    async fn aead_for(&self, version: &CachedVersion) -> Result<Arc<AeadKey>, KmsError> {
        if let Some(a) = version.aead.get() {
            return Ok(a.clone());
        }
        let VersionMaterial::Sealed(sealed) = &version.record.material else {
            return Err(KmsError::Internal(format!("{} is enabled but has no key material", version.record.name)));
        };
        let name = version.record.name.to_string();
        let key = self.root.unseal(sealed, &name).await.map_err(|e| match e {
            BackendError::Unavailable(_) => KmsError::from_backend("The root key", &name, e),
            other => KmsError::Internal(format!("cannot unseal key material of {name}: {other}")),
        })?;
        let aead = Arc::new(AeadKey::new(&key));
        Ok(version.aead.get_or_init(|| aead).clone())
    }
}

#[async_trait]
impl KeyBackend for SoftwareKeys {
    async fn create(
        &self,
        name: &CryptoKeyVersionName,
        _options: Option<&ExternalProtectionLevelOptions>,
    ) -> Result<NewMaterial, KmsError> {
        let material = KeyBytes::generate().map_err(|e| KmsError::Internal(e.to_string()))?;
        let sealed = self
            .root
            .seal(&material, &name.to_string())
            .await
            .map_err(|e| KmsError::from_backend("The root key", &name.to_string(), e))?;
        Ok(NewMaterial { material: VersionMaterial::Sealed(sealed), attestation: None, external_options: None })
    }

    async fn encrypt(&self, using: KeyUse<'_>, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, KmsError> {
        let aead = self.aead_for(using.version).await?;
        ciphertext::encrypt(&aead, using.key_name, using.id(), plaintext, aad)
            .map_err(|e| KmsError::Internal(e.to_string()))
    }

    async fn decrypt(&self, using: KeyUse<'_>, ct: &[u8], aad: &[u8]) -> Result<Secret, KmsError> {
        let aead = self.aead_for(using.version).await?;
        ciphertext::decrypt(&aead, using.key_name, ct, aad).map_err(|_| KmsError::DecryptFailed)
    }
}
