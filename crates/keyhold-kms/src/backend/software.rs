//! `SOFTWARE` keys: generated here, sealed by the root key before the database sees them,
//! unsealed once into the key cache on first use. AES-256 keys (GOOGLE_SYMMETRIC_ENCRYPTION)
//! are sealed directly (format 1); private and MAC keys, of any length, as an envelope under a
//! data key the root key seals (format 2, `docs/formats.md`).

use std::sync::{Arc, LazyLock};

use async_trait::async_trait;
use keyhold_api::CryptoKeyVersionName;
use keyhold_api::resources::{Algorithm, ExternalProtectionLevelOptions};
use keyhold_crypto::keys::{KeyError, KeySpec, LoadedKey, RawCiphertext};
use keyhold_crypto::{AeadKey, KeyBytes, Secret, ciphertext, sealed};

use super::key_backend::{KeyBackend, KeyUse, NewMaterial, SignInput};
use super::ports::BackendError;
use crate::algorithm::key_spec;
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

    /// Seals new private material of `name` as an envelope (format 2), bound to the version and
    /// its algorithm.
    async fn seal_private(&self, name: &str, algorithm: Algorithm, material: &Secret) -> Result<Vec<u8>, KmsError> {
        self.seal_envelope(name, &private_context(name, algorithm), material).await
    }

    /// Seals `material` of the resource `name` as an envelope (format 2) bound to `context`.
    async fn seal_envelope(&self, name: &str, context: &str, material: &Secret) -> Result<Vec<u8>, KmsError> {
        let data_key = KeyBytes::generate().map_err(|e| KmsError::Internal(e.to_string()))?;
        let sealed_key = self
            .root
            .seal(&data_key, &sealed::envelope_key_context(name))
            .await
            .map_err(|e| KmsError::from_backend("The root key", name, e))?;
        sealed::seal_envelope(&data_key, &sealed_key, material.expose(), context)
            .map_err(|e| KmsError::Internal(format!("cannot seal the private key of {name}: {e}")))
    }

    /// Opens what [`SoftwareKeys::seal_envelope`] sealed for `name` and `context`.
    async fn open_envelope(&self, name: &str, context: &str, envelope: &[u8]) -> Result<Secret, KmsError> {
        let corrupt =
            |e: &dyn std::fmt::Display| KmsError::Internal(format!("cannot unseal the private key of {name}: {e}"));
        let sealed_key = sealed::envelope_data_key(envelope).map_err(|e| corrupt(&e))?;
        let data_key =
            self.root.unseal(sealed_key, &sealed::envelope_key_context(name)).await.map_err(|e| match e {
                BackendError::Unavailable(_) => KmsError::from_backend("The root key", name, e),
                other => corrupt(&other),
            })?;
        sealed::open_envelope(&data_key, envelope, context).map_err(|e| corrupt(&e))
    }

    /// Seals the private half of import job `job`'s wrapping key (format 2), bound to the job.
    pub(crate) async fn seal_wrapping_key(&self, job: &str, material: &Secret) -> Result<Vec<u8>, KmsError> {
        self.seal_envelope(job, &wrapping_key_context(job), material).await
    }

    /// The wrapping key of import job `job`, from what [`SoftwareKeys::seal_wrapping_key`] sealed.
    pub(crate) async fn open_wrapping_key(
        &self,
        job: &str,
        spec: KeySpec,
        envelope: &[u8],
    ) -> Result<LoadedKey, KmsError> {
        let material = self.open_envelope(job, &wrapping_key_context(job), envelope).await?;
        tokio::task::spawn_blocking(move || LoadedKey::from_material(spec, &material))
            .await
            .map_err(|e| KmsError::Internal(format!("reading a wrapping key failed: {e}")))?
            .map_err(|e| internal(job, e))
    }

    /// The unsealed, parsed private key of a cached version (unsealed once, then kept in the
    /// cache).
    async fn private_for(&self, version: &CachedVersion) -> Result<Arc<LoadedKey>, KmsError> {
        if let Some(k) = version.private.get() {
            return Ok(k.clone());
        }
        let name = version.record.name.to_string();
        let algorithm = version.record.version.algorithm;
        let (VersionMaterial::Sealed(envelope), Some(algorithm), Some(spec)) =
            (&version.record.material, algorithm, algorithm.and_then(key_spec))
        else {
            return Err(KmsError::Internal(format!("{name} is enabled but has no private key material")));
        };
        let material = self.open_envelope(&name, &private_context(&name, algorithm), envelope).await?;
        let key = Arc::new(
            LoadedKey::from_material(spec, &material)
                .map_err(|e| KmsError::Internal(format!("cannot unseal the private key of {name}: {e}")))?,
        );
        Ok(version.private.get_or_init(|| key).clone())
    }
}

/// What an envelope's material is bound to: the version, and its algorithm (so that a stored
/// algorithm changed behind Keyhold's back, say RSA-PSS to RSA-OAEP, does not open the key for
/// another use).
fn private_context(name: &str, algorithm: Algorithm) -> String {
    format!("{name}#{algorithm}")
}

/// What an import job's wrapping key is bound to: the job (whose name never reads as a
/// version's, so the envelope opens for nothing else).
fn wrapping_key_context(job: &str) -> String {
    format!("{job}#import-wrapping-key")
}

/// How many slow private-key operations run at once: two per core, so that one waiting on a
/// core never leaves it idle. More would only share the cores, and would take the blocking
/// threads the database and the HSM use, so a flood of SLH-DSA signatures queues here instead.
static SLOW_OPERATIONS: LazyLock<tokio::sync::Semaphore> = LazyLock::new(|| {
    tokio::sync::Semaphore::new(2 * std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get))
});

/// Runs `op` (a slow private-key operation or key generation) on the blocking pool, at most
/// [`SLOW_OPERATIONS`] at once. The turn is held by the blocking task itself, so a request
/// dropped while it runs (its client gone) does not free a turn before the work ends.
pub(crate) async fn run_slow<T: Send + 'static>(op: impl FnOnce() -> T + Send + 'static) -> Result<T, KmsError> {
    let turn =
        SLOW_OPERATIONS.acquire().await.map_err(|e| KmsError::Internal(format!("a key operation failed: {e}")))?;
    tokio::task::spawn_blocking(move || {
        let _turn = turn;
        op()
    })
    .await
    .map_err(|e| KmsError::Internal(format!("a key operation failed: {e}")))
}

/// Runs RSA's private-key operations (milliseconds at 4096 bits) and SLH-DSA signing (a tenth
/// of a second) through [`run_slow`]; the others (microseconds) inline.
async fn compute<T: Send + 'static>(
    key: Arc<LoadedKey>,
    op: impl FnOnce(&LoadedKey) -> Result<T, KeyError> + Send + 'static,
) -> Result<Result<T, KeyError>, KmsError> {
    match key.spec() {
        KeySpec::RsaPss(..)
        | KeySpec::RsaPkcs1(..)
        | KeySpec::RsaOaep(..)
        | KeySpec::SlhDsaSha2S128
        | KeySpec::HashSlhDsaSha2S128Sha256 => run_slow(move || op(&key)).await,
        _ => Ok(op(&key)),
    }
}

/// An error of the library on a key Keyhold made itself: internal, never the caller's.
fn internal(name: &str, e: KeyError) -> KmsError {
    KmsError::Internal(format!("{name}: {e}"))
}

#[async_trait]
impl KeyBackend for SoftwareKeys {
    fn level(&self) -> &'static str {
        "SOFTWARE"
    }

    fn check_algorithm(&self, algorithm: Algorithm) -> Result<(), KmsError> {
        match algorithm {
            Algorithm::GoogleSymmetricEncryption => Ok(()),
            // As Cloud KMS: secp256k1 keys are HSM keys only.
            Algorithm::EcSignSecp256k1Sha256 => Err(KmsError::InvalidArgument(
                "Algorithm EC_SIGN_SECP256K1_SHA256 is only supported for protection level HSM.".into(),
            )),
            // AWS-LC signs PKCS#1 v1.5 with a DigestInfo only; a token's CKM_RSA_PKCS signs raw.
            a @ (Algorithm::RsaSignRawPkcs12048 | Algorithm::RsaSignRawPkcs13072 | Algorithm::RsaSignRawPkcs14096) => {
                Err(KmsError::Unimplemented(format!(
                    "Algorithm {a} is served at protection level HSM only by Keyhold: its software library has no PKCS#1 v1.5 signature without a DigestInfo."
                )))
            }
            a if key_spec(a).is_some() => Ok(()),
            a => Err(KmsError::Unimplemented(format!(
                "Algorithm {a} is not served at protection level SOFTWARE by Keyhold yet; see docs/api.md for the algorithms served."
            ))),
        }
    }

    async fn create(
        &self,
        name: &CryptoKeyVersionName,
        algorithm: Algorithm,
        _options: Option<&ExternalProtectionLevelOptions>,
    ) -> Result<NewMaterial, KmsError> {
        let context = name.to_string();
        let sealed = match (algorithm, key_spec(algorithm)) {
            (Algorithm::GoogleSymmetricEncryption, _) => {
                let material = KeyBytes::generate().map_err(|e| KmsError::Internal(e.to_string()))?;
                self.root
                    .seal(&material, &context)
                    .await
                    .map_err(|e| KmsError::from_backend("The root key", &context, e))?
            }
            (_, Some(spec)) => {
                // RSA generation takes up to a second at 4096 bits: off the async workers.
                let material = run_slow(move || spec.generate()).await?.map_err(|e| internal(&context, e))?;
                self.seal_private(&context, algorithm, &material).await?
            }
            (a, None) => {
                return Err(KmsError::Unimplemented(format!(
                    "Algorithm {a} is not served at protection level SOFTWARE."
                )));
            }
        };
        Ok(NewMaterial { material: VersionMaterial::Sealed(sealed), attestation: None, external_options: None })
    }

    async fn import(
        &self,
        name: &CryptoKeyVersionName,
        algorithm: Algorithm,
        material: &Secret,
    ) -> Result<NewMaterial, KmsError> {
        let context = name.to_string();
        let sealed = if algorithm == Algorithm::GoogleSymmetricEncryption {
            let key = KeyBytes::from_slice(material.expose())
                .ok_or_else(|| KmsError::Internal(format!("{context}: imported material is not 32 bytes")))?;
            self.root.seal(&key, &context).await.map_err(|e| KmsError::from_backend("The root key", &context, e))?
        } else {
            self.seal_private(&context, algorithm, material).await?
        };
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

    async fn sign(&self, using: KeyUse<'_>, input: SignInput<'_>) -> Result<Vec<u8>, KmsError> {
        let key = self.private_for(using.version).await?;
        let result = match input {
            SignInput::Digest(d) => {
                let d = d.to_vec();
                compute(key, move |k| k.sign_digest(&d)).await?
            }
            SignInput::Data(d) => {
                let d = d.to_vec();
                compute(key, move |k| k.sign_data(&d)).await?
            }
        };
        result.map_err(|e| internal(using.version_name(), e))
    }

    async fn asymmetric_decrypt(&self, using: KeyUse<'_>, ciphertext: &[u8]) -> Result<Secret, KmsError> {
        let key = self.private_for(using.version).await?;
        let ct = ciphertext.to_vec();
        match compute(key, move |k| k.decrypt(&ct)).await? {
            Ok(plaintext) => Ok(plaintext),
            Err(KeyError::Decrypt) => Err(KmsError::DecryptionFailed),
            Err(e) => Err(internal(using.version_name(), e)),
        }
    }

    async fn public_key(&self, using: KeyUse<'_>) -> Result<Vec<u8>, KmsError> {
        let key = self.private_for(using.version).await?;
        key.public_key_der().map_err(|e| internal(using.version_name(), e))
    }

    async fn public_key_raw(&self, using: KeyUse<'_>) -> Result<Vec<u8>, KmsError> {
        let key = self.private_for(using.version).await?;
        key.public_key_raw().map_err(|e| internal(using.version_name(), e))
    }

    async fn decapsulate(&self, using: KeyUse<'_>, ciphertext: &[u8]) -> Result<Secret, KmsError> {
        let key = self.private_for(using.version).await?;
        key.decapsulate(ciphertext).map_err(|e| match e {
            KeyError::Decrypt => KmsError::InvalidArgument(format!(
                "The ciphertext is not a ciphertext of {}: wrong length.",
                using.version.record.version.algorithm.map_or("this algorithm", |a| a.as_str())
            )),
            e => internal(using.version_name(), e),
        })
    }

    async fn mac_sign(&self, using: KeyUse<'_>, data: &[u8]) -> Result<Vec<u8>, KmsError> {
        let key = self.private_for(using.version).await?;
        key.mac(data).map_err(|e| internal(using.version_name(), e))
    }

    async fn raw_encrypt(
        &self,
        using: KeyUse<'_>,
        plaintext: &[u8],
        aad: &[u8],
        iv: Option<&[u8]>,
    ) -> Result<RawCiphertext, KmsError> {
        let key = self.private_for(using.version).await?;
        key.raw_encrypt(plaintext, aad, iv).map_err(|e| match e {
            KeyError::Input(why) => KmsError::InvalidArgument(format!("{why}.")),
            e => internal(using.version_name(), e),
        })
    }

    async fn raw_decrypt(
        &self,
        using: KeyUse<'_>,
        ciphertext: &[u8],
        aad: &[u8],
        iv: &[u8],
    ) -> Result<Secret, KmsError> {
        let key = self.private_for(using.version).await?;
        key.raw_decrypt(ciphertext, aad, iv).map_err(|e| match e {
            KeyError::Decrypt => KmsError::DecryptionFailed,
            KeyError::Input(why) => KmsError::InvalidArgument(format!("{why}.")),
            e => internal(using.version_name(), e),
        })
    }

    async fn mac_verify(&self, using: KeyUse<'_>, data: &[u8], mac: &[u8]) -> Result<bool, KmsError> {
        let key = self.private_for(using.version).await?;
        key.mac_verify(data, mac).map_err(|e| internal(using.version_name(), e))
    }
}
