//! `:encrypt` and `:decrypt` ([K5]). No database round trip: keys come from the cache.

use std::sync::Arc;

use keyhold_api::CryptoKeyName;
use keyhold_api::messages::{DecryptRequest, DecryptResponse, EncryptRequest, EncryptResponse};
use keyhold_api::resources::{ProtectionLevel, Purpose, VersionState};
use keyhold_api::wire::{Bytes, Crc32c, SecretBytes};
use keyhold_crypto::{AeadKey, ciphertext, crc32c};

use keyhold_iam::role;

use crate::audit::AuditKind;
use crate::cache::{CachedKey, CachedVersion};
use crate::caller::{Call, Caller};
use crate::error::KmsError;
use crate::service::{EncryptTarget, Kms};

/// Cloud KMS limit on plaintext and on AAD for SOFTWARE and EXTERNAL keys.
pub const MAX_PLAINTEXT: usize = 64 * 1024;
/// Largest ciphertext `:decrypt` accepts: a maximal plaintext plus our format's overhead.
pub const MAX_CIPHERTEXT: usize = MAX_PLAINTEXT + ciphertext::CIPHERTEXT_OVERHEAD;

fn check_size(field: &'static str, len: usize, max: usize) -> Result<(), KmsError> {
    if len > max { Err(KmsError::TooLarge { field, max, actual: len }) } else { Ok(()) }
}

/// Checks an optional client CRC32C; returns whether one was given (the `verified*` flag).
fn check_crc(field: &'static str, data: &[u8], given: Option<Crc32c>) -> Result<bool, KmsError> {
    match given {
        None => Ok(false),
        Some(Crc32c(c)) if c == crc32c(data) => Ok(true),
        Some(_) => Err(KmsError::ChecksumMismatch { field }),
    }
}

impl Kms {
    /// `cryptoKeys.encrypt`.
    pub async fn encrypt(
        &self,
        caller: &Caller,
        target: &EncryptTarget,
        req: &EncryptRequest,
    ) -> Result<EncryptResponse, KmsError> {
        let key_name = match target {
            EncryptTarget::Key(k) => k,
            EncryptTarget::Version(v) => &v.crypto_key,
        };
        let resource = key_name.to_string();
        let call = Call::new(caller, "Encrypt", resource.clone(), AuditKind::DataAccess);
        let r = async {
            self.authorize(&call, role::VERSIONS_USE_TO_ENCRYPT, &resource).await?;
            self.encrypt_authorized(&call, target, req).await
        }
        .await;
        self.finish(call, r).await
    }

    async fn encrypt_authorized(
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
        let mut entry = self.cached(key_name).await?;
        require_purpose(&entry)?;
        let id = match target {
            EncryptTarget::Key(k) => {
                entry.record.primary_version.ok_or_else(|| KmsError::NoPrimaryVersion(k.clone()))?
            }
            EncryptTarget::Version(v) => v.version,
        };
        if !entry.versions.contains_key(&id) {
            // Perhaps created on another node since we cached the key.
            entry = self.load_cached(key_name).await?;
        }
        let version = entry.versions.get(&id).ok_or_else(|| KmsError::VersionNotFound(key_name.version(id)))?;
        call.set_key_version(version.record.version.name.clone());
        require_enabled(version)?;
        let aead = self.aead_for(version)?;
        let ct = ciphertext::encrypt(&aead, &entry.name, id, plaintext, aad)
            .map_err(|e| KmsError::Internal(e.to_string()))?;
        Ok(EncryptResponse {
            name: version.record.version.name.clone(),
            ciphertext_crc32c: Crc32c(crc32c(&ct)),
            ciphertext: Bytes(ct),
            verified_plaintext_crc32c: verified_plaintext,
            verified_additional_authenticated_data_crc32c: verified_aad,
            protection_level: version.record.version.protection_level.unwrap_or(ProtectionLevel::Software),
        })
    }

    /// `cryptoKeys.decrypt`: the version is read from the ciphertext.
    pub async fn decrypt(
        &self,
        caller: &Caller,
        key_name: &CryptoKeyName,
        req: &DecryptRequest,
    ) -> Result<DecryptResponse, KmsError> {
        let resource = key_name.to_string();
        let call = Call::new(caller, "Decrypt", resource.clone(), AuditKind::DataAccess);
        let r = async {
            self.authorize(&call, role::VERSIONS_USE_TO_DECRYPT, &resource).await?;
            self.decrypt_authorized(&call, key_name, req).await
        }
        .await;
        self.finish(call, r).await
    }

    async fn decrypt_authorized(
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

        let mut entry = self.cached(key_name).await?;
        require_purpose(&entry)?;
        let id = ciphertext::version_of(ct).map_err(|_| KmsError::DecryptFailed)?;
        if !entry.versions.contains_key(&id) {
            entry = self.load_cached(key_name).await?;
        }
        // A ciphertext naming a version this key does not have is foreign: same answer as any
        // other failure, so nothing is learned about the key's versions.
        let version = entry.versions.get(&id).ok_or(KmsError::DecryptFailed)?;
        call.set_key_version(version.record.version.name.clone());
        require_enabled(version)?;
        let aead = self.aead_for(version)?;
        let plaintext = ciphertext::decrypt(&aead, &entry.name, ct, aad).map_err(|_| KmsError::DecryptFailed)?;
        Ok(DecryptResponse {
            plaintext_crc32c: Crc32c(crc32c(plaintext.expose())),
            plaintext: SecretBytes(plaintext),
            used_primary: entry.record.primary_version == Some(id),
            protection_level: version.record.version.protection_level.unwrap_or(ProtectionLevel::Software),
        })
    }

    /// The unsealed AEAD key of a cached version (unsealed once, then kept in the cache).
    fn aead_for(&self, version: &CachedVersion) -> Result<Arc<AeadKey>, KmsError> {
        if let Some(a) = version.aead.get() {
            return Ok(a.clone());
        }
        let sealed =
            version.record.material.as_ref().ok_or_else(|| {
                KmsError::Internal(format!("{} is enabled but has no key material", version.record.name))
            })?;
        let key = self
            .root
            .unseal(sealed, &version.record.name.to_string())
            .map_err(|e| KmsError::Internal(format!("cannot unseal key material of {}: {e}", version.record.name)))?;
        let aead = Arc::new(AeadKey::new(&key));
        Ok(version.aead.get_or_init(|| aead).clone())
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

fn require_enabled(v: &CachedVersion) -> Result<(), KmsError> {
    match v.record.version.state {
        Some(VersionState::Enabled) => Ok(()),
        other => Err(KmsError::VersionNotEnabled {
            version: v.record.name.clone(),
            state: other.unwrap_or(VersionState::Unspecified),
        }),
    }
}
