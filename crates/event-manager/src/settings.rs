//! [`Settings`]: every setting of an application's bus, composed from the crates that own
//! them (the shared [`Config`], `RedisConfig`, `KafkaConfig`) and the manager's own variables
//! (`EVENT_BUS_TYPE`, `ENABLE_EVENT_HANDLERS`, `ENABLED_EVENT_HANDLERS`, `EVENT_VIEWS_STORE`,
//! `DATABASE_URL`), read from the
//! environment in one pass that reports every bad variable at once.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use event_core::config::table::{Reader, Rule, Secret, Variable};
use event_core::config::valid_handler_name;
use event_core::{Config, ConfigError, EnvSettings};
#[cfg(feature = "kafka")]
use event_kafka::KafkaConfig;
#[cfg(feature = "redis")]
use event_redis::RedisConfig;

const EVENT_BUS_TYPE: Variable = Variable {
    name: "EVENT_BUS_TYPE",
    default: Some("memory"),
    default_note: "",
    rule: Rule::OneOf(&["memory", "redis", "kafka"]),
    secret: Secret::No,
    original: true,
    doc: "the backend. The original defaulted to `redis`; ours defaults to the embedded bus so that a fresh machine works with nothing running.",
};
const ENABLE_EVENT_HANDLERS: Variable = Variable {
    name: "ENABLE_EVENT_HANDLERS",
    default: Some("true"),
    rule: Rule::Bool,
    doc: "whether the manager registers the domain handlers.",
    ..EVENT_BUS_TYPE
};
const ENABLED_EVENT_HANDLERS: Variable = Variable {
    name: "ENABLED_EVENT_HANDLERS",
    default: Some("all"),
    rule: Rule::Text(
        "all, or a comma-separated list of handler names such as opportunity,user,agent",
    ),
    doc: "which domain handlers; names must be lower-case `a-z0-9_-`; the manager refuses names it does not know.",
    ..EVENT_BUS_TYPE
};

const EVENT_VIEWS_STORE: Variable = Variable {
    name: "EVENT_VIEWS_STORE",
    default: Some("memory"),
    rule: Rule::OneOf(&["memory", "postgres"]),
    original: false,
    doc: "where the domain handlers keep their views: `memory` (each process its own share, empty after a restart) or `postgres` (at `DATABASE_URL`, through the inbox: whole in every process of a group and kept across restarts; follow-up events go through the outbox, and the manager runs its relay). Needs the `postgres` feature (on by default) and `eventbus outbox migrate` once.",
    ..EVENT_BUS_TYPE
};
const DATABASE_URL: Variable = Variable {
    name: "DATABASE_URL",
    default: None,
    rule: Rule::Text("a PostgreSQL URL such as postgres://app@db:5432/app"),
    secret: Secret::UrlPassword,
    original: false,
    doc: "the PostgreSQL database of `EVENT_VIEWS_STORE=postgres` (required then) and of the outbox commands.",
    ..EVENT_BUS_TYPE
};

/// The manager's own variables.
const VARIABLES: &[Variable] = &[
    EVENT_BUS_TYPE,
    ENABLE_EVENT_HANDLERS,
    ENABLED_EVENT_HANDLERS,
    EVENT_VIEWS_STORE,
    DATABASE_URL,
];

/// Which backend `EVENT_BUS_TYPE` selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BusType {
    /// The embedded in-memory bus ([`MemoryBus`](event_core::MemoryBus)).
    Memory,
    /// Redis Streams (the `event-redis` crate).
    Redis,
    /// Apache Kafka (the `event-kafka` crate).
    Kafka,
}

impl BusType {
    const ALL: [BusType; 3] = [BusType::Memory, BusType::Redis, BusType::Kafka];

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

/// Where `EVENT_VIEWS_STORE` keeps the domain handlers' views.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ViewsStore {
    /// In each process's memory (the default): a process sees its share of a group's events,
    /// and nothing after a restart.
    Memory,
    /// In PostgreSQL at `DATABASE_URL`, through `event-outbox`'s inbox and view journal: every
    /// process of a group folds every event, and a restart folds them again.
    Postgres,
}

impl ViewsStore {
    const ALL: [ViewsStore; 2] = [ViewsStore::Memory, ViewsStore::Postgres];

    /// The name used in `EVENT_VIEWS_STORE`.
    pub fn as_str(self) -> &'static str {
        match self {
            ViewsStore::Memory => "memory",
            ViewsStore::Postgres => "postgres",
        }
    }
}

/// Which domain handlers `ENABLED_EVENT_HANDLERS` turns on.
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

/// Every setting of an application's bus: the backend, the settings every backend shares,
/// each built-in backend's own, and which domain handlers run.
///
/// [`Settings::from_env`] reads every variable of `docs/configuration.md` with the names of the
/// original system; [`Settings::variables`] lists them. A [`Config`] alone converts into
/// settings for the memory bus with every other setting at its default.
///
/// ```
/// use event_manager::{BusType, Settings};
///
/// let settings = Settings::from_vars([("EVENT_BUS_TYPE", "redis"), ("EVENT_MAX_RETRIES", "5")])?;
/// assert_eq!(settings.bus_type, BusType::Redis);
/// assert_eq!(settings.bus.max_retries, 5);
///
/// let err = Settings::from_vars([("EVENT_BUS_TYPE", "rabbit"), ("KAFKA_PARTITIONS", "0")])
///     .unwrap_err();
/// assert_eq!(err.problems().len(), 2);
/// # Ok::<(), event_core::ConfigError>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Settings {
    /// `EVENT_BUS_TYPE`: `memory` (default), `redis` or `kafka`.
    pub bus_type: BusType,
    /// The settings every backend shares (`EVENT_*`).
    pub bus: Config,
    /// The Redis backend's settings (`REDIS_*`).
    #[cfg(feature = "redis")]
    pub redis: RedisConfig,
    /// The Kafka backend's settings (`KAFKA_*`).
    #[cfg(feature = "kafka")]
    pub kafka: KafkaConfig,
    /// `ENABLE_EVENT_HANDLERS` (default `true`): the manager registers the domain handlers.
    pub enable_event_handlers: bool,
    /// `ENABLED_EVENT_HANDLERS` (default `all`).
    pub enabled_event_handlers: HandlerSelection,
    /// `EVENT_VIEWS_STORE` (default `memory`).
    pub views_store: ViewsStore,
    /// `DATABASE_URL`: PostgreSQL, for `EVENT_VIEWS_STORE=postgres`.
    pub database_url: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Config::default().into()
    }
}

impl From<Config> for Settings {
    /// The memory bus with `config`, every domain handler, and the backends' defaults.
    fn from(config: Config) -> Self {
        let mut settings = Settings::from_lookup(&|_| None)
            .unwrap_or_else(|err| panic!("the default settings are invalid: {err}"));
        settings.bus = config;
        settings
    }
}

impl Settings {
    /// Every variable read, table by table: the manager's, the shared ones, then each built-in
    /// backend's.
    pub fn variables() -> impl Iterator<Item = &'static Variable> {
        let tables: [&[Variable]; 4] = [
            VARIABLES,
            Config::VARIABLES,
            #[cfg(feature = "redis")]
            RedisConfig::VARIABLES,
            #[cfg(not(feature = "redis"))]
            &[],
            #[cfg(feature = "kafka")]
            KafkaConfig::VARIABLES,
            #[cfg(not(feature = "kafka"))]
            &[],
        ];
        tables.into_iter().flatten()
    }

    /// The names of the variables of every table that the process environment sets: what the
    /// user asked for explicitly (see [`check_capabilities`](crate::check_capabilities)).
    pub fn set_in_env() -> BTreeSet<String> {
        Self::variables()
            .map(|var| var.name)
            .filter(|name| std::env::var_os(name).is_some())
            .map(String::from)
            .collect()
    }

    /// The manager's own variables (`EVENT_BUS_TYPE`, `ENABLE_EVENT_HANDLERS`,
    /// `ENABLED_EVENT_HANDLERS`), for documentation.
    pub fn own_variables() -> &'static [Variable] {
        VARIABLES
    }

    /// Reads every setting from the process environment.
    ///
    /// # Errors
    /// A [`ConfigError`] listing every variable with a bad value, of every table.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(&|name| std::env::var(name).ok())
    }

    /// Reads every setting from the given variables only (tests, embedding).
    ///
    /// # Errors
    /// A [`ConfigError`] listing every variable with a bad value, of every table.
    pub fn from_vars<K, V>(vars: impl IntoIterator<Item = (K, V)>) -> Result<Self, ConfigError>
    where
        K: Into<String>,
        V: Into<String>,
    {
        let vars = event_core::config::table::variables(vars);
        Self::from_lookup(&|name| vars.get(name).cloned())
    }

    /// Checks settings built in code against the same rules as the environment.
    ///
    /// # Errors
    /// A [`ConfigError`] listing every field that is out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        Self::from_lookup(&|name| self.write(name)).map(|_| ())
    }

    /// Every variable and its effective value, with secrets removed: for stats pages and logs.
    pub fn redacted(&self) -> BTreeMap<&'static str, String> {
        Self::variables()
            .filter_map(|var| Some((var.name, var.redact(&self.write(var.name)?))))
            .collect()
    }

    fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut r = Reader::new(lookup);
        let settings = Settings {
            bus_type: r.one_of(&EVENT_BUS_TYPE, &BusType::ALL.map(|t| (t.as_str(), t))),
            bus: Config::read(&mut r),
            #[cfg(feature = "redis")]
            redis: RedisConfig::read(&mut r),
            #[cfg(feature = "kafka")]
            kafka: KafkaConfig::read(&mut r),
            enable_event_handlers: r.bool(&ENABLE_EVENT_HANDLERS),
            enabled_event_handlers: selection(&mut r),
            views_store: r.one_of(
                &EVENT_VIEWS_STORE,
                &ViewsStore::ALL.map(|s| (s.as_str(), s)),
            ),
            database_url: r.optional(&DATABASE_URL),
        };
        if settings.views_store == ViewsStore::Postgres {
            if cfg!(not(feature = "postgres")) {
                r.problem(
                    &EVENT_VIEWS_STORE,
                    "postgres",
                    "memory: this build has no `postgres` feature",
                );
            }
            if settings.database_url.is_none() {
                r.problem(
                    &DATABASE_URL,
                    "",
                    "a PostgreSQL URL: EVENT_VIEWS_STORE=postgres keeps the views there",
                );
            }
        }
        r.finish(settings)
    }

    /// The effective value of one variable, as it would be written in the environment.
    fn write(&self, name: &str) -> Option<String> {
        let own = match name {
            "EVENT_BUS_TYPE" => Some(self.bus_type.to_string()),
            "ENABLE_EVENT_HANDLERS" => Some(self.enable_event_handlers.to_string()),
            "ENABLED_EVENT_HANDLERS" => Some(match &self.enabled_event_handlers {
                HandlerSelection::All => "all".into(),
                HandlerSelection::Only(names) => names.join(","),
            }),
            "EVENT_VIEWS_STORE" => Some(self.views_store.as_str().into()),
            "DATABASE_URL" => self.database_url.clone(),
            _ => None,
        };
        let own = own.or_else(|| self.bus.write(name));
        #[cfg(feature = "redis")]
        let own = own.or_else(|| self.redis.write(name));
        #[cfg(feature = "kafka")]
        let own = own.or_else(|| self.kafka.write(name));
        own
    }
}

/// `ENABLED_EVENT_HANDLERS`: `all`, or names of the rules' form (the manager checks them
/// against the handlers it knows when it is built).
fn selection(r: &mut Reader<'_>) -> HandlerSelection {
    let raw = r.text(&ENABLED_EVENT_HANDLERS);
    if raw.eq_ignore_ascii_case("all") {
        return HandlerSelection::All;
    }
    let names: Vec<String> = raw
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    if names.is_empty() || !names.iter().all(|n| valid_handler_name(n)) {
        r.invalid(&ENABLED_EVENT_HANDLERS, &raw);
    }
    HandlerSelection::Only(names)
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Through `redacted`, so that no password reaches a log.
        let mut s = f.debug_struct("Settings");
        for (name, value) in self.redacted() {
            s.field(name, &value);
        }
        s.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_is_read_at_once_and_every_problem_reported() {
        let err = Settings::from_vars([
            ("EVENT_BUS_TYPE", "rabbit"),
            ("KAFKA_PARTITIONS", "0"),
            ("EVENT_MAX_RETRIES", "three"),
            ("REDIS_URL", "http://admin:hunter2@cache"),
            ("ENABLED_EVENT_HANDLERS", "Opportunity"),
        ])
        .unwrap_err();
        let text = err.to_string();
        assert_eq!(err.problems().len(), 5, "{text}");
        assert!(
            text.contains(
                r#"EVENT_BUS_TYPE="rabbit" is not valid: expected one of memory, redis, kafka"#
            ),
            "{text}"
        );
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn views_in_postgres_need_a_database_url_whose_password_stays_hidden() {
        let err = Settings::from_vars([("EVENT_VIEWS_STORE", "postgres")]).unwrap_err();
        assert!(err.to_string().contains("DATABASE_URL"), "{err}");
        let settings = Settings::from_vars([
            ("EVENT_VIEWS_STORE", "Postgres"),
            ("DATABASE_URL", "postgres://app:hunter2@db:5432/app"),
        ])
        .unwrap();
        assert_eq!(settings.views_store, ViewsStore::Postgres);
        settings.validate().unwrap();
        let shown = format!("{settings:?}");
        assert!(
            shown.contains("EVENT_VIEWS_STORE") && !shown.contains("hunter2"),
            "{shown}"
        );
        assert_eq!(Settings::default().views_store, ViewsStore::Memory);
    }

    #[test]
    fn defaults_round_trip_and_secrets_stay_hidden() {
        let settings = Settings::from_vars([
            ("EVENT_BUS_TYPE", "Kafka"),
            ("REDIS_URL", "redis://admin:hunter2@cache:6379/0"),
            ("KAFKA_SASL_MECHANISM", "PLAIN"),
            ("KAFKA_SASL_USERNAME", "app"),
            ("KAFKA_SASL_PASSWORD", "hunter2"),
            ("ENABLE_EVENT_HANDLERS", "no"),
            ("ENABLED_EVENT_HANDLERS", "opportunity, user,,agent"),
        ])
        .unwrap();
        assert_eq!(settings.bus_type, BusType::Kafka);
        assert!(!settings.enable_event_handlers);
        assert_eq!(
            settings.enabled_event_handlers,
            HandlerSelection::Only(vec!["opportunity".into(), "user".into(), "agent".into()])
        );
        settings.validate().unwrap();
        let shown = format!("{settings:?} {:?}", settings.redacted());
        assert!(!shown.contains("hunter2"), "{shown}");
        assert_eq!(
            Settings::default(),
            Settings::from_vars::<&str, &str>([]).unwrap()
        );
        let names: Vec<_> = Settings::variables().map(|v| v.name).collect();
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "a variable declared twice");
    }
}
