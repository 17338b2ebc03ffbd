//! The KMS as a service sees it: encrypt and decrypt under a key, and (when visible) the state
//! of a key version.

use async_trait::async_trait;
use keyhold_api::messages::{DecryptRequest, EncryptRequest};
pub use keyhold_api::resources::AccessReason;
use keyhold_api::wire::{Bytes, Crc32c, SecretBytes};
use keyhold_crypto::{Secret, crc32c};

use crate::error::KmsClientError;

/// The answer of `:encrypt`.
#[derive(Debug, Clone)]
pub struct Encrypted {
    /// The ciphertext, opaque.
    pub ciphertext: Vec<u8>,
    /// The key version that encrypted it (`.../cryptoKeyVersions/N`).
    pub key_version: String,
}

/// A Cloud KMS v1 compatible KMS, reached with one identity (a service agent).
#[async_trait]
pub trait KmsClient: Send + Sync + std::fmt::Debug {
    /// `cryptoKeys.encrypt` with the key's primary version, stating why the key is used
    /// (Key Access Justifications: the KMS checks it against the key's policy, and an external
    /// key manager sees it).
    async fn encrypt(
        &self,
        key: &str,
        plaintext: &[u8],
        aad: &[u8],
        reason: AccessReason,
    ) -> Result<Encrypted, KmsClientError>;

    /// `cryptoKeys.decrypt`, stating why.
    async fn decrypt(
        &self,
        key: &str,
        ciphertext: &[u8],
        aad: &[u8],
        reason: AccessReason,
    ) -> Result<Secret, KmsClientError>;

    /// Which of `permissions` the identity holds on `resource` (`:testIamPermissions`).
    async fn test_permissions(&self, resource: &str, permissions: &[&str]) -> Result<Vec<String>, KmsClientError>;

    /// The key's purpose and primary version's state, if this identity may see them; `None`
    /// when it may not (a service agent usually holds only the encrypter/decrypter role).
    async fn describe_key(&self, key: &str) -> Result<Option<KeyDescription>, KmsClientError>;
}

/// What [`KmsClient::describe_key`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyDescription {
    /// `ENCRYPT_DECRYPT`, `ASYMMETRIC_SIGN`, ...
    pub purpose: String,
    /// The primary version's name and state (`ENABLED`, `DISABLED`, ...), if the key has one.
    pub primary: Option<(String, String)>,
}

/// The body of `:encrypt` for `plaintext` and `aad`, with CRC32C values when `checked` (over
/// the network; in process there is no wire to corrupt them). For [`KmsClient`]
/// implementations.
pub fn encrypt_request(plaintext: &[u8], aad: &[u8], checked: bool) -> EncryptRequest {
    EncryptRequest {
        name: String::new(),
        plaintext: SecretBytes(Secret::new(plaintext.to_vec())),
        additional_authenticated_data: Some(Bytes(aad.to_vec())),
        plaintext_crc32c: checked.then(|| Crc32c(crc32c(plaintext))),
        additional_authenticated_data_crc32c: checked.then(|| Crc32c(crc32c(aad))),
    }
}

/// The body of `:decrypt`, as [`encrypt_request`].
pub fn decrypt_request(ciphertext: &[u8], aad: &[u8], checked: bool) -> DecryptRequest {
    DecryptRequest {
        name: String::new(),
        ciphertext: Bytes(ciphertext.to_vec()),
        additional_authenticated_data: Some(Bytes(aad.to_vec())),
        ciphertext_crc32c: checked.then(|| Crc32c(crc32c(ciphertext))),
        additional_authenticated_data_crc32c: checked.then(|| Crc32c(crc32c(aad))),
    }
}
