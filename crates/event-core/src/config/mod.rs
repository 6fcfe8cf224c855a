//! [`Config`]: every setting of the bus, read from the environment with errors that say what
//! to fix.

mod error;
mod parse;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

pub use error::{ConfigError, ConfigProblem};
pub use parse::redact_url;
pub(crate) use parse::valid_handler_name;

use crate::RetryPolicy;

/// Which backend `EVENT_BUS_TYPE` selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BusType {
    /// The embedded in-memory bus ([`MemoryBus`](crate::MemoryBus)).
    Memory,
    /// Redis Streams (the `event-redis` crate).
    Redis,
    /// Apache Kafka (the `event-kafka` crate).
    Kafka,
}

impl BusType {
    /// The name used in `EVENT_BUS_TYPE`.
    pub fn as_str(self) -> &'static str {
        match self {
            BusType::Memory => "memory",
            BusType::Redis => "redis",
            BusType::Kafka => "kafka",
        }
    }
}

impl fmt::Display for BusType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

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

/// A SASL mechanism for Kafka (`KAFKA_SASL_MECHANISM`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KafkaSaslMechanism {
    /// `PLAIN`: the password travels as is, so use it with TLS outside a trusted network.
    Plain,
    /// `SCRAM-SHA-256` (RFC 5802, RFC 7677): the password never leaves the client.
    ScramSha256,
    /// `SCRAM-SHA-512`.
    ScramSha512,
}

impl KafkaSaslMechanism {
    /// The name used in `KAFKA_SASL_MECHANISM` and in Kafka's own settings.
    pub fn as_str(self) -> &'static str {
        match self {
            KafkaSaslMechanism::Plain => "PLAIN",
            KafkaSaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            KafkaSaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

impl fmt::Display for KafkaSaslMechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
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

/// Which handlers `ENABLED_EVENT_HANDLERS` turns on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HandlerSelection {
    /// `all` (any case): every known handler.
    All,
    /// A comma-separated list of handler names, trimmed, empty entries dropped. The manager
    /// checks the names against the handlers it knows.
    Only(Vec<String>),
}

impl HandlerSelection {
    /// Whether the handler called `name` is selected.
    pub fn includes(&self, name: &str) -> bool {
        match self {
            HandlerSelection::All => true,
            HandlerSelection::Only(names) => names.iter().any(|n| n == name),
        }
    }
}

/// Every setting of the event bus.
///
/// [`Config::from_env`] reads the variables of `docs/configuration.md`; each field's doc names
/// its variable and default. A bad value is a [`ConfigError`] that names the variable, the
/// value (with secrets removed) and what is allowed, and lists every problem at once.
///
/// ```
/// use event_core::{BusType, Config};
///
/// let config = Config::from_vars([("EVENT_BUS_TYPE", "memory"), ("EVENT_MAX_RETRIES", "5")])?;
/// assert_eq!(config.bus_type, BusType::Memory);
/// assert_eq!(config.max_retries, 5);
///
/// let err = Config::from_vars([("KAFKA_PARTITIONS", "0")]).unwrap_err();
/// assert!(err.to_string().contains("KAFKA_PARTITIONS"));
/// # Ok::<(), event_core::ConfigError>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// `EVENT_BUS_TYPE`: `memory` (default), `redis` or `kafka`.
    pub bus_type: BusType,
    /// `ENABLE_EVENT_SOURCING` (default `true`): aggregate append and load are allowed.
    pub enable_event_sourcing: bool,
    /// `ENABLE_EVENT_REPLAY` (default `true`): replay is allowed.
    pub enable_event_replay: bool,
    /// `EVENT_BATCH_SIZE` (default 100): events per batch publisher flush and per consumer read.
    pub batch_size: usize,
    /// `EVENT_FLUSH_INTERVAL_MS` (default 1000): the batch publisher's flush timer.
    pub flush_interval: Duration,
    /// `REDIS_URL` (default `redis://localhost:6379/0`). May hold a password: it is never
    /// printed by `Debug`.
    pub redis_url: String,
    /// `REDIS_KEY_PREFIX` (default `ai-opportunity`): every Redis key starts with
    /// `{prefix}:`.
    pub redis_key_prefix: String,
    /// `REDIS_TLS_CA_FILE` (default unset): a PEM file with the certificate of the CA that
    /// signed the Redis server's certificate. When set, `rediss://` trusts these certificates
    /// instead of the system's roots (a private CA, a self-signed server); when unset it
    /// trusts the system's roots. Allowed only with a `rediss://` `REDIS_URL`; the file is
    /// read when the bus connects.
    pub redis_tls_ca_file: Option<PathBuf>,
    /// `EVENT_TTL_SECONDS` (default 604800, 7 days): how long Redis and memory keep events.
    pub event_ttl: Duration,
    /// `KAFKA_BOOTSTRAP_SERVERS` (default `localhost:9092`), comma-separated `host:port`.
    pub kafka_bootstrap_servers: Vec<String>,
    /// `KAFKA_TOPIC_PREFIX` (default `ai-opportunity`).
    pub kafka_topic_prefix: String,
    /// `EVENT_CONSUMER_GROUP`, or its alias `KAFKA_CONSUMER_GROUP` (default
    /// `ai-opportunity-consumers`): handler groups are `{consumer_group}.{handler}`.
    pub consumer_group: String,
    /// `KAFKA_RETENTION_MS` (default 604800000, 7 days).
    pub kafka_retention: Duration,
    /// `KAFKA_PARTITIONS` (default 3), 1 to 10000.
    pub kafka_partitions: u32,
    /// `KAFKA_REPLICATION_FACTOR` (default 1), 1 to 32767.
    pub kafka_replication_factor: u16,
    /// `KAFKA_COMPRESSION` (default `lz4`); `ENABLE_EVENT_COMPRESSION=false` means `none`.
    pub kafka_compression: Compression,
    /// `KAFKA_SASL_MECHANISM` (default unset: no authentication): `PLAIN`, `SCRAM-SHA-256`
    /// or `SCRAM-SHA-512`, any case. Needs `kafka_sasl_username` and `kafka_sasl_password`.
    pub kafka_sasl_mechanism: Option<KafkaSaslMechanism>,
    /// `KAFKA_SASL_USERNAME` (default unset; empty is unset): the SASL user. Allowed only with
    /// a mechanism.
    pub kafka_sasl_username: Option<String>,
    /// `KAFKA_SASL_PASSWORD` (default unset; empty is unset): the SASL password, taken as is
    /// (not trimmed). Allowed only with a mechanism. Never printed: `Debug`,
    /// [`Config::redacted`] and [`ConfigError`] show `***`.
    pub kafka_sasl_password: Option<String>,
    /// `KAFKA_TLS_ENABLED` (default `false`, or `true` when any `KAFKA_TLS_*_FILE` is set):
    /// connect to the brokers with TLS. The brokers' certificates are always verified and must
    /// name the host the client connects to.
    pub kafka_tls_enabled: bool,
    /// `KAFKA_TLS_CA_FILE` (default unset: the system's roots): a PEM file with the CA
    /// certificates that sign the brokers' certificates. Read when the bus connects.
    pub kafka_tls_ca_file: Option<PathBuf>,
    /// `KAFKA_TLS_CERT_FILE` (default unset): a PEM file with the client's certificate chain,
    /// for brokers that require client certificates (`ssl.client.auth=required`). Needs
    /// `kafka_tls_key_file`.
    pub kafka_tls_cert_file: Option<PathBuf>,
    /// `KAFKA_TLS_KEY_FILE` (default unset): a PEM file with the private key of
    /// `kafka_tls_cert_file`. Needs `kafka_tls_cert_file`.
    pub kafka_tls_key_file: Option<PathBuf>,
    /// `KAFKA_SESSION_TIMEOUT_MS` (default 45000, as the Java client): a group member that sends
    /// no heartbeat for this long is removed and its partitions go to the others. The broker
    /// accepts 6000 to 1800000 unless its `group.min/max.session.timeout.ms` say otherwise.
    pub kafka_session_timeout: Duration,
    /// `KAFKA_HEARTBEAT_INTERVAL_MS` (default 3000): how often a member tells the group
    /// coordinator it is alive; below `KAFKA_SESSION_TIMEOUT_MS`, usually a third of it or less.
    pub kafka_heartbeat_interval: Duration,
    /// `KAFKA_REBALANCE_TIMEOUT_MS` (default 60000): how long the coordinator waits for every
    /// member to rejoin during a rebalance, and so how long a member may spend finishing the
    /// events of the partitions it gives up before it abandons them (they are delivered again).
    pub kafka_rebalance_timeout: Duration,
    /// `KAFKA_GROUP_INSTANCE_ID` (default unset): static membership. A member with an instance
    /// id that restarts within the session timeout gets its partitions back without a
    /// rebalance, and leaving does not rebalance the group. Each process of a group needs its
    /// own id (a second process with the same id fences the first).
    pub kafka_group_instance_id: Option<String>,
    /// `KAFKA_ASSIGNMENT_STRATEGY` (default `range`): `range` or `roundrobin`.
    pub kafka_assignment_strategy: KafkaAssignmentStrategy,
    /// `ENABLE_EVENT_HANDLERS` (default `true`): the manager registers the domain handlers.
    pub enable_event_handlers: bool,
    /// `ENABLED_EVENT_HANDLERS` (default `all`).
    pub enabled_event_handlers: HandlerSelection,
    /// `EVENT_MAX_RETRIES` (default 3), 0 to 100.
    pub max_retries: u32,
    /// `EVENT_RETRY_BASE_MS` (default 100): the first retry's delay.
    pub retry_base: Duration,
    /// `EVENT_RETRY_MAX_MS` (default 30000): the cap on retry delays; at least the base.
    pub retry_max: Duration,
    /// `EVENT_HANDLER_CONCURRENCY` (default 16), 1 to 1024: events in progress at once per
    /// subscription (events with the same partition key never run at once).
    pub handler_concurrency: usize,
    /// `EVENT_MAX_PAYLOAD_BYTES` (default 1048576): the limit on one encoded event.
    pub max_event_bytes: usize,
    /// `EVENT_CLAIM_IDLE_MS` (default 30000): Redis takes over entries a dead consumer left
    /// pending this long.
    pub claim_idle: Duration,
    /// `EVENT_SHUTDOWN_TIMEOUT_MS` (default 30000): how long shutdown and unsubscribe wait for
    /// in-flight handlers.
    pub shutdown_timeout: Duration,
    /// `EVENT_STALL_TIMEOUT_MS` (default 60000): a consumer with lag and no progress for this
    /// long is reported as stalled by health.
    pub stall_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            bus_type: BusType::Memory,
            enable_event_sourcing: true,
            enable_event_replay: true,
            batch_size: 100,
            flush_interval: Duration::from_millis(1000),
            redis_url: "redis://localhost:6379/0".into(),
            redis_key_prefix: "ai-opportunity".into(),
            redis_tls_ca_file: None,
            event_ttl: Duration::from_secs(604_800),
            kafka_bootstrap_servers: vec!["localhost:9092".into()],
            kafka_topic_prefix: "ai-opportunity".into(),
            consumer_group: "ai-opportunity-consumers".into(),
            kafka_retention: Duration::from_millis(604_800_000),
            kafka_partitions: 3,
            kafka_replication_factor: 1,
            kafka_compression: Compression::Lz4,
            kafka_sasl_mechanism: None,
            kafka_sasl_username: None,
            kafka_sasl_password: None,
            kafka_tls_enabled: false,
            kafka_tls_ca_file: None,
            kafka_tls_cert_file: None,
            kafka_tls_key_file: None,
            kafka_session_timeout: Duration::from_millis(45_000),
            kafka_heartbeat_interval: Duration::from_millis(3_000),
            kafka_rebalance_timeout: Duration::from_millis(60_000),
            kafka_group_instance_id: None,
            kafka_assignment_strategy: KafkaAssignmentStrategy::Range,
            enable_event_handlers: true,
            enabled_event_handlers: HandlerSelection::All,
            max_retries: 3,
            retry_base: Duration::from_millis(100),
            retry_max: Duration::from_millis(30_000),
            handler_concurrency: 16,
            max_event_bytes: crate::codec::DEFAULT_MAX_EVENT_BYTES,
            claim_idle: Duration::from_millis(30_000),
            shutdown_timeout: Duration::from_millis(30_000),
            stall_timeout: Duration::from_millis(60_000),
        }
    }
}

impl Config {
    /// Reads the configuration from the process environment.
    ///
    /// # Errors
    /// A [`ConfigError`] listing every variable with a bad value.
    pub fn from_env() -> Result<Self, ConfigError> {
        parse::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration from the given variables only (tests, embedding).
    ///
    /// # Errors
    /// A [`ConfigError`] listing every variable with a bad value.
    pub fn from_vars<K, V>(vars: impl IntoIterator<Item = (K, V)>) -> Result<Self, ConfigError>
    where
        K: Into<String>,
        V: Into<String>,
    {
        let vars: BTreeMap<String, String> = vars
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        parse::from_lookup(|name| vars.get(name).cloned())
    }

    /// Checks a configuration built in code against the same rules as the environment.
    ///
    /// # Errors
    /// A [`ConfigError`] listing every field that is out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        parse::from_lookup(|name| self.variable(name)).map(|_| ())
    }

    /// The retry policy these settings describe.
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy::new(self.max_retries, self.retry_base, self.retry_max)
    }

    /// Every variable and its effective value, with secrets removed: for stats pages and logs.
    pub fn redacted(&self) -> BTreeMap<&'static str, String> {
        parse::VARIABLES
            .iter()
            .filter_map(|name| {
                let value = self.variable(name)?;
                let value = match *name {
                    "REDIS_URL" => redact_url(&value),
                    "KAFKA_SASL_PASSWORD" if !value.is_empty() => "***".to_string(),
                    _ => value,
                };
                Some((*name, value))
            })
            .collect()
    }

    /// The effective value of one variable, as it would be written in the environment.
    fn variable(&self, name: &str) -> Option<String> {
        let ms = |d: Duration| d.as_millis().to_string();
        let path = |p: &Option<PathBuf>| {
            p.as_ref()
                .map(|path| path.display().to_string())
                .unwrap_or_default()
        };
        Some(match name {
            "EVENT_BUS_TYPE" => self.bus_type.to_string(),
            "ENABLE_EVENT_SOURCING" => self.enable_event_sourcing.to_string(),
            "ENABLE_EVENT_REPLAY" => self.enable_event_replay.to_string(),
            "EVENT_BATCH_SIZE" => self.batch_size.to_string(),
            "EVENT_FLUSH_INTERVAL_MS" => ms(self.flush_interval),
            "REDIS_URL" => self.redis_url.clone(),
            "REDIS_KEY_PREFIX" => self.redis_key_prefix.clone(),
            // Unset is written as empty, which the parser reads as unset.
            "REDIS_TLS_CA_FILE" => path(&self.redis_tls_ca_file),
            "EVENT_TTL_SECONDS" => self.event_ttl.as_secs().to_string(),
            "KAFKA_BOOTSTRAP_SERVERS" => self.kafka_bootstrap_servers.join(","),
            "KAFKA_TOPIC_PREFIX" => self.kafka_topic_prefix.clone(),
            "EVENT_CONSUMER_GROUP" => self.consumer_group.clone(),
            "KAFKA_RETENTION_MS" => ms(self.kafka_retention),
            "KAFKA_PARTITIONS" => self.kafka_partitions.to_string(),
            "KAFKA_REPLICATION_FACTOR" => self.kafka_replication_factor.to_string(),
            "KAFKA_COMPRESSION" => self.kafka_compression.as_str().to_string(),
            "KAFKA_SASL_MECHANISM" => self
                .kafka_sasl_mechanism
                .map(|m| m.as_str().to_string())
                .unwrap_or_default(),
            "KAFKA_SASL_USERNAME" => self.kafka_sasl_username.clone().unwrap_or_default(),
            // The real password, for `validate`; `redacted` replaces it.
            "KAFKA_SASL_PASSWORD" => self.kafka_sasl_password.clone().unwrap_or_default(),
            "KAFKA_TLS_ENABLED" => self.kafka_tls_enabled.to_string(),
            "KAFKA_TLS_CA_FILE" => path(&self.kafka_tls_ca_file),
            "KAFKA_TLS_CERT_FILE" => path(&self.kafka_tls_cert_file),
            "KAFKA_TLS_KEY_FILE" => path(&self.kafka_tls_key_file),
            "KAFKA_SESSION_TIMEOUT_MS" => ms(self.kafka_session_timeout),
            "KAFKA_HEARTBEAT_INTERVAL_MS" => ms(self.kafka_heartbeat_interval),
            "KAFKA_REBALANCE_TIMEOUT_MS" => ms(self.kafka_rebalance_timeout),
            "KAFKA_GROUP_INSTANCE_ID" => self.kafka_group_instance_id.clone().unwrap_or_default(),
            "KAFKA_ASSIGNMENT_STRATEGY" => self.kafka_assignment_strategy.as_str().to_string(),
            "ENABLE_EVENT_HANDLERS" => self.enable_event_handlers.to_string(),
            "ENABLED_EVENT_HANDLERS" => match &self.enabled_event_handlers {
                HandlerSelection::All => "all".into(),
                HandlerSelection::Only(names) => names.join(","),
            },
            "EVENT_MAX_RETRIES" => self.max_retries.to_string(),
            "EVENT_RETRY_BASE_MS" => ms(self.retry_base),
            "EVENT_RETRY_MAX_MS" => ms(self.retry_max),
            "EVENT_HANDLER_CONCURRENCY" => self.handler_concurrency.to_string(),
            "EVENT_MAX_PAYLOAD_BYTES" => self.max_event_bytes.to_string(),
            "EVENT_CLAIM_IDLE_MS" => ms(self.claim_idle),
            "EVENT_SHUTDOWN_TIMEOUT_MS" => ms(self.shutdown_timeout),
            "EVENT_STALL_TIMEOUT_MS" => ms(self.stall_timeout),
            _ => return None,
        })
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Written by hand so REDIS_URL's password and KAFKA_SASL_PASSWORD never reach a log.
        let mut s = f.debug_struct("Config");
        for (name, value) in self.redacted() {
            s.field(name, &value);
        }
        s.finish()
    }
}
