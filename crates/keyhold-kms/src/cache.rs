//! In-memory view of crypto keys for the cryptographic hot path.
//!
//! An entry holds a key's record, its versions and, unsealed on first use, each version's AEAD
//! key. Three properties hold whatever the number of keys and the load (their shared core is
//! `bounded_cache`, which the IAM policy and token caches use too):
//!
//! * **Bounded.** Entries are weighed (an estimate of the bytes each holds, [`CachedKey::weight`])
//!   and the cache keeps at most its byte budget (`KmsConfig::key_cache_bytes`, 64 MiB by
//!   default), evicting the entries least worth keeping (quick_cache's S3-FIFO: a key used once
//!   goes before a key in steady use).
//! * **One load per miss.** However many requests miss the same key at once, one of them loads
//!   it from the store and the others wait for that load ([`KeyCache::get_or_load`]).
//! * **Never stale.** An entry is dropped when its key changes, here at once or on another node
//!   through the change log, and everything is dropped when the store changed in a way the log
//!   does not name. A generation number guards against a slow load of old state landing after
//!   an invalidation: such a load is used once but not cached.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use keyhold_api::CryptoKeyName;
use keyhold_crypto::AeadKey;
use keyhold_crypto::keys::LoadedKey;

use crate::bounded_cache::BoundedCache;
use crate::material::VersionMaterial;
use crate::repo::{CryptoKeyRecord, VersionRecord};

/// The default byte budget of the key cache.
pub const DEFAULT_KEY_CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// What one version costs on the heap besides its slot in the map and its record's strings:
/// the sealed material and, once unsealed, the AEAD key with its expanded schedule (an estimate,
/// on the generous side).
const VERSION_HEAP: u64 = 768;
/// Slots in one node of a `BTreeMap` (std's `B` is 6: 2B - 1 slots), allocated in full even for
/// one version.
const BTREE_SLOTS: u64 = 11;
/// How young an entry may be and still be read again for a version it lacks: a request naming
/// a version the cached key does not have (created on another node since, or never) reads the
/// key again at most once per this interval, however many such requests arrive. Another node's
/// new version is also announced by the change log within its poll (250 ms).
pub const MIN_REFRESH_INTERVAL: Duration = Duration::from_millis(100);
/// The typical weight of an entry (a key with a version or two), to size the cache's tables.
const TYPICAL_WEIGHT: u64 = 4096;

/// One version in the cache.
#[derive(Debug)]
pub struct CachedVersion {
    /// The stored record (material still sealed).
    pub record: VersionRecord,
    /// The unsealed key, filled on first use.
    pub aead: OnceLock<Arc<AeadKey>>,
    /// The unsealed private (or MAC) key of a signing, asymmetric decryption or MAC version,
    /// parsed on first use.
    pub private: OnceLock<Arc<LoadedKey>>,
}

impl CachedVersion {
    /// A version as loaded, nothing unsealed yet.
    pub fn new(record: VersionRecord) -> Self {
        Self { record, aead: OnceLock::new(), private: OnceLock::new() }
    }
}

/// One crypto key in the cache.
#[derive(Debug)]
pub struct CachedKey {
    /// The key's full resource name, formatted once (it is bound into every ciphertext).
    pub name: String,
    /// The stored record.
    pub record: CryptoKeyRecord,
    /// Versions by ID, each boxed: a map node has room for 11 entries even when it holds one,
    /// and a `CachedVersion` inline (480 bytes) made that node 5.2 KiB for every key.
    pub versions: BTreeMap<u64, Box<CachedVersion>>,
    weight: u64,
    loaded: Instant,
    /// Set by the one request that reads this key again ([`KeyCache::refresh`]).
    refreshing: AtomicBool,
}

impl CachedKey {
    /// An entry for `record` and its versions, weighed once.
    pub fn new(record: CryptoKeyRecord, versions: BTreeMap<u64, Box<CachedVersion>>) -> Self {
        let name = record.name.to_string();
        let slot = std::mem::size_of::<(u64, Box<CachedVersion>)>() as u64;
        let nodes = (versions.len() as u64).div_ceil(BTREE_SLOTS).max(1);
        let mut weight = std::mem::size_of::<CachedKey>() as u64
            + 2 * name.len() as u64
            + json_len(&record.key)
            + nodes * BTREE_SLOTS * slot;
        for v in versions.values() {
            // Private keys: the sealed envelope, its PKCS#8 once opened, and the parsed key, each
            // about as long as the envelope.
            let private = match &v.record.material {
                VersionMaterial::Sealed(b) if b.first() == Some(&keyhold_crypto::sealed::ENVELOPE_V2) => {
                    3 * b.len() as u64
                }
                _ => 0,
            };
            weight +=
                std::mem::size_of::<CachedVersion>() as u64 + VERSION_HEAP + json_len(&v.record.version) + private;
        }
        Self { name, record, versions, weight, loaded: Instant::now(), refreshing: AtomicBool::new(false) }
    }

    /// The bytes this entry is counted for against the cache's budget: an estimate from its
    /// structs' sizes, the map nodes its versions take, the size of its records in JSON (for
    /// their strings) and a fixed cost per version for its material and AEAD key.
    pub fn weight(&self) -> u64 {
        self.weight
    }
}

/// The length of a record's JSON, which stands for the heap its strings and lists take.
fn json_len(record: &impl serde::Serialize) -> u64 {
    serde_json::to_vec(record).map_or(0, |v| v.len() as u64)
}

#[derive(Clone, Copy, Debug)]
struct ByWeight;

impl quick_cache::Weighter<CryptoKeyName, Arc<CachedKey>> for ByWeight {
    fn weight(&self, _: &CryptoKeyName, entry: &Arc<CachedKey>) -> u64 {
        entry.weight
    }
}

/// The cache.
pub struct KeyCache {
    entries: BoundedCache<CryptoKeyName, Arc<CachedKey>, ByWeight>,
}

impl std::fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (held, weight) = self.entries.usage();
        f.debug_struct("KeyCache")
            .field("entries", &held)
            .field("weight", &weight)
            .field("capacity", &self.entries.capacity())
            .finish()
    }
}

impl Default for KeyCache {
    fn default() -> Self {
        Self::new(DEFAULT_KEY_CACHE_BYTES)
    }
}

impl KeyCache {
    /// A cache holding at most `capacity` bytes (by [`CachedKey::weight`]).
    pub fn new(capacity: u64) -> Self {
        Self { entries: BoundedCache::new(capacity, TYPICAL_WEIGHT, ByWeight) }
    }

    /// A cached entry, if present.
    pub fn get(&self, name: &CryptoKeyName) -> Option<Arc<CachedKey>> {
        self.entries.get(name)
    }

    /// The cached entry, or the one `load` reads from the store. Concurrent misses of the same
    /// key wait for one load; if it fails, the next waiter loads in turn. A load that an
    /// invalidation overtook is answered but not cached.
    pub async fn get_or_load<E, F, Fut>(&self, name: &CryptoKeyName, load: F) -> Result<Arc<CachedKey>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<CachedKey, E>>,
    {
        self.entries.get_or_load(name, || async move { Ok(Arc::new(load().await?)) }).await
    }

    /// Reads the key again although `held` is cached (it lacks a version, perhaps created on
    /// another node since), and caches what was read unless an invalidation overtook the read.
    /// Only one request reads, and only once `held` is [`MIN_REFRESH_INTERVAL`] old; any other
    /// gets `held` back, so requests naming versions that do not exist cannot make every
    /// request a database read.
    pub async fn refresh<E, F, Fut>(
        &self,
        name: &CryptoKeyName,
        held: &Arc<CachedKey>,
        load: F,
    ) -> Result<Arc<CachedKey>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<CachedKey, E>>,
    {
        if held.loaded.elapsed() < MIN_REFRESH_INTERVAL || held.refreshing.swap(true, Ordering::AcqRel) {
            return Ok(held.clone());
        }
        let generation = self.entries.generation();
        let entry = match load().await {
            Ok(entry) => Arc::new(entry),
            Err(e) => {
                held.refreshing.store(false, Ordering::Release);
                return Err(e);
            }
        };
        if !self.entries.insert_if_current(name.clone(), entry.clone(), generation) {
            // Not cached: `held` may still be, and may be read again later.
            held.refreshing.store(false, Ordering::Release);
        }
        Ok(entry)
    }

    /// Forgets one key.
    pub fn invalidate(&self, name: &CryptoKeyName) {
        self.entries.invalidate(name);
    }

    /// Forgets everything.
    pub fn clear(&self) {
        self.entries.clear();
    }

    /// The entries held and their total weight in bytes (for tests and metrics).
    pub fn usage(&self) -> (usize, u64) {
        self.entries.usage()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use keyhold_api::resources::{CryptoKey, CryptoKeyVersion};

    use super::*;
    use crate::material::VersionMaterial;

    fn name(i: usize) -> CryptoKeyName {
        format!("projects/p/locations/global/keyRings/r/cryptoKeys/k{i}").parse().unwrap()
    }

    fn entry(name: &CryptoKeyName, versions: u64) -> CachedKey {
        let record =
            CryptoKeyRecord { name: name.clone(), key: CryptoKey::default(), primary_version: None, revision: 1 };
        let versions = (1..=versions)
            .map(|id| {
                let record = VersionRecord {
                    name: name.version(id),
                    version: CryptoKeyVersion { name: name.version(id).to_string(), ..Default::default() },
                    material: VersionMaterial::Erased,
                    revision: 1,
                };
                (id, Box::new(CachedVersion::new(record)))
            })
            .collect();
        CachedKey::new(record, versions)
    }

    /// Loads `n` through the cache with a loader that counts its calls and takes `slow` (so
    /// that concurrent misses overlap).
    async fn load_slowly(cache: &KeyCache, n: &CryptoKeyName, loads: &AtomicUsize, slow: Duration) -> Arc<CachedKey> {
        cache
            .get_or_load(n, || async {
                loads.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(slow).await;
                Ok::<_, ()>(entry(n, 1))
            })
            .await
            .unwrap()
    }

    async fn load(cache: &KeyCache, n: &CryptoKeyName, loads: &AtomicUsize) -> Arc<CachedKey> {
        load_slowly(cache, n, loads, Duration::ZERO).await
    }

    #[test]
    fn an_entry_weighs_more_with_more_versions() {
        let one = entry(&name(0), 1).weight();
        let many = entry(&name(0), 100).weight();
        let node = BTREE_SLOTS * std::mem::size_of::<(u64, Box<CachedVersion>)>() as u64;
        assert!(one >= node + std::mem::size_of::<CachedVersion>() as u64 + VERSION_HEAP, "{one}");
        // One version's key weighs what it holds, not a node of eleven inline versions.
        assert!(one < 4096, "{one}");
        assert!(many > one + 99 * VERSION_HEAP, "{many} vs {one}");
    }

    #[tokio::test]
    async fn the_weight_stays_within_the_budget_whatever_the_number_of_keys() {
        let budget = 256 * 1024;
        let cache = KeyCache::new(budget);
        let loads = AtomicUsize::new(0);
        let per_key = entry(&name(0), 1).weight();
        for i in 0..2_000 {
            load(&cache, &name(i), &loads).await;
            assert!(cache.usage().1 <= budget, "over budget after {i} keys: {:?}", cache.usage());
        }
        let (held, weight) = cache.usage();
        assert!(held > 0 && held < 2_000, "{held} entries held");
        // Most of the budget is used: it evicts only what does not fit.
        assert!(weight + 2 * per_key > budget / 2, "{weight} of {budget}");
        assert_eq!(loads.load(Ordering::SeqCst), 2_000);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_misses_of_one_key_load_it_once() {
        let cache = Arc::new(KeyCache::default());
        let loads = Arc::new(AtomicUsize::new(0));
        let n = name(1);
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let (cache, loads, n) = (cache.clone(), loads.clone(), n.clone());
                tokio::spawn(async move { load_slowly(&cache, &n, &loads, Duration::from_millis(50)).await })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap().name, n.to_string());
        }
        assert_eq!(loads.load(Ordering::SeqCst), 1, "64 requests missing one key load it once");
        // A failed load leaves no entry: the next request loads again.
        let other = name(2);
        let failed = cache.get_or_load(&other, || async { Err::<CachedKey, _>("unavailable") }).await;
        assert_eq!(failed.unwrap_err(), "unavailable");
        assert!(cache.get(&other).is_none());
        load(&cache, &other, &loads).await;
        assert!(cache.get(&other).is_some());
    }

    #[tokio::test]
    async fn a_load_overtaken_by_an_invalidation_is_answered_but_not_cached() {
        let cache = KeyCache::default();
        let n = name(3);
        let got = cache
            .get_or_load(&n, || async {
                // The key changes while it is being read.
                cache.invalidate(&name(99));
                Ok::<_, ()>(entry(&n, 1))
            })
            .await
            .unwrap();
        assert_eq!(got.name, n.to_string());
        assert!(cache.get(&n).is_none(), "a load that raced with a change must not be cached");
        let loads = AtomicUsize::new(0);
        load(&cache, &n, &loads).await;
        assert!(cache.get(&n).is_some());
        cache.invalidate(&n);
        assert!(cache.get(&n).is_none());
        cache.clear();
        assert_eq!(cache.usage(), (0, 0));
    }

    /// A refresh whose read counts in `loads` and takes a moment, answering two versions.
    async fn again(cache: &KeyCache, n: &CryptoKeyName, held: &Arc<CachedKey>, loads: &AtomicUsize) -> Arc<CachedKey> {
        cache
            .refresh(n, held, || async {
                loads.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok::<_, ()>(entry(n, 2))
            })
            .await
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_for_a_missing_version_read_the_key_again_once_per_interval() {
        let cache = Arc::new(KeyCache::default());
        let n = name(4);
        let loads = Arc::new(AtomicUsize::new(0));
        let held = load(&cache, &n, &loads).await;
        // Too young: the held entry, no read.
        assert_eq!(again(&cache, &n, &held, &loads).await.versions.len(), 1);
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        tokio::time::sleep(MIN_REFRESH_INTERVAL + Duration::from_millis(10)).await;
        // 32 requests at once: one reads, the others get the held entry.
        let tasks: Vec<_> = (0..32)
            .map(|_| {
                let (cache, n, held, loads) = (cache.clone(), n.clone(), held.clone(), loads.clone());
                tokio::spawn(async move { again(&cache, &n, &held, &loads).await.versions.len() })
            })
            .collect();
        let mut got = Vec::new();
        for t in tasks {
            got.push(t.await.unwrap());
        }
        assert_eq!(loads.load(Ordering::SeqCst), 2, "one read for 32 requests");
        assert_eq!(got.iter().filter(|&&v| v == 2).count(), 1, "{got:?}");
        assert_eq!(cache.get(&n).unwrap().versions.len(), 2, "the read replaced the entry");
    }
}
