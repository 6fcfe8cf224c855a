//! Parsing and checking of every variable; one set of rules for the environment and for
//! configurations built in code.

use std::path::PathBuf;
use std::time::Duration;

use super::{
    BusType, Compression, Config, ConfigError, ConfigProblem, HandlerSelection,
    KafkaAssignmentStrategy, KafkaSaslMechanism,
};

/// Every variable [`Config`] reads, in the order `docs/configuration.md` lists them.
pub(super) const VARIABLES: &[&str] = &[
    "EVENT_BUS_TYPE",
    "ENABLE_EVENT_SOURCING",
    "ENABLE_EVENT_REPLAY",
    "EVENT_BATCH_SIZE",
    "EVENT_FLUSH_INTERVAL_MS",
    "REDIS_URL",
    "REDIS_KEY_PREFIX",
    "REDIS_TLS_CA_FILE",
    "EVENT_TTL_SECONDS",
    "KAFKA_BOOTSTRAP_SERVERS",
    "KAFKA_TOPIC_PREFIX",
    "EVENT_CONSUMER_GROUP",
    "KAFKA_RETENTION_MS",
    "KAFKA_PARTITIONS",
    "KAFKA_REPLICATION_FACTOR",
    "KAFKA_COMPRESSION",
    "KAFKA_SASL_MECHANISM",
    "KAFKA_SASL_USERNAME",
    "KAFKA_SASL_PASSWORD",
    "KAFKA_TLS_ENABLED",
    "KAFKA_TLS_CA_FILE",
    "KAFKA_TLS_CERT_FILE",
    "KAFKA_TLS_KEY_FILE",
    "KAFKA_SESSION_TIMEOUT_MS",
    "KAFKA_HEARTBEAT_INTERVAL_MS",
    "KAFKA_REBALANCE_TIMEOUT_MS",
    "KAFKA_GROUP_INSTANCE_ID",
    "KAFKA_ASSIGNMENT_STRATEGY",
    "ENABLE_EVENT_HANDLERS",
    "ENABLED_EVENT_HANDLERS",
    "EVENT_MAX_RETRIES",
    "EVENT_RETRY_BASE_MS",
    "EVENT_RETRY_MAX_MS",
    "EVENT_HANDLER_CONCURRENCY",
    "EVENT_MAX_PAYLOAD_BYTES",
    "EVENT_CLAIM_IDLE_MS",
    "EVENT_SHUTDOWN_TIMEOUT_MS",
    "EVENT_STALL_TIMEOUT_MS",
];

/// Collects problems while reading variables, so one error lists them all.
struct Reader<F> {
    lookup: F,
    problems: Vec<ConfigProblem>,
}

impl<F: Fn(&str) -> Option<String>> Reader<F> {
    fn raw(&self, name: &str) -> Option<String> {
        (self.lookup)(name).map(|v| v.trim().to_string())
    }

    fn problem(&mut self, variable: &'static str, value: &str, expected: impl Into<String>) {
        self.problems.push(ConfigProblem {
            variable,
            value: match variable {
                "REDIS_URL" => redact_url(value),
                // Only whether a password was given, never what it is.
                "KAFKA_SASL_PASSWORD" if !value.is_empty() => "***".to_string(),
                _ => value.to_string(),
            },
            expected: expected.into(),
        });
    }

    fn bool(&mut self, name: &'static str, default: bool) -> bool {
        let Some(raw) = self.raw(name) else {
            return default;
        };
        match raw.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" => false,
            _ => {
                self.problem(name, &raw, "true or false (also 1/0, yes/no, on/off)");
                default
            }
        }
    }

    fn number<T>(&mut self, name: &'static str, default: T, min: T, max: T) -> T
    where
        T: std::str::FromStr + PartialOrd + Copy + std::fmt::Display,
    {
        let Some(raw) = self.raw(name) else {
            return default;
        };
        match raw.replace('_', "").parse::<T>() {
            Ok(n) if n >= min && n <= max => n,
            _ => {
                self.problem(name, &raw, format!("a whole number from {min} to {max}"));
                default
            }
        }
    }

    fn millis(&mut self, name: &'static str, default: u64, min: u64, max: u64) -> Duration {
        Duration::from_millis(self.number(name, default, min, max))
    }

    fn string(&mut self, name: &'static str, default: &str) -> String {
        self.raw(name).unwrap_or_else(|| default.to_string())
    }

    /// A variable where empty means unset, so an env file can leave the line blank.
    fn optional(&self, name: &str) -> Option<String> {
        self.raw(name).filter(|value| !value.is_empty())
    }

    /// A path read when the bus connects, so that parsing does no I/O; empty is unset.
    fn path(&self, name: &str) -> Option<PathBuf> {
        self.optional(name).map(PathBuf::from)
    }
}

/// Reads a [`Config`] through `lookup`, which returns a variable's value if it is set.
pub(super) fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
    let mut r = Reader {
        lookup,
        problems: Vec::new(),
    };
    let d = Config::default();

    let bus_type = match r.raw("EVENT_BUS_TYPE") {
        None => d.bus_type,
        Some(raw) => match raw.to_ascii_lowercase().as_str() {
            "memory" => BusType::Memory,
            "redis" => BusType::Redis,
            "kafka" => BusType::Kafka,
            _ => {
                r.problem("EVENT_BUS_TYPE", &raw, "one of memory, redis, kafka");
                d.bus_type
            }
        },
    };

    let enable_event_sourcing = r.bool("ENABLE_EVENT_SOURCING", true);
    let enable_event_replay = r.bool("ENABLE_EVENT_REPLAY", true);
    let batch_size = r.number("EVENT_BATCH_SIZE", 100usize, 1, 100_000);
    let flush_interval = r.millis("EVENT_FLUSH_INTERVAL_MS", 1000, 1, 3_600_000);

    let redis_url = r.string("REDIS_URL", &d.redis_url);
    if !(redis_url.starts_with("redis://")
        || redis_url.starts_with("rediss://")
        || redis_url.starts_with("redis+unix://")
        || redis_url.starts_with("unix://"))
    {
        r.problem(
            "REDIS_URL",
            &redis_url,
            "a URL starting with redis:// or rediss:// (TLS), such as redis://user:password@host:6379/0",
        );
    }

    let redis_key_prefix = r.string("REDIS_KEY_PREFIX", &d.redis_key_prefix);
    if !valid_name(&redis_key_prefix, 100) {
        r.problem(
            "REDIS_KEY_PREFIX",
            &redis_key_prefix,
            "1 to 100 characters of a-z, A-Z, 0-9, '.', '_' or '-'",
        );
    }

    // Empty counts as unset, so an env file can leave the line blank. The file itself is read
    // by the Redis backend when it connects, so that parsing does no I/O.
    let redis_tls_ca_file = r.path("REDIS_TLS_CA_FILE");
    if let Some(path) = &redis_tls_ca_file
        && !redis_url.starts_with("rediss://")
    {
        r.problem(
            "REDIS_TLS_CA_FILE",
            &path.display().to_string(),
            "unset, since REDIS_URL does not start with rediss:// (the CA file is for TLS connections only)",
        );
    }

    let event_ttl =
        Duration::from_secs(r.number("EVENT_TTL_SECONDS", 604_800u64, 1, 10 * 365 * 86_400));

    let servers_raw = r.string("KAFKA_BOOTSTRAP_SERVERS", "localhost:9092");
    let kafka_bootstrap_servers: Vec<String> = servers_raw
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    let servers_ok = !kafka_bootstrap_servers.is_empty()
        && kafka_bootstrap_servers.iter().all(|s| {
            s.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
            })
        });
    if !servers_ok {
        r.problem(
            "KAFKA_BOOTSTRAP_SERVERS",
            &servers_raw,
            "a comma-separated list of host:port, such as localhost:9092,kafka2:9092",
        );
    }

    let kafka_topic_prefix = r.string("KAFKA_TOPIC_PREFIX", &d.kafka_topic_prefix);
    if !valid_name(&kafka_topic_prefix, 100) {
        r.problem(
            "KAFKA_TOPIC_PREFIX",
            &kafka_topic_prefix,
            "1 to 100 characters of a-z, A-Z, 0-9, '.', '_' or '-'",
        );
    }

    let consumer_group = match (r.raw("EVENT_CONSUMER_GROUP"), r.raw("KAFKA_CONSUMER_GROUP")) {
        (Some(a), Some(b)) if a != b => {
            r.problem(
                "EVENT_CONSUMER_GROUP",
                &a,
                format!("the same value as its alias KAFKA_CONSUMER_GROUP ({b:?}), or only one of the two set"),
            );
            a
        }
        (Some(a), _) | (None, Some(a)) => a,
        (None, None) => d.consumer_group.clone(),
    };
    if !valid_name(&consumer_group, 150) {
        r.problem(
            "EVENT_CONSUMER_GROUP",
            &consumer_group,
            "1 to 150 characters of a-z, A-Z, 0-9, '.', '_' or '-'",
        );
    }

    let kafka_retention = r.millis("KAFKA_RETENTION_MS", 604_800_000, 1_000, u64::MAX / 2);
    let kafka_partitions = r.number("KAFKA_PARTITIONS", 3u32, 1, 10_000);
    let kafka_replication_factor = r.number("KAFKA_REPLICATION_FACTOR", 1u16, 1, i16::MAX as u16);

    let compression_enabled = r.bool("ENABLE_EVENT_COMPRESSION", true);
    let kafka_compression = match r.raw("KAFKA_COMPRESSION") {
        None if !compression_enabled => Compression::None,
        None => d.kafka_compression,
        Some(raw) => {
            let parsed = match raw.to_ascii_lowercase().as_str() {
                "none" => Some(Compression::None),
                "gzip" => Some(Compression::Gzip),
                "snappy" => Some(Compression::Snappy),
                "lz4" => Some(Compression::Lz4),
                "zstd" => Some(Compression::Zstd),
                _ => None,
            };
            match parsed {
                None => {
                    r.problem(
                        "KAFKA_COMPRESSION",
                        &raw,
                        "one of none, gzip, snappy, lz4, zstd",
                    );
                    d.kafka_compression
                }
                Some(c) if !compression_enabled && c != Compression::None => {
                    r.problem(
                        "KAFKA_COMPRESSION",
                        &raw,
                        "none, or unset, since ENABLE_EVENT_COMPRESSION=false",
                    );
                    Compression::None
                }
                Some(c) => c,
            }
        }
    };

    let kafka_sasl = kafka_sasl(&mut r);
    let kafka_tls = kafka_tls(&mut r);
    let kafka_session_timeout = r.millis("KAFKA_SESSION_TIMEOUT_MS", 45_000, 1_000, 3_600_000);
    let kafka_heartbeat_interval = r.millis("KAFKA_HEARTBEAT_INTERVAL_MS", 3_000, 100, 3_600_000);
    if kafka_heartbeat_interval >= kafka_session_timeout {
        r.problem(
            "KAFKA_HEARTBEAT_INTERVAL_MS",
            &kafka_heartbeat_interval.as_millis().to_string(),
            format!(
                "less than KAFKA_SESSION_TIMEOUT_MS ({}), usually a third of it",
                kafka_session_timeout.as_millis()
            ),
        );
    }
    let kafka_rebalance_timeout = r.millis("KAFKA_REBALANCE_TIMEOUT_MS", 60_000, 1_000, 3_600_000);
    let kafka_group_instance_id = r.optional("KAFKA_GROUP_INSTANCE_ID");
    if let Some(id) = &kafka_group_instance_id
        && !valid_name(id, 200)
    {
        r.problem(
            "KAFKA_GROUP_INSTANCE_ID",
            id,
            "unset, or 1 to 200 characters of a-z, A-Z, 0-9, '.', '_' or '-', different in each process",
        );
    }
    let kafka_assignment_strategy = match r.raw("KAFKA_ASSIGNMENT_STRATEGY") {
        None => d.kafka_assignment_strategy,
        Some(raw) => match raw.to_ascii_lowercase().as_str() {
            "range" => KafkaAssignmentStrategy::Range,
            "roundrobin" => KafkaAssignmentStrategy::RoundRobin,
            _ => {
                r.problem("KAFKA_ASSIGNMENT_STRATEGY", &raw, "range or roundrobin");
                d.kafka_assignment_strategy
            }
        },
    };

    if let Some(raw) = r.raw("ENABLE_EVENT_ENCRYPTION")
        && r.bool("ENABLE_EVENT_ENCRYPTION", false)
    {
        r.problem(
                "ENABLE_EVENT_ENCRYPTION",
                &raw,
                "false or unset: payload encryption is not built in; encrypt in transit with rediss:// or KAFKA_TLS_*, and keep secrets out of payloads",
            );
    }

    let enable_event_handlers = r.bool("ENABLE_EVENT_HANDLERS", true);
    let enabled_event_handlers = match r.raw("ENABLED_EVENT_HANDLERS") {
        None => HandlerSelection::All,
        Some(raw) if raw.eq_ignore_ascii_case("all") => HandlerSelection::All,
        Some(raw) => {
            let names: Vec<String> = raw
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
            if names.is_empty() || !names.iter().all(|n| valid_handler_name(n)) {
                r.problem(
                    "ENABLED_EVENT_HANDLERS",
                    &raw,
                    "all, or a comma-separated list of handler names such as opportunity,user,agent",
                );
            }
            HandlerSelection::Only(names)
        }
    };

    let max_retries = r.number("EVENT_MAX_RETRIES", 3u32, 0, 100);
    let retry_base = r.millis("EVENT_RETRY_BASE_MS", 100, 1, 3_600_000);
    let retry_max = r.millis("EVENT_RETRY_MAX_MS", 30_000, 1, 86_400_000);
    if retry_max < retry_base {
        r.problem(
            "EVENT_RETRY_MAX_MS",
            &retry_max.as_millis().to_string(),
            format!("at least EVENT_RETRY_BASE_MS ({})", retry_base.as_millis()),
        );
    }
    let handler_concurrency = r.number("EVENT_HANDLER_CONCURRENCY", 16usize, 1, 1024);
    let max_event_bytes = r.number(
        "EVENT_MAX_PAYLOAD_BYTES",
        d.max_event_bytes,
        1024,
        64 * 1024 * 1024,
    );
    let claim_idle = r.millis("EVENT_CLAIM_IDLE_MS", 30_000, 100, 86_400_000);
    let shutdown_timeout = r.millis("EVENT_SHUTDOWN_TIMEOUT_MS", 30_000, 0, 3_600_000);
    let stall_timeout = r.millis("EVENT_STALL_TIMEOUT_MS", 60_000, 100, 86_400_000);

    if !r.problems.is_empty() {
        return Err(ConfigError::new(r.problems));
    }
    Ok(Config {
        bus_type,
        enable_event_sourcing,
        enable_event_replay,
        batch_size,
        flush_interval,
        redis_url,
        redis_key_prefix,
        redis_tls_ca_file,
        event_ttl,
        kafka_bootstrap_servers,
        kafka_topic_prefix,
        consumer_group,
        kafka_retention,
        kafka_partitions,
        kafka_replication_factor,
        kafka_compression,
        kafka_sasl_mechanism: kafka_sasl.mechanism,
        kafka_sasl_username: kafka_sasl.username,
        kafka_sasl_password: kafka_sasl.password,
        kafka_tls_enabled: kafka_tls.enabled,
        kafka_tls_ca_file: kafka_tls.ca_file,
        kafka_tls_cert_file: kafka_tls.cert_file,
        kafka_tls_key_file: kafka_tls.key_file,
        kafka_session_timeout,
        kafka_heartbeat_interval,
        kafka_rebalance_timeout,
        kafka_group_instance_id,
        kafka_assignment_strategy,
        enable_event_handlers,
        enabled_event_handlers,
        max_retries,
        retry_base,
        retry_max,
        handler_concurrency,
        max_event_bytes,
        claim_idle,
        shutdown_timeout,
        stall_timeout,
    })
}

/// The `KAFKA_SASL_*` settings as read.
struct KafkaSasl {
    mechanism: Option<KafkaSaslMechanism>,
    username: Option<String>,
    password: Option<String>,
}

/// `KAFKA_SASL_MECHANISM`, `KAFKA_SASL_USERNAME`, `KAFKA_SASL_PASSWORD`: all three or none.
fn kafka_sasl<F: Fn(&str) -> Option<String>>(r: &mut Reader<F>) -> KafkaSasl {
    const MECHANISMS: &str = "unset, PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512";
    let raw_mechanism = r.optional("KAFKA_SASL_MECHANISM");
    let mechanism = raw_mechanism.as_deref().and_then(|raw| {
        let parsed = [
            KafkaSaslMechanism::Plain,
            KafkaSaslMechanism::ScramSha256,
            KafkaSaslMechanism::ScramSha512,
        ]
        .into_iter()
        .find(|m| m.as_str().eq_ignore_ascii_case(raw));
        if parsed.is_none() {
            r.problem("KAFKA_SASL_MECHANISM", raw, MECHANISMS);
        }
        parsed
    });
    let username = r.optional("KAFKA_SASL_USERNAME");
    // Not trimmed: a password may begin or end with a space.
    let password = (r.lookup)("KAFKA_SASL_PASSWORD").filter(|p| !p.is_empty());
    match (&raw_mechanism, mechanism) {
        // A bad mechanism is reported above; the credentials are not checked against it.
        (Some(_), None) => {}
        (Some(_), Some(m)) => {
            let needs = format!(
                "set, since KAFKA_SASL_MECHANISM={m} needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD together"
            );
            if username.is_none() {
                r.problem("KAFKA_SASL_USERNAME", "", format!("a user name {needs}"));
            }
            if password.is_none() {
                r.problem("KAFKA_SASL_PASSWORD", "", format!("a password {needs}"));
            }
        }
        (None, _) => {
            let unused = format!(
                "unset, since KAFKA_SASL_MECHANISM is unset (set it to {MECHANISMS} to authenticate)"
            );
            if let Some(username) = &username {
                r.problem("KAFKA_SASL_USERNAME", username, unused.clone());
            }
            if let Some(password) = &password {
                r.problem("KAFKA_SASL_PASSWORD", password, unused);
            }
        }
    }
    KafkaSasl {
        mechanism,
        username,
        password,
    }
}

/// The `KAFKA_TLS_*` settings as read.
struct KafkaTls {
    enabled: bool,
    ca_file: Option<PathBuf>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
}

/// `KAFKA_TLS_ENABLED` and the files; any file turns TLS on, a certificate needs its key.
fn kafka_tls<F: Fn(&str) -> Option<String>>(r: &mut Reader<F>) -> KafkaTls {
    let ca_file = r.path("KAFKA_TLS_CA_FILE");
    let cert_file = r.path("KAFKA_TLS_CERT_FILE");
    let key_file = r.path("KAFKA_TLS_KEY_FILE");
    let any_file = ca_file.is_some() || cert_file.is_some() || key_file.is_some();
    let enabled = match r.optional("KAFKA_TLS_ENABLED") {
        None => any_file,
        Some(raw) => {
            let enabled = r.bool("KAFKA_TLS_ENABLED", any_file);
            if !enabled && any_file {
                r.problem(
                    "KAFKA_TLS_ENABLED",
                    &raw,
                    "true or unset, since a KAFKA_TLS_*_FILE is set (the files are for TLS connections only)",
                );
            }
            enabled || any_file
        }
    };
    match (&cert_file, &key_file) {
        (Some(cert), None) => r.problem(
            "KAFKA_TLS_KEY_FILE",
            "",
            format!(
                "the client certificate's private key, set together with KAFKA_TLS_CERT_FILE ({})",
                cert.display()
            ),
        ),
        (None, Some(key)) => r.problem(
            "KAFKA_TLS_CERT_FILE",
            "",
            format!(
                "the client certificate chain, set together with KAFKA_TLS_KEY_FILE ({})",
                key.display()
            ),
        ),
        _ => {}
    }
    KafkaTls {
        enabled,
        ca_file,
        cert_file,
        key_file,
    }
}

/// Characters allowed in Kafka topic names, used for prefixes and group names alike.
fn valid_name(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Handler names become part of group, stream and topic names: lower-case letters, digits,
/// `_` and `-`, starting with a letter, at most 100 bytes.
pub(crate) fn valid_handler_name(s: &str) -> bool {
    s.len() <= 100
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-'))
}

/// Replaces the password of a URL such as `redis://user:secret@host:6379/0` with `***`, so it
/// can be logged. A URL without a password comes back unchanged.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let Some(at) = authority.rfind('@') else {
        return url.to_string();
    };
    let (userinfo, host) = authority.split_at(at);
    match userinfo.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***{host}{path}"),
        // `redis://secret@host` puts a password alone in the user part.
        None if !userinfo.is_empty() => format!("{scheme}://***{host}{path}"),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_vars(vars.iter().copied())
    }

    #[test]
    fn defaults_are_the_originals() {
        let c = parse(&[]).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.batch_size, 100);
        assert_eq!(c.event_ttl, Duration::from_secs(604_800));
        assert_eq!(c.kafka_retention, Duration::from_millis(604_800_000));
        assert_eq!(c.kafka_partitions, 3);
        assert_eq!(c.consumer_group, "ai-opportunity-consumers");
        assert_eq!(c.max_retries, 3);
        c.validate().unwrap();
    }

    #[test]
    fn every_variable_is_read() {
        let c = parse(&[
            ("EVENT_BUS_TYPE", "Kafka"),
            ("ENABLE_EVENT_SOURCING", "false"),
            ("ENABLE_EVENT_REPLAY", "0"),
            ("EVENT_BATCH_SIZE", "250"),
            ("EVENT_FLUSH_INTERVAL_MS", "50"),
            ("REDIS_URL", "rediss://app:pw@cache:6380/1"),
            ("REDIS_KEY_PREFIX", "shop"),
            ("REDIS_TLS_CA_FILE", "/etc/redis/ca.pem"),
            ("EVENT_TTL_SECONDS", "86400"),
            ("KAFKA_BOOTSTRAP_SERVERS", "k1:9092, k2:9093"),
            ("KAFKA_TOPIC_PREFIX", "shop"),
            ("KAFKA_CONSUMER_GROUP", "shop-consumers"),
            ("KAFKA_RETENTION_MS", "3600000"),
            ("KAFKA_PARTITIONS", "12"),
            ("KAFKA_REPLICATION_FACTOR", "3"),
            ("KAFKA_COMPRESSION", "zstd"),
            ("KAFKA_SASL_MECHANISM", "scram-sha-512"),
            ("KAFKA_SASL_USERNAME", "app"),
            ("KAFKA_SASL_PASSWORD", " pass word "),
            ("KAFKA_TLS_ENABLED", "true"),
            ("KAFKA_TLS_CA_FILE", "/etc/kafka/ca.pem"),
            ("KAFKA_TLS_CERT_FILE", "/etc/kafka/client.pem"),
            ("KAFKA_TLS_KEY_FILE", "/etc/kafka/client.key"),
            ("ENABLE_EVENT_HANDLERS", "no"),
            ("ENABLED_EVENT_HANDLERS", "opportunity, user,,agent"),
            ("EVENT_MAX_RETRIES", "7"),
            ("EVENT_RETRY_BASE_MS", "10"),
            ("EVENT_RETRY_MAX_MS", "1000"),
            ("EVENT_HANDLER_CONCURRENCY", "4"),
            ("EVENT_MAX_PAYLOAD_BYTES", "2048"),
            ("EVENT_CLAIM_IDLE_MS", "5000"),
            ("EVENT_SHUTDOWN_TIMEOUT_MS", "100"),
            ("EVENT_STALL_TIMEOUT_MS", "2000"),
            ("KAFKA_SESSION_TIMEOUT_MS", "10000"),
            ("KAFKA_HEARTBEAT_INTERVAL_MS", "1000"),
            ("KAFKA_REBALANCE_TIMEOUT_MS", "20000"),
            ("KAFKA_GROUP_INSTANCE_ID", "worker-1"),
            ("KAFKA_ASSIGNMENT_STRATEGY", "RoundRobin"),
        ])
        .unwrap();
        assert_eq!(c.bus_type, BusType::Kafka);
        assert_eq!(c.kafka_session_timeout, Duration::from_secs(10));
        assert_eq!(c.kafka_heartbeat_interval, Duration::from_secs(1));
        assert_eq!(c.kafka_rebalance_timeout, Duration::from_secs(20));
        assert_eq!(c.kafka_group_instance_id.as_deref(), Some("worker-1"));
        assert_eq!(
            c.kafka_assignment_strategy,
            KafkaAssignmentStrategy::RoundRobin
        );
        assert!(!c.enable_event_sourcing && !c.enable_event_replay && !c.enable_event_handlers);
        assert_eq!(c.kafka_bootstrap_servers, ["k1:9092", "k2:9093"]);
        assert_eq!(
            c.redis_tls_ca_file.as_deref(),
            Some(std::path::Path::new("/etc/redis/ca.pem"))
        );
        assert_eq!(c.consumer_group, "shop-consumers");
        assert_eq!(c.kafka_compression, Compression::Zstd);
        assert_eq!(
            c.kafka_sasl_mechanism,
            Some(KafkaSaslMechanism::ScramSha512)
        );
        assert_eq!(c.kafka_sasl_username.as_deref(), Some("app"));
        assert_eq!(c.kafka_sasl_password.as_deref(), Some(" pass word "));
        assert!(c.kafka_tls_enabled);
        assert_eq!(
            c.kafka_tls_key_file.as_deref(),
            Some(std::path::Path::new("/etc/kafka/client.key"))
        );
        assert_eq!(
            c.enabled_event_handlers,
            HandlerSelection::Only(vec!["opportunity".into(), "user".into(), "agent".into()])
        );
        assert_eq!(c.retry_policy().max_retries, 7);
        assert_eq!(c.handler_concurrency, 4);
        c.validate().unwrap();
        // The redacted view round-trips through the parser.
        let again = Config::from_vars(c.redacted().into_iter().map(|(k, v)| {
            let v = match k {
                "REDIS_URL" => c.redis_url.clone(),
                "KAFKA_SASL_PASSWORD" => " pass word ".into(),
                _ => v,
            };
            (k, v)
        }))
        .unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn errors_name_variable_value_and_what_is_allowed() {
        let err = parse(&[
            ("EVENT_BUS_TYPE", "rabbit"),
            ("KAFKA_PARTITIONS", "0"),
            ("EVENT_MAX_RETRIES", "three"),
            ("ENABLE_EVENT_REPLAY", "maybe"),
        ])
        .unwrap_err();
        let text = err.to_string();
        assert_eq!(err.problems().len(), 4, "{text}");
        assert!(
            text.contains(
                r#"EVENT_BUS_TYPE="rabbit" is not valid: expected one of memory, redis, kafka"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"KAFKA_PARTITIONS="0" is not valid: expected a whole number from 1 to 10000"#
            ),
            "{text}"
        );
        assert!(text.contains("EVENT_MAX_RETRIES=\"three\""), "{text}");
        assert!(text.contains("ENABLE_EVENT_REPLAY=\"maybe\""), "{text}");
    }

    #[test]
    fn dead_flags_of_the_original_do_something_or_are_refused() {
        let c = parse(&[("ENABLE_EVENT_COMPRESSION", "false")]).unwrap();
        assert_eq!(c.kafka_compression, Compression::None);
        assert!(
            parse(&[
                ("ENABLE_EVENT_COMPRESSION", "false"),
                ("KAFKA_COMPRESSION", "gzip")
            ])
            .is_err()
        );
        assert!(parse(&[("ENABLE_EVENT_ENCRYPTION", "false")]).is_ok());
        let err = parse(&[("ENABLE_EVENT_ENCRYPTION", "true")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("not built in"), "{err}");
    }

    #[test]
    fn conflicting_group_aliases_are_refused() {
        assert!(parse(&[("EVENT_CONSUMER_GROUP", "a"), ("KAFKA_CONSUMER_GROUP", "b")]).is_err());
        let c = parse(&[("EVENT_CONSUMER_GROUP", "a"), ("KAFKA_CONSUMER_GROUP", "a")]).unwrap();
        assert_eq!(c.consumer_group, "a");
    }

    #[test]
    fn secrets_never_show() {
        let err = parse(&[("REDIS_URL", "http://admin:hunter2@cache")]).unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        let c = parse(&[("REDIS_URL", "redis://admin:hunter2@cache:6379/0")]).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
        assert_eq!(c.redacted()["REDIS_URL"], "redis://admin:***@cache:6379/0");
        assert_eq!(redact_url("redis://hunter2@cache/0"), "redis://***@cache/0");
        assert_eq!(redact_url("redis://cache:6379"), "redis://cache:6379");
    }

    #[test]
    fn kafka_sasl_needs_mechanism_user_and_password_together() {
        let c = parse(&[
            ("KAFKA_SASL_MECHANISM", "PLAIN"),
            ("KAFKA_SASL_USERNAME", "app"),
            ("KAFKA_SASL_PASSWORD", "hunter2"),
        ])
        .unwrap();
        assert_eq!(c.kafka_sasl_mechanism, Some(KafkaSaslMechanism::Plain));
        // The password survives validation, which reads every variable back.
        c.validate().unwrap();
        assert_eq!(c.kafka_sasl_password.as_deref(), Some("hunter2"));

        let err = parse(&[("KAFKA_SASL_MECHANISM", "SCRAM-SHA-256")]).unwrap_err();
        let names: Vec<_> = err.problems().iter().map(|p| p.variable).collect();
        assert_eq!(
            names,
            ["KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD"],
            "{err}"
        );
        assert!(err.to_string().contains("SCRAM-SHA-256"), "{err}");

        let err = parse(&[
            ("KAFKA_SASL_MECHANISM", "plain"),
            ("KAFKA_SASL_USERNAME", "app"),
        ])
        .unwrap_err();
        assert_eq!(err.problems().len(), 1, "{err}");
        assert_eq!(err.problems()[0].variable, "KAFKA_SASL_PASSWORD", "{err}");

        let err = parse(&[("KAFKA_SASL_MECHANISM", "GSSAPI")]).unwrap_err();
        assert_eq!(err.problems().len(), 1, "{err}");
        assert!(err.to_string().contains("SCRAM-SHA-512"), "{err}");

        let err = parse(&[
            ("KAFKA_SASL_USERNAME", "app"),
            ("KAFKA_SASL_PASSWORD", "hunter2"),
        ])
        .unwrap_err();
        assert_eq!(err.problems().len(), 2, "{err}");
        assert!(
            err.to_string().contains("KAFKA_SASL_MECHANISM is unset"),
            "{err}"
        );

        let blank = parse(&[("KAFKA_SASL_MECHANISM", " "), ("KAFKA_SASL_PASSWORD", "")]).unwrap();
        assert_eq!(blank, Config::default());
    }

    #[test]
    fn kafka_password_never_shows() {
        let c = parse(&[
            ("KAFKA_SASL_MECHANISM", "SCRAM-SHA-256"),
            ("KAFKA_SASL_USERNAME", "app"),
            ("KAFKA_SASL_PASSWORD", "hunter2"),
        ])
        .unwrap();
        let debug = format!("{c:?} {c:#?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("***") && debug.contains("app"), "{debug}");
        assert_eq!(c.redacted()["KAFKA_SASL_PASSWORD"], "***");
        assert_eq!(Config::default().redacted()["KAFKA_SASL_PASSWORD"], "");

        // A password that is not used, and a configuration with other problems.
        let err = parse(&[
            ("KAFKA_SASL_PASSWORD", "hunter2"),
            ("KAFKA_PARTITIONS", "0"),
        ])
        .unwrap_err();
        let text = format!("{err} {err:?}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains(r#"KAFKA_SASL_PASSWORD="***""#), "{text}");
        let err = parse(&[
            ("KAFKA_SASL_MECHANISM", "bogus"),
            ("KAFKA_SASL_USERNAME", "app"),
            ("KAFKA_SASL_PASSWORD", "hunter2"),
        ])
        .unwrap_err();
        assert!(!format!("{err} {err:?}").contains("hunter2"), "{err}");
    }

    #[test]
    fn kafka_tls_files_imply_tls_and_a_certificate_needs_its_key() {
        assert!(!Config::default().kafka_tls_enabled);
        let c = parse(&[("KAFKA_TLS_ENABLED", "yes")]).unwrap();
        assert!(c.kafka_tls_enabled && c.kafka_tls_ca_file.is_none());
        let c = parse(&[("KAFKA_TLS_CA_FILE", " /etc/kafka/ca.pem ")]).unwrap();
        assert!(c.kafka_tls_enabled);
        assert_eq!(
            c.kafka_tls_ca_file.as_deref(),
            Some(std::path::Path::new("/etc/kafka/ca.pem"))
        );
        c.validate().unwrap();

        let err = parse(&[("KAFKA_TLS_CERT_FILE", "/etc/kafka/client.pem")]).unwrap_err();
        assert_eq!(err.problems()[0].variable, "KAFKA_TLS_KEY_FILE", "{err}");
        let err = parse(&[("KAFKA_TLS_KEY_FILE", "/etc/kafka/client.key")]).unwrap_err();
        assert_eq!(err.problems()[0].variable, "KAFKA_TLS_CERT_FILE", "{err}");
        let err = parse(&[
            ("KAFKA_TLS_ENABLED", "false"),
            ("KAFKA_TLS_CA_FILE", "/etc/kafka/ca.pem"),
        ])
        .unwrap_err();
        assert_eq!(err.problems()[0].variable, "KAFKA_TLS_ENABLED", "{err}");
        let blank = parse(&[("KAFKA_TLS_CA_FILE", ""), ("KAFKA_TLS_ENABLED", "")]).unwrap();
        assert_eq!(blank, Config::default());
    }

    #[test]
    fn tls_ca_file_needs_rediss() {
        let err = parse(&[("REDIS_TLS_CA_FILE", "/etc/redis/ca.pem")]).unwrap_err();
        assert_eq!(err.problems()[0].variable, "REDIS_TLS_CA_FILE", "{err}");
        assert!(err.to_string().contains("rediss://"), "{err}");
        let c = parse(&[
            ("REDIS_URL", "rediss://cache:6380/0"),
            ("REDIS_TLS_CA_FILE", " /etc/redis/ca.pem "),
        ])
        .unwrap();
        assert_eq!(
            c.redis_tls_ca_file.as_deref(),
            Some(std::path::Path::new("/etc/redis/ca.pem"))
        );
        c.validate().unwrap();
        let blank = parse(&[("REDIS_TLS_CA_FILE", "  ")]).unwrap();
        assert_eq!(blank.redis_tls_ca_file, None);
        assert_eq!(blank.redacted()["REDIS_TLS_CA_FILE"], "");
    }

    #[test]
    fn bad_servers_and_ranges() {
        for (k, v) in [
            ("KAFKA_BOOTSTRAP_SERVERS", ""),
            ("KAFKA_BOOTSTRAP_SERVERS", "localhost"),
            ("KAFKA_BOOTSTRAP_SERVERS", "h:99999"),
            ("EVENT_RETRY_MAX_MS", "5"),
            ("EVENT_HANDLER_CONCURRENCY", "0"),
            ("EVENT_TTL_SECONDS", "-1"),
            ("KAFKA_TOPIC_PREFIX", "has space"),
            ("ENABLED_EVENT_HANDLERS", "Opportunity"),
            ("KAFKA_HEARTBEAT_INTERVAL_MS", "45000"),
            ("KAFKA_SESSION_TIMEOUT_MS", "500"),
            ("KAFKA_GROUP_INSTANCE_ID", "has space"),
            ("KAFKA_ASSIGNMENT_STRATEGY", "sticky"),
        ] {
            let err = parse(&[(k, v)]).expect_err(k);
            assert_eq!(err.problems()[0].variable, k, "{err}");
        }
    }

    proptest! {
        #[test]
        fn any_value_parses_or_names_its_variable(index in 0..VARIABLES.len(), value in ".{0,40}") {
            let name = VARIABLES[index];
            match Config::from_vars([(name, value.as_str())]) {
                Ok(config) => prop_assert!(config.validate().is_ok()),
                Err(err) => prop_assert!(err.problems().iter().all(|p| p.variable == name
                    || (name == "EVENT_RETRY_BASE_MS" && p.variable == "EVENT_RETRY_MAX_MS")
                    // A mechanism names the credentials it lacks, a certificate its key.
                    || (name == "KAFKA_SASL_MECHANISM" && p.variable.starts_with("KAFKA_SASL_"))
                    || (name.starts_with("KAFKA_TLS_") && p.variable.starts_with("KAFKA_TLS_")))),
            }
        }

        #[test]
        fn numbers_in_range_are_accepted(n in 1u32..=10_000) {
            let c = Config::from_vars([("KAFKA_PARTITIONS", n.to_string())]).unwrap();
            prop_assert_eq!(c.kafka_partitions, n);
        }
    }
}
