//! The PKCS#11 token ([`keyhold_hsm::HsmToken`]) as the KMS's HSM backend and, with
//! `--root-key pkcs11:...`, as its root key.

use std::sync::Arc;

use async_trait::async_trait;
use keyhold_crypto::{KeyBytes, Secret};
use keyhold_hsm::{HsmError, HsmKeyRef, HsmToken};
use keyhold_kms::root_key::RootKey;
use keyhold_kms::{BackendError, HsmBackend};

fn backend_error(e: HsmError) -> BackendError {
    match e {
        HsmError::KeyNotFound { key } => BackendError::KeyNotFound(format!("no object {key} in the token")),
        HsmError::Decrypt { .. } => BackendError::DecryptFailed,
        HsmError::InvalidInput { detail } => BackendError::InvalidInput(detail),
        // Module, token, session, login, configuration: nothing the caller can fix, and it may
        // pass (a token reinserted, a module restarted): 503, and CMEK services' grace period.
        other => BackendError::Unavailable(other.to_string()),
    }
}

fn key_ref(key: &str) -> Result<HsmKeyRef, BackendError> {
    key.parse().map_err(|e: HsmError| BackendError::InvalidInput(format!("bad HSM key reference: {e}")))
}

/// HSM key versions live in this token.
#[derive(Debug, Clone)]
pub struct TokenBackend(pub HsmToken);

#[async_trait]
impl HsmBackend for TokenBackend {
    async fn generate_key(&self, label: &str) -> Result<String, BackendError> {
        self.0.generate_key(label).await.map(|k| k.to_string()).map_err(backend_error)
    }

    async fn encrypt(&self, key: &str, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, BackendError> {
        self.0.encrypt(&key_ref(key)?, plaintext, aad).await.map_err(backend_error)
    }

    async fn decrypt(&self, key: &str, blob: &[u8], aad: &[u8]) -> Result<Secret, BackendError> {
        self.0.decrypt(&key_ref(key)?, blob, aad).await.map_err(backend_error)
    }

    async fn destroy_key(&self, key: &str) -> Result<(), BackendError> {
        self.0.destroy_key(&key_ref(key)?).await.map_err(backend_error)
    }

    async fn random_bytes(&self, n: usize) -> Result<Secret, BackendError> {
        self.0.random_bytes(n).await.map_err(backend_error)
    }

    async fn attestation(&self, key: &str) -> Result<String, BackendError> {
        let info = self.0.info().await.map_err(backend_error)?;
        let certified = if info.is_software_token() {
            "This is a software token, not a certified HSM: the key is non-extractable only as far as the software enforces it."
        } else {
            "Keyhold has no vendor attestation for this token; this statement is what the token reports about itself."
        };
        Ok(serde_json::json!({
            "statement": format!("Keyhold generated this AES-256 key inside the PKCS#11 token with CKA_SENSITIVE=true and CKA_EXTRACTABLE=false; every encrypt and decrypt runs in the token. {certified}"),
            "keyObject": key,
            "token": info.description(),
            "tokenLabel": info.token_label,
            "manufacturer": info.token_manufacturer,
            "model": info.model,
            "serialNumber": info.serial_number,
            "library": format!("{} {} ({})", info.library_description, info.library_version, info.library_manufacturer),
            "softwareToken": info.is_software_token(),
        })
        .to_string())
    }
}

/// A root key that never leaves the token: each SOFTWARE version's material is sealed by the
/// token's AES key (AES-GCM inside the token, bound to the version's name).
#[derive(Debug)]
pub struct TokenRootKey {
    token: HsmToken,
    key: HsmKeyRef,
    fingerprint: String,
}

impl TokenRootKey {
    /// Finds the object labelled `label` in the token, or generates it on first start.
    pub async fn open(token: HsmToken, label: &str) -> Result<Arc<Self>, HsmError> {
        let key = token.find_or_generate_key(label).await?;
        let info = token.info().await?;
        let fingerprint = format!("pkcs11:serial={};{}", info.serial_number, key);
        Ok(Arc::new(Self { token, key, fingerprint }))
    }
}

#[async_trait]
impl RootKey for TokenRootKey {
    async fn seal(&self, material: &KeyBytes, context: &str) -> Result<Vec<u8>, BackendError> {
        self.token.encrypt(&self.key, material.expose(), &root_aad(context)).await.map_err(backend_error)
    }

    async fn unseal(&self, sealed: &[u8], context: &str) -> Result<KeyBytes, BackendError> {
        let secret = self.token.decrypt(&self.key, sealed, &root_aad(context)).await.map_err(backend_error)?;
        KeyBytes::from_slice(secret.expose()).ok_or(BackendError::DecryptFailed)
    }

    fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }
}

fn root_aad(context: &str) -> Vec<u8> {
    let mut aad = b"keyhold/root-key/v1:".to_vec();
    aad.extend_from_slice(context.as_bytes());
    aad
}

/// `--root-key pkcs11:object=LABEL`: the label of the root key's object in the configured token.
pub fn parse_root_key_uri(uri: &str) -> Result<String, String> {
    let rest =
        uri.strip_prefix("pkcs11:").ok_or_else(|| format!("--root-key {uri:?}: expected pkcs11:object=LABEL"))?;
    rest.split(';')
        .find_map(|part| part.strip_prefix("object="))
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .ok_or_else(|| format!("--root-key {uri:?}: expected pkcs11:object=LABEL (the token is --pkcs11-token-label)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_key_uris() {
        assert_eq!(parse_root_key_uri("pkcs11:object=keyhold-root").unwrap(), "keyhold-root");
        assert_eq!(parse_root_key_uri("pkcs11:token=t;object=r").unwrap(), "r");
        assert!(parse_root_key_uri("pkcs11:token=t").is_err());
        assert!(parse_root_key_uri("file:/x").is_err());
    }

    #[test]
    fn hsm_errors_map_to_kms_outcomes() {
        let down = backend_error(HsmError::Unavailable { detail: "token removed".into() });
        assert!(matches!(down, BackendError::Unavailable(_)));
        assert_eq!(backend_error(HsmError::Decrypt { reason: "tag" }), BackendError::DecryptFailed);
        assert!(matches!(backend_error(HsmError::KeyNotFound { key: "k".into() }), BackendError::KeyNotFound(_)));
    }
}
