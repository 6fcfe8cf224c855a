//! Two choices of a [`KafkaConfig`](super::KafkaConfig): compression and the assignment
//! strategy.

use std::fmt;

/// Compression of Kafka record batches (`KAFKA_COMPRESSION`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Compression {
    /// No compression.
    None,
    /// gzip.
    Gzip,
    /// Snappy.
    Snappy,
    /// LZ4 (the default).
    Lz4,
    /// Zstandard.
    Zstd,
}

impl Compression {
    pub(super) const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    /// The name used in `KAFKA_COMPRESSION`.
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

/// How a Kafka consumer group's leader spreads partitions over the members
/// (`KAFKA_ASSIGNMENT_STRATEGY`): the Java client's assignors of the same names, so Java
/// consumers can join the same group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KafkaAssignmentStrategy {
    /// `range` (the default): each member takes a contiguous range of each topic's partitions.
    Range,
    /// `roundrobin`: every partition of every topic dealt to the members in turn.
    RoundRobin,
}

impl KafkaAssignmentStrategy {
    /// The name used in `KAFKA_ASSIGNMENT_STRATEGY` and in Kafka's group protocol.
    pub fn as_str(self) -> &'static str {
        match self {
            KafkaAssignmentStrategy::Range => "range",
            KafkaAssignmentStrategy::RoundRobin => "roundrobin",
        }
    }
}

impl fmt::Display for KafkaAssignmentStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
