//! PostgreSQL, through `event-outbox`: the domain handlers' views stored there
//! (`EVENT_VIEWS_STORE=postgres`) and the outbox relay as a supervised [`Component`].

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use event_core::{EventBus, EventHandler, HealthStatus};
use event_handlers::middleware::ConcurrencyLimitLayer;
use event_handlers::{DomainContext, DomainHandlerKind, View};
use event_outbox::{InboxConfig, InboxLayer, Outbox, PostgresView, Relay, RelayConfig};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tower::ServiceBuilder;

use crate::{Component, ComponentError, Error, Shutdown};

/// A pool for one process: a transaction per view being handled, the relay's listening
/// connection and rounds, and reads; it connects when first used.
pub(crate) fn pool(url: &str) -> Result<PgPool, Error> {
    PgPoolOptions::new()
        .max_connections(12)
        .acquire_timeout(Duration::from_secs(30))
        .connect_lazy(url)
        .map_err(|e| Error::Postgres(e.into()))
}

/// The relay of the PostgreSQL outbox as a [`Component`]: the manager runs it beside the bus,
/// restarts it when it fails and reports it in health (parked events, a backlog older than five
/// minutes, failed rounds). The manager adds one itself with `EVENT_VIEWS_STORE=postgres`,
/// whose follow-up events go through the outbox; `eventbus serve --outbox-relay` adds one.
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub struct OutboxRelay {
    pool: PgPool,
    /// The relay of the current run, for its counters.
    current: Mutex<Option<Relay>>,
}

/// How long the oldest pending event may wait before health calls the relay behind.
const BEHIND_AFTER: time::Duration = time::Duration::minutes(5);

impl std::fmt::Debug for OutboxRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboxRelay").finish_non_exhaustive()
    }
}

impl OutboxRelay {
    /// A relay of the default outbox (channel [`DEFAULT_CHANNEL`](event_outbox::DEFAULT_CHANNEL))
    /// in `pool`'s database, with the default [`RelayConfig`].
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            current: Mutex::new(None),
        }
    }

    /// A relay of the default outbox at `url`; it connects when it runs (and waits for a
    /// PostgreSQL that is not up yet).
    ///
    /// # Errors
    /// [`Error::Postgres`] when `url` is not a PostgreSQL URL.
    pub fn connect_lazy(url: &str) -> Result<Self, Error> {
        Ok(Self::new(pool(url)?))
    }
}

#[async_trait]
impl Component for OutboxRelay {
    fn name(&self) -> &str {
        "outbox_relay"
    }

    async fn run(&self, bus: Arc<dyn EventBus>, shutdown: Shutdown) -> Result<(), ComponentError> {
        let relay = Relay::new(
            self.pool.clone(),
            Outbox::new(),
            bus,
            RelayConfig::default(),
        );
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = Some(relay.clone());
        relay.run(shutdown).await?;
        Ok(())
    }

    /// Parked events, and a backlog older than five minutes, degrade health.
    async fn check(&self) -> (HealthStatus, Vec<String>) {
        let stats = match Outbox::stats(&self.pool).await {
            Ok(stats) => stats,
            Err(e) => {
                return (
                    HealthStatus::Degraded,
                    vec![format!("cannot read the outbox: {e}")],
                );
            }
        };
        let mut status = HealthStatus::Healthy;
        let mut problems = Vec::new();
        if stats.parked > 0 {
            status = HealthStatus::Degraded;
            problems.push(format!(
                "{} events parked (refused by the bus for good): `eventbus outbox stats` lists them",
                stats.parked
            ));
        }
        if let Some(oldest) = stats.oldest_pending
            && oldest < time::OffsetDateTime::now_utc() - BEHIND_AFTER
        {
            status = HealthStatus::Degraded;
            problems.push(format!(
                "{} events pending, the oldest since {}",
                stats.pending,
                event_core::timestamp::format(oldest)
            ));
        }
        if let Some(relay) = &*self.current.lock().unwrap_or_else(PoisonError::into_inner) {
            let counters = relay.stats();
            if counters.database_errors > 0 || counters.publish_failures > 0 {
                problems.push(format!(
                    "{} delivered; {} failed rounds on PostgreSQL and {} failed publishes so far (retried)",
                    counters.delivered, counters.database_errors, counters.publish_failures
                ));
            }
        }
        (status, problems)
    }
}

/// The domain handler `kind` (one whose view folds) with its view stored in PostgreSQL: a
/// [`PostgresView`] behind the inbox (so each event is applied once per group), made and
/// rebuilt from `ctx`.
pub(crate) fn stored_view(
    kind: DomainHandlerKind,
    ctx: &DomainContext,
    pool: &PgPool,
) -> (Arc<dyn EventHandler>, Arc<dyn View>) {
    let ctx = ctx.clone();
    let view = Arc::new(PostgresView::new(kind.as_str(), pool.clone(), move || {
        event_handlers::build_fold(kind, &ctx)
            .expect("the caller checked that this kind's view folds; the context is the same")
    }));
    // One event at a time per view in a process: the view's lock serialises them anyway, and
    // each one waiting for it inside its transaction would hold one of the pool's connections.
    let handler = ServiceBuilder::new()
        .layer(ConcurrencyLimitLayer::new(1))
        .layer(InboxLayer::new(
            pool.clone(),
            Outbox::new(),
            InboxConfig::default(),
        ))
        .service(view.clone());
    (Arc::new(handler), view)
}
