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

/// The KMS's answer, details (a refused version's `KEY_<STATE>`) included.
fn to_client_error(e: KmsError) -> KmsClientError {
    KmsClientError::from_status(e.to_status())
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
        key: &CryptoKeyName,
        plaintext: &[u8],
        aad: &[u8],
        reason: AccessReason,
    ) -> Result<Encrypted, KmsClientError> {
        let req = encrypt_request(plaintext, aad, false);
        let caller = self.caller_for(reason);
        let r = self.kms.encrypt(&caller, &EncryptTarget::Key(key.clone()), &req).await.map_err(to_client_error)?;
        let key_version = r.name.parse().map_err(|_| {
            KmsClientError::new(Code::Internal, format!("the KMS answered with a malformed version name {}", r.name))
        })?;
        Ok(Encrypted { ciphertext: r.ciphertext.0, key_version })
    }

    async fn decrypt(
        &self,
        key: &CryptoKeyName,
        ciphertext: &[u8],
        aad: &[u8],
        reason: AccessReason,
    ) -> Result<Secret, KmsClientError> {
        let req = decrypt_request(ciphertext, aad, false);
        let r = self.kms.decrypt(&self.caller_for(reason), key, &req).await.map_err(to_client_error)?;
        Ok(r.plaintext.0)
    }

    async fn test_permissions(&self, key: &CryptoKeyName, permissions: &[&str]) -> Result<Vec<String>, KmsClientError> {
        let resource = IamResource::CryptoKey(key.clone());
        let permissions: Vec<String> = permissions.iter().map(|p| p.to_string()).collect();
        self.kms.test_iam_permissions(&self.caller, &resource, &permissions).await.map_err(to_client_error)
    }

    /// In process the service may see the key's purpose and states without a read
    /// permission: it learns nothing it could not learn from `:encrypt`'s answers.
    async fn describe_key(&self, key: &CryptoKeyName) -> Result<Option<KeyDescription>, KmsClientError> {
        match self.kms.key_facts(key).await {
            Ok(facts) => {
                let primary = facts.primary.as_ref().and_then(|p| facts.versions.iter().find(|(n, _)| n == p).cloned());
                Ok(Some(KeyDescription { purpose: facts.purpose, primary }))
            }
            Err(KmsError::CryptoKeyNotFound(_)) => {
                Err(KmsClientError::new(Code::NotFound, format!("CryptoKey {key} not found.")))
            }
            Err(e) => Err(to_client_error(e)),
        }
    }
}
