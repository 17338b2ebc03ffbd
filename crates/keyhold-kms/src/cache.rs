//! In-memory view of crypto keys for the cryptographic hot path.
//!
//! An entry holds a key's record, its versions and, unsealed on first use, each version's AEAD
//! key. Entries are dropped whenever the key changes locally, and all of them when the store's
//! change counter moves (another node changed something). A generation number guards against
//! the race where a slow load of old state lands after an invalidation: such a load is used
//! once but not cached.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use keyhold_api::CryptoKeyName;
use keyhold_crypto::AeadKey;

use crate::repo::{CryptoKeyRecord, VersionRecord};

/// One version in the cache.
#[derive(Debug)]
pub struct CachedVersion {
    /// The stored record (material still sealed).
    pub record: VersionRecord,
    /// The unsealed key, filled on first use.
    pub aead: OnceLock<Arc<AeadKey>>,
}

/// One crypto key in the cache.
#[derive(Debug)]
pub struct CachedKey {
    /// The key's full resource name, formatted once (it is bound into every ciphertext).
    pub name: String,
    /// The stored record.
    pub record: CryptoKeyRecord,
    /// Versions by ID.
    pub versions: BTreeMap<u64, CachedVersion>,
}

/// The cache.
#[derive(Debug, Default)]
pub struct KeyCache {
    entries: RwLock<HashMap<CryptoKeyName, Arc<CachedKey>>>,
    generation: AtomicU64,
}

impl KeyCache {
    /// A cached entry, if present.
    pub fn get(&self, name: &CryptoKeyName) -> Option<Arc<CachedKey>> {
        self.entries.read().unwrap_or_else(|e| e.into_inner()).get(name).cloned()
    }

    /// The generation to pass to [`KeyCache::insert`] for a load that starts now.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Caches `entry` unless an invalidation happened since `generation` was read.
    pub fn insert(&self, name: CryptoKeyName, entry: Arc<CachedKey>, generation: u64) {
        let mut map = self.entries.write().unwrap_or_else(|e| e.into_inner());
        if self.generation.load(Ordering::Acquire) == generation {
            map.insert(name, entry);
        }
    }

    /// Forgets one key.
    pub fn invalidate(&self, name: &CryptoKeyName) {
        let mut map = self.entries.write().unwrap_or_else(|e| e.into_inner());
        self.generation.fetch_add(1, Ordering::AcqRel);
        map.remove(name);
    }

    /// Forgets everything.
    pub fn clear(&self) {
        let mut map = self.entries.write().unwrap_or_else(|e| e.into_inner());
        self.generation.fetch_add(1, Ordering::AcqRel);
        map.clear();
    }
}
