//! What every handler's view shares: the [`View`] trait (a view as JSON, for
//! `GET /views/{handler}`), the [`Fold`] trait (a view as a fold of events, for a store
//! outside the process), [`to_json`] and how many event ids a view remembers.

use async_trait::async_trait;
use event_core::{BoxError, Event, EventHandler, HandlerError};
use serde::Serialize;

/// Event ids each view remembers so that a redelivered event is not applied twice.
pub(crate) const RECENT_IDS: usize = 10_000;

/// A handler's view as JSON: what `GET /views/{handler}` returns.
///
/// Each domain handler implements it; its typed view is also available to Rust callers
/// ([`AgentEventHandler::fleet`](crate::AgentEventHandler::fleet),
/// [`OpportunityEventHandler::catalog`](crate::OpportunityEventHandler::catalog), ...).
#[async_trait]
pub trait View: Send + Sync {
    /// The view's name: the handler's configuration name (`agent`, `opportunity`, ...).
    fn name(&self) -> &str;

    /// The view as it is now, as a JSON value.
    fn snapshot(&self) -> serde_json::Value;

    /// Brings the view up to date before it is read. A view kept in this process's memory is
    /// always current (the default does nothing); a view stored elsewhere (`event-outbox`'s
    /// `PostgresView`) reads here what other processes applied since.
    ///
    /// # Errors
    /// When the store cannot be read; the snapshot is then what this process knew last.
    async fn refresh(&self) -> Result<(), BoxError> {
        Ok(())
    }
}

/// A view made by applying events one at a time: what a store outside the process needs to
/// rebuild it, in every process, from the events it applied (`event-outbox`'s `PostgresView`
/// keeps them in PostgreSQL). The domain handlers implement it; handling an event is folding
/// it and publishing its follow-ups.
pub trait Fold: EventHandler + View {
    /// Applies `event` to the view and returns the follow-up events it calls for (alerts,
    /// re-analysis requests), not yet published: the caller publishes them, or drops them when
    /// it replays events another process already handled. An event id applied before changes
    /// nothing and calls for nothing.
    ///
    /// # Errors
    /// A permanent [`HandlerError`] when the event cannot be applied (a malformed payload, a
    /// type the handler does not handle). A payload is checked before anything changes, but
    /// an update that fails later may be partly applied: a store outside the process rebuilds
    /// the view after an error.
    fn fold(&self, event: &Event) -> Result<Vec<Event>, HandlerError>;
}

/// A view serialized to JSON; a view that cannot be (a float that is not finite, say) comes
/// back as an object saying why rather than failing the caller.
pub(crate) fn to_json(view: &impl Serialize) -> serde_json::Value {
    serde_json::to_value(view).unwrap_or_else(
        |e| serde_json::json!({"error": format!("the view could not be serialized: {e}")}),
    )
}
