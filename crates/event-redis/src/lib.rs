#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod admin;
mod bus;
mod client;
mod consumer;
mod entry;
mod keys;
mod publish;
mod replay;
mod sourcing;

pub use bus::RedisBus;
