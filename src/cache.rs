//! A small per-node cache of database answers that may be at most a given age, loading each
//! key once at a time.
//!
//! Long-lived listeners re-check their key and subscription twice a second, thousands of
//! them per node sharing a handful of keys. A plain "look up, else load and insert" cache lets
//! every check that comes while an expired entry is being reloaded run the same query again
//! (a herd of identical queries on the pool every second). Here an expired or missing key gets
//! one fresh slot whose load everyone then waits for; a failed load leaves the slot empty, so
//! the next caller tries again. The age counts from the start of the load, which errs on the
//! side of freshness.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;

struct Slot<V> {
    at: Instant,
    value: Arc<OnceCell<V>>,
}

/// Answers per key, each trusted for `ttl`; at most `max` keys (beyond that, stale ones are
/// dropped, and if none are stale, all: memory stays bounded under key guessing).
pub struct TtlCache<K, V> {
    ttl: Duration,
    max: usize,
    // A std mutex: held only to find or insert a slot, never across an await.
    slots: Mutex<HashMap<K, Slot<V>>>,
}

impl<K: Hash + Eq + Clone, V: Clone> TtlCache<K, V> {
    /// An empty cache.
    pub fn new(ttl: Duration, max: usize) -> Self {
        TtlCache {
            ttl,
            max: max.max(1),
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// The answer for `key`: cached if younger than the TTL, else loaded with `load` (once,
    /// however many callers ask meanwhile). A load error is returned and not cached.
    pub async fn get<E, F, Fut>(&self, key: &K, load: F) -> Result<V, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            match slots.get(key) {
                Some(s) if s.at.elapsed() < self.ttl => s.value.clone(),
                _ => {
                    if slots.len() >= self.max {
                        slots.retain(|_, s| s.at.elapsed() < self.ttl);
                        if slots.len() >= self.max {
                            slots.clear();
                        }
                    }
                    let value = Arc::new(OnceCell::new());
                    let slot = Slot {
                        at: Instant::now(),
                        value: value.clone(),
                    };
                    slots.insert(key.clone(), slot);
                    value
                }
            }
        };
        slot.get_or_try_init(load).await.cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn concurrent_callers_share_one_load_and_errors_are_not_kept() {
        let cache: TtlCache<u32, u32> = TtlCache::new(Duration::from_secs(60), 10);
        let loads = AtomicUsize::new(0);
        let load = || async {
            loads.fetch_add(1, Ordering::SeqCst);
            tokio::task::yield_now().await;
            Ok::<u32, ()>(7)
        };
        let all = futures::future::join_all((0..50).map(|_| cache.get(&1, load))).await;
        assert!(all.iter().all(|r| *r == Ok(7)));
        assert_eq!(loads.load(Ordering::SeqCst), 1);

        assert_eq!(
            cache.get(&2, || async { Err::<u32, _>("down") }).await,
            Err("down")
        );
        assert_eq!(cache.get(&2, || async { Ok::<u32, &str>(9) }).await, Ok(9));
    }

    #[tokio::test]
    async fn expired_answers_are_loaded_again_and_the_size_is_bounded() {
        let cache: TtlCache<u32, u32> = TtlCache::new(Duration::ZERO, 2);
        assert_eq!(cache.get(&1, || async { Ok::<u32, ()>(1) }).await, Ok(1));
        assert_eq!(cache.get(&1, || async { Ok::<u32, ()>(2) }).await, Ok(2));
        for k in 0..10 {
            cache.get(&k, || async { Ok::<u32, ()>(k) }).await.ok();
        }
        assert!(cache.slots.lock().unwrap().len() <= 2);
    }
}
