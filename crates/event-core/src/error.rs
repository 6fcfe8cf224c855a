//! The crate's error type.

use std::sync::Arc;
use std::time::Duration;

use crate::{ConfigError, Event, EventId, EventType};

/// A boxed error from a backend's client library, kept as the source of an [`Error::Backend`]
/// without exposing the client's types.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong on an [`EventBus`](crate::EventBus).
///
/// Each message says what happened and what to do about it. [`Error::is_transient`] tells
/// whether trying the same call again later can succeed; [`Error::kind`] sorts errors by what
/// the caller can do about them.
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

    /// A stored event's payload is encrypted and cannot be decrypted: its key is not in
    /// `EVENT_ENCRYPTION_KEYS`, or the ciphertext does not authenticate. Consumers dead-letter
    /// it (reason [`Undecryptable`](crate::DeadLetterReason::Undecryptable)) with the sealed
    /// event, which a redrive publishes again once the key is added.
    #[error("cannot decrypt event {} ({}): {reason}", event.id, event.event_type)]
    Undecryptable {
        /// The event as stored, its payload still sealed.
        event: Box<Event>,
        /// Why it cannot be opened, naming the key id.
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

/// What kind of failure an [`Error`] is, by what the caller can do about it: retry, fix the
/// input, fix the configuration, or give up. New kinds may be added.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The event or the call's arguments are wrong (an invalid event type or envelope, an
    /// event over the size limit, a bad argument): fix them; retrying the same call fails again.
    InvalidInput,
    /// The configuration is wrong, or turns the feature off: fix the configuration.
    Configuration,
    /// The backend cannot do this at all (its [`Capabilities`](crate::Capabilities) say so):
    /// use another backend or do without.
    Unsupported,
    /// An optimistic-concurrency check failed: reload the current state and try again.
    Conflict,
    /// What the call names does not exist (a handler unknown to the bus): fix the name.
    NotFound,
    /// The bus has been shut down: give up on this bus (create a new one).
    ShutDown,
    /// The call did not finish in time: retrying later can succeed.
    Timeout,
    /// The backend could not be reached or is not available for now (a lost connection, a
    /// broker without a leader): retrying later can succeed.
    Unavailable,
    /// The backend refused the call and will refuse it again (a rejected command, a denied
    /// permission): do not retry; the message says what to change.
    Refused,
}

impl ErrorKind {
    /// Whether an error of this kind can go away if the same call is tried again later.
    pub fn is_transient(self) -> bool {
        matches!(self, ErrorKind::Timeout | ErrorKind::Unavailable)
    }
}

/// An error shared by several results, as the `source` of each: [`Error`] and [`BoxError`]
/// are not `Clone`, so one failure that befalls a whole batch keeps its source this way (see
/// [`backend::SharedFailure`](crate::backend::SharedFailure)). It is transparent: it shows
/// as the error it holds, and its source is that error's source.
#[derive(Clone, Debug)]
pub struct SharedSource(Arc<dyn std::error::Error + Send + Sync + 'static>);

impl SharedSource {
    /// Shares `error`.
    pub fn new(error: Arc<dyn std::error::Error + Send + Sync + 'static>) -> Self {
        Self(error)
    }

    /// The shared error.
    pub fn get_ref(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.0
    }
}

impl std::fmt::Display for SharedSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for SharedSource {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl Error {
    /// What kind of failure this is, by what the caller can do about it.
    ///
    /// A backend error is [`ErrorKind::Unavailable`] when transient and
    /// [`ErrorKind::Refused`] otherwise, unless its source is an [`Error`] shared through a
    /// [`SharedSource`] (one failure reported for each event of a batch): then it is that
    /// error's kind.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidEventType { .. }
            | Error::InvalidEvent { .. }
            | Error::EventTooLarge { .. }
            | Error::InvalidArgument(_) => ErrorKind::InvalidInput,
            Error::Config(_) | Error::Disabled { .. } | Error::Undecryptable { .. } => {
                ErrorKind::Configuration
            }
            Error::Unsupported { .. } => ErrorKind::Unsupported,
            Error::VersionConflict { .. } => ErrorKind::Conflict,
            Error::UnknownHandler { .. } => ErrorKind::NotFound,
            Error::ShutDown { .. } => ErrorKind::ShutDown,
            Error::Timeout { .. } => ErrorKind::Timeout,
            Error::Backend {
                transient, source, ..
            } => {
                let shared = source
                    .as_deref()
                    .and_then(|s| s.downcast_ref::<SharedSource>())
                    .and_then(|s| s.get_ref().downcast_ref::<Error>());
                match shared {
                    Some(error) => error.kind(),
                    None if *transient => ErrorKind::Unavailable,
                    None => ErrorKind::Refused,
                }
            }
        }
    }

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
    fn kinds_say_what_to_do() {
        assert_eq!(
            Error::backend("kafka", "connection reset", true).kind(),
            ErrorKind::Unavailable
        );
        assert_eq!(
            Error::backend("kafka", "TOPIC_AUTHORIZATION_FAILED", false).kind(),
            ErrorKind::Refused
        );
        let timeout = Error::Timeout {
            operation: "produce",
            after: Duration::from_secs(1),
        };
        assert_eq!(timeout.kind(), ErrorKind::Timeout);
        assert_eq!(
            Error::InvalidArgument("no event types".into()).kind(),
            ErrorKind::InvalidInput
        );
        assert_eq!(
            Error::Disabled {
                feature: "event replay",
                variable: "ENABLE_EVENT_REPLAY"
            }
            .kind(),
            ErrorKind::Configuration
        );
        assert_eq!(
            Error::UnknownHandler { name: "x".into() }.kind(),
            ErrorKind::NotFound
        );
        assert_eq!(
            Error::ShutDown {
                operation: "publishes"
            }
            .kind(),
            ErrorKind::ShutDown
        );
        // The kind agrees with `is_transient` everywhere.
        for e in [
            Error::backend("redis", "reset", true),
            Error::backend("redis", "WRONGTYPE", false),
            timeout,
            Error::InvalidArgument("x".into()),
        ] {
            assert_eq!(e.kind().is_transient(), e.is_transient(), "{e}");
        }
    }

    #[test]
    fn a_shared_source_is_transparent() {
        use std::error::Error as _;
        let root = std::io::Error::other("root cause");
        let shared = SharedSource::new(Arc::new(Error::Backend {
            backend: "redis",
            message: "EVALSHA failed".into(),
            transient: false,
            source: Some(Box::new(root)),
        }));
        assert_eq!(shared.to_string(), "redis backend error: EVALSHA failed");
        assert_eq!(
            shared.source().map(|s| s.to_string()).as_deref(),
            Some("root cause")
        );
        let copy = Error::Backend {
            backend: "redis",
            message: shared.to_string(),
            transient: false,
            source: Some(Box::new(shared.clone())),
        };
        assert_eq!(copy.kind(), ErrorKind::Refused);
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
