//! What every handler's view shares: the [`View`] trait (a view as JSON, for
//! `GET /views/{handler}`), [`to_json`] and how many event ids a view remembers.

use serde::Serialize;

/// Event ids each view remembers so that a redelivered event is not applied twice.
pub(crate) const RECENT_IDS: usize = 10_000;

/// A handler's view as JSON: what `GET /views/{handler}` returns.
///
/// Each domain handler implements it; its typed view is also available to Rust callers
/// ([`AgentEventHandler::fleet`](crate::AgentEventHandler::fleet),
/// [`OpportunityEventHandler::catalog`](crate::OpportunityEventHandler::catalog), ...).
pub trait View: Send + Sync {
    /// The view's name: the handler's configuration name (`agent`, `opportunity`, ...).
    fn name(&self) -> &str;

    /// The view as it is now, as a JSON value.
    fn snapshot(&self) -> serde_json::Value;
}

/// A view serialized to JSON; a view that cannot be (a float that is not finite, say) comes
/// back as an object saying why rather than failing the caller.
pub(crate) fn to_json(view: &impl Serialize) -> serde_json::Value {
    serde_json::to_value(view).unwrap_or_else(
        |e| serde_json::json!({"error": format!("the view could not be serialized: {e}")}),
    )
}
