//! `system.*` payloads, published by [`SystemEventPublisher`](crate::SystemEventPublisher).

use event_core::{EventType, JsonObject};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::domain_event;
use crate::{DomainEvent, FieldError};

/// `system.health_check`: a component reported its health. Key: `component`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SystemHealthCheck {
    /// The component checked, such as `api` (required, not empty).
    pub component: String,
    /// Its status, such as `healthy`, `degraded` or `unhealthy` (required, not empty).
    pub status: String,
    /// How long the check took, in milliseconds (optional, >= 0).
    pub response_time_ms: Option<f64>,
    /// Anything else the check found (optional).
    pub details: Option<JsonObject>,
    /// Extra fields (the original's `**kwargs`).
    #[serde(flatten)]
    pub extra: JsonObject,
}

domain_event! {
    SystemHealthCheck: EventType::SYSTEM_HEALTH_CHECK, key = component,
    validate(p) {
        FieldError::check_non_empty("component", &p.component)?;
        FieldError::check_non_empty("status", &p.status)?;
        if let Some(ms) = p.response_time_ms {
            FieldError::check_non_negative("response_time_ms", ms)?;
        }
        Ok(())
    }
}

/// `system.error`: a component reported an error. Key: `component`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SystemError {
    /// The component at fault (required, not empty).
    pub component: String,
    /// What went wrong (required, not empty).
    pub error_message: String,
    /// How bad it is, such as `low`, `medium`, `high` or `critical` (default `medium`).
    #[serde(default = "default_severity")]
    pub severity: String,
    /// A machine-readable code, such as an exception's class name (optional).
    pub error_code: Option<String>,
    /// Extra fields (the original's `**kwargs`).
    #[serde(flatten)]
    pub extra: JsonObject,
}

fn default_severity() -> String {
    "medium".into()
}

impl Default for SystemError {
    fn default() -> Self {
        Self {
            component: String::new(),
            error_message: String::new(),
            severity: default_severity(),
            error_code: None,
            extra: JsonObject::new(),
        }
    }
}

domain_event! {
    SystemError: EventType::SYSTEM_ERROR, key = component,
    validate(p) {
        FieldError::check_non_empty("component", &p.component)?;
        FieldError::check_non_empty("error_message", &p.error_message)?;
        FieldError::check_non_empty("severity", &p.severity)
    }
}

/// `system.maintenance`: maintenance was scheduled. No partition key (the original had
/// none): maintenance events are ordered by nothing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SystemMaintenance {
    /// The kind of maintenance, such as `database_upgrade` (required, not empty).
    pub maintenance_type: String,
    /// When it starts: RFC 3339 in UTC on the wire (required).
    #[serde(with = "super::rfc3339")]
    #[schemars(with = "String", extend("format" = "date-time"))]
    pub start_time: OffsetDateTime,
    /// How long it is expected to take, as free text such as `2 hours` (required, not empty).
    pub estimated_duration: String,
    /// The components affected (required).
    pub affected_components: Vec<String>,
    /// Extra fields (the original's `**kwargs`).
    #[serde(flatten)]
    pub extra: JsonObject,
}

impl DomainEvent for SystemMaintenance {
    const PARTITION_KEY_FIELD: Option<&'static str> = None;

    fn event_type() -> EventType {
        EventType::SYSTEM_MAINTENANCE
    }

    fn partition_key(&self) -> Option<String> {
        None
    }

    fn validate(&self) -> Result<(), FieldError> {
        FieldError::check_non_empty("maintenance_type", &self.maintenance_type)?;
        FieldError::check_non_empty("estimated_duration", &self.estimated_duration)
    }
}
