//! [`RetryPolicy`]: how many times, and how long apart, a transient failure is retried.

use std::time::Duration;

/// Exponential backoff with jitter.
///
/// Attempt `n` (the first retry is `n = 1`) waits a random time in `[d/2, d]` where
/// `d = min(max_delay, base_delay * 2^(n-1))`. The randomness spreads the retries of many
/// failing events so they do not hit a recovering dependency at the same instant; the lower
/// bound keeps the backoff meaningful.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Retries after the first attempt (`EVENT_MAX_RETRIES`, default 3): an event is tried at
    /// most `max_retries + 1` times before it is dead-lettered.
    pub max_retries: u32,
    /// The first retry's nominal delay (`EVENT_RETRY_BASE_MS`, default 100 ms).
    pub base_delay: Duration,
    /// The cap on any delay (`EVENT_RETRY_MAX_MS`, default 30 s).
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 3,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// A policy with the given limits.
    pub fn new(max_retries: u32, base_delay: Duration, max_delay: Duration) -> Self {
        Self {
            max_retries,
            base_delay,
            max_delay: max_delay.max(base_delay),
        }
    }

    /// Whether an event that has failed `attempts` times may be tried again.
    pub fn should_retry(&self, attempts: u32) -> bool {
        attempts <= self.max_retries
    }

    /// The nominal (un-jittered) delay before retry number `retry` (from 1).
    pub fn nominal_delay(&self, retry: u32) -> Duration {
        let exponent = retry.saturating_sub(1).min(31);
        self.base_delay
            .checked_mul(1u32 << exponent)
            .unwrap_or(self.max_delay)
            .min(self.max_delay)
    }

    /// The delay before retry number `retry` (from 1), with jitter.
    pub fn delay(&self, retry: u32) -> Duration {
        let nominal = self.nominal_delay(retry);
        let half = nominal / 2;
        half + half.mul_f64(fastrand::f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn doubles_until_the_cap() {
        let p = RetryPolicy::new(5, Duration::from_millis(100), Duration::from_millis(500));
        let nominal: Vec<_> = (1..=5).map(|n| p.nominal_delay(n).as_millis()).collect();
        assert_eq!(nominal, [100, 200, 400, 500, 500]);
        assert!(p.should_retry(5));
        assert!(!p.should_retry(6));
    }

    proptest! {
        #[test]
        fn jittered_delay_stays_in_bounds(base in 1u64..10_000, max in 1u64..100_000, n in 1u32..100) {
            let p = RetryPolicy::new(3, Duration::from_millis(base), Duration::from_millis(max));
            let nominal = p.nominal_delay(n);
            let d = p.delay(n);
            prop_assert!(d <= nominal && d >= nominal / 2);
            prop_assert!(nominal <= p.max_delay);
        }
    }
}
