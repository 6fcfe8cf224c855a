//! [`ManagerHealth`]: is the bus reachable, are the consumers alive, how deep are the
//! dead-letter queues, are the supervised components running.

use event_core::{ConsumerHealth, HealthStatus};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::EventBusManager;
use crate::component::ComponentReport;
use crate::manager::ManagerState;
use crate::stats::state_name;

/// The health of the manager and its bus.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ManagerHealth {
    /// `healthy`, `degraded` (working, with a problem: a consumer dead or stalled, a handler
    /// not subscribed) or `unhealthy` (not running, backend unreachable).
    pub status: HealthStatus,
    /// The backend.
    pub backend: String,
    /// `running`, `stopped`, ...
    pub state: String,
    /// One round trip to the backend, in milliseconds.
    pub round_trip_ms: Option<f64>,
    /// Each consumer: alive or not, stalled or not, lag, dead-letter depth.
    pub consumers: Vec<ConsumerHealth>,
    /// Events in every dead-letter queue together.
    pub dead_letter_depth: u64,
    /// Registered handlers.
    pub handlers_count: usize,
    /// The supervised components ([`ManagerBuilder::component`](crate::ManagerBuilder::component)):
    /// running or restarting, and their failures.
    #[serde(default)]
    pub components: Vec<ComponentReport>,
    /// What is wrong, in words.
    pub problems: Vec<String>,
    /// When this was checked.
    #[serde(with = "time::serde::rfc3339")]
    pub timestamp: OffsetDateTime,
}

impl ManagerHealth {
    /// Whether the status is healthy.
    pub fn is_healthy(&self) -> bool {
        self.status == HealthStatus::Healthy
    }
}

impl EventBusManager {
    /// Checks the bus and its consumers. Never fails: a manager that is not running, or a bus
    /// that cannot be reached, is an unhealthy report. A registered handler without an active
    /// subscription makes it degraded. Dead letters are counted but do not degrade it: they
    /// are a queue for people to look at, not a failure of the bus.
    pub async fn health(&self) -> ManagerHealth {
        let state = self.state();
        let registrations = self.registrations();
        let Ok(bus) = self.bus() else {
            return ManagerHealth {
                status: HealthStatus::Unhealthy,
                backend: self.settings().bus_type.to_string(),
                state: state_name(state),
                round_trip_ms: None,
                consumers: Vec::new(),
                dead_letter_depth: 0,
                handlers_count: registrations.len(),
                components: Vec::new(),
                problems: vec![match state {
                    ManagerState::Starting => "the event bus is starting".to_string(),
                    ManagerState::Stopping => "the event bus is stopping".to_string(),
                    _ => "the event bus is not running".to_string(),
                }],
                timestamp: OffsetDateTime::now_utc(),
            };
        };
        let health = bus.health().await;
        let mut status = health.status;
        let mut problems = health.problems;
        for r in &registrations {
            if !r.subscribed {
                problems.push(format!(
                    "handler {} is registered but not subscribed",
                    r.name
                ));
                status = status.max(HealthStatus::Degraded);
            }
        }
        let components = self.component_reports();
        let (component_status, component_problems) = crate::component::health(&components).await;
        status = status.max(component_status);
        problems.extend(component_problems);
        ManagerHealth {
            status,
            backend: health.backend,
            state: state_name(state),
            round_trip_ms: health.round_trip.map(|d| d.as_secs_f64() * 1000.0),
            dead_letter_depth: health.consumers.iter().map(|c| c.dead_letter_depth).sum(),
            consumers: health.consumers,
            handlers_count: registrations.len(),
            components: components.into_iter().map(|(_, r)| r).collect(),
            problems,
            timestamp: OffsetDateTime::now_utc(),
        }
    }
}
