//! The key operations' requests and answers as the KMS domain takes and gives them (plaintext
//! in wiping buffers, CRC32C values checked). On the wire, REST and gRPC alike, they are the
//! generated messages of `keyhold-proto`, converted field by field; their serde form here is
//! what Keyhold's own REST clients (the CMEK library, the CLI) send and read.

use serde::{Deserialize, Serialize};

use crate::resources::ProtectionLevel;
use crate::wire::{Bytes, Crc32c, SecretBytes, is_false};

/// `EncryptRequest` (the `name` comes from the URL; a copy in the body is accepted).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EncryptRequest {
    /// Key or version name (ignored: the URL names it).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The data to encrypt.
    #[serde(default)]
    pub plaintext: SecretBytes,
    /// Optional additional authenticated data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_authenticated_data: Option<Bytes>,
    /// Optional CRC32C of `plaintext`, checked by the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plaintext_crc32c: Option<Crc32c>,
    /// Optional CRC32C of the AAD, checked by the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_authenticated_data_crc32c: Option<Crc32c>,
}

/// `EncryptResponse`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EncryptResponse {
    /// The version used.
    pub name: String,
    /// The ciphertext.
    pub ciphertext: Bytes,
    /// CRC32C of `ciphertext`.
    pub ciphertext_crc32c: Crc32c,
    /// Whether `plaintextCrc32c` was received and verified.
    #[serde(default, skip_serializing_if = "is_false")]
    pub verified_plaintext_crc32c: bool,
    /// Whether `additionalAuthenticatedDataCrc32c` was received and verified.
    #[serde(default, skip_serializing_if = "is_false")]
    pub verified_additional_authenticated_data_crc32c: bool,
    /// Protection level of the version used.
    pub protection_level: ProtectionLevel,
}

/// `DecryptRequest`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DecryptRequest {
    /// Key name (ignored: the URL names it).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The ciphertext from `:encrypt`.
    #[serde(default)]
    pub ciphertext: Bytes,
    /// The AAD given to `:encrypt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_authenticated_data: Option<Bytes>,
    /// Optional CRC32C of `ciphertext`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ciphertext_crc32c: Option<Crc32c>,
    /// Optional CRC32C of the AAD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_authenticated_data_crc32c: Option<Crc32c>,
}

/// `DecryptResponse`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DecryptResponse {
    /// The decrypted data.
    pub plaintext: SecretBytes,
    /// CRC32C of `plaintext`.
    pub plaintext_crc32c: Crc32c,
    /// Whether the version that decrypted is the key's primary.
    #[serde(default, skip_serializing_if = "is_false")]
    pub used_primary: bool,
    /// Protection level of that version.
    pub protection_level: ProtectionLevel,
}

/// `GenerateRandomBytesRequest` (`POST /v1/projects/P/locations/L:generateRandomBytes`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GenerateRandomBytesRequest {
    /// Location (ignored: the URL names it).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub location: String,
    /// How many bytes, 8 to 1024.
    #[serde(default)]
    pub length_bytes: i32,
    /// Where they come from; Cloud KMS supports only `HSM`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protection_level: Option<ProtectionLevel>,
}

/// `GenerateRandomBytesResponse`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerateRandomBytesResponse {
    /// The random bytes.
    pub data: SecretBytes,
    /// CRC32C of `data`.
    pub data_crc32c: Crc32c,
}
