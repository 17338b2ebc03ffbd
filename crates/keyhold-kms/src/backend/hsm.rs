//! `HSM` keys: generated inside a PKCS#11 token and used there; the database keeps the token
//! object's reference. The token is the [`HsmBackend`] port, implemented by the binary over
//! `keyhold-hsm`.

use std::sync::Arc;

use async_trait::async_trait;
use keyhold_api::CryptoKeyVersionName;
use keyhold_api::resources::{Algorithm, ExternalProtectionLevelOptions, KeyOperationAttestation};
use keyhold_crypto::keys::{KeySpec, RawCiphertext};
use keyhold_crypto::{Secret, ciphertext};

use super::key_backend::{Erasing, KeyBackend, KeyUse, NewMaterial, SignInput};
use super::ports::{BackendError, HsmBackend, KeyOrigin};
use crate::algorithm::key_spec;
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

    /// The key of a version of another purpose than `ENCRYPT_DECRYPT`, and its object.
    fn keyed<'m>(using: &'m KeyUse<'_>) -> Result<(&'m HsmObjectRef, KeySpec), KmsError> {
        let spec =
            using.version.record.version.algorithm.and_then(key_spec).ok_or_else(|| {
                KmsError::Internal(format!("{} has no HSM key of a known kind", using.version_name()))
            })?;
        Ok((Self::object(using)?, spec))
    }

    /// `:encrypt` and `:decrypt` use `GOOGLE_SYMMETRIC_ENCRYPTION` keys only: a raw AES-GCM key is
    /// an AES object too, and must never seal what the KMS's own ciphertexts carry.
    fn symmetric(using: &KeyUse<'_>) -> Result<(), KmsError> {
        match using.version.record.version.algorithm {
            Some(Algorithm::GoogleSymmetricEncryption) | None => Ok(()),
            Some(other) => Err(KmsError::Internal(format!(
                "{} is {other}, not a GOOGLE_SYMMETRIC_ENCRYPTION key",
                using.version_name()
            ))),
        }
    }

    fn object<'m>(using: &'m KeyUse<'_>) -> Result<&'m HsmObjectRef, KmsError> {
        match &using.version.record.material {
            VersionMaterial::Hsm(r) => Ok(r),
            _ => Err(KmsError::Internal(format!("{} has no HSM key reference", using.version.record.name))),
        }
    }

    /// A new version's material: `object`, with the token's statement about it. Without the
    /// statement no record will name the object, so it is removed.
    async fn attested(
        &self,
        name: &CryptoKeyVersionName,
        object: HsmObjectRef,
        origin: KeyOrigin,
    ) -> Result<NewMaterial, KmsError> {
        let statement = match self.token.attestation(&object, origin).await {
            Ok(statement) => statement,
            Err(e) => {
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
        match (algorithm, key_spec(algorithm)) {
            (Algorithm::GoogleSymmetricEncryption, _) => Ok(()),
            (_, Some(spec)) if self.token.supports(spec) => Ok(()),
            (a, _) => Err(KmsError::Unimplemented(format!(
                "Algorithm {a} is not served at protection level HSM by Keyhold yet; HSM keys are GOOGLE_SYMMETRIC_ENCRYPTION, EC, Ed25519 and RSA (PSS, PKCS#1, raw PKCS#1) signing, RSA-OAEP (SHA-1), HMAC and raw AES-GCM, AES-CBC and AES-CTR (see docs/api.md)."
            ))),
        }
    }

    async fn create(
        &self,
        name: &CryptoKeyVersionName,
        algorithm: Algorithm,
        _options: Option<&ExternalProtectionLevelOptions>,
    ) -> Result<NewMaterial, KmsError> {
        let label = format!("keyhold:{name}:{}", random_suffix()?);
        let made = match (algorithm, key_spec(algorithm)) {
            (Algorithm::GoogleSymmetricEncryption, _) => self.token.generate_key(&label).await,
            (_, Some(spec)) if self.token.supports(spec) => self.token.generate_key_of(spec, &label).await,
            (a, _) => {
                return Err(KmsError::Unimplemented(format!("Algorithm {a} is not served at protection level HSM.")));
            }
        };
        let object = made.map_err(|e| KmsError::from_backend("The HSM", &name.to_string(), e))?;
        self.attested(name, object, KeyOrigin::Generated).await
    }

    /// Imported material goes into the token as objects like generated ones; Keyhold has
    /// unwrapped it from the import job's wrapping (SoftHSM2, the tested token, cannot unwrap
    /// RSA-OAEP with SHA-256 nor AES key wrap with padding itself).
    async fn import(
        &self,
        name: &CryptoKeyVersionName,
        algorithm: Algorithm,
        material: &Secret,
    ) -> Result<NewMaterial, KmsError> {
        let label = format!("keyhold:{name}:{}", random_suffix()?);
        let made = match (algorithm, key_spec(algorithm)) {
            (Algorithm::GoogleSymmetricEncryption, _) => self.token.import_key(&label, material).await,
            (_, Some(spec)) if self.token.supports(spec) => self.token.import_key_of(spec, &label, material).await,
            (a, _) => {
                return Err(KmsError::Unimplemented(format!("Algorithm {a} is not served at protection level HSM.")));
            }
        };
        let object = made.map_err(|e| KmsError::from_backend("The HSM", &name.to_string(), e))?;
        self.attested(name, object, KeyOrigin::Imported).await
    }

    async fn encrypt(&self, using: KeyUse<'_>, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, KmsError> {
        Self::symmetric(&using)?;
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
        Self::symmetric(&using)?;
        check_hsm_size(0, aad.len())?;
        let (_, blob) = ciphertext::backend_blob(ct).map_err(|_| KmsError::DecryptFailed)?;
        let ad = ciphertext::associated_data(using.key_name, using.id(), aad);
        self.token
            .decrypt(Self::object(&using)?, blob, &ad)
            .await
            .map_err(|e| KmsError::from_backend("The HSM", using.version_name(), e))
    }

    async fn sign(&self, using: KeyUse<'_>, input: SignInput<'_>) -> Result<Vec<u8>, KmsError> {
        let (object, spec) = Self::keyed(&using)?;
        // The token signs the digest: data is hashed here first, except for Ed25519, which the
        // token signs over the data itself.
        let hashed;
        let input = match (input, spec.prehash()) {
            (SignInput::Digest(d), _) => d,
            (SignInput::Data(d), Some(h)) => {
                hashed = h.hash(d);
                &hashed
            }
            (SignInput::Data(d), None) => d,
        };
        self.token
            .sign(object, spec, input)
            .await
            .map_err(|e| KmsError::from_backend("The HSM", using.version_name(), e))
    }

    async fn asymmetric_decrypt(&self, using: KeyUse<'_>, ciphertext: &[u8]) -> Result<Secret, KmsError> {
        let (object, spec) = Self::keyed(&using)?;
        match self.token.decrypt_oaep(object, spec, ciphertext).await {
            Ok(plaintext) => Ok(plaintext),
            Err(BackendError::DecryptFailed) => Err(KmsError::DecryptionFailed),
            Err(e) => Err(KmsError::from_backend("The HSM", using.version_name(), e)),
        }
    }

    async fn public_key(&self, using: KeyUse<'_>) -> Result<Vec<u8>, KmsError> {
        let (object, spec) = Self::keyed(&using)?;
        self.token
            .public_key(object, spec)
            .await
            .map_err(|e| KmsError::from_backend("The HSM", using.version_name(), e))
    }

    async fn mac_sign(&self, using: KeyUse<'_>, data: &[u8]) -> Result<Vec<u8>, KmsError> {
        let (object, spec) = Self::keyed(&using)?;
        self.token
            .sign(object, spec, data)
            .await
            .map_err(|e| KmsError::from_backend("The HSM", using.version_name(), e))
    }

    async fn mac_verify(&self, using: KeyUse<'_>, data: &[u8], mac: &[u8]) -> Result<bool, KmsError> {
        let expected = self.mac_sign(using, data).await?;
        Ok(keyhold_crypto::keys::mac_equal(&expected, mac))
    }

    async fn raw_encrypt(
        &self,
        using: KeyUse<'_>,
        plaintext: &[u8],
        aad: &[u8],
        iv: Option<&[u8]>,
    ) -> Result<RawCiphertext, KmsError> {
        check_hsm_size(plaintext.len(), aad.len())?;
        let (object, spec) = Self::keyed(&using)?;
        self.token
            .raw_encrypt(object, spec, plaintext, aad, iv)
            .await
            .map_err(|e| KmsError::from_backend("The HSM", using.version_name(), e))
    }

    async fn raw_decrypt(
        &self,
        using: KeyUse<'_>,
        ciphertext: &[u8],
        aad: &[u8],
        iv: &[u8],
    ) -> Result<Secret, KmsError> {
        let (object, spec) = Self::keyed(&using)?;
        let tag = match spec {
            KeySpec::Aes(_, mode) => mode.tag_len(),
            _ => 0,
        };
        check_hsm_size(ciphertext.len().saturating_sub(tag), aad.len())?;
        match self.token.raw_decrypt(object, spec, ciphertext, aad, iv).await {
            Ok(plaintext) => Ok(plaintext),
            Err(BackendError::DecryptFailed) => Err(KmsError::DecryptionFailed),
            Err(e) => Err(KmsError::from_backend("The HSM", using.version_name(), e)),
        }
    }

    async fn erase(&self, name: &CryptoKeyVersionName, material: &VersionMaterial, why: Erasing) {
        if let VersionMaterial::Hsm(object) = material {
            self.destroy_object(name, object, why).await;
        }
    }
}
