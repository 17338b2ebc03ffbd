//! The core the KMS's caches share: a byte budget, one load per miss, and invalidation that a
//! slow load cannot undo.
//!
//! * **Bounded.** Entries are weighed by the cache's weighter and the total stays under the
//!   budget whatever the number of entries; quick_cache's S3-FIFO evicts what is least worth
//!   keeping (an entry used once goes before one in steady use). quick_cache splits the budget
//!   over shards and keeps no entry heavier than about one shard's share, so a shard is never
//!   given less than [`MIN_SHARD_BYTES`] (or the whole budget, when that is smaller).
//! * **One load per miss.** However many callers miss one entry at once, one loads it and the
//!   others wait for that load; if it fails, the next waiter loads in turn.
//! * **Never stale.** [`BoundedCache::invalidate`] and [`BoundedCache::clear`] bump a generation
//!   number under a write lock; a load records the generation before it reads and caches its
//!   result only if the number has not moved, checked and inserted under the read lock. A load
//!   that an invalidation overtook is answered but not cached.

use std::future::Future;
use std::hash::Hash;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use quick_cache::sync::DefaultLifecycle;
use quick_cache::{DefaultHashBuilder, Equivalent, OptionsBuilder, Weighter};

/// The least share of the budget a shard gets: entries up to about this weight (the heaviest
/// policy a request can set, 1,500 bound members of at most 270 bytes and 1,500 exempted ones of
/// at most 512, weighs about 1.3 MiB; a key with 1,000 versions about 1.7 MiB) are kept
/// whatever the number of cores.
pub(crate) const MIN_SHARD_BYTES: u64 = 4 << 20;

/// A weighed cache whose entries are dropped when what they hold changes.
pub(crate) struct BoundedCache<K, V, W> {
    entries: quick_cache::sync::Cache<K, V, W>,
    /// Bumped by every invalidation; a load caches its result only if it did not move.
    generation: AtomicU64,
    /// Held for writing while an invalidation bumps the generation and drops entries, and for
    /// reading while a load checks the generation and inserts, so that no invalidation falls
    /// between the two.
    turn: RwLock<()>,
}

impl<K, V, W> BoundedCache<K, V, W>
where
    K: Eq + Hash + Clone,
    V: Clone,
    W: Weighter<K, V> + Clone,
{
    /// A cache of at most `capacity` by `weighter`, its tables sized for entries of
    /// `typical_weight`.
    pub(crate) fn new(capacity: u64, typical_weight: u64, weighter: W) -> Self {
        let items = usize::try_from((capacity / typical_weight.max(1)).max(16)).unwrap_or(usize::MAX);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        // quick_cache's own default is four shards a core; fewer when the shares would be small.
        // It rounds the count up to a power of two, so round it down here.
        let shards = usize::try_from(capacity / MIN_SHARD_BYTES).unwrap_or(usize::MAX).clamp(1, 4 * cores);
        let shards = 1 << shards.ilog2();
        let options = OptionsBuilder::new()
            .estimated_items_capacity(items)
            .weight_capacity(capacity)
            .shards(shards)
            .build()
            .expect("both capacities are set");
        Self {
            entries: quick_cache::sync::Cache::with_options(
                options,
                weighter,
                DefaultHashBuilder::default(),
                DefaultLifecycle::default(),
            ),
            generation: AtomicU64::new(0),
            turn: RwLock::new(()),
        }
    }

    /// A cached entry, if present.
    pub(crate) fn get<Q>(&self, key: &Q) -> Option<V>
    where
        Q: Hash + Equivalent<K> + ?Sized,
    {
        self.entries.get(key)
    }

    /// The cached entry, or the one `load` reads. Concurrent misses of one key wait for one
    /// load. A load that an invalidation overtook is answered but not cached; so is an entry
    /// heavier than a shard's share of the budget.
    pub(crate) async fn get_or_load<Q, E, F, Fut>(&self, key: &Q, load: F) -> Result<V, E>
    where
        Q: Hash + Equivalent<K> + ToOwned<Owned = K> + ?Sized,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        let guard = match self.entries.get_value_or_guard_async(key).await {
            Ok(entry) => return Ok(entry),
            Err(guard) => guard,
        };
        let generation = self.generation();
        let entry = load().await?;
        let _turn = self.turn.read().unwrap_or_else(|e| e.into_inner());
        if self.generation.load(Ordering::Acquire) == generation {
            let _ = guard.insert(entry.clone());
        }
        Ok(entry)
    }

    /// The generation a load must record before it reads, for [`Self::insert_if_current`].
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Caches `value` (read after `generation` was recorded) unless an invalidation came
    /// since: false if one did. (An entry too heavy to keep is dropped, as by `get_or_load`.)
    pub(crate) fn insert_if_current(&self, key: K, value: V, generation: u64) -> bool {
        let _turn = self.turn.read().unwrap_or_else(|e| e.into_inner());
        if self.generation.load(Ordering::Acquire) != generation {
            return false;
        }
        self.entries.insert(key, value);
        true
    }

    /// Forgets one entry.
    pub(crate) fn invalidate<Q>(&self, key: &Q)
    where
        Q: Hash + Equivalent<K> + ?Sized,
    {
        let _turn = self.turn.write().unwrap_or_else(|e| e.into_inner());
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.entries.remove(key);
    }

    /// Forgets everything.
    pub(crate) fn clear(&self) {
        let _turn = self.turn.write().unwrap_or_else(|e| e.into_inner());
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.entries.clear();
    }

    /// The entries held and their total weight.
    pub(crate) fn usage(&self) -> (usize, u64) {
        (self.entries.len(), self.entries.weight())
    }

    /// The budget.
    pub(crate) fn capacity(&self) -> u64 {
        self.entries.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone)]
    struct Len;
    impl Weighter<u32, Vec<u8>> for Len {
        fn weight(&self, _: &u32, v: &Vec<u8>) -> u64 {
            v.len() as u64
        }
    }

    #[tokio::test]
    async fn holds_heavy_entries_and_stays_within_its_budget() {
        let cache = BoundedCache::new(8 << 20, 1024, Len);
        // Heavier than a share of quick_cache's default four shards a core, on any machine.
        let heavy = vec![0u8; 3 << 20];
        let got = cache.get_or_load(&1, || async { Ok::<_, ()>(heavy.clone()) }).await.unwrap();
        assert_eq!(got.len(), 3 << 20);
        assert!(cache.get(&1).is_some(), "a 3 MiB entry is kept in an 8 MiB cache");
        for i in 2..100 {
            cache.get_or_load(&i, || async { Ok::<_, ()>(vec![0u8; 256 << 10]) }).await.unwrap();
            assert!(cache.usage().1 <= 8 << 20, "over budget at {i}");
        }
        assert!(cache.usage().0 < 99, "some were evicted");
        // 12 MiB is three shares of 4 MiB: two shards of 6 MiB, not four of 3 MiB.
        let odd = BoundedCache::new(12 << 20, 1024, Len);
        odd.get_or_load(&1, || async { Ok::<_, ()>(vec![0u8; 3584 << 10]) }).await.unwrap();
        assert!(odd.get(&1).is_some(), "a 3.5 MiB entry is kept in a 12 MiB cache");
        let small = BoundedCache::new(1 << 20, 1024, Len);
        small.get_or_load(&1, || async { Ok::<_, ()>(vec![0u8; 900 << 10]) }).await.unwrap();
        assert!(small.get(&1).is_some(), "a budget below a shard's minimum is one shard");
    }

    #[tokio::test]
    async fn a_load_overtaken_by_an_invalidation_is_answered_but_not_kept() {
        let cache = BoundedCache::new(1 << 20, 64, Len);
        let got = cache
            .get_or_load(&7, || async {
                cache.invalidate(&7);
                Ok::<_, ()>(vec![1])
            })
            .await
            .unwrap();
        assert_eq!(got, [1]);
        assert!(cache.get(&7).is_none());
        let generation = cache.generation();
        cache.clear();
        assert!(!cache.insert_if_current(7, vec![2], generation));
        assert!(cache.get(&7).is_none());
        assert!(cache.insert_if_current(7, vec![3], cache.generation()));
        assert_eq!(cache.get(&7), Some(vec![3]));
    }
}
