#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod catalog;
mod domain;
mod domain_event;
mod error;
mod payloads;
mod publisher;

pub use catalog::{CatalogEntry, catalog, catalog_entry};
pub use domain::{
    AgentEventPublisher, MarketSignalEventPublisher, OpportunityEventPublisher,
    SystemEventPublisher, UserEventPublisher,
};
pub use domain_event::{DomainEvent, Upcaster};
pub use error::{Error, FieldError};
pub use payloads::{
    AgentError, AgentStarted, AgentStopped, AgentTaskCompleted, AgentTaskStarted,
    MAX_VALIDATION_SCORE, OpportunityCreated, OpportunityDeleted, OpportunityUpdated,
    OpportunityValidated, SignalClustered, SignalDetected, SignalProcessed, SystemError,
    SystemHealthCheck, SystemMaintenance, UserProfileUpdated, UserRegistered,
    UserReputationChanged, ValidationApproved, ValidationRejected, ValidationSubmitted,
};
pub use publisher::EventPublisher;
