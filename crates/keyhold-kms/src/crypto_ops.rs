//! Cryptographic operations ([K5]): `:encrypt`, `:decrypt`, `generateRandomBytes`. No database
//! round trip: keys come from the [`Keys`] cache, and the version's protection level's
//! [`crate::backend::KeyBackend`] does the cryptography. A part of the KMS that never sees the
//! façade.

use std::sync::Arc;

use keyhold_api::messages::{
    DecryptRequest, DecryptResponse, EncryptRequest, EncryptResponse, GenerateRandomBytesRequest,
    GenerateRandomBytesResponse,
};
use keyhold_api::resources::{AccessReason, ProtectionLevel, Purpose, VersionState};
use keyhold_api::wire::{Bytes, Crc32c, SecretBytes};
use keyhold_api::{CryptoKeyName, CryptoKeyVersionName, LocationName};
use keyhold_crypto::{ciphertext, crc32c};

use crate::audit::AccessDecision;
use crate::backend::KeyUse;
use crate::cache::{CachedKey, CachedVersion};
use crate::call::Call;
use crate::error::KmsError;
use crate::keys::Keys;

/// What `:encrypt` was called on: a key (its primary version is used) or one version.
#[derive(Debug, Clone)]
pub enum EncryptTarget {
    /// The key's primary version.
    Key(CryptoKeyName),
    /// A specific version.
    Version(CryptoKeyVersionName),
}

/// Cloud KMS limit on plaintext and on AAD for SOFTWARE and EXTERNAL keys.
pub const MAX_PLAINTEXT: usize = 64 * 1024;
/// Largest ciphertext `:decrypt` accepts: a maximal plaintext plus room for the overhead of
/// our format or of an HSM's or external manager's blob.
pub const MAX_CIPHERTEXT: usize = MAX_PLAINTEXT + 1024;

pub(crate) fn check_size(field: &'static str, len: usize, max: usize) -> Result<(), KmsError> {
    if len > max { Err(KmsError::TooLarge { field, max, actual: len }) } else { Ok(()) }
}

/// Checks an optional client CRC32C; returns whether one was given (the `verified*` flag).
pub(crate) fn check_crc(field: &'static str, data: &[u8], given: Option<Crc32c>) -> Result<bool, KmsError> {
    match given {
        None => Ok(false),
        Some(Crc32c(c)) if c == crc32c(data) => Ok(true),
        Some(_) => Err(KmsError::ChecksumMismatch { field }),
    }
}

/// `:encrypt`, `:decrypt` and random bytes over the keys' cache and backends.
#[derive(Debug)]
pub(crate) struct CryptoOps {
    keys: Arc<Keys>,
}

impl CryptoOps {
    pub(crate) fn new(keys: Arc<Keys>) -> Self {
        Self { keys }
    }

    /// `cryptoKeys.encrypt`.
    pub(crate) async fn encrypt(
        &self,
        call: &Call<'_>,
        target: &EncryptTarget,
        req: &EncryptRequest,
    ) -> Result<EncryptResponse, KmsError> {
        let plaintext = req.plaintext.0.expose();
        let aad = req.additional_authenticated_data.as_ref().map(|b| b.0.as_slice()).unwrap_or_default();
        check_size("plaintext", plaintext.len(), MAX_PLAINTEXT)?;
        check_size("additional_authenticated_data", aad.len(), MAX_PLAINTEXT)?;
        let verified_plaintext = check_crc("plaintext", plaintext, req.plaintext_crc32c)?;
        let verified_aad = check_crc("additional_authenticated_data", aad, req.additional_authenticated_data_crc32c)?;

        let key_name = match target {
            EncryptTarget::Key(k) => k,
            EncryptTarget::Version(v) => &v.crypto_key,
        };
        let mut entry = self.keys.cached(key_name).await?;
        require_purpose(&entry)?;
        let id = match target {
            EncryptTarget::Key(k) => {
                entry.record.primary_version.ok_or_else(|| KmsError::NoPrimaryVersion(k.clone()))?
            }
            EncryptTarget::Version(v) => v.version,
        };
        if !entry.versions.contains_key(&id) {
            // Perhaps created on another node since we cached the key.
            entry = self.keys.refresh_cached(key_name, &entry).await?;
        }
        let version = entry.versions.get(&id).ok_or_else(|| KmsError::VersionNotFound(key_name.version(id)))?;
        call.set_key_version(version.record.version.name.clone());
        require_enabled(version)?;
        let reason = check_justification(call, &entry)?;
        let level = version.record.version.protection_level.unwrap_or(ProtectionLevel::Software);
        let using = KeyUse { key_name: &entry.name, version, call, reason };
        let ct = self.keys.backends.for_level(Some(level))?.encrypt(using, plaintext, aad).await?;
        Ok(EncryptResponse {
            name: version.record.version.name.clone(),
            ciphertext_crc32c: Crc32c(crc32c(&ct)),
            ciphertext: Bytes(ct),
            verified_plaintext_crc32c: verified_plaintext,
            verified_additional_authenticated_data_crc32c: verified_aad,
            protection_level: level,
        })
    }

    /// `cryptoKeys.decrypt`: the version is read from the ciphertext.
    pub(crate) async fn decrypt(
        &self,
        call: &Call<'_>,
        key_name: &CryptoKeyName,
        req: &DecryptRequest,
    ) -> Result<DecryptResponse, KmsError> {
        let ct = req.ciphertext.0.as_slice();
        let aad = req.additional_authenticated_data.as_ref().map(|b| b.0.as_slice()).unwrap_or_default();
        check_size("ciphertext", ct.len(), MAX_CIPHERTEXT)?;
        check_size("additional_authenticated_data", aad.len(), MAX_PLAINTEXT)?;
        check_crc("ciphertext", ct, req.ciphertext_crc32c)?;
        check_crc("additional_authenticated_data", aad, req.additional_authenticated_data_crc32c)?;

        let mut entry = self.keys.cached(key_name).await?;
        require_purpose(&entry)?;
        let id = ciphertext::version_of(ct).map_err(|_| KmsError::DecryptFailed)?;
        if !entry.versions.contains_key(&id) {
            entry = self.keys.refresh_cached(key_name, &entry).await?;
        }
        // A ciphertext naming a version this key does not have is foreign: same answer as any
        // other failure, so nothing is learned about the key's versions.
        let version = entry.versions.get(&id).ok_or(KmsError::DecryptFailed)?;
        call.set_key_version(version.record.version.name.clone());
        require_enabled(version)?;
        let reason = check_justification(call, &entry)?;
        let level = version.record.version.protection_level.unwrap_or(ProtectionLevel::Software);
        let using = KeyUse { key_name: &entry.name, version, call, reason };
        let plaintext = self.keys.backends.for_level(Some(level))?.decrypt(using, ct, aad).await?;
        Ok(DecryptResponse {
            plaintext_crc32c: Crc32c(crc32c(plaintext.expose())),
            plaintext: SecretBytes(plaintext),
            used_primary: entry.record.primary_version == Some(id),
            protection_level: level,
        })
    }

    /// `locations.generateRandomBytes`: bytes from the HSM's random number generator. As in
    /// Cloud KMS, only protection level `HSM` is supported.
    pub(crate) async fn generate_random_bytes(
        &self,
        location: &LocationName,
        req: &GenerateRandomBytesRequest,
    ) -> Result<GenerateRandomBytesResponse, KmsError> {
        self.keys.check_location(location)?;
        if !(8..=1024).contains(&req.length_bytes) {
            return Err(KmsError::InvalidArgument(format!(
                "length_bytes must be between 8 and 1024, got {}.",
                req.length_bytes
            )));
        }
        if req.protection_level != Some(ProtectionLevel::Hsm) {
            return Err(KmsError::InvalidArgument("protection_level must be HSM.".into()));
        }
        let data = self.keys.backends.hsm()?.random_bytes(req.length_bytes as usize, &location.to_string()).await?;
        Ok(GenerateRandomBytesResponse { data_crc32c: Crc32c(crc32c(data.expose())), data: SecretBytes(data) })
    }
}

fn require_purpose(entry: &CachedKey) -> Result<(), KmsError> {
    match entry.record.key.purpose {
        Some(Purpose::EncryptDecrypt) => Ok(()),
        other => Err(KmsError::WrongPurpose {
            key: entry.record.name.clone(),
            purpose: other.unwrap_or(Purpose::Unspecified),
            required: Purpose::EncryptDecrypt,
        }),
    }
}

pub(crate) fn require_enabled(v: &CachedVersion) -> Result<(), KmsError> {
    match v.record.version.state {
        Some(VersionState::Enabled) => Ok(()),
        other => Err(KmsError::VersionNotEnabled {
            version: v.record.name.clone(),
            state: other.unwrap_or(VersionState::Unspecified),
        }),
    }
}

/// [K11] The request's access reason against the key's `keyAccessJustificationsPolicy`
/// (absent: every reason allowed; present and empty: none). The decision goes into the
/// call's audit entry either way.
pub(crate) fn check_justification(call: &Call<'_>, entry: &CachedKey) -> Result<AccessReason, KmsError> {
    let reason = call.caller.access_reason.unwrap_or(AccessReason::CustomerInitiatedAccess);
    let policy = entry.record.key.key_access_justifications_policy.as_ref();
    let allowed = policy.is_none_or(|p| p.allowed_access_reasons.contains(&reason));
    call.set_access_decision(AccessDecision {
        reason: reason.as_str().to_string(),
        policy_enforced: policy.is_some(),
        allowed,
    });
    match policy {
        Some(p) if !allowed => Err(KmsError::JustificationDenied {
            key: entry.name.clone(),
            reason,
            allowed: if p.allowed_access_reasons.is_empty() {
                "none".into()
            } else {
                p.allowed_access_reasons.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", ")
            },
        }),
        _ => Ok(reason),
    }
}
