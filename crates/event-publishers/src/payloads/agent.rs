//! `agent.*` payloads, published by [`AgentEventPublisher`](crate::AgentEventPublisher).

use event_core::{EventType, JsonObject};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::domain_event;
use crate::FieldError;

/// `agent.started`: an AI agent started. Key: `agent_id`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AgentStarted {
    /// The agent's id (required, not empty).
    pub agent_id: String,
    /// The kind of agent, such as `monitoring` (required, not empty).
    pub agent_type: String,
    /// The agent's configuration (optional).
    pub config: Option<JsonObject>,
    /// Extra fields (the original's `**kwargs`).
    #[serde(flatten)]
    pub extra: JsonObject,
}

domain_event! {
    AgentStarted: EventType::AGENT_STARTED, key = agent_id,
    validate(p) {
        FieldError::check_non_empty("agent_id", &p.agent_id)?;
        FieldError::check_non_empty("agent_type", &p.agent_type)
    }
}

/// `agent.stopped`: an AI agent stopped. Key: `agent_id`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AgentStopped {
    /// The agent's id (required, not empty).
    pub agent_id: String,
    /// The kind of agent (required, not empty).
    pub agent_type: String,
    /// Why it stopped (required, not empty).
    pub reason: String,
    /// How long it ran, in seconds (optional, >= 0).
    pub uptime_seconds: Option<f64>,
    /// Extra fields (the original's `**kwargs`).
    #[serde(flatten)]
    pub extra: JsonObject,
}

domain_event! {
    AgentStopped: EventType::AGENT_STOPPED, key = agent_id,
    validate(p) {
        FieldError::check_non_empty("agent_id", &p.agent_id)?;
        FieldError::check_non_empty("agent_type", &p.agent_type)?;
        FieldError::check_non_empty("reason", &p.reason)?;
        if let Some(uptime) = p.uptime_seconds {
            FieldError::check_non_negative("uptime_seconds", uptime)?;
        }
        Ok(())
    }
}

/// `agent.error`: an AI agent reported an error. Key: `agent_id`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AgentError {
    /// The agent's id (required, not empty).
    pub agent_id: String,
    /// The kind of agent (required, not empty).
    pub agent_type: String,
    /// What went wrong (required, not empty).
    pub error_message: String,
    /// The error's class or kind (optional).
    pub error_type: Option<String>,
    /// The stack trace (optional).
    pub stack_trace: Option<String>,
    /// Extra fields (the original's `**kwargs`).
    #[serde(flatten)]
    pub extra: JsonObject,
}

domain_event! {
    AgentError: EventType::AGENT_ERROR, key = agent_id,
    validate(p) {
        FieldError::check_non_empty("agent_id", &p.agent_id)?;
        FieldError::check_non_empty("agent_type", &p.agent_type)?;
        FieldError::check_non_empty("error_message", &p.error_message)
    }
}

/// `agent.task_completed`: an AI agent finished a task. Key: `agent_id`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AgentTaskCompleted {
    /// The agent's id (required, not empty).
    pub agent_id: String,
    /// The task's id (required, not empty).
    pub task_id: String,
    /// The kind of task (required, not empty).
    pub task_type: String,
    /// How long the task took, in seconds (required, >= 0).
    pub duration_seconds: f64,
    /// Whether it succeeded (default `true`).
    #[serde(default = "default_success")]
    pub success: bool,
    /// The task's result, any JSON value (optional).
    pub result: Option<Value>,
    /// Extra fields (the original's `**kwargs`).
    #[serde(flatten)]
    pub extra: JsonObject,
}

fn default_success() -> bool {
    true
}

impl Default for AgentTaskCompleted {
    fn default() -> Self {
        Self {
            agent_id: String::new(),
            task_id: String::new(),
            task_type: String::new(),
            duration_seconds: 0.0,
            success: default_success(),
            result: None,
            extra: JsonObject::new(),
        }
    }
}

domain_event! {
    AgentTaskCompleted: EventType::AGENT_TASK_COMPLETED, key = agent_id,
    validate(p) {
        FieldError::check_non_empty("agent_id", &p.agent_id)?;
        FieldError::check_non_empty("task_id", &p.task_id)?;
        FieldError::check_non_empty("task_type", &p.task_type)?;
        FieldError::check_non_negative("duration_seconds", p.duration_seconds)
    }
}

/// `agent.task_started`: an AI agent started a task. Key: `agent_id`.
///
/// Not one of the 20 standard types: the original's documentation calls
/// `agent_task_started`, but the original never had it. It is the custom type
/// [`AgentTaskStarted::EVENT_TYPE`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AgentTaskStarted {
    /// The agent's id (required, not empty).
    pub agent_id: String,
    /// The task's id (required, not empty).
    pub task_id: String,
    /// The kind of task (required, not empty).
    pub task_type: String,
    /// Extra fields.
    #[serde(flatten)]
    pub extra: JsonObject,
}

impl AgentTaskStarted {
    /// `agent.task_started`.
    pub const EVENT_TYPE: &'static str = "agent.task_started";
}

domain_event! {
    AgentTaskStarted: EventType::new(AgentTaskStarted::EVENT_TYPE)
        .expect("`agent.task_started` is a valid event type"),
    key = agent_id,
    validate(p) {
        FieldError::check_non_empty("agent_id", &p.agent_id)?;
        FieldError::check_non_empty("task_id", &p.task_id)?;
        FieldError::check_non_empty("task_type", &p.task_type)
    }
}
