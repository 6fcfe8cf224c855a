#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod control;
mod data;
mod partitioner;
mod record;
