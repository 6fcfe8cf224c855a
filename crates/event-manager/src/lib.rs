#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod backend;
mod component;
mod domain_handlers;
mod error;
mod global;
mod health;
#[cfg(feature = "http")]
pub mod http;
mod lifespan;
mod manager;
mod meter;
mod paging;
#[cfg(feature = "postgres")]
mod postgres;
mod registry;
mod settings;
mod stats;

pub use backend::{CapabilityReport, check_capabilities, connect_bus};
pub use component::{Component, ComponentError, ComponentReport, Shutdown};
pub use domain_handlers::{View, catalog_json};
pub use error::Error;

/// The former name of [`Error`].
#[deprecated(
    since = "0.1.0",
    note = "renamed to `event_manager::Error`, as every crate's error type"
)]
pub type ManagerError = Error;
pub use global::{
    event_bus_lifespan, get_event_bus, get_event_bus_manager, install, publish_event,
    subscribe_to_events, uninstall,
};
pub use health::ManagerHealth;
pub use lifespan::{listen_for_shutdown, shutdown_signal};
pub use manager::{EventBusManager, ManagerBuilder, ManagerState};
pub use paging::{ReplayCursor, ReplayPage, recent_events, replay_page};
#[cfg(feature = "postgres")]
pub use postgres::OutboxRelay;
pub use registry::HandlerOrigin;
pub use settings::{BusType, HandlerSelection, Settings, ViewsStore};
pub use stats::{HandlerReport, ManagerStats};
