#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
#![recursion_limit = "256"]
#![warn(missing_docs)]

mod accumulator;
mod admin;
mod assignor;
mod bus;
mod config;
mod consumer;
mod control;
mod core;
mod data;
mod kafka_admin;
mod migration;
mod partitioner;
mod record;
mod replay;
mod topics;

pub use bus::KafkaBus;
pub use config::{
    Compression, KafkaAssignmentStrategy, KafkaConfig, KafkaConfigBuilder, KafkaSasl,
    KafkaSaslMechanism, KafkaTls,
};
pub use kafka_admin::{KafkaAdmin, KafkaCluster, KafkaPartition, KafkaTopic, MissingApi};
pub use migration::PartitionRecords;
