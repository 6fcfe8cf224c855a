#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod audit;
mod domain;
mod error;
pub mod middleware;
#[cfg(feature = "redis")]
mod redis_client;
mod registry;
mod view;

pub use audit::{AuditSettings, AuditSink, AuditSummary, AuditTrailHandler};
pub use domain::{
    AgentAlertPolicy, AgentEventHandler, AgentFleet, AgentStatus, AgentSummary, ComponentHealth,
    ConfidenceBucket, DeletedOpportunity, MaintenanceWindow, MarketSignalEventHandler,
    OpportunityCatalog, OpportunityChange, OpportunityEventHandler, OpportunityRecord,
    REANALYSIS_FIELDS, REANALYSIS_REQUESTED, ReanalysisRequest, ReputationEntry, SignalCluster,
    SignalFunnel, SignalSummary, SystemErrorRecord, SystemEventHandler, SystemStatus,
    UserDirectory, UserEventHandler, UserRecord, ValidationRecord,
};
pub use error::Error;

/// The former name of [`Error`].
#[deprecated(
    since = "0.1.0",
    note = "renamed to `event_handlers::Error`, as every crate's error type"
)]
pub type HandlersError = Error;
pub use registry::{
    DomainContext, DomainHandler, DomainHandlerKind, Thresholds, build, build_fold,
};
pub use view::{Fold, View};
