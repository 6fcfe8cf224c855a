//! The [`EventHandler`] trait and [`HandlerError`], which says whether a failure is worth
//! retrying.

use std::borrow::Cow;
use std::fmt;

use async_trait::async_trait;

use crate::Event;
use crate::error::BoxError;

/// Something that processes events: the unit a subscription delivers to.
///
/// `handle` returning `Ok` acknowledges the event. A [transient](HandlerError::transient) error
/// is retried with backoff; a [permanent](HandlerError::permanent) one, or the last failed
/// attempt, sends the event to the handler's dead-letter queue. A panic counts as a transient
/// failure: the subscription survives it.
///
/// ```
/// use async_trait::async_trait;
/// use event_core::{Event, EventHandler, HandlerError};
///
/// struct Greeter;
///
/// #[async_trait]
/// impl EventHandler for Greeter {
///     fn name(&self) -> &str {
///         "greeter"
///     }
///
///     async fn handle(&self, event: &Event) -> Result<(), HandlerError> {
///         let email = event.payload.get("email").and_then(|v| v.as_str())
///             .ok_or_else(|| HandlerError::permanent("user.registered without an email"))?;
///         println!("welcome, {email}");
///         Ok(())
///     }
/// }
/// ```
#[async_trait]
pub trait EventHandler: Send + Sync + 'static {
    /// The handler's name: its consumer group is `{EVENT_CONSUMER_GROUP}.{name}`. Lower-case
    /// letters, digits, `_` and `-`; stable across restarts, since it identifies the group's
    /// position in the log.
    fn name(&self) -> &str;

    /// Processes one event.
    async fn handle(&self, event: &Event) -> Result<(), HandlerError>;

    /// Called after each failed attempt, before any retry or dead-lettering. The default logs
    /// the failure at `warn` level.
    async fn on_error(&self, event: &Event, error: &HandlerError, attempt: u32) {
        tracing::warn!(
            handler = self.name(),
            event_id = %event.id,
            event_type = %event.event_type,
            attempt,
            transient = error.is_transient(),
            "handler failed: {error}"
        );
    }
}

/// Whether a handler failure is worth retrying.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// Retrying later can succeed (a dependency is down, a timeout).
    Transient,
    /// Retrying cannot succeed (the event is invalid for this handler).
    Permanent,
}

/// A handler failure: a message, whether it is transient, and the underlying error.
pub struct HandlerError {
    kind: FailureKind,
    message: Cow<'static, str>,
    source: Option<BoxError>,
}

impl HandlerError {
    /// A failure that is worth retrying.
    pub fn transient(error: impl Into<BoxError>) -> Self {
        Self::with_kind(FailureKind::Transient, error.into())
    }

    /// A failure that retrying cannot fix: the event goes straight to the dead-letter queue.
    pub fn permanent(error: impl Into<BoxError>) -> Self {
        Self::with_kind(FailureKind::Permanent, error.into())
    }

    /// A failure with a message only.
    pub fn new(kind: FailureKind, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
        }
    }

    fn with_kind(kind: FailureKind, error: BoxError) -> Self {
        Self {
            kind,
            message: Cow::Owned(error.to_string()),
            source: Some(error),
        }
    }

    /// Transient or permanent.
    pub fn kind(&self) -> FailureKind {
        self.kind
    }

    /// Whether retrying can help.
    pub fn is_transient(&self) -> bool {
        self.kind == FailureKind::Transient
    }

    /// The failure's message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerError")
            .field("kind", &self.kind)
            .field("message", &self.message)
            .finish()
    }
}

impl std::error::Error for HandlerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as _)
    }
}

/// Turns any `Result` into a handler result of the chosen kind: `call().await.transient()?`.
pub trait ResultExt<T> {
    /// Marks the error as transient.
    fn transient(self) -> Result<T, HandlerError>;
    /// Marks the error as permanent.
    fn permanent(self) -> Result<T, HandlerError>;
}

impl<T, E: Into<BoxError>> ResultExt<T> for Result<T, E> {
    fn transient(self) -> Result<T, HandlerError> {
        self.map_err(HandlerError::transient)
    }

    fn permanent(self) -> Result<T, HandlerError> {
        self.map_err(HandlerError::permanent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_sources() {
        let io = std::io::Error::other("disk gone");
        let e: Result<(), _> = Err::<(), _>(io).transient();
        let e = e.unwrap_err();
        assert!(e.is_transient());
        assert_eq!(e.to_string(), "disk gone");
        assert!(std::error::Error::source(&e).is_some());
        let p = HandlerError::permanent("bad payload");
        assert_eq!(p.kind(), FailureKind::Permanent);
        assert!(!p.is_transient());
    }
}
