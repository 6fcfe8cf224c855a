#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod error;
mod inbox;
mod migrate;
mod outbox;
mod relay;
#[cfg(feature = "views")]
mod views;

pub use error::OutboxError;
pub use inbox::{
    InboxConfig, InboxHandler, InboxLayer, InboxStats, InboxTransaction, TransactionalHandler,
    clean_inbox,
};
pub use migrate::{MigrationReport, check_schema, migrate};
pub use outbox::{DEFAULT_CHANNEL, Outbox, OutboxStats, ParkedEvent};
#[doc(hidden)]
pub use relay::AfterPublish;
pub use relay::{Relay, RelayConfig, RelayHandle, RelayStats, RoundReport};
#[cfg(feature = "views")]
pub use views::PostgresView;
