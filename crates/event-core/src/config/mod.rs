//! [`Config`]: the settings every backend shares, read from the environment with errors that
//! say what to fix; and the [variable tables](table) that each crate with settings of its own
//! (the backends, the manager) declares its variables in.

mod error;
mod parse;
pub mod table;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

pub use error::{ConfigError, ConfigProblem};
pub use parse::valid_handler_name;
pub use table::{EnvSettings, redact_url};

use crate::RetryPolicy;

/// The settings every backend shares: batches, retries, retention, group naming and the
/// dispatcher.
///
/// Each backend reads its own settings beside these (`event_redis::RedisConfig`,
/// `event_kafka::KafkaConfig`), and the manager composes them all from the environment
/// (`event_manager::Settings::from_env`). [`Config::from_env`] reads the variables of
/// [`Config::VARIABLES`](EnvSettings::VARIABLES); each field's doc names its variable. A bad
/// value is a [`ConfigError`] that names the variable, the value and what is allowed, and
/// lists every problem at once.
///
/// ```
/// use event_core::Config;
///
/// let config = Config::from_vars([("EVENT_MAX_RETRIES", "5")])?;
/// assert_eq!(config.max_retries, 5);
///
/// let err = Config::from_vars([("EVENT_BATCH_SIZE", "0")]).unwrap_err();
/// assert!(err.to_string().contains("EVENT_BATCH_SIZE"));
/// # Ok::<(), event_core::ConfigError>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// `ENABLE_EVENT_SOURCING` (default `true`): aggregate append and load are allowed.
    pub enable_event_sourcing: bool,
    /// `ENABLE_EVENT_REPLAY` (default `true`): replay is allowed.
    pub enable_event_replay: bool,
    /// `EVENT_BATCH_SIZE` (default 100): events per batch publisher flush and per consumer read.
    pub batch_size: usize,
    /// `EVENT_FLUSH_INTERVAL_MS` (default 1000): the batch publisher's flush timer.
    pub flush_interval: Duration,
    /// `EVENT_TTL_SECONDS` (default 604800, 7 days): how long Redis and memory keep events.
    pub event_ttl: Duration,
    /// `EVENT_CONSUMER_GROUP`, or its alias `KAFKA_CONSUMER_GROUP` (default
    /// `ai-opportunity-consumers`): handler groups are `{consumer_group}.{handler}`.
    pub consumer_group: String,
    /// `EVENT_MAX_RETRIES` (default 3), 0 to 100.
    pub max_retries: u32,
    /// `ENABLE_EVENT_ENCRYPTION` (default `false`): payloads are encrypted with the first of
    /// [`encryption_keys`](Self::encryption_keys), which it requires.
    pub encrypt_payloads: bool,
    /// `EVENT_ENCRYPTION_KEYS` (default unset): the keys that decrypt stored payloads, the
    /// first of which encrypts ([`EncryptionKeys`](crate::encryption::EncryptionKeys)).
    pub encryption_keys: Option<crate::encryption::EncryptionKeys>,
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
    /// The defaults of [`Config::VARIABLES`](EnvSettings::VARIABLES): the original system's where
    /// it had the variable.
    fn default() -> Self {
        table::defaults()
    }
}

impl Config {
    /// Reads the configuration from the process environment.
    ///
    /// # Errors
    /// A [`ConfigError`] listing every variable with a bad value.
    pub fn from_env() -> Result<Self, ConfigError> {
        <Self as EnvSettings>::from_env()
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
        <Self as EnvSettings>::from_vars(vars)
    }

    /// Checks a configuration built in code against the same rules as the environment.
    ///
    /// # Errors
    /// A [`ConfigError`] listing every field that is out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        <Self as EnvSettings>::validate(self)
    }

    /// Every variable and its effective value: for stats pages and logs.
    pub fn redacted(&self) -> BTreeMap<&'static str, String> {
        <Self as EnvSettings>::redacted(self)
    }

    /// The retry policy these settings describe.
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy::new(self.max_retries, self.retry_base, self.retry_max)
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("Config");
        for (name, value) in self.redacted() {
            s.field(name, &value);
        }
        s.finish()
    }
}
