//! [`KafkaConfigBuilder`]: a [`KafkaConfig`] built in code, checked by the environment's rules.

use std::time::Duration;

use event_core::{ConfigError, EnvSettings as _};

use super::{Compression, KafkaAssignmentStrategy, KafkaConfig, KafkaSasl, KafkaTls};

/// Builds a [`KafkaConfig`] in code; [`build`](Self::build) applies the environment's rules.
#[derive(Clone, Debug)]
pub struct KafkaConfigBuilder {
    config: KafkaConfig,
}

impl KafkaConfigBuilder {
    pub(super) fn new(config: KafkaConfig) -> Self {
        Self { config }
    }

    /// `KAFKA_BOOTSTRAP_SERVERS`.
    pub fn bootstrap_servers(
        mut self,
        servers: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        self.config.bootstrap_servers = servers.into_iter().map(Into::into).collect();
        self
    }

    /// `KAFKA_TOPIC_PREFIX`.
    pub fn topic_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.config.topic_prefix = prefix.into();
        self
    }

    /// `KAFKA_RETENTION_MS`.
    pub fn retention(mut self, retention: Duration) -> Self {
        self.config.retention = retention;
        self
    }

    /// `KAFKA_PARTITIONS`.
    pub fn partitions(mut self, partitions: u32) -> Self {
        self.config.partitions = partitions;
        self
    }

    /// `KAFKA_REPLICATION_FACTOR`.
    pub fn replication_factor(mut self, factor: u16) -> Self {
        self.config.replication_factor = factor;
        self
    }

    /// `KAFKA_MIN_INSYNC_REPLICAS`: `min.insync.replicas` of new topics (`None`: the
    /// broker's).
    pub fn min_insync_replicas(mut self, replicas: impl Into<Option<u16>>) -> Self {
        self.config.min_insync_replicas = replicas.into();
        self
    }

    /// `KAFKA_COMPRESSION`.
    pub fn compression(mut self, compression: Compression) -> Self {
        self.config.compression = compression;
        self
    }

    /// `KAFKA_SASL_*`.
    pub fn sasl(mut self, sasl: KafkaSasl) -> Self {
        self.config.sasl = Some(sasl);
        self
    }

    /// `KAFKA_TLS_*`.
    pub fn tls(mut self, tls: KafkaTls) -> Self {
        self.config.tls = Some(tls);
        self
    }

    /// `KAFKA_SESSION_TIMEOUT_MS`.
    pub fn session_timeout(mut self, timeout: Duration) -> Self {
        self.config.session_timeout = timeout;
        self
    }

    /// `KAFKA_HEARTBEAT_INTERVAL_MS`.
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.config.heartbeat_interval = interval;
        self
    }

    /// `KAFKA_REBALANCE_TIMEOUT_MS`.
    pub fn rebalance_timeout(mut self, timeout: Duration) -> Self {
        self.config.rebalance_timeout = timeout;
        self
    }

    /// `KAFKA_METADATA_MAX_AGE_MS`: how often partition counts are read again.
    pub fn metadata_max_age(mut self, age: Duration) -> Self {
        self.config.metadata_max_age = age;
        self
    }

    /// `KAFKA_GROUP_INSTANCE_ID`.
    pub fn group_instance_id(mut self, id: impl Into<String>) -> Self {
        self.config.group_instance_id = Some(id.into());
        self
    }

    /// `KAFKA_ASSIGNMENT_STRATEGY`.
    pub fn assignment_strategy(mut self, strategy: KafkaAssignmentStrategy) -> Self {
        self.config.assignment_strategy = strategy;
        self
    }

    /// The settings, checked against the same rules as the environment.
    ///
    /// # Errors
    /// A [`ConfigError`] listing every bad value.
    pub fn build(self) -> Result<KafkaConfig, ConfigError> {
        self.config.validate()?;
        Ok(self.config)
    }
}
