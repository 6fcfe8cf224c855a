//! The crate's error type.

use std::time::Duration;

use crate::{ConfigError, EventId, EventType};

/// A boxed error from a backend's client library, kept as the source of an [`Error::Backend`]
/// without exposing the client's types.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong on an [`EventBus`](crate::EventBus).
///
/// Each message says what happened and what to do about it. [`Error::is_transient`] tells
/// whether trying the same call again later can succeed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A string is not a valid event type.
    #[error(
        "invalid event type {value:?}: {reason}; use a standard type or lower-case dotted segments such as `billing.invoice_paid`"
    )]
    InvalidEventType {
        /// The value given.
        value: String,
        /// Why it was refused.
        reason: &'static str,
    },

    /// An event or a stored record is not a valid envelope.
    #[error("invalid event: {reason}")]
    InvalidEvent {
        /// What is wrong with it.
        reason: String,
    },

    /// An encoded event is over `EVENT_MAX_PAYLOAD_BYTES`; nothing was written.
    #[error(
        "event {id} ({event_type}) is {size} bytes encoded, over the limit of {limit} bytes (EVENT_MAX_PAYLOAD_BYTES); nothing was published: store large data elsewhere and reference it, or raise the limit"
    )]
    EventTooLarge {
        /// The event's id.
        id: EventId,
        /// The event's type.
        event_type: EventType,
        /// Its encoded size in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },

    /// A configuration value is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),

    /// A call argument is wrong (an empty list of event types, a bad handler name, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// The bus has shut down; it accepts no more work.
    #[error("the event bus has been shut down and accepts no more {operation}; create a new bus")]
    ShutDown {
        /// What was refused (`publishes`, `subscriptions`, ...).
        operation: &'static str,
    },

    /// The backend does not support this operation; its [`Capabilities`](crate::Capabilities)
    /// say so.
    #[error("the {backend} backend does not support {operation}")]
    Unsupported {
        /// The backend's name.
        backend: &'static str,
        /// The operation refused.
        operation: &'static str,
    },

    /// A feature is turned off in the configuration.
    #[error("{feature} is disabled; set {variable}=true to enable it")]
    Disabled {
        /// The feature (`event replay`, `event sourcing`).
        feature: &'static str,
        /// The variable that turns it on.
        variable: &'static str,
    },

    /// An aggregate append named an expected version that is not the current one; nothing was
    /// written.
    #[error(
        "version conflict on {aggregate_type} {aggregate_id}: expected version {expected}, but it is at {actual}; nothing was written: reload the aggregate and retry"
    )]
    VersionConflict {
        /// The aggregate's type.
        aggregate_type: String,
        /// The aggregate's id.
        aggregate_id: String,
        /// The version the caller expected.
        expected: u64,
        /// The current version.
        actual: u64,
    },

    /// No handler of that name is known to this bus.
    #[error("no handler named {name:?} is known to this bus")]
    UnknownHandler {
        /// The name asked for.
        name: String,
    },

    /// An operation did not finish in time.
    #[error("{operation} timed out after {after:?}")]
    Timeout {
        /// What timed out.
        operation: &'static str,
        /// How long it was given.
        after: Duration,
    },

    /// The backend (Redis, Kafka) failed.
    #[error("{backend} backend error: {message}")]
    Backend {
        /// The backend's name.
        backend: &'static str,
        /// What failed, without secrets.
        message: String,
        /// Whether retrying later can succeed (a lost connection) or not (a refused command).
        transient: bool,
        /// The client library's error.
        #[source]
        source: Option<BoxError>,
    },
}

impl Error {
    /// Whether the same call can succeed if tried again later (connection loss, timeouts).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Backend { transient, .. } => *transient,
            Error::Timeout { .. } => true,
            _ => false,
        }
    }

    /// A backend error with a message and no source.
    pub fn backend(backend: &'static str, message: impl Into<String>, transient: bool) -> Self {
        Error::Backend {
            backend,
            message: message.into(),
            transient,
            source: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_backend_and_timeouts_are_transient() {
        assert!(Error::backend("redis", "connection reset", true).is_transient());
        assert!(!Error::backend("redis", "WRONGTYPE", false).is_transient());
        assert!(
            Error::Timeout {
                operation: "publish",
                after: Duration::from_secs(1)
            }
            .is_transient()
        );
        assert!(
            !Error::ShutDown {
                operation: "publishes"
            }
            .is_transient()
        );
    }

    #[test]
    fn messages_say_what_to_do() {
        let e = Error::Disabled {
            feature: "event replay",
            variable: "ENABLE_EVENT_REPLAY",
        };
        assert_eq!(
            e.to_string(),
            "event replay is disabled; set ENABLE_EVENT_REPLAY=true to enable it"
        );
    }
}
