//! `keyhold-cmek`'s [`KmsClient`] against Keyhold's KMS in the same process: the same IAM checks and audit
//! entries as over HTTP (the calls are made as the given identity), without the network.

use std::sync::Arc;

use async_trait::async_trait;

use keyhold_api::{Code, CryptoKeyName};
use keyhold_cmek::client::{decrypt_request, encrypt_request};
use keyhold_cmek::{AccessReason, Encrypted, KeyDescription, KmsClient, KmsClientError};
use keyhold_crypto::Secret;
use keyhold_kms::{Caller, EncryptTarget, IamResource, Kms, KmsError};

/// The in-process client, acting as `caller` (a service agent).
#[derive(Debug, Clone)]
pub struct LocalKmsClient {
    kms: Arc<Kms>,
    caller: Caller,
}

impl LocalKmsClient {
    /// A client acting as `caller`.
    pub fn new(kms: Arc<Kms>, caller: Caller) -> Self {
        Self { kms, caller }
    }
}

fn to_client_error(e: KmsError) -> KmsClientError {
    let status = e.to_status();
    KmsClientError::new(status.code, status.message)
}

fn key_name(key: &str) -> Result<CryptoKeyName, KmsClientError> {
    key.parse().map_err(|_| KmsClientError::new(Code::InvalidArgument, format!("\"{key}\" is not a crypto key name")))
}

impl LocalKmsClient {
    fn caller_for(&self, reason: AccessReason) -> Caller {
        Caller { access_reason: Some(reason), ..self.caller.clone() }
    }
}

#[async_trait]
impl KmsClient for LocalKmsClient {
    async fn encrypt(
        &self,
        key: &str,
        plaintext: &[u8],
        aad: &[u8],
        reason: AccessReason,
    ) -> Result<Encrypted, KmsClientError> {
        let req = encrypt_request(plaintext, aad, false);
        let caller = self.caller_for(reason);
        let r = self.kms.encrypt(&caller, &EncryptTarget::Key(key_name(key)?), &req).await.map_err(to_client_error)?;
        Ok(Encrypted { ciphertext: r.ciphertext.0, key_version: r.name })
    }

    async fn decrypt(
        &self,
        key: &str,
        ciphertext: &[u8],
        aad: &[u8],
        reason: AccessReason,
    ) -> Result<Secret, KmsClientError> {
        let req = decrypt_request(ciphertext, aad, false);
        let r = self.kms.decrypt(&self.caller_for(reason), &key_name(key)?, &req).await.map_err(to_client_error)?;
        Ok(r.plaintext.0)
    }

    async fn test_permissions(&self, resource: &str, permissions: &[&str]) -> Result<Vec<String>, KmsClientError> {
        let resource = IamResource::CryptoKey(key_name(resource)?);
        let permissions: Vec<String> = permissions.iter().map(|p| p.to_string()).collect();
        self.kms.test_iam_permissions(&self.caller, &resource, &permissions).await.map_err(to_client_error)
    }

    /// In process the service may see the key's purpose and states without a read
    /// permission: it learns nothing it could not learn from `:encrypt`'s answers.
    async fn describe_key(&self, key: &str) -> Result<Option<KeyDescription>, KmsClientError> {
        match self.kms.key_facts(&key_name(key)?).await {
            Ok(facts) => {
                let primary = facts.primary.as_ref().and_then(|p| {
                    facts.versions.iter().find(|(n, _)| n == p).map(|(n, s)| (n.to_string(), s.as_str().to_string()))
                });
                Ok(Some(KeyDescription { purpose: facts.purpose.as_str().to_string(), primary }))
            }
            Err(KmsError::CryptoKeyNotFound(_)) => {
                Err(KmsClientError::new(Code::NotFound, format!("CryptoKey {key} not found.")))
            }
            Err(e) => Err(to_client_error(e)),
        }
    }
}
