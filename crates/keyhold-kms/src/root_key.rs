//! The KMS root key: it seals SOFTWARE key material before the material reaches the store.
//!
//! The root key never sits in the database. It is a file given at start (`--root-key-file`),
//! created on first start of the embedded default with a loud warning, or (issue 6) a key that
//! never leaves a PKCS#11 token.

use std::fmt;
use std::io::Write as _;
use std::path::Path;

use keyhold_crypto::{AeadKey, CryptoError, KeyBytes, sealed};

use crate::backend::ports::BackendError;

/// Seals and unseals key material for storage. Async because the root key may live in an HSM
/// (`--root-key pkcs11:...`), whose calls block and may fail with the token.
#[async_trait::async_trait]
pub trait RootKey: Send + Sync + fmt::Debug + 'static {
    /// Seals `material` for the key version named `context`.
    async fn seal(&self, material: &KeyBytes, context: &str) -> Result<Vec<u8>, BackendError>;
    /// Unseals what [`RootKey::seal`] made for the same `context`.
    async fn unseal(&self, sealed: &[u8], context: &str) -> Result<KeyBytes, BackendError>;
    /// A public identifier of this root key, stored beside the data to detect a mismatch.
    fn fingerprint(&self) -> String;
}

/// A root key held in memory, loaded from a file or generated.
pub struct LocalRootKey {
    aead: AeadKey,
    fingerprint: String,
}

impl fmt::Debug for LocalRootKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalRootKey").field("fingerprint", &self.fingerprint).finish_non_exhaustive()
    }
}

/// Why a root key file cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RootKeyError {
    /// Reading or writing the file failed.
    #[error("root key file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file does not hold a key in the expected format.
    #[error("root key file {0} must contain 32 random bytes, base64-encoded (44 characters); see docs/operations.md")]
    Format(String),
    /// The OS random number generator failed.
    #[error("cannot generate a root key: {0}")]
    Crypto(#[from] CryptoError),
}

impl LocalRootKey {
    /// A root key from raw bytes.
    pub fn from_key(key: KeyBytes) -> Self {
        Self { fingerprint: sealed::fingerprint(&key), aead: AeadKey::new(&key) }
    }

    /// A fresh random root key that lives only as long as the process (`--in-memory`).
    pub fn ephemeral() -> Result<Self, RootKeyError> {
        Ok(Self::from_key(KeyBytes::generate()?))
    }

    /// Loads the key file at `path`.
    pub fn load(path: &Path) -> Result<Self, RootKeyError> {
        let io = |source| RootKeyError::Io { path: path.display().to_string(), source };
        let text = keyhold_crypto::Secret::new(std::fs::read(path).map_err(io)?);
        let trimmed =
            std::str::from_utf8(text.expose()).map_err(|_| RootKeyError::Format(path.display().to_string()))?.trim();
        let bytes = keyhold_crypto::Secret::new(
            keyhold_api::wire::decode_base64(trimmed).map_err(|_| RootKeyError::Format(path.display().to_string()))?,
        );
        let key =
            KeyBytes::from_slice(bytes.expose()).ok_or_else(|| RootKeyError::Format(path.display().to_string()))?;
        Ok(Self::from_key(key))
    }

    /// Loads `path`, or creates it with a fresh key (mode 0600) if it does not exist. Returns
    /// whether it was created, so the caller can warn.
    pub fn load_or_create(path: &Path) -> Result<(Self, bool), RootKeyError> {
        if path.exists() {
            return Ok((Self::load(path)?, false));
        }
        let io = |source| RootKeyError::Io { path: path.display().to_string(), source };
        if let Some(dir) = path.parent() {
            // 0700 whatever the umask (finding 4).
            crate::private_files::create_dir_all(dir).map_err(io)?;
        }
        let key = KeyBytes::generate()?;
        let encoded = keyhold_crypto::Secret::new(keyhold_api::wire::encode_base64(key.expose()).into_bytes());
        let mut f = crate::private_files::create_new_file(path).map_err(io)?;
        f.write_all(encoded.expose()).map_err(io)?;
        f.write_all(b"\n").map_err(io)?;
        f.sync_all().map_err(io)?;
        Ok((Self::from_key(key), true))
    }
}

#[async_trait::async_trait]
impl RootKey for LocalRootKey {
    async fn seal(&self, material: &KeyBytes, context: &str) -> Result<Vec<u8>, BackendError> {
        sealed::seal(&self.aead, material, context).map_err(|e| BackendError::InvalidInput(e.to_string()))
    }
    async fn unseal(&self, sealed_bytes: &[u8], context: &str) -> Result<KeyBytes, BackendError> {
        sealed::unseal(&self.aead, sealed_bytes, context).map_err(|_| BackendError::DecryptFailed)
    }
    fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn create_then_load_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/root.key");
        let (a, created) = LocalRootKey::load_or_create(&path).unwrap();
        assert!(created);
        let (b, created) = LocalRootKey::load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(a.fingerprint(), b.fingerprint());
        let m = KeyBytes::generate().unwrap();
        let s = a.seal(&m, "ctx").await.unwrap();
        assert_eq!(b.unseal(&s, "ctx").await.unwrap().expose(), m.expose());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        assert!(!format!("{a:?}").contains(&keyhold_api::wire::encode_base64(m.expose())));
    }

    #[test]
    fn bad_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root.key");
        std::fs::write(&path, "not base64!").unwrap();
        assert!(matches!(LocalRootKey::load(&path), Err(RootKeyError::Format(_))));
        std::fs::write(&path, keyhold_api::wire::encode_base64(&[1; 16])).unwrap();
        assert!(matches!(LocalRootKey::load(&path), Err(RootKeyError::Format(_))));
    }
}
