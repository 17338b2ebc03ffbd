//! The core the KMS's caches share: a byte budget, one load per miss, and invalidation that a
//! slow load cannot undo.
//!
//! * **Bounded.** Entries are weighed by the cache's weighter and the total stays under the
//!   budget whatever the number of entries; quick_cache's S3-FIFO evicts what is least worth
//!   keeping (an entry used once goes before one in steady use).
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

use quick_cache::{Equivalent, Weighter};

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
        Self {
            entries: quick_cache::sync::Cache::with_weighter(items, capacity, weighter),
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
    /// that outweighs the whole budget.
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

    /// Caches `value` (read after `generation` was recorded) unless an invalidation came since;
    /// whether it did.
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
