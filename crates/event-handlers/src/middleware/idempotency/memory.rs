//! [`MemoryIdempotencyStore`]: handled ids in this process's memory, for one process (tests,
//! the memory bus, single-instance services).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::{Claim, IdempotencyStore, StoreError};

/// Handled ids kept in a map with expiry; expired entries are swept as the map grows, and
/// beyond [`capacity`](MemoryIdempotencyStore::with_capacity) (default 1,000,000) the oldest
/// handled ids are forgotten first, so memory stays bounded whatever the event rate.
///
/// It does not survive a restart and is not shared between processes: use
/// `RedisIdempotencyStore` (cargo feature `redis`) for that.
#[derive(Debug)]
pub struct MemoryIdempotencyStore {
    entries: Mutex<Entries>,
    capacity: usize,
}

impl Default for MemoryIdempotencyStore {
    fn default() -> Self {
        Self::with_capacity(1_000_000)
    }
}

#[derive(Debug, Default)]
struct Entries {
    map: HashMap<String, Entry>,
    /// Keys in the order they were completed, for forgetting the oldest first.
    done_order: VecDeque<String>,
    /// Sweep expired entries when the map reaches this size.
    sweep_at: usize,
}

#[derive(Debug)]
struct Entry {
    state: State,
    expires: Instant,
}

#[derive(Debug, PartialEq, Eq)]
enum State {
    Pending(String),
    Done,
}

impl MemoryIdempotencyStore {
    /// An empty store remembering up to 1,000,000 ids.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store remembering up to `capacity` handled ids (at least 1).
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            entries: Mutex::default(),
            capacity: capacity.max(1),
        }
    }

    /// Ids remembered (claimed or done, not yet expired or swept).
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        // Each operation leaves the map consistent; a poisoned lock is still usable.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Entries {
    fn sweep(&mut self, now: Instant) {
        if self.map.len() >= self.sweep_at {
            self.map.retain(|_, e| e.expires > now);
            let map = &self.map;
            self.done_order.retain(|k| map.contains_key(k));
            self.sweep_at = (self.map.len() * 2).max(1024);
        }
    }
}

#[async_trait]
impl IdempotencyStore for MemoryIdempotencyStore {
    async fn claim(&self, key: &str, token: &str, lease: Duration) -> Result<Claim, StoreError> {
        let now = Instant::now();
        let mut entries = self.lock();
        entries.sweep(now);
        if let Some(entry) = entries.map.get(key)
            && entry.expires > now
        {
            return Ok(match entry.state {
                State::Done => Claim::Done,
                State::Pending(_) => Claim::InProgress,
            });
        }
        entries.map.insert(
            key.to_owned(),
            Entry {
                state: State::Pending(token.to_owned()),
                expires: now + lease,
            },
        );
        Ok(Claim::Claimed)
    }

    async fn complete(&self, key: &str, remember_for: Duration) -> Result<(), StoreError> {
        let mut entries = self.lock();
        entries.map.insert(
            key.to_owned(),
            Entry {
                state: State::Done,
                expires: Instant::now() + remember_for,
            },
        );
        entries.done_order.push_back(key.to_owned());
        while entries.map.len() > self.capacity {
            let Some(oldest) = entries.done_order.pop_front() else {
                break;
            };
            if entries
                .map
                .get(&oldest)
                .is_some_and(|e| e.state == State::Done)
            {
                entries.map.remove(&oldest);
            }
        }
        Ok(())
    }

    async fn release(&self, key: &str, token: &str) -> Result<(), StoreError> {
        let mut entries = self.lock();
        if entries
            .map
            .get(key)
            .is_some_and(|e| e.state == State::Pending(token.to_owned()))
        {
            entries.map.remove(key);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn claims_expire_and_done_is_remembered_until_its_time() {
        let store = MemoryIdempotencyStore::new();
        let lease = Duration::from_secs(5);
        assert_eq!(store.claim("k", "a", lease).await.unwrap(), Claim::Claimed);
        assert_eq!(
            store.claim("k", "b", lease).await.unwrap(),
            Claim::InProgress
        );
        // A release by someone else's token leaves the claim.
        store.release("k", "b").await.unwrap();
        assert_eq!(
            store.claim("k", "b", lease).await.unwrap(),
            Claim::InProgress
        );
        // The lease expires: b takes over; a's late release does not drop b's claim.
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(store.claim("k", "b", lease).await.unwrap(), Claim::Claimed);
        store.release("k", "a").await.unwrap();
        assert_eq!(
            store.claim("k", "c", lease).await.unwrap(),
            Claim::InProgress
        );
        store.complete("k", Duration::from_secs(60)).await.unwrap();
        assert_eq!(store.claim("k", "c", lease).await.unwrap(), Claim::Done);
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(store.claim("k", "c", lease).await.unwrap(), Claim::Claimed);
    }

    #[tokio::test]
    async fn beyond_its_capacity_it_forgets_the_oldest_handled_ids() {
        let store = MemoryIdempotencyStore::with_capacity(3);
        let (lease, keep) = (Duration::from_secs(5), Duration::from_secs(3600));
        for key in ["a", "b", "c", "d"] {
            assert_eq!(store.claim(key, "t", lease).await.unwrap(), Claim::Claimed);
            store.complete(key, keep).await.unwrap();
        }
        assert_eq!(store.len(), 3);
        assert_eq!(
            store.claim("a", "t", lease).await.unwrap(),
            Claim::Claimed,
            "forgotten"
        );
        assert_eq!(store.claim("d", "t", lease).await.unwrap(), Claim::Done);
        // A claim in progress is never forgotten to make room.
        assert_eq!(
            store.claim("a", "u", lease).await.unwrap(),
            Claim::InProgress
        );
    }
}
