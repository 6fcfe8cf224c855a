//! [`Health`]: whether the bus and its consumers work.

use std::time::Duration;

use serde::{Deserialize, Serialize};

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
        }
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
            } else if c.stalled {
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
