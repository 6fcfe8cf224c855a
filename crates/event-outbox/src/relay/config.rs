//! [`RelayConfig`]: how much a relay claims at once, how often it looks without being woken,
//! how it backs off, and how long delivered rows are kept.

use std::time::Duration;

/// A [`Relay`](crate::Relay)'s settings. Start from [`RelayConfig::default`] and change the
/// fields you need.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RelayConfig {
    /// At most this many events per `publish_batch` call, and keys per claim. Default 500.
    pub batch_size: usize,
    /// How many batches one round (one transaction) reads from the keys it claimed and
    /// publishes, one after the other, before it commits and releases them. While a batch is
    /// published, PostgreSQL records the one before, so more batches per round overlap more of
    /// the two; fewer hold the keys for less time (new keys wait for the next round, or another
    /// relay). Default 4.
    pub batches_per_round: usize,
    /// How many of the oldest pending rows a claim looks at to find keys that no other relay
    /// holds. Default 2000: with several relays, a relay whose window holds only keys that
    /// others hold claims nothing this round, and looks again at the next wake-up or poll.
    pub scan_window: usize,
    /// How often the relay looks for pending events when no notification came: the fallback
    /// for a lost `LISTEN` connection and for keys another relay held. Default 1 s.
    pub poll_interval: Duration,
    /// The first wait after a round that failed (PostgreSQL unreachable, a transient publish
    /// failure); doubled after each further failure up to [`max_backoff`](Self::max_backoff).
    /// Default 200 ms.
    pub retry_backoff: Duration,
    /// The longest wait between failing rounds. Default 30 s.
    pub max_backoff: Duration,
    /// How long delivered rows are kept before the clean-up deletes them. Default 24 hours.
    pub retention: Duration,
    /// How often the relay runs the clean-up. Default 1 minute.
    pub cleanup_interval: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            batch_size: 500,
            batches_per_round: 4,
            scan_window: 2000,
            poll_interval: Duration::from_secs(1),
            retry_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(30),
            retention: Duration::from_secs(24 * 3600),
            cleanup_interval: Duration::from_secs(60),
        }
    }
}

/// The waits between failing rounds: [`RelayConfig::retry_backoff`], doubled up to
/// [`RelayConfig::max_backoff`].
#[derive(Debug)]
pub(crate) struct Backoff {
    first: Duration,
    max: Duration,
    next: Option<Duration>,
}

impl Backoff {
    pub(crate) fn new(config: &RelayConfig) -> Self {
        Self {
            first: config.retry_backoff,
            max: config.max_backoff.max(config.retry_backoff),
            next: None,
        }
    }

    /// The wait after one more failure.
    pub(crate) fn failed(&mut self) -> Duration {
        let wait = self.next.unwrap_or(self.first);
        self.next = Some((wait * 2).min(self.max));
        wait
    }

    /// A round succeeded: the next failure waits [`RelayConfig::retry_backoff`] again.
    pub(crate) fn reset(&mut self) {
        self.next = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_maximum_and_resets() {
        let config = RelayConfig {
            retry_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(300),
            ..RelayConfig::default()
        };
        let mut backoff = Backoff::new(&config);
        let waits: Vec<u128> = (0..4).map(|_| backoff.failed().as_millis()).collect();
        assert_eq!(waits, [100, 200, 300, 300]);
        backoff.reset();
        assert_eq!(backoff.failed(), Duration::from_millis(100));
    }
}
