//! `EXTERNAL` keys: Keyhold holds no material; each encrypt and decrypt is a wrap or unwrap
//! call to the external key manager named by the version's `externalKeyUri`, through the
//! [`ExternalKeyManager`] port (implemented by `keyhold-ekm`).

use std::sync::Arc;

use async_trait::async_trait;
use keyhold_api::CryptoKeyVersionName;
use keyhold_api::resources::{Algorithm, ExternalProtectionLevelOptions};
use keyhold_crypto::{Secret, ciphertext};

use super::key_backend::{KeyBackend, KeyUse, NewMaterial};
use super::ports::{BackendError, ExternalKeyManager, ExternalRequest};
use crate::error::KmsError;
use crate::material::VersionMaterial;
use crate::validate;

/// The `EXTERNAL` protection level over one external key manager client.
#[derive(Debug)]
pub(crate) struct ExternalKeys {
    manager: Arc<dyn ExternalKeyManager>,
}

impl ExternalKeys {
    pub(crate) fn new(manager: Arc<dyn ExternalKeyManager>) -> Self {
        Self { manager }
    }

    fn uri<'m>(using: &'m KeyUse<'_>) -> Result<&'m str, KmsError> {
        match &using.version.record.material {
            VersionMaterial::External(uri) if !uri.is_empty() => Ok(uri),
            _ => Err(KmsError::Internal(format!("{} has no external key URI", using.version.record.name))),
        }
    }

    fn request(using: &KeyUse<'_>) -> ExternalRequest {
        ExternalRequest {
            reason: using.reason,
            key_version: using.version_name().to_string(),
            caller: using.call.caller.principal_str().to_string(),
            request_id: using.call.caller.request_id.clone(),
        }
    }

    fn error(uri: &str, using: &KeyUse<'_>, e: BackendError) -> KmsError {
        KmsError::from_backend(&format!("The external key manager at {uri}"), using.version_name(), e)
    }
}

#[async_trait]
impl KeyBackend for ExternalKeys {
    fn level(&self) -> &'static str {
        "EXTERNAL"
    }

    fn check_algorithm(&self, algorithm: Algorithm) -> Result<(), KmsError> {
        match algorithm {
            Algorithm::ExternalSymmetricEncryption => Ok(()),
            a => Err(KmsError::Unimplemented(format!(
                "Algorithm {a} is not served at protection level EXTERNAL by Keyhold yet; EXTERNAL keys are EXTERNAL_SYMMETRIC_ENCRYPTION (see docs/api.md)."
            ))),
        }
    }

    fn check_options(&self, options: Option<&ExternalProtectionLevelOptions>) -> Result<(), KmsError> {
        let uri = options.map(|o| o.external_key_uri.as_str()).filter(|u| !u.is_empty()).ok_or_else(|| {
            KmsError::InvalidArgument(
                "An EXTERNAL CryptoKeyVersion needs external_protection_level_options.external_key_uri: the URI of the key in the external key manager."
                    .into(),
            )
        })?;
        validate::external_key_uri(uri)?;
        self.manager.check_uri(uri).map_err(KmsError::InvalidArgument)
    }

    async fn create(
        &self,
        _name: &CryptoKeyVersionName,
        _algorithm: Algorithm,
        options: Option<&ExternalProtectionLevelOptions>,
    ) -> Result<NewMaterial, KmsError> {
        self.check_options(options)?;
        let uri = options.map(|o| o.external_key_uri.clone()).unwrap_or_default();
        Ok(NewMaterial {
            material: VersionMaterial::External(uri.clone()),
            attestation: None,
            external_options: Some(ExternalProtectionLevelOptions {
                external_key_uri: uri,
                ekm_connection_key_path: String::new(),
            }),
        })
    }

    async fn encrypt(&self, using: KeyUse<'_>, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, KmsError> {
        let uri = Self::uri(&using)?;
        let ad = ciphertext::associated_data(using.key_name, using.id(), aad);
        let blob = self
            .manager
            .wrap(uri, plaintext, &ad, &Self::request(&using))
            .await
            .map_err(|e| Self::error(uri, &using, e))?;
        Ok(ciphertext::frame_backend(using.id(), &blob))
    }

    async fn decrypt(&self, using: KeyUse<'_>, ct: &[u8], aad: &[u8]) -> Result<Secret, KmsError> {
        let (_, blob) = ciphertext::backend_blob(ct).map_err(|_| KmsError::DecryptFailed)?;
        let uri = Self::uri(&using)?;
        let ad = ciphertext::associated_data(using.key_name, using.id(), aad);
        self.manager.unwrap(uri, blob, &ad, &Self::request(&using)).await.map_err(|e| Self::error(uri, &using, e))
    }
}
