//! Cloud KMS v1 resources as the KMS domain holds them, field for field as Google's reference
//! spells them, with typed enums and names.
//!
//! On the wire (REST and gRPC alike) a resource is `keyhold-proto`'s generated message; its
//! conversions cross to these structs through the proto3 JSON form, which these structs' serde
//! mirrors exactly (Keyhold's own REST clients read it too). Unknown fields are rejected on both
//! sides, so a field the wire has and the model lacks is an error rather than silently dropped,
//! and what a client set is echoed back exactly (infrastructure-as-code tools see no drift).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::wire::{Bytes, ProtoDuration, Timestamp, is_false, wire_enum};

wire_enum! {
    /// `CryptoKey.CryptoKeyPurpose`.
    pub enum Purpose {
        /// Unspecified.
        Unspecified = "CRYPTO_KEY_PURPOSE_UNSPECIFIED" => 0,
        /// Symmetric `:encrypt` / `:decrypt`.
        EncryptDecrypt = "ENCRYPT_DECRYPT" => 1,
        /// Asymmetric signing.
        AsymmetricSign = "ASYMMETRIC_SIGN" => 5,
        /// Asymmetric decryption.
        AsymmetricDecrypt = "ASYMMETRIC_DECRYPT" => 6,
        /// Raw symmetric encryption.
        RawEncryptDecrypt = "RAW_ENCRYPT_DECRYPT" => 7,
        /// MAC signing.
        Mac = "MAC" => 9,
        /// Key encapsulation.
        KeyEncapsulation = "KEY_ENCAPSULATION" => 10,
        /// AES key wrapping.
        AesWrapping = "AES_WRAPPING" => 11,
    }
}

wire_enum! {
    /// `ProtectionLevel`: where a key version's material lives ([K4]).
    pub enum ProtectionLevel {
        /// Unspecified.
        Unspecified = "PROTECTION_LEVEL_UNSPECIFIED" => 0,
        /// Software, sealed by the KMS root key.
        Software = "SOFTWARE" => 1,
        /// Inside a PKCS#11 token.
        Hsm = "HSM" => 2,
        /// In an external key manager reached over HTTP.
        External = "EXTERNAL" => 3,
        /// In an external key manager reached over a VPC.
        ExternalVpc = "EXTERNAL_VPC" => 4,
        /// Single-tenant HSM.
        HsmSingleTenant = "HSM_SINGLE_TENANT" => 5,
    }
}

wire_enum! {
    /// `CryptoKeyVersion.CryptoKeyVersionState` ([K7]).
    pub enum VersionState {
        /// Unspecified.
        Unspecified = "CRYPTO_KEY_VERSION_STATE_UNSPECIFIED" => 0,
        /// Material is being generated.
        PendingGeneration = "PENDING_GENERATION" => 5,
        /// Usable.
        Enabled = "ENABLED" => 1,
        /// Not usable; may be enabled again.
        Disabled = "DISABLED" => 2,
        /// Material destroyed, irreversibly.
        Destroyed = "DESTROYED" => 3,
        /// Will be destroyed at `destroyTime` unless restored.
        DestroyScheduled = "DESTROY_SCHEDULED" => 4,
        /// Awaiting import.
        PendingImport = "PENDING_IMPORT" => 6,
        /// Import failed.
        ImportFailed = "IMPORT_FAILED" => 7,
        /// Generation failed.
        GenerationFailed = "GENERATION_FAILED" => 8,
        /// External destruction pending.
        PendingExternalDestruction = "PENDING_EXTERNAL_DESTRUCTION" => 9,
        /// External destruction failed.
        ExternalDestructionFailed = "EXTERNAL_DESTRUCTION_FAILED" => 10,
    }
}

wire_enum! {
    /// `CryptoKeyVersion.CryptoKeyVersionAlgorithm`. Keyhold implements the ones
    /// `docs/api.md` lists; the rest parse so that requests naming them get a clear error
    /// rather than a JSON error.
    pub enum Algorithm {
        /// Unspecified.
        Unspecified = "CRYPTO_KEY_VERSION_ALGORITHM_UNSPECIFIED" => 0,
        /// AES-256-GCM in Cloud KMS's own ciphertext format.
        GoogleSymmetricEncryption = "GOOGLE_SYMMETRIC_ENCRYPTION" => 1,
        /// Raw AES-128-GCM.
        Aes128Gcm = "AES_128_GCM" => 41,
        /// Raw AES-256-GCM.
        Aes256Gcm = "AES_256_GCM" => 19,
        /// Raw AES-128-CBC.
        Aes128Cbc = "AES_128_CBC" => 42,
        /// Raw AES-256-CBC.
        Aes256Cbc = "AES_256_CBC" => 43,
        /// Raw AES-128-CTR.
        Aes128Ctr = "AES_128_CTR" => 44,
        /// Raw AES-256-CTR.
        Aes256Ctr = "AES_256_CTR" => 45,
        /// RSA-PSS 2048 SHA-256.
        RsaSignPss2048Sha256 = "RSA_SIGN_PSS_2048_SHA256" => 2,
        /// RSA-PSS 3072 SHA-256.
        RsaSignPss3072Sha256 = "RSA_SIGN_PSS_3072_SHA256" => 3,
        /// RSA-PSS 4096 SHA-256.
        RsaSignPss4096Sha256 = "RSA_SIGN_PSS_4096_SHA256" => 4,
        /// RSA-PSS 4096 SHA-512.
        RsaSignPss4096Sha512 = "RSA_SIGN_PSS_4096_SHA512" => 15,
        /// RSA PKCS#1 2048 SHA-256.
        RsaSignPkcs12048Sha256 = "RSA_SIGN_PKCS1_2048_SHA256" => 5,
        /// RSA PKCS#1 3072 SHA-256.
        RsaSignPkcs13072Sha256 = "RSA_SIGN_PKCS1_3072_SHA256" => 6,
        /// RSA PKCS#1 4096 SHA-256.
        RsaSignPkcs14096Sha256 = "RSA_SIGN_PKCS1_4096_SHA256" => 7,
        /// RSA PKCS#1 4096 SHA-512.
        RsaSignPkcs14096Sha512 = "RSA_SIGN_PKCS1_4096_SHA512" => 16,
        /// RSA PKCS#1 v1.5 over the raw data (no DigestInfo), 2048 bits.
        RsaSignRawPkcs12048 = "RSA_SIGN_RAW_PKCS1_2048" => 28,
        /// RSA PKCS#1 v1.5 over the raw data, 3072 bits.
        RsaSignRawPkcs13072 = "RSA_SIGN_RAW_PKCS1_3072" => 29,
        /// RSA PKCS#1 v1.5 over the raw data, 4096 bits.
        RsaSignRawPkcs14096 = "RSA_SIGN_RAW_PKCS1_4096" => 30,
        /// RSA-OAEP 2048 SHA-256.
        RsaDecryptOaep2048Sha256 = "RSA_DECRYPT_OAEP_2048_SHA256" => 8,
        /// RSA-OAEP 3072 SHA-256.
        RsaDecryptOaep3072Sha256 = "RSA_DECRYPT_OAEP_3072_SHA256" => 9,
        /// RSA-OAEP 4096 SHA-256.
        RsaDecryptOaep4096Sha256 = "RSA_DECRYPT_OAEP_4096_SHA256" => 10,
        /// RSA-OAEP 4096 SHA-512.
        RsaDecryptOaep4096Sha512 = "RSA_DECRYPT_OAEP_4096_SHA512" => 17,
        /// RSA-OAEP 2048 SHA-1.
        RsaDecryptOaep2048Sha1 = "RSA_DECRYPT_OAEP_2048_SHA1" => 37,
        /// RSA-OAEP 3072 SHA-1.
        RsaDecryptOaep3072Sha1 = "RSA_DECRYPT_OAEP_3072_SHA1" => 38,
        /// RSA-OAEP 4096 SHA-1.
        RsaDecryptOaep4096Sha1 = "RSA_DECRYPT_OAEP_4096_SHA1" => 39,
        /// ECDSA P-256 SHA-256.
        EcSignP256Sha256 = "EC_SIGN_P256_SHA256" => 12,
        /// ECDSA P-384 SHA-384.
        EcSignP384Sha384 = "EC_SIGN_P384_SHA384" => 13,
        /// ECDSA secp256k1 SHA-256.
        EcSignSecp256k1Sha256 = "EC_SIGN_SECP256K1_SHA256" => 31,
        /// Ed25519.
        EcSignEd25519 = "EC_SIGN_ED25519" => 40,
        /// HMAC-SHA256.
        HmacSha256 = "HMAC_SHA256" => 32,
        /// HMAC-SHA1.
        HmacSha1 = "HMAC_SHA1" => 33,
        /// HMAC-SHA384.
        HmacSha384 = "HMAC_SHA384" => 34,
        /// HMAC-SHA512.
        HmacSha512 = "HMAC_SHA512" => 35,
        /// HMAC-SHA224.
        HmacSha224 = "HMAC_SHA224" => 36,
        /// ML-KEM-768 (FIPS 203).
        MlKem768 = "ML_KEM_768" => 47,
        /// ML-KEM-1024 (FIPS 203).
        MlKem1024 = "ML_KEM_1024" => 48,
        /// ML-DSA-44 (FIPS 204), pure and randomized.
        PqSignMlDsa44 = "PQ_SIGN_ML_DSA_44" => 68,
        /// ML-DSA-65 (FIPS 204), pure and randomized.
        PqSignMlDsa65 = "PQ_SIGN_ML_DSA_65" => 56,
        /// ML-DSA-87 (FIPS 204), pure and randomized.
        PqSignMlDsa87 = "PQ_SIGN_ML_DSA_87" => 69,
        /// ML-DSA-44 over an external mu (FIPS 204's μ computed by the caller).
        PqSignMlDsa44ExternalMu = "PQ_SIGN_ML_DSA_44_EXTERNAL_MU" => 70,
        /// ML-DSA-65 over an external mu.
        PqSignMlDsa65ExternalMu = "PQ_SIGN_ML_DSA_65_EXTERNAL_MU" => 67,
        /// ML-DSA-87 over an external mu.
        PqSignMlDsa87ExternalMu = "PQ_SIGN_ML_DSA_87_EXTERNAL_MU" => 71,
        /// SLH-DSA-SHA2-128s (FIPS 205), pure.
        PqSignSlhDsaSha2128s = "PQ_SIGN_SLH_DSA_SHA2_128S" => 57,
        /// HashSLH-DSA-SHA2-128s over a SHA-256 digest (FIPS 205, pre-hash).
        PqSignHashSlhDsaSha2128sSha256 = "PQ_SIGN_HASH_SLH_DSA_SHA2_128S_SHA256" => 60,
        /// X-Wing (ML-KEM-768 with X25519) key encapsulation.
        KemXwing = "KEM_XWING" => 63,
        /// Symmetric encryption by an external key manager.
        ExternalSymmetricEncryption = "EXTERNAL_SYMMETRIC_ENCRYPTION" => 18,
        /// AES-256 key wrap with padding.
        Aes256Kwp = "AES_256_KWP" => 73,
    }
}

impl Algorithm {
    /// The purpose the algorithm belongs to (Cloud KMS's "Key purposes" table); `None` for
    /// `CRYPTO_KEY_VERSION_ALGORITHM_UNSPECIFIED`.
    pub fn purpose(self) -> Option<Purpose> {
        use Algorithm as A;
        Some(match self {
            A::Unspecified => return None,
            A::GoogleSymmetricEncryption | A::ExternalSymmetricEncryption => Purpose::EncryptDecrypt,
            A::Aes128Gcm | A::Aes256Gcm | A::Aes128Cbc | A::Aes256Cbc | A::Aes128Ctr | A::Aes256Ctr => {
                Purpose::RawEncryptDecrypt
            }
            A::RsaSignPss2048Sha256
            | A::RsaSignPss3072Sha256
            | A::RsaSignPss4096Sha256
            | A::RsaSignPss4096Sha512
            | A::RsaSignPkcs12048Sha256
            | A::RsaSignPkcs13072Sha256
            | A::RsaSignPkcs14096Sha256
            | A::RsaSignPkcs14096Sha512
            | A::RsaSignRawPkcs12048
            | A::RsaSignRawPkcs13072
            | A::RsaSignRawPkcs14096
            | A::EcSignP256Sha256
            | A::EcSignP384Sha384
            | A::EcSignSecp256k1Sha256
            | A::EcSignEd25519
            | A::PqSignMlDsa44
            | A::PqSignMlDsa65
            | A::PqSignMlDsa87
            | A::PqSignMlDsa44ExternalMu
            | A::PqSignMlDsa65ExternalMu
            | A::PqSignMlDsa87ExternalMu
            | A::PqSignSlhDsaSha2128s
            | A::PqSignHashSlhDsaSha2128sSha256 => Purpose::AsymmetricSign,
            A::RsaDecryptOaep2048Sha256
            | A::RsaDecryptOaep3072Sha256
            | A::RsaDecryptOaep4096Sha256
            | A::RsaDecryptOaep4096Sha512
            | A::RsaDecryptOaep2048Sha1
            | A::RsaDecryptOaep3072Sha1
            | A::RsaDecryptOaep4096Sha1 => Purpose::AsymmetricDecrypt,
            A::HmacSha1 | A::HmacSha224 | A::HmacSha256 | A::HmacSha384 | A::HmacSha512 => Purpose::Mac,
            A::MlKem768 | A::MlKem1024 | A::KemXwing => Purpose::KeyEncapsulation,
            A::Aes256Kwp => Purpose::AesWrapping,
        })
    }
}

wire_enum! {
    /// `AccessReason`: why a cryptographic request is made (Key Access Justifications, [K11]).
    pub enum AccessReason {
        /// Unspecified.
        Unspecified = "REASON_UNSPECIFIED" => 0,
        /// Customer-initiated support.
        CustomerInitiatedSupport = "CUSTOMER_INITIATED_SUPPORT" => 1,
        /// Service-initiated access.
        GoogleInitiatedService = "GOOGLE_INITIATED_SERVICE" => 2,
        /// Third-party data request.
        ThirdPartyDataRequest = "THIRD_PARTY_DATA_REQUEST" => 3,
        /// Provider-initiated review.
        GoogleInitiatedReview = "GOOGLE_INITIATED_REVIEW" => 4,
        /// Customer-initiated access.
        CustomerInitiatedAccess = "CUSTOMER_INITIATED_ACCESS" => 5,
        /// Provider system operation.
        GoogleInitiatedSystemOperation = "GOOGLE_INITIATED_SYSTEM_OPERATION" => 6,
        /// No reason expected.
        ReasonNotExpected = "REASON_NOT_EXPECTED" => 7,
        /// Deprecated.
        ModifiedCustomerInitiatedAccess = "MODIFIED_CUSTOMER_INITIATED_ACCESS" => 8,
        /// Deprecated.
        ModifiedGoogleInitiatedSystemOperation = "MODIFIED_GOOGLE_INITIATED_SYSTEM_OPERATION" => 9,
        /// Response to a production alert.
        GoogleResponseToProductionAlert = "GOOGLE_RESPONSE_TO_PRODUCTION_ALERT" => 10,
        /// Customer-authorized workflow servicing.
        CustomerAuthorizedWorkflowServicing = "CUSTOMER_AUTHORIZED_WORKFLOW_SERVICING" => 11,
    }
}

/// `KeyRing`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeyRing {
    /// Output only. Resource name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Output only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_time: Option<Timestamp>,
}

/// `CryptoKeyVersionTemplate`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VersionTemplate {
    /// Protection level of new versions (default `SOFTWARE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protection_level: Option<ProtectionLevel>,
    /// Algorithm of new versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<Algorithm>,
}

/// `KeyAccessJustificationsPolicy`. Absent on a key: every reason allowed. Present with an
/// empty list: every reason denied.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeyAccessJustificationsPolicy {
    /// The reasons allowed.
    #[serde(default)]
    pub allowed_access_reasons: Vec<AccessReason>,
}

/// `CryptoKey`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CryptoKey {
    /// Output only. Resource name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Output only. The primary version (ENCRYPT_DECRYPT keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<Box<CryptoKeyVersion>>,
    /// Immutable. What the key is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<Purpose>,
    /// Output only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_time: Option<Timestamp>,
    /// When the key is next rotated automatically.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_rotation_time: Option<Timestamp>,
    /// Automatic rotation period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation_period: Option<ProtoDuration>,
    /// Template for new versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_template: Option<VersionTemplate>,
    /// User labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Immutable. Whether only imported versions are allowed.
    #[serde(default, skip_serializing_if = "is_false")]
    pub import_only: bool,
    /// Immutable. How long versions stay `DESTROY_SCHEDULED`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destroy_scheduled_duration: Option<ProtoDuration>,
    /// Immutable. EKM connection for `EXTERNAL_VPC` keys.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub crypto_key_backend: String,
    /// Key Access Justifications policy ([K11]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_access_justifications_policy: Option<KeyAccessJustificationsPolicy>,
}

/// `KeyOperationAttestation`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeyOperationAttestation {
    /// Attestation format.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub format: String,
    /// Attestation content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Bytes>,
}

/// `ExternalProtectionLevelOptions`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExternalProtectionLevelOptions {
    /// URI of the key in the external key manager.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub external_key_uri: String,
    /// Path of the key in an EKM connection.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ekm_connection_key_path: String,
}

/// `CryptoKeyVersion`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CryptoKeyVersion {
    /// Output only. Resource name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// State.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<VersionState>,
    /// Output only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_time: Option<Timestamp>,
    /// Output only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protection_level: Option<ProtectionLevel>,
    /// Output only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<Algorithm>,
    /// Output only. HSM attestation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attestation: Option<KeyOperationAttestation>,
    /// Output only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generate_time: Option<Timestamp>,
    /// Output only. When a `DESTROY_SCHEDULED` version will be destroyed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destroy_time: Option<Timestamp>,
    /// Output only. When the version was destroyed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destroy_event_time: Option<Timestamp>,
    /// Output only.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub import_job: String,
    /// Output only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub import_time: Option<Timestamp>,
    /// Output only.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub import_failure_reason: String,
    /// Output only.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub generation_failure_reason: String,
    /// Output only.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub external_destruction_failure_reason: String,
    /// For EXTERNAL keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_protection_level_options: Option<ExternalProtectionLevelOptions>,
    /// Output only.
    #[serde(default, skip_serializing_if = "is_false")]
    pub reimport_eligible: bool,
}

wire_enum! {
    /// `ImportJob.ImportMethod`: how key material is wrapped for an import job.
    pub enum ImportMethod {
        /// Unspecified.
        Unspecified = "IMPORT_METHOD_UNSPECIFIED" => 0,
        /// RSA-OAEP-3072 (SHA-1) of an AES-256 key, then AES-KWP of the material.
        RsaOaep3072Sha1Aes256 = "RSA_OAEP_3072_SHA1_AES_256" => 1,
        /// RSA-OAEP-4096 (SHA-1) of an AES-256 key, then AES-KWP of the material.
        RsaOaep4096Sha1Aes256 = "RSA_OAEP_4096_SHA1_AES_256" => 2,
        /// RSA-OAEP-3072 (SHA-256) of an AES-256 key, then AES-KWP of the material.
        RsaOaep3072Sha256Aes256 = "RSA_OAEP_3072_SHA256_AES_256" => 3,
        /// RSA-OAEP-4096 (SHA-256) of an AES-256 key, then AES-KWP of the material.
        RsaOaep4096Sha256Aes256 = "RSA_OAEP_4096_SHA256_AES_256" => 4,
        /// RSA-OAEP-3072 (SHA-256) of the material itself.
        RsaOaep3072Sha256 = "RSA_OAEP_3072_SHA256" => 5,
        /// RSA-OAEP-4096 (SHA-256) of the material itself.
        RsaOaep4096Sha256 = "RSA_OAEP_4096_SHA256" => 6,
        /// HPKE with ML-KEM-768 (not served by Keyhold).
        HpkeKemMlKem768HkdfSha256Aes256Gcm = "HPKE_KEM_ML_KEM_768_HKDF_SHA256_AES_256_GCM" => 8,
        /// HPKE with ML-KEM-1024 (not served by Keyhold).
        HpkeKemMlKem1024HkdfSha256Aes256Gcm = "HPKE_KEM_ML_KEM_1024_HKDF_SHA256_AES_256_GCM" => 9,
        /// HPKE with X-Wing (not served by Keyhold).
        HpkeKemXwingHkdfSha256Aes256Gcm = "HPKE_KEM_XWING_HKDF_SHA256_AES_256_GCM" => 10,
    }
}

wire_enum! {
    /// `ImportJob.ImportJobState`.
    pub enum ImportJobState {
        /// Unspecified.
        Unspecified = "IMPORT_JOB_STATE_UNSPECIFIED" => 0,
        /// The wrapping key is being generated.
        PendingGeneration = "PENDING_GENERATION" => 1,
        /// Usable for imports.
        Active = "ACTIVE" => 2,
        /// Expired (3 days after creation): can no longer be used.
        Expired = "EXPIRED" => 3,
    }
}

/// `ImportJob.WrappingPublicKey`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WrappingPublicKey {
    /// The wrapping key's `SubjectPublicKeyInfo` in PEM.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pem: String,
    /// The key in `publicKeyFormat` (HPKE jobs only; never set by Keyhold).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Bytes>,
}

/// `ImportJob`: an RSA wrapping key that key material is wrapped for, to be imported with
/// `cryptoKeyVersions:import`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImportJob {
    /// Output only. Resource name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Required, immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub import_method: Option<ImportMethod>,
    /// Required, immutable: must match the protection level of the keys imported into.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protection_level: Option<ProtectionLevel>,
    /// Output only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_time: Option<Timestamp>,
    /// Output only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generate_time: Option<Timestamp>,
    /// Output only: 3 days after `createTime`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expire_time: Option<Timestamp>,
    /// Output only: when it expired (only once `EXPIRED`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expire_event_time: Option<Timestamp>,
    /// Output only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<ImportJobState>,
    /// Output only: the wrapping key (only while `ACTIVE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<WrappingPublicKey>,
    /// The format of `publicKey.data` (HPKE jobs only; not supported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key_format: Option<crate::messages::PublicKeyFormat>,
    /// Output only: HSM attestation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attestation: Option<KeyOperationAttestation>,
    /// Immutable: EKM connection (not supported).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub crypto_key_backend: String,
}

/// `RetiredResource`: the record a deleted crypto key leaves, so that its name is never used
/// again.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetiredResource {
    /// `projects/P/locations/L/retiredResources/ID`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The deleted resource's name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub original_resource: String,
    /// Its type, `cloudkms.googleapis.com/CryptoKey`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub resource_type: String,
    /// When it was deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_time: Option<Timestamp>,
}

/// A Cloud KMS `google.longrunning.Operation` (`DeleteCryptoKey`, `DeleteCryptoKeyVersion`):
/// `metadata` and `response` are packed messages in their JSON form, with their `@type`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Operation {
    /// `projects/P/locations/L/operations/ID`.
    pub name: String,
    /// The method's metadata (`DeleteCryptoKeyMetadata`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
    /// Whether it has finished.
    #[serde(default, skip_serializing_if = "is_false")]
    pub done: bool,
    /// The answer once done (`google.protobuf.Empty` for the deletions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<serde_json::Value>,
}

/// `Location` (google.cloud.location).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Location {
    /// `projects/{p}/locations/{l}`.
    pub name: String,
    /// The location ID.
    pub location_id: String,
    /// Display name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub display_name: String,
    /// Labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// `LocationMetadata` with its `@type`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_client_create_body_parses() {
        let k: CryptoKey =
            serde_json::from_str(r#"{"purpose": 1, "versionTemplate": {"protectionLevel": 2, "algorithm": 1}}"#)
                .unwrap();
        assert_eq!(k.purpose, Some(Purpose::EncryptDecrypt));
        let t = k.version_template.unwrap();
        assert_eq!(t.protection_level, Some(ProtectionLevel::Hsm));
        assert_eq!(t.algorithm, Some(Algorithm::GoogleSymmetricEncryption));
    }

    #[test]
    fn unknown_fields_rejected_and_defaults_omitted() {
        assert!(serde_json::from_str::<CryptoKey>(r#"{"purpose": "ENCRYPT_DECRYPT", "purpsoe": 1}"#).is_err());
        let k = CryptoKey { name: "n".into(), ..Default::default() };
        assert_eq!(serde_json::to_string(&k).unwrap(), r#"{"name":"n"}"#);
    }
}
