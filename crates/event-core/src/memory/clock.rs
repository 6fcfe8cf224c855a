//! The in-memory bus's clock for retention: tokio's clock, so a test that pauses and advances
//! tokio's time (`#[tokio::test(start_paused = true)]` and `tokio::time::advance`, as the
//! `event-test` harness does) moves retention as it moves the retry timers.

use time::OffsetDateTime;
use tokio::time::Instant;

/// Unix milliseconds: the wall-clock time when the bus was made, plus how far tokio's clock
/// has moved since. On a running clock that is the wall clock, except that retention does not
/// jump when the wall clock is stepped (by NTP or by hand).
#[derive(Debug)]
pub(super) struct StoreClock {
    started_ms: i64,
    started: Instant,
}

impl StoreClock {
    pub(super) fn start() -> Self {
        Self {
            started_ms: (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64,
            started: Instant::now(),
        }
    }

    pub(super) fn now_ms(&self) -> i64 {
        let elapsed = Instant::now().saturating_duration_since(self.started);
        self.started_ms
            .saturating_add(i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
    }
}
