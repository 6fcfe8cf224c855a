//! [`Supervisor`]: runs a consumer loop as a task of its own and restarts it, with backoff,
//! when it panics or ends without being asked to; each failure is logged and counted where
//! health reads it.
//!
//! A loop that dies in silence is the one failure an at-least-once bus cannot afford: its
//! events stay taken (pending on Redis, owned partitions on Kafka) while health says all is
//! well. So every loop that can stop consuming runs under a supervisor.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::HandlerCounters;

/// The first pause before a restart; it doubles with each failure in a row.
const FIRST_PAUSE: Duration = Duration::from_millis(100);
/// The longest pause between restarts.
const MAX_PAUSE: Duration = Duration::from_secs(10);
/// A run that lasted this long was healthy: the next failure starts the backoff afresh.
const HEALTHY_RUN: Duration = Duration::from_secs(30);

/// Restarts one handler's loops and records their failures in its [`HandlerCounters`].
#[derive(Debug)]
pub struct Supervisor {
    handler: String,
    counters: Arc<HandlerCounters>,
    failures_in_row: u32,
    started: Option<Instant>,
}

/// Aborts the task when dropped, so a supervisor that is itself dropped (its bus gone) takes
/// its loop with it instead of leaving it running detached.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Supervisor {
    /// A supervisor of `handler`'s loops, counting failures in `counters`.
    pub fn new(handler: impl Into<String>, counters: Arc<HandlerCounters>) -> Self {
        Self {
            handler: handler.into(),
            counters,
            failures_in_row: 0,
            started: None,
        }
    }

    /// Runs `run` as a task of its own until it ends: its output, or why it did not give one
    /// (a panic, with its message).
    ///
    /// # Errors
    /// The panic message when the task panicked, or a note when it was cancelled.
    pub async fn run<T: Send + 'static>(
        &mut self,
        run: impl Future<Output = T> + Send + 'static,
    ) -> Result<T, String> {
        self.started = Some(Instant::now());
        let mut task = AbortOnDrop(tokio::spawn(run));
        match (&mut task.0).await {
            Ok(output) => Ok(output),
            Err(e) if e.is_panic() => Err(format!(
                "panicked: {}",
                super::lane::panic_message(&*e.into_panic())
            )),
            Err(e) => Err(format!("was cancelled: {e}")),
        }
    }

    /// Records that `what` failed for the reason `why` (logged at `error`, counted in the
    /// handler's counters, which health reads) and returns how long to wait before the
    /// restart: 100 ms, doubling up to 10 s while failures come in a row.
    pub fn failed(&mut self, what: &str, why: &str) -> Duration {
        if self.started.is_some_and(|s| s.elapsed() >= HEALTHY_RUN) {
            self.failures_in_row = 0;
        }
        self.failures_in_row = self.failures_in_row.saturating_add(1);
        let pause = FIRST_PAUSE
            .saturating_mul(1 << (self.failures_in_row - 1).min(10))
            .min(MAX_PAUSE);
        let message = format!("{what} {why}");
        self.counters.record_loop_failure(&message);
        tracing::error!(
            handler = %self.handler,
            failures_in_row = self.failures_in_row,
            restart_in = ?pause,
            "{message}; restarting it"
        );
        pause
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_is_reported_with_its_message_and_counted() {
        let counters = Arc::new(HandlerCounters::default());
        let mut supervisor = Supervisor::new("h", counters.clone());
        let outcome = supervisor.run(async { panic!("boom") }).await;
        let why = outcome.unwrap_err();
        assert_eq!(why, "panicked: boom");
        assert_eq!(supervisor.failed("the loop", &why), FIRST_PAUSE);
        assert_eq!(supervisor.failed("the loop", &why), FIRST_PAUSE * 2);
        let (count, last) = counters.loop_failures();
        assert_eq!(count, 2);
        assert_eq!(last.unwrap().1, "the loop panicked: boom");
    }

    #[tokio::test]
    async fn the_pause_is_capped() {
        let mut supervisor = Supervisor::new("h", Arc::new(HandlerCounters::default()));
        let pauses: Vec<Duration> = (0..20).map(|_| supervisor.failed("x", "y")).collect();
        assert_eq!(pauses.last(), Some(&MAX_PAUSE));
        assert!(pauses.windows(2).all(|w| w[0] <= w[1]));
    }
}
