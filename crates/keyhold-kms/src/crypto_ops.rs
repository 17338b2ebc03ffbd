//! `:encrypt` and `:decrypt` ([K5]). No database round trip: keys come from the cache.

use std::sync::Arc;

use keyhold_api::messages::{
    DecryptRequest, DecryptResponse, EncryptRequest, EncryptResponse, GenerateRandomBytesRequest,
    GenerateRandomBytesResponse,
};
use keyhold_api::resources::{AccessReason, ProtectionLevel, Purpose, VersionState};
use keyhold_api::wire::{Bytes, Crc32c, SecretBytes};
use keyhold_api::{CryptoKeyName, LocationName};
use keyhold_crypto::{AeadKey, ciphertext, crc32c};

use keyhold_iam::role;

use crate::audit::{AccessDecision, AuditKind};
use crate::backends::{BackendError, ExternalRequest};
use crate::cache::{CachedKey, CachedVersion};
use crate::caller::{Call, Caller};
use crate::error::KmsError;
use crate::service::{EncryptTarget, Kms};

/// Cloud KMS limit on plaintext and on AAD for SOFTWARE and EXTERNAL keys.
pub const MAX_PLAINTEXT: usize = 64 * 1024;
/// Largest ciphertext `:decrypt` accepts: a maximal plaintext plus room for the overhead of
/// our format or of an HSM's or external manager's blob.
pub const MAX_CIPHERTEXT: usize = MAX_PLAINTEXT + 1024;

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
        let reason = self.check_justification(call, &entry)?;
        let ad = ciphertext::associated_data(&entry.name, id, aad);
        let level = version.record.version.protection_level.unwrap_or(ProtectionLevel::Software);
        let ct = match level {
            ProtectionLevel::Software => {
                let aead = self.aead_for(version).await?;
                ciphertext::encrypt(&aead, &entry.name, id, plaintext, aad)
                    .map_err(|e| KmsError::Internal(e.to_string()))?
            }
            ProtectionLevel::Hsm => {
                check_hsm_size(plaintext.len(), aad.len())?;
                let blob = self
                    .hsm()?
                    .encrypt(hsm_handle(version)?, plaintext, &ad)
                    .await
                    .map_err(|e| KmsError::from_backend("The HSM", &version.record.version.name, e))?;
                ciphertext::frame_backend(id, &blob)
            }
            ProtectionLevel::External => {
                let uri = external_uri(version)?;
                let blob = self
                    .external()?
                    .wrap(uri, plaintext, &ad, &external_request(call, version, reason))
                    .await
                    .map_err(|e| external_error(uri, version, e))?;
                ciphertext::frame_backend(id, &blob)
            }
            other => return Err(KmsError::Unimplemented(format!("Protection level {other} is not available."))),
        };
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
        let reason = self.check_justification(call, &entry)?;
        let level = version.record.version.protection_level.unwrap_or(ProtectionLevel::Software);
        let plaintext = match level {
            ProtectionLevel::Software => {
                let aead = self.aead_for(version).await?;
                ciphertext::decrypt(&aead, &entry.name, ct, aad).map_err(|_| KmsError::DecryptFailed)?
            }
            ProtectionLevel::Hsm => {
                check_hsm_size(0, aad.len())?;
                let (_, blob) = ciphertext::backend_blob(ct).map_err(|_| KmsError::DecryptFailed)?;
                self.hsm()?
                    .decrypt(hsm_handle(version)?, blob, &ciphertext::associated_data(&entry.name, id, aad))
                    .await
                    .map_err(|e| KmsError::from_backend("The HSM", &version.record.version.name, e))?
            }
            ProtectionLevel::External => {
                let (_, blob) = ciphertext::backend_blob(ct).map_err(|_| KmsError::DecryptFailed)?;
                let uri = external_uri(version)?;
                let ad = ciphertext::associated_data(&entry.name, id, aad);
                self.external()?
                    .unwrap(uri, blob, &ad, &external_request(call, version, reason))
                    .await
                    .map_err(|e| external_error(uri, version, e))?
            }
            other => return Err(KmsError::Unimplemented(format!("Protection level {other} is not available."))),
        };
        Ok(DecryptResponse {
            plaintext_crc32c: Crc32c(crc32c(plaintext.expose())),
            plaintext: SecretBytes(plaintext),
            used_primary: entry.record.primary_version == Some(id),
            protection_level: level,
        })
    }

    /// `locations.generateRandomBytes`: bytes from the HSM's random number generator. As in
    /// Cloud KMS, only protection level `HSM` is supported.
    pub async fn generate_random_bytes(
        &self,
        caller: &Caller,
        location: &LocationName,
        req: &GenerateRandomBytesRequest,
    ) -> Result<GenerateRandomBytesResponse, KmsError> {
        let resource = location.to_string();
        let call = Call::new(caller, "GenerateRandomBytes", resource.clone(), AuditKind::DataAccess);
        let r = async {
            self.authorize(&call, role::LOCATIONS_GENERATE_RANDOM_BYTES, &resource).await?;
            self.check_location(location)?;
            if !(8..=1024).contains(&req.length_bytes) {
                return Err(KmsError::InvalidArgument(format!(
                    "length_bytes must be between 8 and 1024, got {}.",
                    req.length_bytes
                )));
            }
            if req.protection_level != Some(ProtectionLevel::Hsm) {
                return Err(KmsError::InvalidArgument("protection_level must be HSM.".into()));
            }
            let data = self
                .hsm()?
                .random_bytes(req.length_bytes as usize)
                .await
                .map_err(|e| KmsError::from_backend("The HSM", &resource, e))?;
            Ok(GenerateRandomBytesResponse { data_crc32c: Crc32c(crc32c(data.expose())), data: SecretBytes(data) })
        }
        .await;
        self.finish(call, r).await
    }

    /// [K11] The request's access reason against the key's `keyAccessJustificationsPolicy`
    /// (absent: every reason allowed; present and empty: none). The decision goes into the
    /// call's audit entry either way.
    fn check_justification(&self, call: &Call<'_>, entry: &CachedKey) -> Result<AccessReason, KmsError> {
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

    /// The unsealed AEAD key of a cached SOFTWARE version (unsealed once, then kept in the cache).
    async fn aead_for(&self, version: &CachedVersion) -> Result<Arc<AeadKey>, KmsError> {
        if let Some(a) = version.aead.get() {
            return Ok(a.clone());
        }
        let sealed =
            version.record.material.as_ref().ok_or_else(|| {
                KmsError::Internal(format!("{} is enabled but has no key material", version.record.name))
            })?;
        let name = version.record.name.to_string();
        let key = self.root.unseal(sealed, &name).await.map_err(|e| match e {
            BackendError::Unavailable(_) => KmsError::from_backend("The root key", &name, e),
            other => KmsError::Internal(format!("cannot unseal key material of {name}: {other}")),
        })?;
        let aead = Arc::new(AeadKey::new(&key));
        Ok(version.aead.get_or_init(|| aead).clone())
    }
}

/// Cloud KMS limit for HSM keys: plaintext and AAD together at most 8 KiB.
const MAX_HSM_INPUT: usize = 8 * 1024;

fn check_hsm_size(plaintext: usize, aad: usize) -> Result<(), KmsError> {
    if plaintext + aad > MAX_HSM_INPUT {
        return Err(KmsError::InvalidArgument(format!(
            "For HSM keys the plaintext and additional_authenticated_data together may be at most {MAX_HSM_INPUT} bytes; got {}.",
            plaintext + aad
        )));
    }
    Ok(())
}

/// The token object reference an HSM version keeps as its material.
fn hsm_handle(version: &CachedVersion) -> Result<&str, KmsError> {
    version
        .record
        .material
        .as_deref()
        .and_then(|m| std::str::from_utf8(m).ok())
        .ok_or_else(|| KmsError::Internal(format!("{} has no HSM key reference", version.record.name)))
}

fn external_uri(version: &CachedVersion) -> Result<&str, KmsError> {
    version
        .record
        .version
        .external_protection_level_options
        .as_ref()
        .map(|o| o.external_key_uri.as_str())
        .filter(|u| !u.is_empty())
        .ok_or_else(|| KmsError::Internal(format!("{} has no external key URI", version.record.name)))
}

fn external_request(call: &Call<'_>, version: &CachedVersion, reason: AccessReason) -> ExternalRequest {
    ExternalRequest {
        reason,
        key_version: version.record.version.name.clone(),
        caller: call.caller.principal_str().to_string(),
        request_id: call.caller.request_id.clone(),
    }
}

fn external_error(uri: &str, version: &CachedVersion, e: BackendError) -> KmsError {
    KmsError::from_backend(&format!("The external key manager at {uri}"), &version.record.version.name, e)
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
