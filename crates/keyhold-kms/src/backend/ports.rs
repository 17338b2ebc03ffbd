//! The ports through which the KMS reaches key material it does not hold: a PKCS#11 token
//! ([`HsmBackend`], implemented by the binary over `keyhold-hsm`) and an external key manager
//! ([`ExternalKeyManager`], implemented by `keyhold-ekm`). They live here, in the domain, so the
//! KMS depends on neither PKCS#11 nor HTTP.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use keyhold_api::resources::{AccessReason, VersionState};
use keyhold_crypto::Secret;
use keyhold_crypto::keys::{KeySpec, RawCiphertext};

use crate::material::HsmObjectRef;

/// Why a backend could not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The HSM or the external key manager cannot be reached or is failing (module, token,
    /// network, timeout): `503 UNAVAILABLE`, and CMEK services start their grace period.
    #[error("{0}")]
    Unavailable(String),
    /// The external key manager (or its policy) said no: `400 FAILED_PRECONDITION`.
    #[error("{detail}")]
    Refused {
        /// The manager's words.
        detail: String,
        /// The state of the manager's key, when that is why it refused (CMEK services read it
        /// from the KMS's answer as the key's state).
        key_state: Option<VersionState>,
    },
    /// The key object is gone from the token or the manager.
    #[error("{0}")]
    KeyNotFound(String),
    /// The ciphertext does not authenticate under the key.
    #[error("decryption failed")]
    DecryptFailed,
    /// The request cannot be served as asked (for example a size out of range).
    #[error("{0}")]
    InvalidInput(String),
}

/// How a key came into the token, for its attestation statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOrigin {
    /// Generated inside the token.
    Generated,
    /// Imported: unwrapped by Keyhold from an import job's wrapping and created in the token.
    Imported,
}

/// A PKCS#11 token holding HSM key versions (and possibly the root key).
#[async_trait]
pub trait HsmBackend: Send + Sync + fmt::Debug + 'static {
    /// Generates a new non-extractable AES-256 key labelled `label` inside the token; returns
    /// the reference the database keeps (no material).
    async fn generate_key(&self, label: &str) -> Result<HsmObjectRef, BackendError>;
    /// AES-256-GCM inside the token; the output is the token's own blob.
    async fn encrypt(&self, key: &HsmObjectRef, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, BackendError>;
    /// Opens what [`HsmBackend::encrypt`] made with the same key and `aad`.
    async fn decrypt(&self, key: &HsmObjectRef, blob: &[u8], aad: &[u8]) -> Result<Secret, BackendError>;
    /// Removes the key object from the token. A key already gone is [`BackendError::KeyNotFound`].
    async fn destroy_key(&self, key: &HsmObjectRef) -> Result<(), BackendError>;
    /// `n` bytes from the token's random number generator.
    async fn random_bytes(&self, n: usize) -> Result<Secret, BackendError>;
    /// Puts an imported AES-256 key (32 bytes) into the token as a non-extractable object like
    /// the ones [`HsmBackend::generate_key`] makes, labelled `label`.
    async fn import_key(&self, label: &str, material: &Secret) -> Result<HsmObjectRef, BackendError>;
    /// An honest statement of what the token is and how the key came to be held there, for a
    /// version's `attestation` section.
    async fn attestation(&self, key: &HsmObjectRef, origin: KeyOrigin) -> Result<String, BackendError>;
    /// Whether the token makes keys of `spec` (signing, RSA-OAEP, HMAC and raw AES keys).
    fn supports(&self, spec: KeySpec) -> bool;
    /// Generates a non-extractable key of `spec` (an EC, Ed25519 or RSA pair, an HMAC or raw
    /// AES key) labelled `label` inside the token.
    async fn generate_key_of(&self, spec: KeySpec, label: &str) -> Result<HsmObjectRef, BackendError>;
    /// Puts an imported key of `spec` into the token as non-extractable objects like the ones
    /// [`HsmBackend::generate_key_of`] makes, labelled `label`: `material` is the raw key of an
    /// HMAC or raw AES key, the DER PKCS#8 `PrivateKeyInfo` of a pair.
    async fn import_key_of(&self, spec: KeySpec, label: &str, material: &Secret) -> Result<HsmObjectRef, BackendError>;
    /// Signs `input` (the digest of the algorithm's hash; the data for Ed25519 and HMAC) in the
    /// token, in Cloud KMS's encoding (DER for ECDSA).
    async fn sign(&self, key: &HsmObjectRef, spec: KeySpec, input: &[u8]) -> Result<Vec<u8>, BackendError>;
    /// RSA-OAEP decryption in the token; a ciphertext the key does not open is
    /// [`BackendError::DecryptFailed`].
    async fn decrypt_oaep(&self, key: &HsmObjectRef, spec: KeySpec, ciphertext: &[u8]) -> Result<Secret, BackendError>;
    /// The public key of a pair, as DER `SubjectPublicKeyInfo`.
    async fn public_key(&self, key: &HsmObjectRef, spec: KeySpec) -> Result<Vec<u8>, BackendError>;
    /// Raw AES encryption in the token (`rawEncrypt`): GCM under a nonce the token draws, CBC
    /// under `iv` or one the token draws.
    async fn raw_encrypt(
        &self,
        key: &HsmObjectRef,
        spec: KeySpec,
        plaintext: &[u8],
        aad: &[u8],
        iv: Option<&[u8]>,
    ) -> Result<RawCiphertext, BackendError>;
    /// Raw AES decryption in the token; a GCM ciphertext that does not authenticate is
    /// [`BackendError::DecryptFailed`].
    async fn raw_decrypt(
        &self,
        key: &HsmObjectRef,
        spec: KeySpec,
        ciphertext: &[u8],
        aad: &[u8],
        iv: &[u8],
    ) -> Result<Secret, BackendError>;
}

/// What the external key manager is told about a wrap or unwrap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalRequest {
    /// Why the key is used (Key Access Justifications).
    pub reason: AccessReason,
    /// The key version used (`projects/.../cryptoKeyVersions/N`).
    pub key_version: String,
    /// The principal that called the KMS.
    pub caller: String,
    /// Unique per request, for matching the manager's log to Keyhold's audit log.
    pub request_id: String,
}

/// An external key manager reached over its wrap/unwrap protocol (`docs/ekm-protocol.md`).
#[async_trait]
pub trait ExternalKeyManager: Send + Sync + fmt::Debug + 'static {
    /// Whether `uri` is a key URI this client can call; checked when a version is created.
    fn check_uri(&self, uri: &str) -> Result<(), String> {
        let _ = uri;
        Ok(())
    }
    /// Wraps `plaintext` with the external key at `uri`, binding `aad`.
    async fn wrap(
        &self,
        uri: &str,
        plaintext: &[u8],
        aad: &[u8],
        req: &ExternalRequest,
    ) -> Result<Vec<u8>, BackendError>;
    /// Unwraps what [`ExternalKeyManager::wrap`] made.
    async fn unwrap(&self, uri: &str, blob: &[u8], aad: &[u8], req: &ExternalRequest) -> Result<Secret, BackendError>;
}

/// The backends a KMS was started with; a protection level without one answers
/// `501 UNIMPLEMENTED` when a key asks for it.
#[derive(Debug, Clone, Default)]
pub struct KeyBackends {
    /// The PKCS#11 token for `HSM` keys.
    pub hsm: Option<Arc<dyn HsmBackend>>,
    /// The client for `EXTERNAL` keys.
    pub external: Option<Arc<dyn ExternalKeyManager>>,
}
