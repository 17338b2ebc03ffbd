//! The KMS as a service sees it: encrypt and decrypt under a key, and (when visible) the state
//! of a key version.

use async_trait::async_trait;
use keyhold_api::messages::{DecryptRequest, EncryptRequest};
pub use keyhold_api::resources::AccessReason;
use keyhold_api::resources::{Purpose, VersionState};
use keyhold_api::wire::{Bytes, Crc32c, SecretBytes};
use keyhold_api::{CryptoKeyName, CryptoKeyVersionName};
use keyhold_crypto::{Secret, crc32c};

use crate::error::KmsClientError;

/// The answer of `:encrypt`.
#[derive(Debug, Clone)]
pub struct Encrypted {
    /// The ciphertext, opaque.
    pub ciphertext: Vec<u8>,
    /// The key version that encrypted it.
    pub key_version: CryptoKeyVersionName,
}

/// A Cloud KMS v1 compatible KMS, reached with one identity (a service agent).
///
/// Failures are [`KmsClientError`]s: [`KmsClientError::failure`] says what one means for the
/// protected data (refuse at once, ride out an outage, or neither), and so whether retrying
/// later can help ([`crate::Failure::Unreachable`]); a refused key's state is in
/// [`KmsClientError::observed_key_state`].
#[async_trait]
pub trait KmsClient: Send + Sync + std::fmt::Debug {
    /// `cryptoKeys.encrypt` with the key's primary version, stating why the key is used
    /// (Key Access Justifications: the KMS checks it against the key's policy, and an external
    /// key manager sees it).
    async fn encrypt(
        &self,
        key: &CryptoKeyName,
        plaintext: &[u8],
        aad: &[u8],
        reason: AccessReason,
    ) -> Result<Encrypted, KmsClientError>;

    /// `cryptoKeys.decrypt`, stating why.
    async fn decrypt(
        &self,
        key: &CryptoKeyName,
        ciphertext: &[u8],
        aad: &[u8],
        reason: AccessReason,
    ) -> Result<Secret, KmsClientError>;

    /// Which of `permissions` the identity holds on `key` (`:testIamPermissions`).
    async fn test_permissions(&self, key: &CryptoKeyName, permissions: &[&str]) -> Result<Vec<String>, KmsClientError>;

    /// The key's purpose and primary version's state, if this identity may see them; `None`
    /// when it may not (a service agent usually holds only the encrypter/decrypter role).
    async fn describe_key(&self, key: &CryptoKeyName) -> Result<Option<KeyDescription>, KmsClientError>;
}

/// What [`KmsClient::describe_key`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyDescription {
    /// The key's purpose (`Unspecified` if the KMS named one this library does not know).
    pub purpose: Purpose,
    /// The primary version's name and state, if the key has one.
    pub primary: Option<(CryptoKeyVersionName, VersionState)>,
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
