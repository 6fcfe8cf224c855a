//! [`RedisCounters`]: what one handler's Redis consumers record beyond the shared
//! [`HandlerCounters`](event_core::dispatch::HandlerCounters) (which counts entries dropped by
//! retention): dead letters that could not be stored. Each is also a metric (names in `docs/redis.md`) and
//! a log line, and a failing dead-letter store is a health problem while it lasts.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use time::OffsetDateTime;

/// The metric of failed attempts to store a dead letter (the entry stays pending).
pub(crate) const DEAD_LETTER_FAILURES_METRIC: &str = "eventbus_dead_letter_store_failures_total";
/// The metric of stream entries replay skipped because they are not events.
pub(crate) const REPLAY_SKIPPED_METRIC: &str = "eventbus_replay_skipped_entries_total";

/// Counts of one handler, shared by its subscriptions in this process.
#[derive(Debug, Default)]
pub(crate) struct RedisCounters {
    dead_letter_failures: AtomicU64,
    /// While dead letters cannot be stored: since when, and the last error. The next dead
    /// letter stored clears it.
    dead_letters_failing: Mutex<Option<(OffsetDateTime, String)>>,
}

impl RedisCounters {
    fn failing(&self) -> std::sync::MutexGuard<'_, Option<(OffsetDateTime, String)>> {
        self.dead_letters_failing
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records that storing a dead letter of `handler` failed for good (after its retries).
    pub(crate) fn dead_letter_failed(&self, handler: &str, why: &str) {
        self.dead_letter_failures.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(DEAD_LETTER_FAILURES_METRIC, "handler" => handler.to_string())
            .increment(1);
        let mut failing = self.failing();
        let since = failing
            .as_ref()
            .map_or_else(OffsetDateTime::now_utc, |(since, _)| *since);
        *failing = Some((since, why.to_string()));
    }

    /// Records that a dead letter was stored: the store works again.
    pub(crate) fn dead_letter_stored(&self) {
        let mut failing = self.failing();
        if failing.is_some() {
            *failing = None;
        }
    }

    /// The health problem of `handler` while its dead letters cannot be stored.
    pub(crate) fn problem(&self, handler: &str) -> Option<String> {
        let failing = self.failing();
        let (since, why) = failing.as_ref()?;
        Some(format!(
            "consumer {handler} cannot store dead letters since {since} ({} failures so far; last: {why}); their entries stay pending and are delivered again",
            self.dead_letter_failures.load(Ordering::Relaxed)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_store_is_a_problem_until_a_dead_letter_is_stored() {
        let counters = RedisCounters::default();
        assert_eq!(counters.problem("h"), None);
        counters.dead_letter_failed("h", "WRONGTYPE");
        counters.dead_letter_failed("h", "WRONGTYPE again");
        let problem = counters.problem("h").unwrap();
        assert!(
            problem.contains("consumer h cannot store dead letters")
                && problem.contains("2 failures")
                && problem.contains("WRONGTYPE again"),
            "{problem}"
        );
        counters.dead_letter_stored();
        assert_eq!(counters.problem("h"), None);
    }
}
