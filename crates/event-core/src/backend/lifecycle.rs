//! [`Lifecycle`]: whether a bus is open, its consumer loops, and how shutdown stops them.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::dispatch::{ConsumerHost, ConsumerSet, StopMode};
use crate::{Error, EventId, Health, SubscriptionSpec};

/// The life of one bus: open until shut down, with the consumer loops of its subscriptions.
///
/// A backend keeps it in an `Arc` (the [`Subscription`](crate::Subscription)s it hands out
/// hold one through [`dispatch::subscription`](crate::dispatch::subscription)), refuses work
/// with [`check_open`](Self::check_open) once shut down, and ends with
/// [`shutdown`](Self::shutdown).
#[derive(Debug)]
pub struct Lifecycle {
    closed: AtomicBool,
    consumers: ConsumerSet,
    shutdown_timeout: Duration,
    /// Shutdown delivers what was published first (a bus that keeps nothing afterwards).
    drains: bool,
}

impl Lifecycle {
    /// An open bus whose shutdown and unsubscribes wait `shutdown_timeout`
    /// (`EVENT_SHUTDOWN_TIMEOUT_MS`) for in-flight events; shutdown stops the loops at once
    /// ([`StopMode::Now`]): the log keeps what they did not take.
    pub fn new(shutdown_timeout: Duration) -> Self {
        Self {
            closed: AtomicBool::new(false),
            consumers: ConsumerSet::default(),
            shutdown_timeout,
            drains: false,
        }
    }

    /// Like [`new`](Self::new), for a bus that keeps nothing after shutdown: its loops deliver
    /// what was published before they stop ([`StopMode::Drain`]).
    pub fn draining(shutdown_timeout: Duration) -> Self {
        Self {
            drains: true,
            ..Self::new(shutdown_timeout)
        }
    }

    /// The consumer loops of the bus's subscriptions.
    pub fn consumers(&self) -> &ConsumerSet {
        &self.consumers
    }

    /// Whether the bus has been shut down.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Refuses `operation` (`publishes`, `subscriptions`) once the bus is shut down.
    ///
    /// # Errors
    /// [`Error::ShutDown`] when the bus is shut down.
    pub fn check_open(&self, operation: &'static str) -> Result<(), Error> {
        if self.is_closed() {
            return Err(Error::ShutDown { operation });
        }
        Ok(())
    }

    /// What every subscribe checks first: the spec is valid, and the bus is open.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a bad spec, [`Error::ShutDown`] when the bus is shut
    /// down.
    pub fn check_subscription(&self, spec: &SubscriptionSpec) -> Result<(), Error> {
        spec.validate()?;
        self.check_open("subscriptions")
    }

    /// Refuses a batch of `len` events once the bus is shut down.
    ///
    /// # Errors
    /// One [`Error::ShutDown`] per event when the bus is shut down: what `publish_batch`
    /// returns.
    pub fn check_open_batch(&self, len: usize) -> Result<(), Vec<Result<EventId, Error>>> {
        if self.is_closed() {
            return Err((0..len)
                .map(|_| {
                    Err(Error::ShutDown {
                        operation: "publishes",
                    })
                })
                .collect());
        }
        Ok(())
    }

    /// Marks the bus shut down; `true` for the first call only. The loops keep running until
    /// [`stop_consumers`](Self::stop_consumers).
    pub fn close(&self) -> bool {
        !self.closed.swap(true, Ordering::AcqRel)
    }

    /// Stops every consumer loop as shutdown does, waiting up to the shutdown timeout for
    /// their in-flight events. A second call waits too.
    pub async fn stop_consumers(&self) {
        let until = Instant::now() + self.shutdown_timeout;
        self.consumers.stop_all(self.shutdown_mode(until)).await;
    }

    /// [`close`](Self::close), then [`stop_consumers`](Self::stop_consumers); `true` for the
    /// first call only (the one that should release the backend's connections).
    pub async fn shutdown(&self) -> bool {
        let first = self.close();
        self.stop_consumers().await;
        first
    }

    /// Writes the `Debug` form of a bus: its type `name`, `fields` (never a secret), and
    /// whether it is closed.
    pub fn fmt_bus(
        &self,
        f: &mut std::fmt::Formatter<'_>,
        name: &str,
        fields: &[(&str, &dyn std::fmt::Debug)],
    ) -> std::fmt::Result {
        let mut out = f.debug_struct(name);
        for (field, value) in fields {
            out.field(field, value);
        }
        out.field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }

    /// The first steps of every health check: a bus shut down is
    /// [`Health::shut_down`] without asking the backend (its connection may be closed, and a
    /// ping would only wait for the error); otherwise `ping` runs and is timed, and a failure
    /// is [`Health::unhealthy`] with the problem `unreachable` describes.
    ///
    /// # Errors
    /// The [`Health`] to return at once: shut down, or the backend does not answer.
    pub async fn round_trip<T, E, F>(
        &self,
        backend: &str,
        ping: impl FnOnce() -> F,
        unreachable: impl FnOnce(E) -> String,
    ) -> Result<Duration, Health>
    where
        F: Future<Output = Result<T, E>>,
    {
        if self.is_closed() {
            return Err(Health::shut_down(backend));
        }
        let started = std::time::Instant::now();
        let answer = ping().await;
        let round_trip = started.elapsed();
        match answer {
            Ok(_) => Ok(round_trip),
            Err(e) => Err(Health::unhealthy(backend, unreachable(e))),
        }
    }
}

impl ConsumerHost for Lifecycle {
    fn consumers(&self) -> &ConsumerSet {
        Lifecycle::consumers(self)
    }

    fn is_closed(&self) -> bool {
        Lifecycle::is_closed(self)
    }

    fn shutdown_timeout(&self) -> Duration {
        self.shutdown_timeout
    }

    fn shutdown_mode(&self, until: Instant) -> StopMode {
        if self.drains {
            StopMode::Drain { until }
        } else {
            StopMode::Now { until }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HealthStatus;

    #[tokio::test]
    async fn shutdown_refuses_work_and_is_first_once() {
        let life = Lifecycle::new(Duration::from_millis(10));
        assert!(life.check_open("publishes").is_ok());
        assert!(life.check_open_batch(2).is_ok());
        assert!(life.shutdown().await);
        assert!(!life.shutdown().await);
        assert!(matches!(
            life.check_open("subscriptions"),
            Err(Error::ShutDown {
                operation: "subscriptions"
            })
        ));
        let refused = life.check_open_batch(3).unwrap_err();
        assert_eq!(refused.len(), 3);
        assert!(
            refused
                .iter()
                .all(|r| matches!(r, Err(Error::ShutDown { .. })))
        );
    }

    #[tokio::test]
    async fn health_of_a_closed_bus_asks_nothing() {
        let life = Lifecycle::draining(Duration::from_millis(10));
        let until = Instant::now();
        assert_eq!(life.shutdown_mode(until), StopMode::Drain { until });
        let rt = life
            .round_trip("test", || async { Ok::<(), String>(()) }, |e| e)
            .await;
        assert!(rt.is_ok());
        let down = life
            .round_trip("test", || async { Err::<(), _>("no".to_string()) }, |e| e)
            .await
            .unwrap_err();
        assert_eq!(down.status, HealthStatus::Unhealthy);
        life.close();
        let closed = life
            .round_trip(
                "test",
                || async { unreachable!("a closed bus is not pinged") as Result<(), String> },
                |e| e,
            )
            .await;
        assert!(matches!(closed, Err(h) if h.status == HealthStatus::Unhealthy));
    }
}
