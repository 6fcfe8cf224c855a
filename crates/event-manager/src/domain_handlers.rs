//! The domain handlers that `ENABLE_EVENT_HANDLERS` and `ENABLED_EVENT_HANDLERS` choose, built
//! by `event-handlers` at each start, and the event catalog of `event-publishers`.

use std::str::FromStr;
use std::sync::Arc;

use event_core::{EventBus, EventHandler, SubscriptionSpec};
use event_handlers::middleware::{MetricsLayer, SharedHandler, TracingLayer};
use event_handlers::{DomainContext, DomainHandlerKind};
use tower::ServiceBuilder;

pub use event_handlers::View;

use crate::Error;
use crate::registry::{Entry, HandlerOrigin};
use crate::settings::{HandlerSelection, Settings};

/// Checks the names of `ENABLED_EVENT_HANDLERS` (case-sensitive, as the variable's rules say).
pub(crate) fn check_selection(config: &Settings) -> Result<(), Error> {
    selected(config).map(|_| ())
}

fn selected(config: &Settings) -> Result<Vec<DomainHandlerKind>, Error> {
    if !config.enable_event_handlers {
        return Ok(Vec::new());
    }
    match &config.enabled_event_handlers {
        HandlerSelection::All => Ok(DomainHandlerKind::ALL.to_vec()),
        HandlerSelection::Only(names) => names
            .iter()
            .map(|name| {
                DomainHandlerKind::from_str(name).map_err(|_| Error::UnknownDomainHandler {
                    name: name.clone(),
                    known: DomainHandlerKind::allowed(),
                })
            })
            .collect(),
    }
}

/// Builds the selected domain handlers on `bus`, each wrapped in the tracing and metrics
/// layers (outermost first, as `event_handlers::middleware` documents).
pub(crate) fn build(
    config: &Settings,
    bus: &Arc<dyn EventBus>,
    context: &dyn Fn(Arc<dyn EventBus>) -> Result<DomainContext, Error>,
) -> Result<Vec<(String, Entry)>, Error> {
    let kinds = selected(config)?;
    if kinds.is_empty() {
        return Ok(Vec::new());
    }
    let ctx = context(bus.clone())?;
    let mut entries = Vec::with_capacity(kinds.len());
    for kind in kinds {
        let built = event_handlers::build(kind, &ctx).map_err(Error::DomainHandler)?;
        let name = kind.as_str().to_string();
        let handler: Arc<dyn EventHandler> = Arc::new(
            ServiceBuilder::new()
                .layer(TracingLayer::new())
                .layer(MetricsLayer::new(config.bus.retry_policy()))
                .service(SharedHandler::new(built.handler)),
        );
        let spec = SubscriptionSpec::new(name.clone(), built.event_types);
        entries.push((
            name,
            Entry::new(spec, handler, HandlerOrigin::Domain, Some(built.view)),
        ));
    }
    Ok(entries)
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
