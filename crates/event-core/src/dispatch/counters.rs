//! [`HandlerCounters`]: lock-free counters a dispatcher updates and stats read.

use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use time::OffsetDateTime;

/// Counters of one handler's deliveries, shared between its dispatchers and the stats.
#[derive(Debug, Default)]
pub struct HandlerCounters {
    delivered: AtomicU64,
    redelivered: AtomicU64,
    claimed: AtomicU64,
    processed: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
    dead_lettered: AtomicU64,
    expired: AtomicU64,
    /// Unix time in milliseconds of the last finished event (0 = never).
    last_event_ms: AtomicI64,
    /// Unix time in milliseconds of the last progress, or of the subscription's start.
    last_progress_ms: AtomicI64,
    /// Consumer loops that panicked or ended unasked (each was restarted).
    loop_failures: AtomicU64,
    /// When the last of them failed, and why.
    last_loop_failure: Mutex<Option<(OffsetDateTime, String)>>,
}

/// A snapshot of [`HandlerCounters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CounterSnapshot {
    /// Deliveries handed to the handler.
    pub delivered: u64,
    /// Deliveries of events an earlier delivery did not finish.
    pub redelivered: u64,
    /// Events taken over from another consumer of the group.
    pub claimed: u64,
    /// Events handled successfully.
    pub processed: u64,
    /// Failed attempts.
    pub failed: u64,
    /// Retries scheduled.
    pub retried: u64,
    /// Events dead-lettered.
    pub dead_lettered: u64,
    /// Events that retention removed before they were delivered to the handler.
    pub expired: u64,
    /// When an event last finished.
    pub last_event_at: Option<OffsetDateTime>,
    /// Consumer loops that failed (panicked or ended unasked) and were restarted.
    pub loop_failures: u64,
}

impl CounterSnapshot {
    /// Adds `other`'s counts to these (the later of the two last event times is kept).
    pub fn add(&mut self, other: &CounterSnapshot) {
        self.delivered += other.delivered;
        self.redelivered += other.redelivered;
        self.claimed += other.claimed;
        self.processed += other.processed;
        self.failed += other.failed;
        self.retried += other.retried;
        self.dead_lettered += other.dead_lettered;
        self.expired += other.expired;
        self.loop_failures += other.loop_failures;
        self.last_event_at = self.last_event_at.max(other.last_event_at);
    }
}

fn now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

impl HandlerCounters {
    /// Adds `n` deliveries handed to the handler, `redelivered` of them events that an earlier
    /// delivery did not finish.
    pub fn add_delivered(&self, n: u64, redelivered: u64) {
        self.delivered.fetch_add(n, Ordering::Relaxed);
        if redelivered > 0 {
            self.redelivered.fetch_add(redelivered, Ordering::Relaxed);
        }
    }

    /// Adds events taken over from another consumer of the group.
    pub fn add_claimed(&self, n: u64) {
        self.claimed.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds successful events.
    pub fn add_processed(&self, n: u64) {
        self.processed.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds one failed attempt.
    pub fn add_failed(&self) {
        self.failed.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds one scheduled retry.
    pub fn add_retried(&self) {
        self.retried.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds one dead-lettered event.
    pub fn add_dead_lettered(&self) {
        self.dead_lettered.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds events that retention removed before the handler got them, and logs them: they
    /// are lost to this handler, and nobody should lose events in silence.
    pub fn add_expired(&self, handler: &str, n: u64) {
        if n > 0 {
            self.expired.fetch_add(n, Ordering::Relaxed);
            tracing::warn!(
                handler,
                expired = n,
                "events passed their retention (EVENT_TTL_SECONDS) before this handler got them; they are skipped"
            );
        }
    }

    /// Records that events finished now.
    pub fn mark_progress(&self) {
        let now = now_ms();
        self.last_event_ms.store(now, Ordering::Relaxed);
        self.last_progress_ms.store(now, Ordering::Relaxed);
    }

    /// Restarts the stall clock (a new subscription has not stalled yet).
    pub fn reset_stall_clock(&self) {
        self.last_progress_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// Whether nothing finished for `timeout` (the caller checks that there was work to do).
    pub fn idle_for(&self, timeout: std::time::Duration) -> bool {
        let last = self.last_progress_ms.load(Ordering::Relaxed);
        now_ms().saturating_sub(last) > timeout.as_millis() as i64
    }

    /// Records a consumer loop's failure (it is being restarted).
    pub fn record_loop_failure(&self, why: &str) {
        self.loop_failures.fetch_add(1, Ordering::Relaxed);
        *self
            .last_loop_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner()) =
            Some((OffsetDateTime::now_utc(), why.to_string()));
    }

    /// How many consumer loops failed, and when and why the last one did.
    pub fn loop_failures(&self) -> (u64, Option<(OffsetDateTime, String)>) {
        let last = self
            .last_loop_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        (self.loop_failures.load(Ordering::Relaxed), last)
    }

    /// Reads every counter.
    pub fn snapshot(&self) -> CounterSnapshot {
        let last = self.last_event_ms.load(Ordering::Relaxed);
        CounterSnapshot {
            delivered: self.delivered.load(Ordering::Relaxed),
            redelivered: self.redelivered.load(Ordering::Relaxed),
            claimed: self.claimed.load(Ordering::Relaxed),
            processed: self.processed.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            retried: self.retried.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
            expired: self.expired.load(Ordering::Relaxed),
            last_event_at: (last > 0)
                .then(|| {
                    OffsetDateTime::from_unix_timestamp_nanos(i128::from(last) * 1_000_000).ok()
                })
                .flatten(),
            loop_failures: self.loop_failures.load(Ordering::Relaxed),
        }
    }
}
