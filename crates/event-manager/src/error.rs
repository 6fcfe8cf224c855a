//! [`Error`]: everything the manager can refuse, each with what to do about it.

use event_core::ConfigError;

/// An error of the manager. Each message says what to change.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration has bad values (from `event_core::Config`).
    #[error(transparent)]
    Config(#[from] ConfigError),

    /// The configuration asks for something the chosen backend cannot do.
    #[error("the configuration does not fit the {backend} backend:\n  - {}", problems.join("\n  - "))]
    Capability {
        /// The backend (`EVENT_BUS_TYPE`).
        backend: &'static str,
        /// Each problem, naming the variable and what to change.
        problems: Vec<String>,
    },

    /// `EVENT_BUS_TYPE` names a backend this build was compiled without.
    #[error(
        "EVENT_BUS_TYPE={backend} but this build has no {backend} backend: rebuild event-manager with the cargo feature \"{backend}\" (on by default), or set EVENT_BUS_TYPE=memory"
    )]
    BackendNotBuilt {
        /// The backend asked for.
        backend: &'static str,
    },

    /// `ENABLED_EVENT_HANDLERS` names a domain handler that does not exist.
    #[error(
        "ENABLED_EVENT_HANDLERS names unknown handler {name:?}: expected \"all\" or a comma-separated list of {known}"
    )]
    UnknownDomainHandler {
        /// The name given.
        name: String,
        /// The names allowed, comma-separated.
        known: String,
    },

    /// A domain handler could not be built (its audit trail's sink cannot be opened, say).
    #[error("cannot build a domain handler: {0}")]
    DomainHandler(#[source] event_handlers::Error),

    /// A handler with this name is already registered.
    #[error("a handler named {0:?} is already registered; remove it first or choose another name")]
    DuplicateHandler(String),

    /// No handler with this name is registered.
    #[error("no handler named {0:?} is registered")]
    UnknownHandler(String),

    /// The manager is not running (never started, or stopped).
    #[error("the event bus manager is not running; call start() first")]
    NotRunning,

    /// A module-level function was called before a manager was installed.
    #[error(
        "no event bus manager is installed in this process; build one and call event_manager::install(manager) (or use event_bus_lifespan) first"
    )]
    NotInstalled,

    /// A second manager was installed while one is installed.
    #[error(
        "an event bus manager is already installed in this process; there is only ever one: use get_event_bus_manager(), or uninstall() the old one first"
    )]
    AlreadyInstalled,

    /// A payload failed the validation of its typed event; nothing was published.
    #[error(transparent)]
    Publish(event_publishers::Error),

    /// The bus failed.
    #[error(transparent)]
    Bus(#[from] event_core::Error),

    /// A setting of the manager's own (such as `EVENT_API_TOKENS`) is not valid.
    #[error("{variable} is not valid: {problem}")]
    InvalidSetting {
        /// The variable.
        variable: &'static str,
        /// What is wrong and what is expected (never the secret itself).
        problem: String,
    },

    /// PostgreSQL failed, for views stored there (`EVENT_VIEWS_STORE=postgres`) or the outbox
    /// relay: not reachable, a bad `DATABASE_URL`, or a schema that `eventbus outbox migrate`
    /// has not created.
    #[cfg(feature = "postgres")]
    #[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
    #[error("PostgreSQL (DATABASE_URL): {0}")]
    Postgres(#[source] event_outbox::OutboxError),

    /// Waiting for the shutdown signal failed.
    #[error("cannot listen for the shutdown signal: {0}")]
    Signal(#[source] std::io::Error),
}

impl Error {
    /// Whether trying again later can succeed (a backend that cannot be reached yet).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Bus(e) => e.is_transient(),
            #[cfg(feature = "postgres")]
            Error::Postgres(e) => e.is_transient(),
            _ => false,
        }
    }
}
