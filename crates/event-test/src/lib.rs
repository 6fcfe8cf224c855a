#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod clock;
mod error;
mod harness;
mod recording;
mod records;

pub use error::{BusyHandler, RunningAttempt, TestBusError};
pub use harness::{DEFAULT_SETTLE_TIMEOUT, TestBus};
pub use records::{Attempt, Outcome, Published};
