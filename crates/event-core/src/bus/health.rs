//! [`Health`]: whether the bus and its consumers work.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::dispatch::HandlerCounters;

/// A consumer loop that failed (and was restarted) this recently degrades health: long
/// enough for a health check or an operator to see it, short enough that one old panic does
/// not mark a bus degraded for good. The count stays in [`ConsumerHealth::loop_failures`].
pub const RECENT_LOOP_FAILURE: Duration = Duration::from_secs(300);

/// Overall health.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    /// Everything works.
    Healthy,
    /// Working, with a problem (a stalled consumer, a misconfigured topic).
    Degraded,
    /// Not working (backend unreachable, bus shut down).
    Unhealthy,
}

/// The health of one consumer (one handler's subscriptions in this process).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ConsumerHealth {
    /// The handler.
    pub handler: String,
    /// At least one of its consumer loops is running.
    pub alive: bool,
    /// It has lag and has made no progress for `EVENT_STALL_TIMEOUT_MS`.
    pub stalled: bool,
    /// Retained events not yet delivered.
    pub lag: u64,
    /// Events in its dead-letter queue.
    pub dead_letter_depth: u64,
    /// Its consumer loops that panicked or ended unasked, each restarted by the bus.
    #[serde(default)]
    pub loop_failures: u64,
    /// The last such failure: what failed and how.
    #[serde(default)]
    pub last_loop_failure: Option<String>,
    /// When the last failure happened.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_loop_failure_at: Option<OffsetDateTime>,
}

impl ConsumerHealth {
    /// A consumer's health.
    pub fn new(
        handler: String,
        alive: bool,
        stalled: bool,
        lag: u64,
        dead_letter_depth: u64,
    ) -> Self {
        Self {
            handler,
            alive,
            stalled,
            lag,
            dead_letter_depth,
            loop_failures: 0,
            last_loop_failure: None,
            last_loop_failure_at: None,
        }
    }

    /// The same report with the loop failures recorded in the handler's counters.
    #[must_use]
    pub fn with_loop_failures(mut self, counters: &HandlerCounters) -> Self {
        let (count, last) = counters.loop_failures();
        self.loop_failures = count;
        if let Some((at, why)) = last {
            self.last_loop_failure_at = Some(at);
            self.last_loop_failure = Some(why);
        }
        self
    }

    /// Whether a loop failed within [`RECENT_LOOP_FAILURE`].
    fn failed_recently(&self) -> bool {
        self.last_loop_failure_at
            .is_some_and(|at| (OffsetDateTime::now_utc() - at).unsigned_abs() < RECENT_LOOP_FAILURE)
    }
}

/// The health of a bus.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Health {
    /// Overall status: the worst of the checks.
    pub status: HealthStatus,
    /// The backend's name.
    pub backend: String,
    /// Time of one round trip to the backend, if it has one.
    #[serde(with = "duration_ms_option")]
    pub round_trip: Option<Duration>,
    /// Each consumer.
    pub consumers: Vec<ConsumerHealth>,
    /// What is wrong, in words.
    pub problems: Vec<String>,
}

impl Health {
    /// The report of a bus that has been shut down.
    pub fn shut_down(backend: &str) -> Self {
        Self::unhealthy(backend, "the bus has been shut down".into())
    }

    /// An unhealthy report with one problem (the backend cannot be reached, say), no consumers.
    pub fn unhealthy(backend: &str, problem: String) -> Self {
        Self::assess(backend, None, Vec::new(), vec![problem], true)
    }

    /// Builds a report whose status follows from the problems and the consumers: unhealthy
    /// when `unhealthy` is set, degraded when there is any problem or a consumer is dead or
    /// stalled, healthy otherwise.
    pub fn assess(
        backend: &str,
        round_trip: Option<Duration>,
        consumers: Vec<ConsumerHealth>,
        mut problems: Vec<String>,
        unhealthy: bool,
    ) -> Self {
        for c in &consumers {
            if !c.alive {
                problems.push(format!("consumer {} is not running", c.handler));
            }
            if c.failed_recently() {
                problems.push(format!(
                    "consumer {}: a consumer loop failed and was restarted ({} failures so far; last: {})",
                    c.handler,
                    c.loop_failures,
                    c.last_loop_failure.as_deref().unwrap_or("unknown")
                ));
            }
            if c.alive && c.stalled {
                problems.push(format!(
                    "consumer {} is stalled with {} events of lag",
                    c.handler, c.lag
                ));
            }
        }
        let status = if unhealthy {
            HealthStatus::Unhealthy
        } else if problems.is_empty() {
            HealthStatus::Healthy
        } else {
            HealthStatus::Degraded
        };
        Self {
            status,
            backend: backend.to_string(),
            round_trip,
            consumers,
            problems,
        }
    }
}

mod duration_ms_option {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&(d.as_secs_f64() * 1000.0)),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<f64>::deserialize(d)?
            .filter(|ms| ms.is_finite() && *ms >= 0.0)
            .map(|ms| Duration::from_secs_f64(ms / 1000.0)))
    }
}
