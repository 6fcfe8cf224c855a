//! [`RateMeter`] and [`Metered`]: how many events a handler finished per second over the last
//! minute, measured in the process whatever the backend.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use event_core::{Event, EventHandler, HandlerError};

/// The window the rate is measured over, in seconds.
const WINDOW_SECS: u64 = 60;

/// Counts events in one-second buckets over the last minute.
#[derive(Debug)]
pub(crate) struct RateMeter {
    started: Instant,
    /// `(second since start, events finished in it)`, indexed by `second % WINDOW_SECS`.
    buckets: Mutex<[(u64, u64); WINDOW_SECS as usize]>,
}

impl RateMeter {
    pub(crate) fn new() -> Self {
        Self {
            started: Instant::now(),
            buckets: Mutex::new([(u64::MAX, 0); WINDOW_SECS as usize]),
        }
    }

    fn now_secs(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// Counts one finished event.
    pub(crate) fn record(&self) {
        self.record_at(self.now_secs());
    }

    fn record_at(&self, second: u64) {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let slot = &mut buckets[(second % WINDOW_SECS) as usize];
        if slot.0 == second {
            slot.1 += 1;
        } else {
            *slot = (second, 1);
        }
    }

    /// Events per second over the last minute (over the time since the meter started, when
    /// that is shorter, and at least one second).
    pub(crate) fn per_second(&self) -> f64 {
        let elapsed = self.started.elapsed().as_secs_f64();
        self.per_second_at(self.now_secs(), elapsed)
    }

    fn per_second_at(&self, now: u64, elapsed: f64) -> f64 {
        let buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let oldest = now.saturating_sub(WINDOW_SECS - 1);
        let count: u64 = buckets
            .iter()
            .filter(|(second, _)| *second != u64::MAX && *second >= oldest && *second <= now)
            .map(|(_, n)| n)
            .sum();
        count as f64 / elapsed.clamp(1.0, WINDOW_SECS as f64)
    }
}

/// A handler that counts its successes in a [`RateMeter`]; otherwise the handler it wraps.
pub(crate) struct Metered {
    inner: Arc<dyn EventHandler>,
    meter: Arc<RateMeter>,
}

impl Metered {
    pub(crate) fn new(inner: Arc<dyn EventHandler>, meter: Arc<RateMeter>) -> Self {
        Self { inner, meter }
    }
}

#[async_trait]
impl EventHandler for Metered {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn handle(&self, event: &Event) -> Result<(), HandlerError> {
        let result = self.inner.handle(event).await;
        if result.is_ok() {
            self.meter.record();
        }
        result
    }

    async fn on_error(&self, event: &Event, error: &HandlerError, attempt: u32) {
        self.inner.on_error(event, error, attempt).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_the_last_minute_only() {
        let meter = RateMeter::new();
        for _ in 0..30 {
            meter.record_at(0);
        }
        for _ in 0..90 {
            meter.record_at(59);
        }
        // 120 events over a full minute.
        assert_eq!(meter.per_second_at(59, 60.0), 2.0);
        // A minute later the first second has left the window.
        assert_eq!(meter.per_second_at(60, 61.0), 1.5);
        // Two minutes later nothing is left.
        assert_eq!(meter.per_second_at(200, 201.0), 0.0);
    }

    #[test]
    fn a_young_meter_divides_by_its_age() {
        let meter = RateMeter::new();
        for _ in 0..10 {
            meter.record_at(1);
        }
        assert_eq!(meter.per_second_at(1, 2.0), 5.0);
        assert_eq!(meter.per_second_at(1, 0.2), 10.0);
    }

    #[test]
    fn a_reused_slot_starts_again() {
        let meter = RateMeter::new();
        meter.record_at(3);
        meter.record_at(63);
        assert_eq!(meter.per_second_at(63, 60.0), 1.0 / 60.0);
    }
}
