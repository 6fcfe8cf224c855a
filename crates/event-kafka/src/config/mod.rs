//! [`KafkaConfig`]: the brokers, the topics, security and group membership; the variables
//! `KAFKA_*` (and `ENABLE_EVENT_COMPRESSION`), declared once in
//! [`KafkaConfig::VARIABLES`](EnvSettings::VARIABLES).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use event_core::EnvSettings;
use event_core::config::table::{Reader, Variable, valid_name};

mod builder;
mod parts;
mod variables;

pub use builder::KafkaConfigBuilder;
pub use parts::{Compression, KafkaAssignmentStrategy};

use crate::control::Security;
pub use crate::control::{KafkaSasl, KafkaSaslMechanism, KafkaTls};
use variables::*;

/// The Kafka backend's own settings, beside the shared [`Config`](event_core::Config).
///
/// Read from the environment ([`EnvSettings::from_env`]), or built in code:
///
/// ```
/// use event_kafka::{KafkaConfig, KafkaSasl, KafkaSaslMechanism, KafkaTls};
///
/// let kafka = KafkaConfig::builder()
///     .bootstrap_servers(["k1:9092", "k2:9092"])
///     .partitions(12)
///     .sasl(KafkaSasl::new(KafkaSaslMechanism::ScramSha512, "app", "secret"))
///     .tls(KafkaTls::default().with_ca_file("/etc/kafka/ca.pem"))
///     .build()?;
/// assert_eq!(kafka.partitions, 12);
/// assert!(!format!("{kafka:?}").contains("secret"));
/// assert!(KafkaConfig::builder().partitions(0).build().is_err());
/// # Ok::<(), event_core::ConfigError>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KafkaConfig {
    /// `KAFKA_BOOTSTRAP_SERVERS` (default `localhost:9092`), comma-separated `host:port`.
    pub bootstrap_servers: Vec<String>,
    /// `KAFKA_TOPIC_PREFIX` (default `ai-opportunity`): topics are `{prefix}.{event_type}`.
    pub topic_prefix: String,
    /// `KAFKA_RETENTION_MS` (default 604800000, 7 days).
    pub retention: Duration,
    /// `KAFKA_PARTITIONS` (default 3), 1 to 10000.
    pub partitions: u32,
    /// `KAFKA_REPLICATION_FACTOR` (default 1), 1 to 32767.
    pub replication_factor: u16,
    /// `KAFKA_MIN_INSYNC_REPLICAS` (default unset: the broker's `min.insync.replicas`): the
    /// `min.insync.replicas` of new topics, at most the replication factor. Publishes use
    /// `acks=all`, so an event is acknowledged only once this many replicas have it.
    pub min_insync_replicas: Option<u16>,
    /// `KAFKA_COMPRESSION` (default `lz4`); `ENABLE_EVENT_COMPRESSION=false` means `none`.
    pub compression: Compression,
    /// `KAFKA_SASL_*` (default unset: no authentication).
    pub sasl: Option<KafkaSasl>,
    /// `KAFKA_TLS_*` (default unset: plain TCP); `KAFKA_TLS_ENABLED=true` alone is TLS with
    /// the system's roots.
    pub tls: Option<KafkaTls>,
    /// `KAFKA_SESSION_TIMEOUT_MS` (default 45000, as the Java client): a group member that sends
    /// no heartbeat for this long is removed and its partitions go to the others.
    pub session_timeout: Duration,
    /// `KAFKA_HEARTBEAT_INTERVAL_MS` (default 3000): how often a member tells the group
    /// coordinator it is alive; below the session timeout, usually a third of it or less.
    pub heartbeat_interval: Duration,
    /// `KAFKA_REBALANCE_TIMEOUT_MS` (default 60000): how long the coordinator waits for every
    /// member to rejoin during a rebalance, and so how long a member may spend finishing the
    /// events of the partitions it gives up before it abandons them (they are delivered again).
    pub rebalance_timeout: Duration,
    /// `KAFKA_METADATA_MAX_AGE_MS` (default 300000, 5 minutes, as the Java client): how often
    /// the partition counts of the bus's topics are read again, so that partitions added at
    /// run time are published to and consumed.
    pub metadata_max_age: Duration,
    /// `KAFKA_GROUP_INSTANCE_ID` (default unset): static membership. A member with an instance
    /// id that restarts within the session timeout gets its partitions back without a
    /// rebalance. Each process of a group needs its own id.
    pub group_instance_id: Option<String>,
    /// `KAFKA_ASSIGNMENT_STRATEGY` (default `range`).
    pub assignment_strategy: KafkaAssignmentStrategy,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        event_core::config::table::defaults()
    }
}

impl KafkaConfig {
    /// A builder starting from the defaults; [`KafkaConfigBuilder::build`] checks the result.
    pub fn builder() -> KafkaConfigBuilder {
        KafkaConfigBuilder::new(Self::default())
    }

    /// How the connections to the brokers are secured: the SASL and TLS settings.
    pub(crate) fn security(&self) -> Security {
        Security {
            sasl: self.sasl.clone(),
            tls: self.tls.clone(),
        }
    }
}

impl EnvSettings for KafkaConfig {
    const VARIABLES: &'static [Variable] = &[
        KAFKA_BOOTSTRAP_SERVERS,
        KAFKA_TOPIC_PREFIX,
        KAFKA_RETENTION_MS,
        KAFKA_PARTITIONS,
        KAFKA_REPLICATION_FACTOR,
        KAFKA_MIN_INSYNC_REPLICAS,
        ENABLE_EVENT_COMPRESSION,
        KAFKA_COMPRESSION,
        KAFKA_SASL_MECHANISM,
        KAFKA_SASL_USERNAME,
        KAFKA_SASL_PASSWORD,
        KAFKA_TLS_ENABLED,
        KAFKA_TLS_CA_FILE,
        KAFKA_TLS_CERT_FILE,
        KAFKA_TLS_KEY_FILE,
        KAFKA_SESSION_TIMEOUT_MS,
        KAFKA_HEARTBEAT_INTERVAL_MS,
        KAFKA_REBALANCE_TIMEOUT_MS,
        KAFKA_METADATA_MAX_AGE_MS,
        KAFKA_GROUP_INSTANCE_ID,
        KAFKA_ASSIGNMENT_STRATEGY,
    ];

    fn read(r: &mut Reader<'_>) -> Self {
        let servers_raw = r.text(&KAFKA_BOOTSTRAP_SERVERS);
        let bootstrap_servers: Vec<String> = servers_raw
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        let servers_ok = !bootstrap_servers.is_empty()
            && bootstrap_servers.iter().all(|s| {
                s.rsplit_once(':').is_some_and(|(host, port)| {
                    !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
                })
            });
        if !servers_ok {
            r.invalid(&KAFKA_BOOTSTRAP_SERVERS, &servers_raw);
        }
        let topic_prefix = r.text(&KAFKA_TOPIC_PREFIX);
        if !valid_name(&topic_prefix, 100) {
            r.invalid(&KAFKA_TOPIC_PREFIX, &topic_prefix);
        }
        let session_timeout = r.millis(&KAFKA_SESSION_TIMEOUT_MS);
        let heartbeat_interval = r.millis(&KAFKA_HEARTBEAT_INTERVAL_MS);
        if heartbeat_interval >= session_timeout {
            r.problem(
                &KAFKA_HEARTBEAT_INTERVAL_MS,
                &heartbeat_interval.as_millis().to_string(),
                format!(
                    "less than KAFKA_SESSION_TIMEOUT_MS ({}), usually a third of it",
                    session_timeout.as_millis()
                ),
            );
        }
        let group_instance_id = r.optional(&KAFKA_GROUP_INSTANCE_ID);
        if let Some(id) = &group_instance_id
            && !valid_name(id, 200)
        {
            r.invalid(&KAFKA_GROUP_INSTANCE_ID, id);
        }
        let replication_factor = r.whole(&KAFKA_REPLICATION_FACTOR);
        let min_insync_replicas = r
            .optional(&KAFKA_MIN_INSYNC_REPLICAS)
            .map(|_| r.whole::<u16>(&KAFKA_MIN_INSYNC_REPLICAS));
        if let Some(n) = min_insync_replicas
            && n > replication_factor
        {
            r.problem(
                &KAFKA_MIN_INSYNC_REPLICAS,
                &n.to_string(),
                format!(
                    "at most KAFKA_REPLICATION_FACTOR ({replication_factor}): a topic cannot have more replicas in sync than it has"
                ),
            );
        }
        let strategies = [
            ("range", KafkaAssignmentStrategy::Range),
            ("roundrobin", KafkaAssignmentStrategy::RoundRobin),
        ];
        KafkaConfig {
            bootstrap_servers,
            topic_prefix,
            retention: r.millis(&KAFKA_RETENTION_MS),
            partitions: r.whole(&KAFKA_PARTITIONS),
            replication_factor,
            min_insync_replicas,
            compression: compression(r),
            sasl: sasl(r),
            tls: tls(r),
            session_timeout,
            heartbeat_interval,
            rebalance_timeout: r.millis(&KAFKA_REBALANCE_TIMEOUT_MS),
            metadata_max_age: r.millis(&KAFKA_METADATA_MAX_AGE_MS),
            group_instance_id,
            assignment_strategy: r.one_of(&KAFKA_ASSIGNMENT_STRATEGY, &strategies),
        }
    }

    fn write(&self, name: &str) -> Option<String> {
        let ms = |d: Duration| d.as_millis().to_string();
        let tls_file = |file: fn(&KafkaTls) -> &Option<PathBuf>| {
            self.tls
                .as_ref()
                .and_then(|tls| file(tls).as_ref())
                .map(|path| path.display().to_string())
                .unwrap_or_default()
        };
        let sasl =
            |part: fn(&KafkaSasl) -> String| self.sasl.as_ref().map(part).unwrap_or_default();
        Some(match name {
            "KAFKA_BOOTSTRAP_SERVERS" => self.bootstrap_servers.join(","),
            "KAFKA_TOPIC_PREFIX" => self.topic_prefix.clone(),
            "KAFKA_RETENTION_MS" => ms(self.retention),
            "KAFKA_PARTITIONS" => self.partitions.to_string(),
            "KAFKA_REPLICATION_FACTOR" => self.replication_factor.to_string(),
            "KAFKA_MIN_INSYNC_REPLICAS" => self
                .min_insync_replicas
                .map(|n| n.to_string())
                .unwrap_or_default(),
            "ENABLE_EVENT_COMPRESSION" => "true".into(),
            "KAFKA_COMPRESSION" => self.compression.as_str().into(),
            "KAFKA_SASL_MECHANISM" => sasl(|s| s.mechanism.as_str().into()),
            "KAFKA_SASL_USERNAME" => sasl(|s| s.username.clone()),
            // The real password, for `validate`; `redacted` replaces it.
            "KAFKA_SASL_PASSWORD" => sasl(|s| s.password.clone()),
            "KAFKA_TLS_ENABLED" => self.tls.is_some().to_string(),
            "KAFKA_TLS_CA_FILE" => tls_file(|tls| &tls.ca_file),
            "KAFKA_TLS_CERT_FILE" => tls_file(|tls| &tls.cert_file),
            "KAFKA_TLS_KEY_FILE" => tls_file(|tls| &tls.key_file),
            "KAFKA_SESSION_TIMEOUT_MS" => ms(self.session_timeout),
            "KAFKA_HEARTBEAT_INTERVAL_MS" => ms(self.heartbeat_interval),
            "KAFKA_REBALANCE_TIMEOUT_MS" => ms(self.rebalance_timeout),
            "KAFKA_METADATA_MAX_AGE_MS" => ms(self.metadata_max_age),
            "KAFKA_GROUP_INSTANCE_ID" => self.group_instance_id.clone().unwrap_or_default(),
            "KAFKA_ASSIGNMENT_STRATEGY" => self.assignment_strategy.as_str().into(),
            _ => return None,
        })
    }
}

/// `KAFKA_COMPRESSION`, and `ENABLE_EVENT_COMPRESSION=false`, which means `none`.
fn compression(r: &mut Reader<'_>) -> Compression {
    let enabled = r.bool(&ENABLE_EVENT_COMPRESSION);
    let choices = Compression::ALL.map(|c| (c.as_str(), c));
    match r.raw(&KAFKA_COMPRESSION) {
        None if !enabled => Compression::None,
        raw => {
            let chosen = r.one_of(&KAFKA_COMPRESSION, &choices);
            if let Some(raw) = raw
                && !enabled
                && chosen != Compression::None
            {
                r.problem(
                    &KAFKA_COMPRESSION,
                    &raw,
                    "none, or unset, since ENABLE_EVENT_COMPRESSION=false",
                );
            }
            chosen
        }
    }
}

/// `KAFKA_SASL_MECHANISM`, `KAFKA_SASL_USERNAME`, `KAFKA_SASL_PASSWORD`: all three or none.
fn sasl(r: &mut Reader<'_>) -> Option<KafkaSasl> {
    let raw_mechanism = r.optional(&KAFKA_SASL_MECHANISM);
    let mechanism = raw_mechanism.as_deref().and_then(|raw| {
        let parsed = KafkaSaslMechanism::ALL
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(raw));
        if parsed.is_none() {
            r.invalid(&KAFKA_SASL_MECHANISM, raw);
        }
        parsed
    });
    let username = r.optional(&KAFKA_SASL_USERNAME);
    // Not trimmed: a password may begin or end with a space.
    let password = r.untrimmed(&KAFKA_SASL_PASSWORD).filter(|p| !p.is_empty());
    match (&raw_mechanism, mechanism) {
        // A bad mechanism is reported above; the credentials are not checked against it.
        (Some(_), None) => None,
        (Some(_), Some(m)) => {
            let needs = format!(
                "set, since KAFKA_SASL_MECHANISM={m} needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD together"
            );
            if username.is_none() {
                r.problem(&KAFKA_SASL_USERNAME, "", format!("a user name {needs}"));
            }
            if password.is_none() {
                r.problem(&KAFKA_SASL_PASSWORD, "", format!("a password {needs}"));
            }
            Some(KafkaSasl::new(
                m,
                username.unwrap_or_default(),
                password.unwrap_or_default(),
            ))
        }
        (None, _) => {
            let unused = "unset, since KAFKA_SASL_MECHANISM is unset (set it to PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 to authenticate)";
            if let Some(username) = &username {
                r.problem(&KAFKA_SASL_USERNAME, username, unused);
            }
            if let Some(password) = &password {
                r.problem(&KAFKA_SASL_PASSWORD, password, unused);
            }
            None
        }
    }
}

/// `KAFKA_TLS_ENABLED` and the files; any file turns TLS on, a certificate needs its key.
fn tls(r: &mut Reader<'_>) -> Option<KafkaTls> {
    let tls = KafkaTls {
        ca_file: r.path(&KAFKA_TLS_CA_FILE),
        cert_file: r.path(&KAFKA_TLS_CERT_FILE),
        key_file: r.path(&KAFKA_TLS_KEY_FILE),
    };
    let any_file = tls != KafkaTls::default();
    // Set explicitly or not: the default (`false`) gives way to the files.
    let enabled = match r.raw(&KAFKA_TLS_ENABLED).filter(|v| !v.is_empty()) {
        None => any_file,
        Some(raw) => {
            let enabled = r.bool(&KAFKA_TLS_ENABLED);
            if !enabled && any_file {
                r.problem(
                    &KAFKA_TLS_ENABLED,
                    &raw,
                    "true or unset, since a KAFKA_TLS_*_FILE is set (the files are for TLS connections only)",
                );
            }
            enabled || any_file
        }
    };
    match (&tls.cert_file, &tls.key_file) {
        (Some(cert), None) => r.problem(
            &KAFKA_TLS_KEY_FILE,
            "",
            format!(
                "the client certificate's private key, set together with KAFKA_TLS_CERT_FILE ({})",
                cert.display()
            ),
        ),
        (None, Some(key)) => r.problem(
            &KAFKA_TLS_CERT_FILE,
            "",
            format!(
                "the client certificate chain, set together with KAFKA_TLS_KEY_FILE ({})",
                key.display()
            ),
        ),
        _ => {}
    }
    enabled.then_some(tls)
}

impl fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Written by hand (through `KafkaSasl`'s) so that the password never reaches a log.
        f.debug_struct("KafkaConfig")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("topic_prefix", &self.topic_prefix)
            .field("retention", &self.retention)
            .field("partitions", &self.partitions)
            .field("replication_factor", &self.replication_factor)
            .field("min_insync_replicas", &self.min_insync_replicas)
            .field("compression", &self.compression)
            .field("sasl", &self.sasl)
            .field("tls", &self.tls)
            .field("session_timeout", &self.session_timeout)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("rebalance_timeout", &self.rebalance_timeout)
            .field("metadata_max_age", &self.metadata_max_age)
            .field("group_instance_id", &self.group_instance_id)
            .field("assignment_strategy", &self.assignment_strategy)
            .finish()
    }
}

#[cfg(test)]
mod tests;
