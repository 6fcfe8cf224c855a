//! Decoding the typed payloads of `event-publishers`: `DomainEvent::from_event` checks the
//! type and runs the upcasters, so the handlers always read the current shape whatever
//! schema version the producer wrote.

use event_core::{Event, HandlerError};
use event_publishers::DomainEvent;

pub(crate) use event_publishers::{
    AgentError, AgentStarted, AgentStopped, AgentTaskCompleted, AgentTaskStarted,
    OpportunityCreated, OpportunityDeleted, OpportunityUpdated, OpportunityValidated,
    SignalClustered, SignalDetected, SignalProcessed, SystemError, SystemHealthCheck,
    SystemMaintenance, UserProfileUpdated, UserRegistered, UserReputationChanged,
    ValidationApproved, ValidationRejected, ValidationSubmitted,
};

/// Reads an event's payload as `T`. A payload that does not fit (a required field missing,
/// a schema version newer than this build) is a permanent failure naming the field: retrying
/// cannot fix it, so it goes to the dead-letter queue, from which it can be redriven once a
/// newer build is deployed.
pub(crate) fn decode<T: DomainEvent>(event: &Event) -> Result<T, HandlerError> {
    T::from_event(event).map_err(HandlerError::permanent)
}

/// `agent.task_started`, the custom type the seed documents.
pub(crate) const AGENT_TASK_STARTED: &str = AgentTaskStarted::EVENT_TYPE;
