//! The inbox: [`InboxLayer`] wraps a [`TransactionalHandler`] into an
//! [`EventHandler`](event_core::EventHandler) whose effects happen exactly once per event.
//!
//! For each delivery it opens a transaction, inserts "handler H handled event X" into
//! `eventbus_inbox`, runs the handler in that transaction, and commits. A redelivery finds
//! the record and is acknowledged without running the handler; two deliveries at once
//! serialise on the record's primary key, and the second sees the first's outcome. A handler
//! that fails rolls everything back, the record with it, so the retry runs it again.

mod transaction;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use event_core::{Event, EventHandler, HandlerError};
use sqlx::PgPool;

pub use transaction::InboxTransaction;

use crate::{Outbox, OutboxError};

/// A handler that writes to PostgreSQL in the transaction it is given.
#[async_trait]
pub trait TransactionalHandler: Send + Sync + 'static {
    /// The handler's name: the inbox records events by it, so it must stay the same across
    /// releases (a new name handles every retained event again).
    fn name(&self) -> &str;

    /// Handles `event`, writing through [`InboxTransaction::connection`] and publishing through
    /// [`InboxTransaction::publish`]; it must not commit or roll back itself. An error rolls
    /// the transaction back.
    async fn handle(&self, event: &Event, tx: &mut InboxTransaction) -> Result<(), HandlerError>;
}

/// A shared handler: the same object can be the inbox's handler and serve elsewhere (a
/// `PostgresView` is also the view the HTTP API reads).
#[async_trait]
impl<H: TransactionalHandler + ?Sized> TransactionalHandler for Arc<H> {
    fn name(&self) -> &str {
        (**self).name()
    }

    async fn handle(&self, event: &Event, tx: &mut InboxTransaction) -> Result<(), HandlerError> {
        (**self).handle(event, tx).await
    }
}

/// The inbox's settings.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct InboxConfig {
    /// How long a record "handled" is kept: the duplicate-detection window. Default 7 days.
    /// A redelivery later than this (a replay, a dead letter redriven after a week) is handled
    /// again.
    pub window: Duration,
    /// How often a handler deletes the records past the window (in the background, when an
    /// event arrives). Default 10 minutes.
    pub cleanup_interval: Duration,
}

impl Default for InboxConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(7 * 24 * 3600),
            cleanup_interval: Duration::from_secs(600),
        }
    }
}

/// Wraps a [`TransactionalHandler`] in an [`InboxHandler`]; a [`tower::Layer`].
///
/// Put it innermost, below retries, time-outs and metrics: a time-out outside it drops the
/// transaction (rolled back, so the retry runs the handler again, which is right), while
/// nothing inside it can see the transaction. An `IdempotencyLayer` on top is redundant.
#[derive(Clone, Debug)]
pub struct InboxLayer {
    pool: PgPool,
    outbox: Outbox,
    config: InboxConfig,
}

impl InboxLayer {
    /// Handlers that keep their records in `pool`'s database and publish through `outbox`.
    pub fn new(pool: PgPool, outbox: Outbox, config: InboxConfig) -> Self {
        Self {
            pool,
            outbox,
            config,
        }
    }
}

impl<H: TransactionalHandler> tower::Layer<H> for InboxLayer {
    type Service = InboxHandler<H>;

    fn layer(&self, inner: H) -> InboxHandler<H> {
        InboxHandler {
            inner,
            pool: self.pool.clone(),
            outbox: self.outbox.clone(),
            config: self.config.clone(),
            counters: Arc::default(),
            last_cleanup: Arc::new(Mutex::new(Instant::now())),
        }
    }
}

/// A handler whose effects happen once per event id; made by [`InboxLayer`].
#[derive(Debug)]
pub struct InboxHandler<H> {
    inner: H,
    pool: PgPool,
    outbox: Outbox,
    config: InboxConfig,
    counters: Arc<InboxCounters>,
    last_cleanup: Arc<Mutex<Instant>>,
}

#[derive(Debug, Default)]
struct InboxCounters {
    handled: AtomicU64,
    duplicates: AtomicU64,
    failed: AtomicU64,
}

/// What an [`InboxHandler`] has done since it was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct InboxStats {
    /// Events handled and committed.
    pub handled: u64,
    /// Deliveries skipped: the event was handled before.
    pub duplicates: u64,
    /// Deliveries that failed (the handler, or PostgreSQL), rolled back.
    pub failed: u64,
}

impl<H> InboxHandler<H> {
    /// The handler inside.
    pub fn inner(&self) -> &H {
        &self.inner
    }

    /// What it has done so far.
    pub fn stats(&self) -> InboxStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        InboxStats {
            handled: get(&self.counters.handled),
            duplicates: get(&self.counters.duplicates),
            failed: get(&self.counters.failed),
        }
    }

    /// Starts a background clean-up when the last one is older than the interval.
    fn clean_up_when_due(&self) {
        let due = {
            let mut last = self
                .last_cleanup
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let due = last.elapsed() >= self.config.cleanup_interval;
            if due {
                *last = Instant::now();
            }
            due
        };
        if due {
            let pool = self.pool.clone();
            let window = self.config.window;
            tokio::spawn(async move {
                if let Err(error) = clean_inbox(&pool, window).await {
                    tracing::warn!(%error, "inbox clean-up failed");
                }
            });
        }
    }
}

impl<H: TransactionalHandler> InboxHandler<H> {
    async fn handle_once(&self, event: &Event) -> Result<bool, HandlerError> {
        let db = |error: sqlx::Error| to_handler_error(OutboxError::Database(error));
        let mut tx = self.pool.begin().await.map_err(db)?;
        // Waits for a concurrent delivery of the same event to end: after its commit this
        // inserts nothing, after its rollback this takes over.
        let recorded = sqlx::query(
            "INSERT INTO eventbus_inbox (handler, event_id) VALUES ($1, $2)
             ON CONFLICT DO NOTHING",
        )
        .bind(self.inner.name())
        .bind(event.id.as_uuid())
        .execute(&mut *tx)
        .await
        .map_err(db)?
        .rows_affected();
        if recorded == 0 {
            tx.rollback().await.map_err(db)?;
            return Ok(false);
        }
        let mut inbox_tx = InboxTransaction {
            tx,
            outbox: self.outbox.clone(),
            published: 0,
        };
        self.inner.handle(event, &mut inbox_tx).await?;
        inbox_tx.tx.commit().await.map_err(db)?;
        Ok(true)
    }
}

#[async_trait]
impl<H: TransactionalHandler> EventHandler for InboxHandler<H> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn handle(&self, event: &Event) -> Result<(), HandlerError> {
        self.clean_up_when_due();
        // A failure drops the transaction: rolled back, the inbox record with it.
        let counter = match self.handle_once(event).await {
            Ok(true) => &self.counters.handled,
            Ok(false) => &self.counters.duplicates,
            Err(error) => {
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                return Err(error);
            }
        };
        counter.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// An outbox error as a handler's: transient when trying again can succeed.
pub(crate) fn to_handler_error(error: OutboxError) -> HandlerError {
    if error.is_transient() {
        HandlerError::transient(error)
    } else {
        HandlerError::permanent(error)
    }
}

/// Deletes the inbox records older than `window`; returns how many. After that, a redelivery
/// of one of those events is handled again.
///
/// # Errors
/// [`OutboxError::Database`].
pub async fn clean_inbox(pool: &PgPool, window: Duration) -> Result<u64, OutboxError> {
    let done = sqlx::query(
        "DELETE FROM eventbus_inbox WHERE handled_at < now() - make_interval(secs => $1)",
    )
    .bind(window.as_secs_f64())
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}
