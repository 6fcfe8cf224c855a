//! [`MemoryIdempotencyStore`]: handled ids in this process's memory, for one process (tests,
//! the memory bus, single-instance services).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::{Claim, IdempotencyStore, StoreError};

/// Handled ids kept in a map with expiry; expired entries are swept as the map grows.
///
/// It does not survive a restart and is not shared between processes: use
/// [`RedisIdempotencyStore`](super::RedisIdempotencyStore) for that.
#[derive(Debug, Default)]
pub struct MemoryIdempotencyStore {
    entries: Mutex<Entries>,
}

#[derive(Debug, Default)]
struct Entries {
    map: HashMap<String, Entry>,
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
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
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
        self.lock().map.insert(
            key.to_owned(),
            Entry {
                state: State::Done,
                expires: Instant::now() + remember_for,
            },
        );
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
}
