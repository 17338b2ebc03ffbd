//! `HSM` keys: generated inside a PKCS#11 token and used there; the database keeps the token
//! object's reference. The token is the [`HsmBackend`] port, implemented by the binary over
//! `keyhold-hsm`.

use std::sync::Arc;

use async_trait::async_trait;
use keyhold_api::CryptoKeyVersionName;
use keyhold_api::resources::{Algorithm, ExternalProtectionLevelOptions, KeyOperationAttestation};
use keyhold_crypto::{Secret, ciphertext};

use super::key_backend::{Erasing, KeyBackend, KeyUse, NewMaterial};
use super::ports::{BackendError, HsmBackend};
use crate::error::KmsError;
use crate::material::{HsmObjectRef, VersionMaterial};

/// Cloud KMS limit for HSM keys: plaintext and AAD together at most 8 KiB.
const MAX_HSM_INPUT: usize = 8 * 1024;

fn check_hsm_size(plaintext: usize, aad: usize) -> Result<(), KmsError> {
    if plaintext + aad > MAX_HSM_INPUT {
        return Err(KmsError::InvalidArgument(format!(
            "For HSM keys the plaintext and additional_authenticated_data together may be at most {MAX_HSM_INPUT} bytes; got {}.",
            plaintext + aad
        )));
    }
    Ok(())
}

/// The `HSM` protection level over one token.
#[derive(Debug)]
pub(crate) struct HsmKeys {
    token: Arc<dyn HsmBackend>,
}

impl HsmKeys {
    pub(crate) fn new(token: Arc<dyn HsmBackend>) -> Self {
        Self { token }
    }

    /// `n` bytes from the token's random number generator (`generateRandomBytes`).
    pub(crate) async fn random_bytes(&self, n: usize, resource: &str) -> Result<Secret, KmsError> {
        self.token.random_bytes(n).await.map_err(|e| KmsError::from_backend("The HSM", resource, e))
    }

    fn object<'m>(using: &'m KeyUse<'_>) -> Result<&'m HsmObjectRef, KmsError> {
        match &using.version.record.material {
            VersionMaterial::Hsm(r) => Ok(r),
            _ => Err(KmsError::Internal(format!("{} has no HSM key reference", using.version.record.name))),
        }
    }

    async fn destroy_object(&self, name: &CryptoKeyVersionName, object: &HsmObjectRef, why: Erasing) {
        match (self.token.destroy_key(object).await, why) {
            (Ok(()) | Err(BackendError::KeyNotFound(_)), Erasing::Destroyed) => {
                tracing::info!(version = %name, %object, "HSM key object destroyed");
            }
            (Ok(()) | Err(BackendError::KeyNotFound(_)), Erasing::NotCreated) => {
                tracing::info!(version = %name, %object, "destroyed the HSM key object of a version that was not created");
            }
            (Err(e), Erasing::Destroyed) => tracing::error!(
                version = %name, %object, error = %e,
                "cannot remove the destroyed version's key object from the HSM; remove it by hand (docs/operations.md)"
            ),
            (Err(e), Erasing::NotCreated) => tracing::error!(
                version = %name, %object, error = %e,
                "cannot destroy the HSM key object of a version that was not created; it is orphaned in the token: \
                 remove it with `keyhold hsm reconcile --apply` (docs/operations.md, \"HSM reconciliation\")"
            ),
        }
    }
}

/// A random suffix that keeps HSM object labels unique even if a version name is reused
/// (a key deleted and created again is not possible in Cloud KMS, but a database restore is).
fn random_suffix() -> Result<String, KmsError> {
    let mut b = [0u8; 8];
    keyhold_crypto::random_bytes(&mut b).map_err(|e| KmsError::Internal(e.to_string()))?;
    Ok(keyhold_crypto::hex(&b))
}

#[async_trait]
impl KeyBackend for HsmKeys {
    fn level(&self) -> &'static str {
        "HSM"
    }

    fn check_algorithm(&self, algorithm: Algorithm) -> Result<(), KmsError> {
        match algorithm {
            Algorithm::GoogleSymmetricEncryption => Ok(()),
            a => Err(KmsError::Unimplemented(format!(
                "Algorithm {a} is not served at protection level HSM by Keyhold yet; HSM keys are GOOGLE_SYMMETRIC_ENCRYPTION (see docs/api.md)."
            ))),
        }
    }

    async fn create(
        &self,
        name: &CryptoKeyVersionName,
        _algorithm: Algorithm,
        _options: Option<&ExternalProtectionLevelOptions>,
    ) -> Result<NewMaterial, KmsError> {
        let label = format!("keyhold:{name}:{}", random_suffix()?);
        let object = self
            .token
            .generate_key(&label)
            .await
            .map_err(|e| KmsError::from_backend("The HSM", &name.to_string(), e))?;
        let statement = match self.token.attestation(&object).await {
            Ok(statement) => statement,
            Err(e) => {
                // No record will name the object just generated: remove it now.
                self.destroy_object(name, &object, Erasing::NotCreated).await;
                return Err(KmsError::from_backend("The HSM", &name.to_string(), e));
            }
        };
        Ok(NewMaterial {
            material: VersionMaterial::Hsm(object),
            attestation: Some(KeyOperationAttestation {
                format: "ATTESTATION_FORMAT_UNSPECIFIED".into(),
                content: Some(keyhold_api::wire::Bytes(statement.into_bytes())),
            }),
            external_options: None,
        })
    }

    async fn encrypt(&self, using: KeyUse<'_>, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, KmsError> {
        check_hsm_size(plaintext.len(), aad.len())?;
        let ad = ciphertext::associated_data(using.key_name, using.id(), aad);
        let blob = self
            .token
            .encrypt(Self::object(&using)?, plaintext, &ad)
            .await
            .map_err(|e| KmsError::from_backend("The HSM", using.version_name(), e))?;
        Ok(ciphertext::frame_backend(using.id(), &blob))
    }

    async fn decrypt(&self, using: KeyUse<'_>, ct: &[u8], aad: &[u8]) -> Result<Secret, KmsError> {
        check_hsm_size(0, aad.len())?;
        let (_, blob) = ciphertext::backend_blob(ct).map_err(|_| KmsError::DecryptFailed)?;
        let ad = ciphertext::associated_data(using.key_name, using.id(), aad);
        self.token
            .decrypt(Self::object(&using)?, blob, &ad)
            .await
            .map_err(|e| KmsError::from_backend("The HSM", using.version_name(), e))
    }

    async fn erase(&self, name: &CryptoKeyVersionName, material: &VersionMaterial, why: Erasing) {
        if let VersionMaterial::Hsm(object) = material {
            self.destroy_object(name, object, why).await;
        }
    }
}
