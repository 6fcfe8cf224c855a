//! Decoding the typed payloads a domain handler reads.
//!
//! Temporary: until `event-publishers` lands, these private structs mirror its payload types
//! (same names, same fields, only those the handlers read); decoding then goes through
//! `DomainEvent::from_event`, which also upcasts older schema versions.

use event_core::{Event, HandlerError, JsonObject};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use time::OffsetDateTime;

/// Reads an event's payload as `T`; a payload that does not fit is a permanent failure
/// (retrying cannot fix it) naming the field.
pub(crate) fn decode<T: DeserializeOwned>(event: &Event) -> Result<T, HandlerError> {
    event.payload_as::<T>().map_err(HandlerError::permanent)
}

macro_rules! payload {
    ($name:ident { $($field:ident: $ty:ty $(= $default:literal)?),* $(,)? }) => {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        pub(crate) struct $name {
            $(
                $(#[serde(default = $default)])?
                pub(crate) $field: $ty,
            )*
        }
    };
}

fn default_true() -> bool {
    true
}
fn default_severity() -> String {
    "medium".into()
}
fn default_user_type() -> String {
    "user".into()
}
fn default_zero() -> f64 {
    0.0
}
fn default_usize() -> usize {
    0
}

payload!(OpportunityCreated { opportunity_id: String, title: String, description: String, ai_solution_type: String, market_size_estimate: Option<f64>, created_by: Option<String> });
payload!(OpportunityUpdated { opportunity_id: String, changes: JsonObject, updated_by: Option<String> });
payload!(OpportunityValidated { opportunity_id: String, validation_id: String, validator_id: String, validation_score: f64, validation_type: String, comments: Option<String> });
payload!(OpportunityDeleted { opportunity_id: String, deleted_by: String, reason: Option<String> });
payload!(ValidationSubmitted { validation_id: String, opportunity_id: String, validator_id: String, validation_type: String, validation_score: Option<f64> });
payload!(ValidationApproved { validation_id: String, opportunity_id: String, approved_by: Option<String>, validation_score: Option<f64> });
payload!(ValidationRejected { validation_id: String, opportunity_id: String, rejected_by: Option<String>, reason: String });
payload!(UserRegistered { user_id: String, email: String, username: Option<String>, user_type: String = "default_user_type" });
payload!(UserProfileUpdated {
    user_id: String,
    changes: JsonObject
});
payload!(UserReputationChanged {
    user_id: String,
    old_score: f64,
    new_score: f64,
    reason: String,
    change_amount: f64 = "default_zero"
});
payload!(AgentStarted {
    agent_id: String,
    agent_type: String
});
payload!(AgentStopped { agent_id: String, agent_type: String, reason: String, uptime_seconds: Option<f64> });
payload!(AgentError { agent_id: String, agent_type: String, error_message: String, error_type: Option<String> });
payload!(AgentTaskStarted {
    agent_id: String,
    task_id: String,
    task_type: String
});
payload!(AgentTaskCompleted {
    agent_id: String,
    task_id: String,
    task_type: String,
    duration_seconds: f64,
    success: bool = "default_true"
});
payload!(SignalDetected {
    signal_id: String,
    source: String,
    signal_type: String,
    content: String,
    confidence: f64
});
payload!(SignalProcessed { signal_id: String, processing_result: Value, quality_score: Option<f64>, extracted_keywords: Option<Vec<String>> });
payload!(SignalClustered { cluster_id: String, signal_ids: Vec<String>, cluster_theme: String, signal_count: usize = "default_usize" });
payload!(SystemHealthCheck { component: String, status: String, response_time_ms: Option<f64>, details: Option<JsonObject> });
payload!(SystemError { component: String, error_message: String, severity: String = "default_severity", error_code: Option<String> });

#[derive(Debug, Deserialize)]
pub(crate) struct SystemMaintenance {
    pub(crate) maintenance_type: String,
    #[serde(with = "time::serde::rfc3339")]
    pub(crate) start_time: OffsetDateTime,
    pub(crate) estimated_duration: String,
    pub(crate) affected_components: Vec<String>,
}

/// `agent.task_started`, the custom type the seed documents.
pub(crate) const AGENT_TASK_STARTED: &str = "agent.task_started";
