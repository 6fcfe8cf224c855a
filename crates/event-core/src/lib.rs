#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod backend;
mod bus;
pub mod codec;
pub mod config;
pub mod dispatch;
pub mod encryption;
mod error;
mod event;
#[doc(hidden)]
pub mod fault;
mod fn_handler;
mod handler;
mod memory;
mod retry;
pub mod telemetry;
pub mod trace;

pub use bus::{
    AggregateAppend, BusStats, Capabilities, ConsumerHealth, DeadLetter, DeadLetterReason,
    DeadLetterSelection, EventBus, EventStream, ExpectedVersion, FailureRecord, GroupMemberStats,
    HandlerStats, Health, HealthStatus, RECENT_LOOP_FAILURE, RedriveReport, ReplayQuery,
    ReplayReport, StartFrom, Subscription, SubscriptionControl, SubscriptionSpec, Unpublished,
    replay_into,
};
pub use codec::JsonCodec;
pub use config::{Config, ConfigError, ConfigProblem, EnvSettings, redact_url};
pub use error::{BoxError, Error, ErrorKind, SharedSource};
pub use event::{
    CURRENT_SCHEMA_VERSION, Event, EventBuilder, EventId, EventType, JsonObject, timestamp,
};
pub use fn_handler::{FnHandler, handler_fn};
pub use handler::{EventHandler, FailureKind, HandlerError, ResultExt};
pub use memory::MemoryBus;
pub use retry::RetryPolicy;
