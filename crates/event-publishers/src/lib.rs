#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod batch;
mod catalog;
mod domain_event;
mod domain_publishers;
mod error;
mod payloads;
mod publisher;

pub use batch::{BatchPublisher, BatchSettings, FailedEvent, FlushReport, ScopeOutcome};
pub use catalog::{CatalogEntry, catalog, catalog_entry, envelope_schema};
pub use domain_event::{DomainEvent, Upcaster};
pub use domain_publishers::{
    AgentEventPublisher, MarketSignalEventPublisher, OpportunityEventPublisher,
    SystemEventPublisher, UserEventPublisher,
};
pub use error::{Error, FieldError};
pub use payloads::{
    AgentError, AgentStarted, AgentStopped, AgentTaskCompleted, AgentTaskStarted,
    MAX_VALIDATION_SCORE, OpportunityCreated, OpportunityDeleted, OpportunityUpdated,
    OpportunityValidated, SignalClustered, SignalDetected, SignalProcessed, SystemError,
    SystemHealthCheck, SystemMaintenance, UserProfileUpdated, UserRegistered,
    UserReputationChanged, ValidationApproved, ValidationRejected, ValidationSubmitted,
};
pub use publisher::EventPublisher;
