//! The domain handlers that `ENABLE_EVENT_HANDLERS` and `ENABLED_EVENT_HANDLERS` choose.
//!
//! Placeholder until the `event-handlers` crate lands: the names are known and checked, and
//! no handler is built yet.

use std::sync::Arc;

use event_core::{Config, EventBus, HandlerSelection};

use crate::ManagerError;
use crate::registry::{Entry, HandlerOrigin};

/// A handler's queryable state.
pub trait View: Send + Sync + 'static {
    /// The view's name.
    fn name(&self) -> &str;
    /// The view's current contents as JSON.
    fn snapshot(&self) -> serde_json::Value;
}

/// The domain handlers' names, as `ENABLED_EVENT_HANDLERS` writes them.
pub(crate) const DOMAIN_HANDLERS: &[&str] = &[
    "opportunity",
    "user",
    "agent",
    "market_signal",
    "system",
    "audit",
];

/// Checks the names of `ENABLED_EVENT_HANDLERS`.
pub(crate) fn check_selection(config: &Config) -> Result<(), ManagerError> {
    if let HandlerSelection::Only(names) = &config.enabled_event_handlers {
        for name in names {
            if !DOMAIN_HANDLERS.contains(&name.as_str()) {
                return Err(ManagerError::UnknownDomainHandler {
                    name: name.clone(),
                    known: DOMAIN_HANDLERS.join(", "),
                });
            }
        }
    }
    Ok(())
}

/// Builds the selected domain handlers on `bus`.
pub(crate) fn build(
    config: &Config,
    bus: &Arc<dyn EventBus>,
) -> Result<Vec<(String, Entry)>, ManagerError> {
    let _ = (config, bus, HandlerOrigin::Domain);
    Ok(Vec::new())
}

/// The event catalog as JSON: every typed event with its schema version, partition key,
/// publisher, JSON Schema and an example (what `docs/events.md` renders).
pub fn catalog_json() -> serde_json::Value {
    event_publishers::catalog()
        .iter()
        .map(|e| {
            serde_json::json!({
                "event_type": e.event_type.as_str(),
                "type_name": e.type_name,
                "description": e.description(),
                "source": e.source,
                "publisher_method": e.method,
                "schema_version": e.schema_version,
                "partition_key": e.partition_key,
                "schema": e.schema(),
                "example": e.example,
            })
        })
        .collect()
}
