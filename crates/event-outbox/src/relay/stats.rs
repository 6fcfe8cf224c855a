//! [`RelayStats`]: what a relay has done since it started.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of one [`Relay`](crate::Relay) (and its clones) since it was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RelayStats {
    /// Claims that found events.
    pub rounds: u64,
    /// Events published and marked delivered.
    pub delivered: u64,
    /// Events parked: refused for good by the bus, or unreadable.
    pub parked: u64,
    /// Publish attempts that failed transiently (retried later).
    pub publish_failures: u64,
    /// Rounds that failed on PostgreSQL (retried after a back-off).
    pub database_errors: u64,
    /// Delivered rows deleted after the retention.
    pub cleaned: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) rounds: AtomicU64,
    pub(crate) delivered: AtomicU64,
    pub(crate) parked: AtomicU64,
    pub(crate) publish_failures: AtomicU64,
    pub(crate) database_errors: AtomicU64,
    pub(crate) cleaned: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> RelayStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RelayStats {
            rounds: get(&self.rounds),
            delivered: get(&self.delivered),
            parked: get(&self.parked),
            publish_failures: get(&self.publish_failures),
            database_errors: get(&self.database_errors),
            cleaned: get(&self.cleaned),
        }
    }
}
