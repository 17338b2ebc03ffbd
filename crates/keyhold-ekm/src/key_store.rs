//! The manager's own keys: AES-256 keys in its data directory, sealed by its own root key.
//!
//! ```text
//! DATA_DIR/                 (mode 0700)
//!   root.key                32 random bytes, base64 (mode 0600), unless --root-key-file
//!   keys/{keyId}.json       one file per key, written atomically (temp file + rename)
//! ```
//!
//! A key file holds the key's state, times, the fingerprint of the root key that sealed it and
//! its material sealed by that root key (`keyhold_crypto::sealed`, context
//! `keyhold-ekm/key/{keyId}`), never the raw material. Destroying a key rewrites its file
//! without the material and keeps the file as a tombstone, so the ID is never reused.
//!
//! The store is shared by the running manager and the `keyhold ekm keys ...` commands, which
//! write the files directly: the manager stats a key's file on every use and re-reads it when
//! it changed, so a `disable` takes effect on the next request.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use keyhold_api::wire::{Bytes, Timestamp, decode_base64, encode_base64};
use keyhold_crypto::{AeadKey, CryptoError, KeyBytes, Secret, sealed};
use serde::{Deserialize, Serialize};

use crate::protocol::{KeyState, is_valid_key_id};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyStoreError {
    /// The key ID does not follow the key ID syntax.
    #[error("invalid key ID {0:?}: use 1 to 128 characters from A-Z, a-z, 0-9, '.', '_' and '-'")]
    InvalidKeyId(String),
    /// No key has this ID.
    #[error("Key {0} not found.")]
    NotFound(String),
    /// A key (or the tombstone of a destroyed key) already has this ID.
    #[error("Key {0} already exists.")]
    AlreadyExists(String),
    /// The key is destroyed: it cannot be enabled, disabled or used again.
    #[error("Key {0} is destroyed.")]
    Destroyed(String),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A file does not hold what this store writes.
    #[error("{path}: {detail}")]
    Corrupt {
        /// The file.
        path: String,
        /// What is wrong.
        detail: String,
    },
    /// The root key file does not hold a key in the expected format.
    #[error("root key file {0} must contain 32 random bytes, base64-encoded (44 characters)")]
    RootKeyFormat(String),
    /// A key was sealed by another root key than the one given.
    #[error(
        "key {key_id} was sealed by another root key than {root_key_file}: start the manager with the root key it was \
         created with"
    )]
    RootKeyMismatch {
        /// The key.
        key_id: String,
        /// The root key file in use.
        root_key_file: String,
    },
    /// The random number generator or the AEAD failed.
    #[error("cryptographic failure: {0}")]
    Crypto(#[from] CryptoError),
}

/// What is known about a key, without its material.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRecord {
    /// The key ID.
    pub key_id: String,
    /// Its state.
    pub state: KeyState,
    /// When it was created.
    pub create_time: Timestamp,
    /// When its state last changed.
    pub update_time: Timestamp,
    /// When it was destroyed.
    pub destroy_time: Option<Timestamp>,
}

/// A key file on disk.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct KeyFile {
    key_id: String,
    state: KeyState,
    create_time: Timestamp,
    update_time: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    destroy_time: Option<Timestamp>,
    root_key_fingerprint: String,
    /// The material sealed by the root key; absent once destroyed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sealed_material: Option<Bytes>,
}

impl KeyFile {
    fn record(&self) -> KeyRecord {
        KeyRecord {
            key_id: self.key_id.clone(),
            state: self.state,
            create_time: self.create_time,
            update_time: self.update_time,
            destroy_time: self.destroy_time,
        }
    }
}

/// What identifies one version of a file: if any of it changes, the file is read again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FileSignature {
    len: u64,
    modified: Option<std::time::SystemTime>,
    #[cfg(unix)]
    inode: u64,
    #[cfg(unix)]
    ctime: (i64, i64),
}

impl FileSignature {
    pub(crate) fn of(meta: &std::fs::Metadata) -> Self {
        #[cfg(unix)]
        use std::os::unix::fs::MetadataExt as _;
        Self {
            len: meta.len(),
            modified: meta.modified().ok(),
            #[cfg(unix)]
            inode: meta.ino(),
            #[cfg(unix)]
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

struct CachedKey {
    signature: FileSignature,
    record: KeyRecord,
    aead: Option<Arc<AeadKey>>,
}

/// The manager's key store.
pub struct KeyStore {
    keys_dir: PathBuf,
    root_key_file: PathBuf,
    root: AeadKey,
    root_fingerprint: String,
    root_key_created: bool,
    cache: Mutex<HashMap<String, CachedKey>>,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyStore")
            .field("keys_dir", &self.keys_dir)
            .field("root_key_file", &self.root_key_file)
            .field("root_fingerprint", &self.root_fingerprint)
            .finish_non_exhaustive()
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> KeyStoreError + '_ {
    move |source| KeyStoreError::Io { path: path.display().to_string(), source }
}

fn seal_context(key_id: &str) -> String {
    format!("keyhold-ekm/key/{key_id}")
}

impl KeyStore {
    /// Opens the store in `data_dir` (created, mode 0700, if missing). The root key is read
    /// from `root_key_file`, or from `DATA_DIR/root.key`, created (mode 0600) on first use;
    /// [`KeyStore::root_key_created`] tells whether it was. Every existing key must have been
    /// sealed by this root key.
    pub fn open(data_dir: &Path, root_key_file: Option<&Path>) -> Result<Self, KeyStoreError> {
        create_private_dir(data_dir)?;
        let keys_dir = data_dir.join("keys");
        create_private_dir(&keys_dir)?;
        let (root_key_file, root_bytes, created) = match root_key_file {
            Some(p) => (p.to_path_buf(), load_root_key(p)?, false),
            None => {
                let p = data_dir.join("root.key");
                let (k, created) = load_or_create_root_key(&p)?;
                (p, k, created)
            }
        };
        let store = Self {
            keys_dir,
            root_fingerprint: sealed::fingerprint(&root_bytes),
            root: AeadKey::new(&root_bytes),
            root_key_file,
            root_key_created: created,
            cache: Mutex::new(HashMap::new()),
        };
        for id in store.key_ids()? {
            let file = store.read_file(&id)?;
            if file.root_key_fingerprint != store.root_fingerprint {
                return Err(KeyStoreError::RootKeyMismatch {
                    key_id: id,
                    root_key_file: store.root_key_file.display().to_string(),
                });
            }
        }
        Ok(store)
    }

    /// Whether [`KeyStore::open`] created the root key file.
    pub fn root_key_created(&self) -> bool {
        self.root_key_created
    }

    /// The root key file in use.
    pub fn root_key_file(&self) -> &Path {
        &self.root_key_file
    }

    fn key_path(&self, key_id: &str) -> PathBuf {
        self.keys_dir.join(format!("{key_id}.json"))
    }

    /// Creates an enabled key with fresh random material, under `key_id` or a random UUID.
    pub fn create(&self, key_id: Option<&str>) -> Result<KeyRecord, KeyStoreError> {
        let key_id = match key_id {
            Some(id) if is_valid_key_id(id) => id.to_string(),
            Some(id) => return Err(KeyStoreError::InvalidKeyId(id.to_string())),
            None => random_uuid()?,
        };
        let material = KeyBytes::generate()?;
        let sealed_material = sealed::seal(&self.root, &material, &seal_context(&key_id))?;
        let now = Timestamp::now();
        let file = KeyFile {
            key_id: key_id.clone(),
            state: KeyState::Enabled,
            create_time: now,
            update_time: now,
            destroy_time: None,
            root_key_fingerprint: self.root_fingerprint.clone(),
            sealed_material: Some(Bytes(sealed_material)),
        };
        self.write_file(&file, true)?;
        Ok(file.record())
    }

    /// Every key, tombstones included, oldest first.
    pub fn list(&self) -> Result<Vec<KeyRecord>, KeyStoreError> {
        let mut out = Vec::new();
        for id in self.key_ids()? {
            out.push(self.read_file(&id)?.record());
        }
        out.sort_by(|a, b| a.create_time.cmp(&b.create_time).then_with(|| a.key_id.cmp(&b.key_id)));
        Ok(out)
    }

    /// One key's record.
    pub fn get(&self, key_id: &str) -> Result<KeyRecord, KeyStoreError> {
        check_id(key_id)?;
        Ok(self.read_file(key_id)?.record())
    }

    /// Enables (`true`) or disables (`false`) a key. Refused for a destroyed key.
    pub fn set_enabled(&self, key_id: &str, enabled: bool) -> Result<KeyRecord, KeyStoreError> {
        check_id(key_id)?;
        let mut file = self.read_file(key_id)?;
        if file.state == KeyState::Destroyed {
            return Err(KeyStoreError::Destroyed(key_id.to_string()));
        }
        let state = if enabled { KeyState::Enabled } else { KeyState::Disabled };
        if file.state != state {
            file.state = state;
            file.update_time = Timestamp::now();
            self.write_file(&file, false)?;
        }
        Ok(file.record())
    }

    /// Destroys a key: its sealed material is removed from its file, irreversibly. Blobs it
    /// wrapped can never be unwrapped again. The file remains as a tombstone that keeps the ID
    /// taken. Destroying a destroyed key is a no-op.
    pub fn destroy(&self, key_id: &str) -> Result<KeyRecord, KeyStoreError> {
        check_id(key_id)?;
        let mut file = self.read_file(key_id)?;
        if file.state != KeyState::Destroyed {
            let now = Timestamp::now();
            file.state = KeyState::Destroyed;
            file.update_time = now;
            file.destroy_time = Some(now);
            file.sealed_material = None;
            self.write_file(&file, false)?;
        }
        Ok(file.record())
    }

    /// The key's current record and, if it is enabled, its AEAD key. The file is stat'ed on
    /// every call and read again only when it changed.
    pub(crate) fn key_for_use(&self, key_id: &str) -> Result<(KeyRecord, Option<Arc<AeadKey>>), KeyStoreError> {
        check_id(key_id)?;
        let path = self.key_path(key_id);
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.lock_cache().remove(key_id);
                return Err(KeyStoreError::NotFound(key_id.to_string()));
            }
            Err(e) => return Err(io_err(&path)(e)),
        };
        let signature = FileSignature::of(&meta);
        if let Some(c) = self.lock_cache().get(key_id)
            && c.signature == signature
        {
            return Ok((c.record.clone(), c.aead.clone()));
        }
        let file = self.read_file(key_id)?;
        if file.root_key_fingerprint != self.root_fingerprint {
            return Err(KeyStoreError::RootKeyMismatch {
                key_id: key_id.to_string(),
                root_key_file: self.root_key_file.display().to_string(),
            });
        }
        let aead = match (&file.state, &file.sealed_material) {
            (KeyState::Enabled, Some(sealed_material)) => {
                let material = sealed::unseal(&self.root, &sealed_material.0, &seal_context(key_id))?;
                Some(Arc::new(AeadKey::new(&material)))
            }
            (KeyState::Enabled, None) => {
                return Err(KeyStoreError::Corrupt {
                    path: path.display().to_string(),
                    detail: "an enabled key without material".into(),
                });
            }
            _ => None,
        };
        let record = file.record();
        self.lock_cache()
            .insert(key_id.to_string(), CachedKey { signature, record: record.clone(), aead: aead.clone() });
        Ok((record, aead))
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, CachedKey>> {
        // A panic while holding the lock cannot leave the map inconsistent (single inserts and
        // removes), so a poisoned lock is still usable.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn key_ids(&self) -> Result<Vec<String>, KeyStoreError> {
        let mut ids = Vec::new();
        for entry in std::fs::read_dir(&self.keys_dir).map_err(io_err(&self.keys_dir))? {
            let entry = entry.map_err(io_err(&self.keys_dir))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(id) = name.strip_suffix(".json")
                && is_valid_key_id(id)
                && !name.starts_with('.')
            {
                ids.push(id.to_string());
            }
        }
        Ok(ids)
    }

    fn read_file(&self, key_id: &str) -> Result<KeyFile, KeyStoreError> {
        let path = self.key_path(key_id);
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(KeyStoreError::NotFound(key_id.to_string()));
            }
            Err(e) => return Err(io_err(&path)(e)),
        };
        let file: KeyFile = serde_json::from_slice(&text)
            .map_err(|e| KeyStoreError::Corrupt { path: path.display().to_string(), detail: e.to_string() })?;
        if file.key_id != key_id {
            return Err(KeyStoreError::Corrupt {
                path: path.display().to_string(),
                detail: format!("the file names key {:?}", file.key_id),
            });
        }
        Ok(file)
    }

    fn write_file(&self, file: &KeyFile, create: bool) -> Result<(), KeyStoreError> {
        let path = self.key_path(&file.key_id);
        let mut bytes = serde_json::to_vec_pretty(file).map_err(|e| KeyStoreError::Corrupt {
            path: path.display().to_string(),
            detail: format!("cannot encode: {e}"),
        })?;
        bytes.push(b'\n');
        match write_atomic(&self.keys_dir, &path, &bytes, create) {
            Err(e) if create && e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(KeyStoreError::AlreadyExists(file.key_id.clone()))
            }
            other => other.map_err(io_err(&path)),
        }
    }
}

fn check_id(key_id: &str) -> Result<(), KeyStoreError> {
    if is_valid_key_id(key_id) { Ok(()) } else { Err(KeyStoreError::InvalidKeyId(key_id.to_string())) }
}

fn create_private_dir(dir: &Path) -> Result<(), KeyStoreError> {
    create_private_dirs(dir).map_err(io_err(dir))
}

/// Creates `dir` and its missing parents, accessible only to their owner (mode 0700).
pub(crate) fn create_private_dirs(dir: &Path) -> std::io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir)
}

/// A fresh file opened for writing only by its owner (mode 0600); fails if `path` exists.
pub(crate) fn create_private_file(path: &Path) -> std::io::Result<std::fs::File> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts.open(path)
}

/// Writes `bytes` to `path` atomically: a private temporary file in `dir`, synced, then
/// renamed over `path` (or, with `exclusive`, linked to `path`, failing with `AlreadyExists`
/// if it exists), then the directory synced.
pub(crate) fn write_atomic(dir: &Path, path: &Path, bytes: &[u8], exclusive: bool) -> std::io::Result<()> {
    let mut suffix = [0u8; 8];
    keyhold_crypto::random_bytes(&mut suffix).map_err(std::io::Error::other)?;
    let tmp = dir.join(format!(".tmp-{}", keyhold_crypto::hex(&suffix)));
    let result = (|| {
        let mut f = create_private_file(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        if exclusive { std::fs::hard_link(&tmp, path) } else { std::fs::rename(&tmp, path) }
    })();
    // After a rename the temporary name is gone already; after a link or a failure it is not.
    let _ = std::fs::remove_file(&tmp);
    result?;
    if let Ok(d) = std::fs::File::open(dir) {
        // Makes the rename durable; not every platform can sync a directory, hence no error.
        let _ = d.sync_all();
    }
    Ok(())
}

fn load_root_key(path: &Path) -> Result<KeyBytes, KeyStoreError> {
    let text = Secret::new(std::fs::read(path).map_err(io_err(path))?);
    let format = || KeyStoreError::RootKeyFormat(path.display().to_string());
    let trimmed = std::str::from_utf8(text.expose()).map_err(|_| format())?.trim();
    let bytes = Secret::new(decode_base64(trimmed).map_err(|_| format())?);
    KeyBytes::from_slice(bytes.expose()).ok_or_else(format)
}

fn load_or_create_root_key(path: &Path) -> Result<(KeyBytes, bool), KeyStoreError> {
    if path.exists() {
        return Ok((load_root_key(path)?, false));
    }
    let key = KeyBytes::generate()?;
    let encoded = {
        let text = Secret::new(encode_base64(key.expose()).into_bytes());
        let mut line = Vec::with_capacity(text.len() + 1);
        line.extend_from_slice(text.expose());
        line.push(b'\n');
        Secret::new(line)
    };
    let mut f = create_private_file(path).map_err(io_err(path))?;
    f.write_all(encoded.expose()).map_err(io_err(path))?;
    f.sync_all().map_err(io_err(path))?;
    Ok((key, true))
}

/// A random (version 4) UUID, the default key ID.
fn random_uuid() -> Result<String, CryptoError> {
    let mut b = [0u8; 16];
    keyhold_crypto::random_bytes(&mut b)?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = keyhold_crypto::hex(&b);
    Ok(format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_use_disable_destroy_persist() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path(), None).unwrap();
        assert!(store.root_key_created());
        let a = store.create(Some("k1")).unwrap();
        assert_eq!(a.state, KeyState::Enabled);
        let b = store.create(None).unwrap();
        assert_eq!(b.key_id.len(), 36);
        assert!(matches!(store.create(Some("k1")), Err(KeyStoreError::AlreadyExists(_))));
        assert!(matches!(store.create(Some("bad/id")), Err(KeyStoreError::InvalidKeyId(_))));
        let (_, aead) = store.key_for_use("k1").unwrap();
        let blob = crate::blob::wrap(&aead.unwrap(), "k1", b"pt", b"").unwrap();

        assert_eq!(store.set_enabled("k1", false).unwrap().state, KeyState::Disabled);
        let (rec, aead) = store.key_for_use("k1").unwrap();
        assert_eq!((rec.state, aead.is_none()), (KeyState::Disabled, true), "a change on disk is seen at once");
        store.set_enabled("k1", true).unwrap();

        // Reopen: same root key, same material.
        drop(store);
        let store = KeyStore::open(dir.path(), None).unwrap();
        assert!(!store.root_key_created());
        let (_, aead) = store.key_for_use("k1").unwrap();
        assert_eq!(crate::blob::unwrap(&aead.unwrap(), "k1", &blob, b"").unwrap().expose(), b"pt");
        assert_eq!(store.list().unwrap().len(), 2);

        let d = store.destroy("k1").unwrap();
        assert_eq!(d.state, KeyState::Destroyed);
        assert!(d.destroy_time.is_some());
        let text = std::fs::read_to_string(dir.path().join("keys/k1.json")).unwrap();
        assert!(!text.contains("sealedMaterial"), "{text}");
        assert!(matches!(store.set_enabled("k1", true), Err(KeyStoreError::Destroyed(_))));
        assert!(matches!(store.create(Some("k1")), Err(KeyStoreError::AlreadyExists(_))), "the ID stays taken");
        assert!(matches!(store.get("nope"), Err(KeyStoreError::NotFound(_))));
        assert!(matches!(store.key_for_use("nope"), Err(KeyStoreError::NotFound(_))));
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("keys"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&dir.path().join("root.key")), 0o600);
            assert_eq!(mode(&dir.path().join("keys").join(format!("{}.json", b.key_id))), 0o600);
            assert_eq!(mode(&dir.path().join("keys")), 0o700);
        }
    }

    #[test]
    fn another_root_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path(), None).unwrap();
        store.create(Some("k")).unwrap();
        let other = dir.path().join("other.key");
        std::fs::write(&other, format!("{}\n", encode_base64(&[7u8; 32]))).unwrap();
        let err = KeyStore::open(dir.path(), Some(&other)).unwrap_err();
        assert!(matches!(err, KeyStoreError::RootKeyMismatch { .. }), "{err}");
        std::fs::write(&other, "short").unwrap();
        assert!(matches!(KeyStore::open(dir.path(), Some(&other)), Err(KeyStoreError::RootKeyFormat(_))));
    }
}
