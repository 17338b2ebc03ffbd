//! The key operations' requests and answers as the KMS domain takes and gives them (plaintext
//! in wiping buffers, CRC32C values checked). On the wire, REST and gRPC alike, they are the
//! generated messages of `keyhold-proto`, converted field by field; their serde form here is
//! what Keyhold's own REST clients (the CMEK library, the CLI) send and read.

use serde::{Deserialize, Serialize};

use crate::resources::{Algorithm, ProtectionLevel};
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

/// `AsymmetricSignRequest.digest`: the digest of the data to sign, in the field of the hash that
/// made it (the key's algorithm names the hash).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Digest {
    /// A SHA-256 digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<Bytes>,
    /// A SHA-384 digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha384: Option<Bytes>,
    /// A SHA-512 digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha512: Option<Bytes>,
    /// FIPS 204's μ (64 bytes of SHAKE256), for ML-DSA external-μ keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_mu: Option<Bytes>,
}

/// `AsymmetricSignRequest` (`POST …/cryptoKeyVersions/N:asymmetricSign`): a `digest` or the
/// `data` itself (Ed25519 takes data only).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AsymmetricSignRequest {
    /// Version name (ignored: the URL names it).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The digest to sign.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<Digest>,
    /// Optional CRC32C of the digest's bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest_crc32c: Option<Crc32c>,
    /// The data to sign (empty: not given).
    #[serde(default, skip_serializing_if = "Bytes::is_empty")]
    pub data: Bytes,
    /// Optional CRC32C of `data`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_crc32c: Option<Crc32c>,
}

/// `AsymmetricSignResponse`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AsymmetricSignResponse {
    /// The signature: DER `ECDSA-Sig-Value` for ECDSA, 64 bytes for Ed25519, the modulus'
    /// length for RSA.
    pub signature: Bytes,
    /// CRC32C of `signature`.
    pub signature_crc32c: Crc32c,
    /// Whether `digestCrc32c` was received and verified.
    #[serde(default, skip_serializing_if = "is_false")]
    pub verified_digest_crc32c: bool,
    /// The version used.
    pub name: String,
    /// Whether `dataCrc32c` was received and verified.
    #[serde(default, skip_serializing_if = "is_false")]
    pub verified_data_crc32c: bool,
    /// Protection level of the version used.
    pub protection_level: ProtectionLevel,
}

/// `AsymmetricDecryptRequest` (`POST …/cryptoKeyVersions/N:asymmetricDecrypt`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AsymmetricDecryptRequest {
    /// Version name (ignored: the URL names it).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// RSA-OAEP ciphertext made with the version's public key.
    #[serde(default)]
    pub ciphertext: Bytes,
    /// Optional CRC32C of `ciphertext`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ciphertext_crc32c: Option<Crc32c>,
}

/// `AsymmetricDecryptResponse`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AsymmetricDecryptResponse {
    /// The decrypted data.
    pub plaintext: SecretBytes,
    /// CRC32C of `plaintext`.
    pub plaintext_crc32c: Crc32c,
    /// Whether `ciphertextCrc32c` was received and verified.
    #[serde(default, skip_serializing_if = "is_false")]
    pub verified_ciphertext_crc32c: bool,
    /// Protection level of the version used.
    pub protection_level: ProtectionLevel,
}

/// `MacSignRequest` (`POST …/cryptoKeyVersions/N:macSign`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MacSignRequest {
    /// Version name (ignored: the URL names it).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The data to tag.
    #[serde(default)]
    pub data: SecretBytes,
    /// Optional CRC32C of `data`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_crc32c: Option<Crc32c>,
}

/// `MacSignResponse`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MacSignResponse {
    /// The version used.
    pub name: String,
    /// The tag.
    pub mac: Bytes,
    /// CRC32C of `mac`.
    pub mac_crc32c: Crc32c,
    /// Whether `dataCrc32c` was received and verified.
    #[serde(default, skip_serializing_if = "is_false")]
    pub verified_data_crc32c: bool,
    /// Protection level of the version used.
    pub protection_level: ProtectionLevel,
}

/// `MacVerifyRequest` (`POST …/cryptoKeyVersions/N:macVerify`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MacVerifyRequest {
    /// Version name (ignored: the URL names it).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The data the tag is claimed for.
    #[serde(default)]
    pub data: SecretBytes,
    /// Optional CRC32C of `data`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_crc32c: Option<Crc32c>,
    /// The tag to check.
    #[serde(default)]
    pub mac: Bytes,
    /// Optional CRC32C of `mac`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac_crc32c: Option<Crc32c>,
}

/// `MacVerifyResponse`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MacVerifyResponse {
    /// The version used.
    pub name: String,
    /// Whether the tag is right.
    #[serde(default, skip_serializing_if = "is_false")]
    pub success: bool,
    /// Whether `dataCrc32c` was received and verified.
    #[serde(default, skip_serializing_if = "is_false")]
    pub verified_data_crc32c: bool,
    /// Whether `macCrc32c` was received and verified.
    #[serde(default, skip_serializing_if = "is_false")]
    pub verified_mac_crc32c: bool,
    /// Equal to `success`, computed apart from it: a response where they differ is corrupt.
    #[serde(default, skip_serializing_if = "is_false")]
    pub verified_success_integrity: bool,
    /// Protection level of the version used.
    pub protection_level: ProtectionLevel,
}

crate::wire::wire_enum! {
    /// `PublicKey.PublicKeyFormat`.
    pub enum PublicKeyFormat {
        /// Not given: PEM in `pem` (non-PQC keys).
        Unspecified = "PUBLIC_KEY_FORMAT_UNSPECIFIED" => 0,
        /// RFC 7468 PEM of the SubjectPublicKeyInfo.
        Pem = "PEM" => 1,
        /// DER of the SubjectPublicKeyInfo.
        Der = "DER" => 2,
        /// The raw FIPS 203/204/205 encoding (PQC keys).
        NistPqc = "NIST_PQC" => 3,
        /// The raw X-Wing public key.
        XwingRawBytes = "XWING_RAW_BYTES" => 4,
    }
}

/// `ChecksummedData`: bytes and their CRC32C.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChecksummedData {
    /// The bytes.
    pub data: Bytes,
    /// CRC32C of `data`.
    pub crc32c_checksum: Crc32c,
}

/// `PublicKey` (`GET …/cryptoKeyVersions/N/publicKey`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublicKey {
    /// The public key as PEM (when no format, or `PEM`, was asked for).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pem: String,
    /// The version's algorithm.
    pub algorithm: Algorithm,
    /// CRC32C of `pem` (present when `pem` is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pem_crc32c: Option<Crc32c>,
    /// The version's name.
    pub name: String,
    /// Protection level of the version.
    pub protection_level: ProtectionLevel,
    /// The format asked for (absent when none was).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key_format: Option<PublicKeyFormat>,
    /// The key in the format asked for (absent when none was).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<ChecksummedData>,
}

/// `RawEncryptRequest` (`POST …/cryptoKeyVersions/N:rawEncrypt`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawEncryptRequest {
    /// Version name (ignored: the URL names it).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The data to encrypt.
    #[serde(default)]
    pub plaintext: SecretBytes,
    /// Additional authenticated data (AES-GCM only).
    #[serde(default, skip_serializing_if = "Bytes::is_empty")]
    pub additional_authenticated_data: Bytes,
    /// Optional CRC32C of `plaintext`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plaintext_crc32c: Option<Crc32c>,
    /// Optional CRC32C of the AAD (of the empty AAD too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_authenticated_data_crc32c: Option<Crc32c>,
    /// The caller's IV (AES-CBC and AES-CTR only, 16 bytes); else one is drawn.
    #[serde(default, skip_serializing_if = "Bytes::is_empty")]
    pub initialization_vector: Bytes,
    /// Optional CRC32C of the IV (of the empty IV too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initialization_vector_crc32c: Option<Crc32c>,
}

/// `RawEncryptResponse`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawEncryptResponse {
    /// The ciphertext; for AES-GCM followed by its `tagLength`-byte tag.
    pub ciphertext: Bytes,
    /// The IV used (AES-GCM: the 12-byte nonce).
    pub initialization_vector: Bytes,
    /// The tag's length (16 for AES-GCM, else 0).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tag_length: i32,
    /// CRC32C of `ciphertext`.
    pub ciphertext_crc32c: Crc32c,
    /// CRC32C of `initializationVector`.
    pub initialization_vector_crc32c: Crc32c,
    /// Whether `plaintextCrc32c` was received and verified.
    #[serde(default, skip_serializing_if = "is_false")]
    pub verified_plaintext_crc32c: bool,
    /// Whether `additionalAuthenticatedDataCrc32c` was received and verified.
    #[serde(default, skip_serializing_if = "is_false")]
    pub verified_additional_authenticated_data_crc32c: bool,
    /// Whether `initializationVectorCrc32c` was received and verified.
    #[serde(default, skip_serializing_if = "is_false")]
    pub verified_initialization_vector_crc32c: bool,
    /// The version used.
    pub name: String,
    /// Protection level of the version used.
    pub protection_level: ProtectionLevel,
}

/// `RawDecryptRequest` (`POST …/cryptoKeyVersions/N:rawDecrypt`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawDecryptRequest {
    /// Version name (ignored: the URL names it).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The ciphertext (with the tag for AES-GCM).
    #[serde(default)]
    pub ciphertext: Bytes,
    /// The AAD given to `rawEncrypt` (AES-GCM only).
    #[serde(default, skip_serializing_if = "Bytes::is_empty")]
    pub additional_authenticated_data: Bytes,
    /// The IV `rawEncrypt` used (required).
    #[serde(default)]
    pub initialization_vector: Bytes,
    /// The tag's length: 0 (the algorithm's default) or 16 for AES-GCM; 0 otherwise.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tag_length: i32,
    /// Optional CRC32C of `ciphertext`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ciphertext_crc32c: Option<Crc32c>,
    /// Optional CRC32C of the AAD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_authenticated_data_crc32c: Option<Crc32c>,
    /// Optional CRC32C of the IV.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initialization_vector_crc32c: Option<Crc32c>,
}

/// `RawDecryptResponse`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawDecryptResponse {
    /// The decrypted data.
    pub plaintext: SecretBytes,
    /// CRC32C of `plaintext`.
    pub plaintext_crc32c: Crc32c,
    /// Protection level of the version used.
    pub protection_level: ProtectionLevel,
    /// Whether `ciphertextCrc32c` was received and verified.
    #[serde(default, skip_serializing_if = "is_false")]
    pub verified_ciphertext_crc32c: bool,
    /// Whether `additionalAuthenticatedDataCrc32c` was received and verified.
    #[serde(default, skip_serializing_if = "is_false")]
    pub verified_additional_authenticated_data_crc32c: bool,
    /// Whether `initializationVectorCrc32c` was received and verified.
    #[serde(default, skip_serializing_if = "is_false")]
    pub verified_initialization_vector_crc32c: bool,
}

/// `DecapsulateRequest` (`POST …/cryptoKeyVersions/N:decapsulate`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DecapsulateRequest {
    /// Version name (ignored: the URL names it).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The KEM ciphertext made with the version's public key.
    #[serde(default)]
    pub ciphertext: Bytes,
    /// Optional CRC32C of `ciphertext`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ciphertext_crc32c: Option<Crc32c>,
}

/// `DecapsulateResponse`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DecapsulateResponse {
    /// The version used.
    pub name: String,
    /// The shared secret.
    pub shared_secret: SecretBytes,
    /// CRC32C of `sharedSecret`.
    pub shared_secret_crc32c: Crc32c,
    /// Whether `ciphertextCrc32c` was received and verified.
    #[serde(default, skip_serializing_if = "is_false")]
    pub verified_ciphertext_crc32c: bool,
    /// Protection level of the version used.
    pub protection_level: ProtectionLevel,
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

/// `ImportCryptoKeyVersionRequest` (`POST …/cryptoKeys/K/cryptoKeyVersions:import`), with
/// `wrappedKey` or its older spelling `rsaAesWrappedKey` in `wrapped_key`.
#[derive(Clone, Debug, Default)]
pub struct ImportCryptoKeyVersionRequest {
    /// The version to import into again (empty: a new version).
    pub crypto_key_version: String,
    /// The algorithm of the material (required; need not be the key's template's).
    pub algorithm: Option<Algorithm>,
    /// The import job the material is wrapped for (required).
    pub import_job: String,
    /// The material, wrapped for the import job's public key by its import method.
    pub wrapped_key: Bytes,
}
