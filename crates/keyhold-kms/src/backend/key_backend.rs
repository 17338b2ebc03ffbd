//! The trait every protection level implements, and what it is handed.

use std::fmt;

use async_trait::async_trait;
use keyhold_api::CryptoKeyVersionName;
use keyhold_api::resources::{AccessReason, Algorithm, ExternalProtectionLevelOptions, KeyOperationAttestation};
use keyhold_crypto::Secret;
use keyhold_crypto::keys::RawCiphertext;

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

/// What `asymmetricSign` signs: a digest the caller computed, or the data itself.
#[derive(Debug, Clone, Copy)]
pub(crate) enum SignInput<'a> {
    /// A digest of the algorithm's hash, of the right length (checked by the caller).
    Digest(&'a [u8]),
    /// The data: hashed here first, unless the algorithm signs data as it is (Ed25519).
    Data(&'a [u8]),
}

/// The error of a key operation a protection level does not serve (yet); keys of that kind
/// cannot be created there either ([`KeyBackend::check_algorithm`]), so only a version made by
/// another build reaches it.
fn not_served(level: &str, operation: &str) -> KmsError {
    KmsError::Unimplemented(format!("{operation} is not served for protection level {level} by this server."))
}

/// What a protection level does with key material.
#[async_trait]
pub(crate) trait KeyBackend: Send + Sync + fmt::Debug {
    /// The level's name, for messages.
    fn level(&self) -> &'static str;
    /// Checks that this level makes keys of `algorithm`, before a version ID is used up.
    fn check_algorithm(&self, algorithm: Algorithm) -> Result<(), KmsError>;
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
        algorithm: Algorithm,
        options: Option<&ExternalProtectionLevelOptions>,
    ) -> Result<NewMaterial, KmsError>;
    /// Makes the material of a version from imported key material (the raw key for
    /// symmetric and HMAC keys, PKCS#8 DER for asymmetric ones) that
    /// [`crate::algorithm::check_imported_material`] accepted for `algorithm`.
    async fn import(
        &self,
        name: &CryptoKeyVersionName,
        algorithm: Algorithm,
        material: &Secret,
    ) -> Result<NewMaterial, KmsError> {
        let _ = (name, algorithm, material);
        Err(not_served(self.level(), "ImportCryptoKeyVersion"))
    }
    /// Encrypts `plaintext`, binding `aad`; the result is the ciphertext clients see.
    async fn encrypt(&self, using: KeyUse<'_>, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, KmsError>;
    /// Decrypts what [`KeyBackend::encrypt`] made with the same version and `aad`.
    async fn decrypt(&self, using: KeyUse<'_>, ciphertext: &[u8], aad: &[u8]) -> Result<Secret, KmsError>;
    /// `asymmetricSign`: the signature in Cloud KMS's encoding for the version's algorithm.
    async fn sign(&self, using: KeyUse<'_>, input: SignInput<'_>) -> Result<Vec<u8>, KmsError> {
        let _ = (using, input);
        Err(not_served(self.level(), "AsymmetricSign"))
    }
    /// `asymmetricDecrypt`: RSA-OAEP with the version's private key.
    async fn asymmetric_decrypt(&self, using: KeyUse<'_>, ciphertext: &[u8]) -> Result<Secret, KmsError> {
        let _ = (using, ciphertext);
        Err(not_served(self.level(), "AsymmetricDecrypt"))
    }
    /// `getPublicKey`: the version's public key as DER `SubjectPublicKeyInfo`.
    async fn public_key(&self, using: KeyUse<'_>) -> Result<Vec<u8>, KmsError> {
        let _ = using;
        Err(not_served(self.level(), "GetPublicKey"))
    }
    /// The public key in its raw encoding (`publicKeyFormat=NIST_PQC`, or `XWING_RAW_BYTES` for
    /// X-Wing), post-quantum keys only.
    async fn public_key_raw(&self, using: KeyUse<'_>) -> Result<Vec<u8>, KmsError> {
        let _ = using;
        Err(not_served(self.level(), "GetPublicKey (NIST_PQC)"))
    }
    /// `decapsulate`: the shared secret of a KEM ciphertext.
    async fn decapsulate(&self, using: KeyUse<'_>, ciphertext: &[u8]) -> Result<Secret, KmsError> {
        let _ = (using, ciphertext);
        Err(not_served(self.level(), "Decapsulate"))
    }
    /// `macSign`: the tag of `data`.
    async fn mac_sign(&self, using: KeyUse<'_>, data: &[u8]) -> Result<Vec<u8>, KmsError> {
        let _ = (using, data);
        Err(not_served(self.level(), "MacSign"))
    }
    /// `macVerify`: whether `mac` is the tag of `data`, compared in constant time.
    async fn mac_verify(&self, using: KeyUse<'_>, data: &[u8], mac: &[u8]) -> Result<bool, KmsError> {
        let _ = (using, data, mac);
        Err(not_served(self.level(), "MacVerify"))
    }
    /// `rawEncrypt`: raw AES with the version's key; `iv` for CBC and CTR, else one is drawn.
    async fn raw_encrypt(
        &self,
        using: KeyUse<'_>,
        plaintext: &[u8],
        aad: &[u8],
        iv: Option<&[u8]>,
    ) -> Result<RawCiphertext, KmsError> {
        let _ = (using, plaintext, aad, iv);
        Err(not_served(self.level(), "RawEncrypt"))
    }
    /// `rawDecrypt`: raw AES with the version's key.
    async fn raw_decrypt(
        &self,
        using: KeyUse<'_>,
        ciphertext: &[u8],
        aad: &[u8],
        iv: &[u8],
    ) -> Result<Secret, KmsError> {
        let _ = (using, ciphertext, aad, iv);
        Err(not_served(self.level(), "RawDecrypt"))
    }
    /// Removes material that lives outside the database (an HSM object); best effort, logged.
    /// Nothing to do for material the database holds.
    async fn erase(&self, name: &CryptoKeyVersionName, material: &VersionMaterial, why: Erasing) {
        let _ = (name, material, why);
    }
}
