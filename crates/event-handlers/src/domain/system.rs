//! [`SystemEventHandler`]: component health (last status and response time, degraded
//! components), errors by severity, and scheduled maintenance.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use event_core::{Event, EventType, HandlerError, JsonObject};
use serde::Serialize;
use time::OffsetDateTime;

use super::payloads::{SystemError, SystemHealthCheck, SystemMaintenance, decode};
use super::{RecentIds, lock};

/// A component's last reported health.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct ComponentHealth {
    /// The component.
    pub component: String,
    /// Its last status (`healthy`, `degraded`, `unhealthy`, ...).
    pub status: String,
    /// Its last response time, milliseconds.
    pub response_time_ms: Option<f64>,
    /// Details of the last check.
    pub details: Option<JsonObject>,
    /// When it was last checked.
    #[serde(with = "time::serde::rfc3339")]
    pub checked_at: OffsetDateTime,
    /// Health checks received.
    pub checks: u64,
    /// Errors reported for it.
    pub errors: u64,
}

/// One reported error.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct SystemErrorRecord {
    /// The component at fault.
    pub component: String,
    /// What went wrong.
    pub error_message: String,
    /// How bad (`low`, `medium`, `high`, `critical`).
    pub severity: String,
    /// A machine-readable code.
    pub error_code: Option<String>,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// A scheduled maintenance.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct MaintenanceWindow {
    /// The kind of maintenance.
    pub maintenance_type: String,
    /// When it starts.
    #[serde(with = "time::serde::rfc3339")]
    pub start_time: OffsetDateTime,
    /// How long it should take, as the publisher wrote it.
    pub estimated_duration: String,
    /// The components affected.
    pub affected_components: Vec<String>,
    /// When it was announced.
    #[serde(with = "time::serde::rfc3339")]
    pub announced_at: OffsetDateTime,
}

/// System status: the view of [`SystemEventHandler`].
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct SystemStatus {
    /// Every component reported, by name.
    pub components: BTreeMap<String, ComponentHealth>,
    /// Components whose last status is not `healthy`.
    pub degraded: Vec<String>,
    /// Errors reported, by severity.
    pub errors_by_severity: BTreeMap<String, u64>,
    /// The most recent errors (up to the view capacity), oldest first.
    pub recent_errors: Vec<SystemErrorRecord>,
    /// Maintenance announced, by start time (up to the view capacity).
    pub maintenance: Vec<MaintenanceWindow>,
}

impl SystemStatus {
    /// The component with this name.
    pub fn component(&self, name: &str) -> Option<&ComponentHealth> {
        self.components.get(name)
    }
}

#[derive(Debug)]
struct StatusState {
    seen: RecentIds,
    components: BTreeMap<String, ComponentHealth>,
    errors_by_severity: BTreeMap<String, u64>,
    errors_by_component: BTreeMap<String, u64>,
    recent_errors: VecDeque<SystemErrorRecord>,
    maintenance: Vec<MaintenanceWindow>,
}

/// Keeps component health, errors and maintenance. Handles `system.health_check`,
/// `system.error` and `system.maintenance`.
pub struct SystemEventHandler {
    capacity: usize,
    state: Mutex<StatusState>,
}

impl std::fmt::Debug for SystemEventHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SystemEventHandler").finish_non_exhaustive()
    }
}

impl SystemEventHandler {
    /// The handler's name (and consumer group suffix).
    pub const NAME: &'static str = "system";

    /// A handler keeping at most `capacity` recent errors and maintenance windows.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            state: Mutex::new(StatusState {
                seen: RecentIds::new(crate::view::RECENT_IDS),
                components: BTreeMap::new(),
                errors_by_severity: BTreeMap::new(),
                errors_by_component: BTreeMap::new(),
                recent_errors: VecDeque::new(),
                maintenance: Vec::new(),
            }),
        }
    }

    /// The event types it handles.
    pub fn event_types() -> Vec<EventType> {
        vec![
            EventType::SYSTEM_HEALTH_CHECK,
            EventType::SYSTEM_ERROR,
            EventType::SYSTEM_MAINTENANCE,
        ]
    }

    /// The status as it is now.
    pub fn status(&self) -> SystemStatus {
        let state = lock(&self.state);
        let mut components = state.components.clone();
        for (name, errors) in &state.errors_by_component {
            if let Some(c) = components.get_mut(name) {
                c.errors = *errors;
            }
        }
        SystemStatus {
            degraded: components
                .values()
                .filter(|c| !c.status.eq_ignore_ascii_case("healthy"))
                .map(|c| c.component.clone())
                .collect(),
            components,
            errors_by_severity: state.errors_by_severity.clone(),
            recent_errors: state.recent_errors.iter().cloned().collect(),
            maintenance: state.maintenance.clone(),
        }
    }

    fn apply(&self, state: &mut StatusState, event: &Event) -> Result<(), HandlerError> {
        let ty = &event.event_type;
        if *ty == EventType::SYSTEM_HEALTH_CHECK {
            let p: SystemHealthCheck = decode(event)?;
            let component = state
                .components
                .entry(p.component.clone())
                .or_insert_with(|| ComponentHealth {
                    component: p.component.clone(),
                    status: String::new(),
                    response_time_ms: None,
                    details: None,
                    checked_at: event.timestamp,
                    checks: 0,
                    errors: 0,
                });
            // Out-of-order checks (other partitions, replays) do not overwrite a newer one.
            if component.checks == 0 || event.timestamp >= component.checked_at {
                if !p.status.eq_ignore_ascii_case("healthy") {
                    tracing::warn!(component = %p.component, status = %p.status, "component not healthy");
                }
                component.status = p.status;
                component.response_time_ms = p.response_time_ms;
                component.details = p.details;
                component.checked_at = event.timestamp;
            }
            component.checks += 1;
        } else if *ty == EventType::SYSTEM_ERROR {
            let p: SystemError = decode(event)?;
            *state
                .errors_by_severity
                .entry(p.severity.clone())
                .or_default() += 1;
            *state
                .errors_by_component
                .entry(p.component.clone())
                .or_default() += 1;
            state.recent_errors.push_back(SystemErrorRecord {
                component: p.component,
                error_message: p.error_message,
                severity: p.severity,
                error_code: p.error_code,
                at: event.timestamp,
            });
            if state.recent_errors.len() > self.capacity {
                state.recent_errors.pop_front();
            }
        } else if *ty == EventType::SYSTEM_MAINTENANCE {
            let p: SystemMaintenance = decode(event)?;
            state.maintenance.push(MaintenanceWindow {
                maintenance_type: p.maintenance_type,
                start_time: p.start_time,
                estimated_duration: p.estimated_duration,
                affected_components: p.affected_components,
                announced_at: event.timestamp,
            });
            state.maintenance.sort_by_key(|m| m.start_time);
            if state.maintenance.len() > self.capacity {
                state.maintenance.remove(0);
            }
        } else {
            return Err(HandlerError::permanent(format!(
                "the system handler does not handle {} events",
                event.event_type
            )));
        }
        Ok(())
    }
}

domain_handler!(SystemEventHandler, status);
