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

/// Where the domain handlers keep their views: in memory, or in PostgreSQL
/// (`EVENT_VIEWS_STORE=postgres`) through this pool.
#[derive(Clone, Debug, Default)]
pub(crate) struct ViewsPool {
    #[cfg(feature = "postgres")]
    pub(crate) pool: Option<sqlx::PgPool>,
}

impl ViewsPool {
    /// The pool `config` asks for (none for memory views); it connects when first used.
    pub(crate) fn new(config: &Settings) -> Result<Self, Error> {
        #[cfg(feature = "postgres")]
        if config.views_store == crate::ViewsStore::Postgres
            && let Some(url) = &config.database_url
        {
            return Ok(Self {
                pool: Some(crate::postgres::pool(url)?),
            });
        }
        let _ = config;
        Ok(Self::default())
    }

    /// The handler and view of `built`: itself in memory, or its view stored in PostgreSQL.
    fn place(
        &self,
        built: event_handlers::DomainHandler,
        ctx: &DomainContext,
    ) -> (Arc<dyn EventHandler>, Arc<dyn View>) {
        #[cfg(feature = "postgres")]
        if let Some(pool) = &self.pool
            && built.fold.is_some()
        {
            return crate::postgres::stored_view(built.kind, ctx, pool);
        }
        let _ = ctx;
        (built.handler, built.view)
    }

    /// The outbox relay that views stored in PostgreSQL need for their follow-up events.
    pub(crate) fn relay(&self) -> Option<Arc<dyn crate::Component>> {
        #[cfg(feature = "postgres")]
        if let Some(pool) = &self.pool {
            return Some(Arc::new(crate::OutboxRelay::new(pool.clone())));
        }
        None
    }

    /// Checks that PostgreSQL has the schema of the views (`eventbus outbox migrate`).
    pub(crate) async fn check(&self) -> Result<(), Error> {
        #[cfg(feature = "postgres")]
        if let Some(pool) = &self.pool {
            event_outbox::check_schema(pool)
                .await
                .map_err(Error::Postgres)?;
        }
        Ok(())
    }
}

/// Builds the selected domain handlers on `bus`, each wrapped in the tracing and metrics
/// layers (outermost first, as `event_handlers::middleware` documents), with their views where
/// `views` keeps them.
pub(crate) fn build(
    config: &Settings,
    bus: &Arc<dyn EventBus>,
    context: &dyn Fn(Arc<dyn EventBus>) -> Result<DomainContext, Error>,
    views: &ViewsPool,
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
        let spec = SubscriptionSpec::new(name.clone(), built.event_types.clone());
        let (handler, view) = views.place(built, &ctx);
        let handler: Arc<dyn EventHandler> = Arc::new(
            ServiceBuilder::new()
                .layer(TracingLayer::new())
                .layer(MetricsLayer::new(config.bus.retry_policy()))
                .service(SharedHandler::new(handler)),
        );
        entries.push((
            name,
            Entry::new(spec, handler, HandlerOrigin::Domain, Some(view)),
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
