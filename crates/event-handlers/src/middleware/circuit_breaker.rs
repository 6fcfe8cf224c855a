//! [`CircuitBreakerLayer`]: pauses a handler whose dependency keeps failing.
//!
//! - **Closed**: events pass. `failure_threshold` consecutive failures that
//!   [count](CircuitBreakerLayer::classify) (transient ones, by default: a permanent error is
//!   about the event, not the dependency) open the circuit.
//! - **Open** for `open_for`: the handler is paused. By default each event waits until the
//!   circuit half-opens, so nothing burns its retries against a dependency known to be down;
//!   with [`fail_fast`](CircuitBreakerLayer::fail_fast) it fails at once as transient and the
//!   backend's backoff spaces the retries.
//! - **Half-open**: one trial event goes through while the others wait for its result. A
//!   success closes the circuit; a counted failure opens it again for `open_for`.
//!
//! A paused event is in flight as far as the bus is concerned: an unsubscribe or shutdown
//! waits for it at most `EVENT_SHUTDOWN_TIMEOUT_MS`, then leaves it unacknowledged, to be
//! delivered again. One breaker guards one wrapped handler (its state is not shared between
//! processes).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use event_core::{Event, EventHandler, HandlerError};
use tokio::sync::Notify;
use tokio::time::Instant;

/// Where a circuit is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    /// Events pass.
    Closed,
    /// The handler is paused until the given time.
    Open,
    /// One trial event is allowed through.
    HalfOpen,
}

/// Wraps a handler in [`CircuitBreaker`].
#[derive(Clone, Copy, Debug)]
pub struct CircuitBreakerLayer {
    failure_threshold: u32,
    open_for: Duration,
    fail_fast: bool,
    classify: fn(&HandlerError) -> bool,
}

impl Default for CircuitBreakerLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl CircuitBreakerLayer {
    /// Opens after 5 consecutive transient failures, for 30 seconds, pausing events meanwhile.
    pub fn new() -> Self {
        Self {
            failure_threshold: 5,
            open_for: Duration::from_secs(30),
            fail_fast: false,
            classify: HandlerError::is_transient,
        }
    }

    /// Consecutive counted failures that open the circuit (at least 1; default 5).
    pub fn failure_threshold(mut self, failures: u32) -> Self {
        self.failure_threshold = failures.max(1);
        self
    }

    /// How long the circuit stays open before a trial (default 30 s).
    pub fn open_for(mut self, duration: Duration) -> Self {
        self.open_for = duration;
        self
    }

    /// While open, fail each event at once as transient instead of waiting.
    pub fn fail_fast(mut self) -> Self {
        self.fail_fast = true;
        self
    }

    /// Which failures count towards opening (default: transient ones).
    pub fn classify(mut self, counts: fn(&HandlerError) -> bool) -> Self {
        self.classify = counts;
        self
    }
}

impl<H: EventHandler> tower::Layer<H> for CircuitBreakerLayer {
    type Service = CircuitBreaker<H>;

    fn layer(&self, inner: H) -> CircuitBreaker<H> {
        CircuitBreaker {
            inner,
            config: *self,
            state: Mutex::new(Breaker::default()),
            changed: Arc::new(Notify::new()),
        }
    }
}

#[derive(Debug, Default)]
struct Breaker {
    consecutive_failures: u32,
    /// Set while open or half-open: when the circuit (re)opened plus `open_for`.
    open_until: Option<Instant>,
    trial_in_flight: bool,
}

/// A handler that is paused while its dependency keeps failing; made by
/// [`CircuitBreakerLayer`].
#[derive(Debug)]
pub struct CircuitBreaker<H> {
    inner: H,
    config: CircuitBreakerLayer,
    state: Mutex<Breaker>,
    changed: Arc<Notify>,
}

/// What a call may do after looking at the breaker.
enum Admission {
    Pass { trial: bool },
    WaitUntil(Instant),
    WaitForTrial,
}

impl<H: EventHandler> CircuitBreaker<H> {
    /// The handler inside.
    pub fn inner(&self) -> &H {
        &self.inner
    }

    /// The circuit's state now.
    pub fn state(&self) -> CircuitState {
        let breaker = self.lock();
        match breaker.open_until {
            None => CircuitState::Closed,
            Some(until) if Instant::now() < until => CircuitState::Open,
            Some(_) => CircuitState::HalfOpen,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Breaker> {
        // The state is a few integers updated in one step each; a panic elsewhere cannot leave
        // it half-written, so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn admit(&self) -> Admission {
        let mut breaker = self.lock();
        match breaker.open_until {
            None => Admission::Pass { trial: false },
            Some(until) if Instant::now() < until => Admission::WaitUntil(until),
            Some(_) if breaker.trial_in_flight => Admission::WaitForTrial,
            Some(_) => {
                breaker.trial_in_flight = true;
                Admission::Pass { trial: true }
            }
        }
    }

    fn record(&self, result: &Result<(), HandlerError>, trial: bool) {
        let counts = matches!(result, Err(e) if (self.config.classify)(e));
        let mut breaker = self.lock();
        if trial {
            breaker.trial_in_flight = false;
        }
        if counts {
            breaker.consecutive_failures = breaker.consecutive_failures.saturating_add(1);
            let reopen = trial || breaker.open_until.is_some();
            if reopen || breaker.consecutive_failures >= self.config.failure_threshold {
                let was_closed = breaker.open_until.is_none();
                breaker.open_until = Some(Instant::now() + self.config.open_for);
                if was_closed {
                    ::metrics::counter!(
                        super::metric_names::CIRCUIT_OPENED,
                        "handler" => self.inner.name().to_owned(),
                    )
                    .increment(1);
                    ::metrics::gauge!(
                        super::metric_names::CIRCUIT_OPEN,
                        "handler" => self.inner.name().to_owned(),
                    )
                    .set(1.0);
                    tracing::warn!(
                        handler = self.inner.name(),
                        failures = breaker.consecutive_failures,
                        open_for = ?self.config.open_for,
                        "circuit opened: the handler is paused"
                    );
                }
            }
        } else if result.is_ok() || trial {
            // A success (or a trial that failed in a way that does not count) closes it.
            if breaker.open_until.is_some() {
                ::metrics::gauge!(
                    super::metric_names::CIRCUIT_OPEN,
                    "handler" => self.inner.name().to_owned(),
                )
                .set(0.0);
                tracing::info!(handler = self.inner.name(), "circuit closed");
            }
            breaker.consecutive_failures = 0;
            breaker.open_until = None;
        }
        drop(breaker);
        self.changed.notify_waiters();
    }
}

#[async_trait]
impl<H: EventHandler> EventHandler for CircuitBreaker<H> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn handle(&self, event: &Event) -> Result<(), HandlerError> {
        let trial = loop {
            // Registered before looking, so a change between the look and the wait is seen.
            let changed = self.changed.clone();
            let notified = changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.admit() {
                Admission::Pass { trial } => break trial,
                Admission::WaitUntil(until) if self.config.fail_fast => {
                    return Err(HandlerError::transient(format!(
                        "circuit of handler {} is open for another {:?}: its dependency keeps failing",
                        self.inner.name(),
                        until.saturating_duration_since(Instant::now())
                    )));
                }
                Admission::WaitForTrial if self.config.fail_fast => {
                    return Err(HandlerError::transient(format!(
                        "circuit of handler {} is half-open and its trial event is running",
                        self.inner.name()
                    )));
                }
                Admission::WaitUntil(until) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(until) => {}
                        () = &mut notified => {}
                    }
                }
                Admission::WaitForTrial => notified.await,
            }
        };
        // If this future is dropped mid-trial (a timeout outside), free the trial slot.
        let guard = TrialGuard {
            breaker: self,
            armed: trial,
        };
        let result = self.inner.handle(event).await;
        std::mem::forget(guard);
        self.record(&result, trial);
        result
    }

    async fn on_error(&self, event: &Event, error: &HandlerError, attempt: u32) {
        self.inner.on_error(event, error, attempt).await;
    }
}

/// Frees the half-open trial slot if the trial's future is dropped before it finishes.
struct TrialGuard<'a, H: EventHandler> {
    breaker: &'a CircuitBreaker<H>,
    armed: bool,
}

impl<H: EventHandler> Drop for TrialGuard<'_, H> {
    fn drop(&mut self) {
        if self.armed {
            self.breaker.lock().trial_in_flight = false;
            self.breaker.changed.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

    use super::*;
    use crate::middleware::SharedHandler;
    use event_core::{EventType, handler_fn};
    use tower::Layer;

    fn event() -> Event {
        Event::builder(EventType::AGENT_STARTED, "t")
            .build()
            .unwrap()
    }

    /// A dependency that fails while `down` is set, counting the calls that reached it.
    fn dependency(down: Arc<AtomicBool>, calls: Arc<AtomicU32>) -> SharedHandler {
        SharedHandler::new(handler_fn("flaky", move |_e| {
            let (down, calls) = (down.clone(), calls.clone());
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                if down.load(Ordering::SeqCst) {
                    Err(HandlerError::transient("dependency down"))
                } else {
                    Ok(())
                }
            }
        }))
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_the_threshold_fails_fast_then_closes_on_a_good_trial() {
        let down = Arc::new(AtomicBool::new(true));
        let calls = Arc::new(AtomicU32::new(0));
        let breaker = CircuitBreakerLayer::new()
            .failure_threshold(3)
            .open_for(Duration::from_secs(10))
            .fail_fast()
            .layer(dependency(down.clone(), calls.clone()));
        for _ in 0..3 {
            breaker.handle(&event()).await.unwrap_err();
        }
        assert_eq!(breaker.state(), CircuitState::Open);
        // Open: the dependency is not called.
        let error = breaker.handle(&event()).await.unwrap_err();
        assert!(
            error.is_transient() && error.message().contains("open"),
            "{error}"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        // After open_for, one trial; still down: open again.
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(breaker.state(), CircuitState::HalfOpen);
        breaker.handle(&event()).await.unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        assert_eq!(breaker.state(), CircuitState::Open);
        // Dependency back: the next trial closes the circuit.
        down.store(false, Ordering::SeqCst);
        tokio::time::advance(Duration::from_secs(11)).await;
        breaker.handle(&event()).await.unwrap();
        assert_eq!(breaker.state(), CircuitState::Closed);
        breaker.handle(&event()).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 6);
    }

    #[tokio::test(start_paused = true)]
    async fn paused_events_wait_for_the_trial_instead_of_failing() {
        let down = Arc::new(AtomicBool::new(true));
        let calls = Arc::new(AtomicU32::new(0));
        let breaker = Arc::new(
            CircuitBreakerLayer::new()
                .failure_threshold(1)
                .open_for(Duration::from_secs(10))
                .layer(dependency(down.clone(), calls.clone())),
        );
        breaker.handle(&event()).await.unwrap_err();
        assert_eq!(breaker.state(), CircuitState::Open);
        down.store(false, Ordering::SeqCst);
        // Paused events wait (virtual time moves on by itself), then succeed.
        let waiting: Vec<_> = (0..3)
            .map(|_| {
                let breaker = breaker.clone();
                tokio::spawn(async move { breaker.handle(&event()).await })
            })
            .collect();
        for task in waiting {
            task.await.unwrap().unwrap();
        }
        assert_eq!(breaker.state(), CircuitState::Closed);
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn permanent_failures_do_not_open_it() {
        let breaker = CircuitBreakerLayer::new()
            .failure_threshold(1)
            .layer(SharedHandler::new(handler_fn("picky", |_e| async {
                Err::<(), _>(HandlerError::permanent("bad event"))
            })));
        for _ in 0..3 {
            assert!(!breaker.handle(&event()).await.unwrap_err().is_transient());
        }
        assert_eq!(breaker.state(), CircuitState::Closed);
    }
}
