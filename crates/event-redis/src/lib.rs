#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod admin;
mod bus;
mod client;
mod clock;
mod config;
mod consumer;
mod core;
mod counters;
mod direct;
mod entry;
mod keys;
mod migration;
mod publish;
mod replay;
mod reply;
mod sourcing;
mod stats;

pub use bus::RedisBus;
pub use config::{RedisConfig, RedisConfigBuilder};
pub use migration::{GroupPosition, StreamEntry};
