//! [`PostgresView`]: a domain handler's view stored in PostgreSQL, so that it survives a
//! restart and is whole in every process of a handler group.
//!
//! Behind an [`InboxLayer`](crate::InboxLayer), each event reaches the view once per group, in
//! one process. That process appends the event to the view's journal
//! (`eventbus_view_journal`) in the inbox's transaction, under the view's advisory lock, so
//! the journal numbers events 1, 2, 3, ... in the order their transactions committed. Every
//! process folds the journal, in that order, into its own copy of the view: before it handles
//! an event (so follow-up events are decided on the whole view) and before a read
//! ([`View::refresh`]). A restarted process folds it from the start.
//!
//! A process applies an event to its copy before its transaction commits. It remembers which
//! (the event and its place in the journal), and the next time it holds the view's lock it
//! checks the journal, in the same query that reads the rows after it: if the transaction
//! rolled back, another event (or none) is in that place, and the copy is rebuilt from the
//! journal.

use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use event_core::{BoxError, Event, EventId, HandlerError};
use event_handlers::{Fold, View};
use futures::TryStreamExt as _;
use sqlx::{PgConnection, PgPool, Row as _};
use uuid::Uuid;

use crate::{InboxTransaction, OutboxError, TransactionalHandler};

/// Makes an empty copy of a view.
type MakeView = dyn Fn() -> Arc<dyn Fold> + Send + Sync;

/// A view kept as a journal of events in PostgreSQL and folded in every process: wrap it in an
/// [`InboxLayer`](crate::InboxLayer) and subscribe that; serve it as the [`View`].
///
/// Its follow-up events (alerts, re-analysis requests) go through the outbox in the inbox's
/// transaction, so they are published once, by the process that handled the event, and only
/// if it committed; a relay publishes them.
///
/// The journal keeps every event the view applied (its payload in clear, as the view holds
/// it) and is never trimmed: a process starting folds it whole (see `docs/outbox.md` for the
/// figures).
#[cfg_attr(docsrs, doc(cfg(feature = "views")))]
pub struct PostgresView {
    name: String,
    pool: PgPool,
    make: Box<MakeView>,
    /// This process's copy of the view, read by `snapshot`.
    copy: Mutex<Arc<dyn Fold>>,
    /// How far the copy has folded the journal. Held while folding or applying.
    progress: tokio::sync::Mutex<Progress>,
}

impl std::fmt::Debug for PostgresView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresView")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct Progress {
    /// The journal's events up to this `seq` are in the copy.
    applied: i64,
    /// Whether the copy holds something the journal may not: settled under the view's lock.
    unsettled: Option<Unsettled>,
}

/// What the copy may hold that the journal does not.
#[derive(Clone, Copy, Debug)]
enum Unsettled {
    /// The event this process applied last, as the journal's `seq`, in a transaction that may
    /// not have committed: kept if the journal has it there.
    Applied { seq: i64, id: EventId },
    /// Part of an event that failed: the copy is rebuilt.
    Broken,
}

impl PostgresView {
    /// The view `name` (the handler's name, which also names its inbox records), kept in
    /// `pool`'s database; `make` returns an empty copy of it (a domain handler, as
    /// `event_handlers::build` makes one), called again to rebuild it.
    pub fn new(
        name: impl Into<String>,
        pool: PgPool,
        make: impl Fn() -> Arc<dyn Fold> + Send + Sync + 'static,
    ) -> Self {
        let copy = make();
        Self {
            name: name.into(),
            pool,
            make: Box::new(make),
            copy: Mutex::new(copy),
            progress: tokio::sync::Mutex::default(),
        }
    }

    /// How many journal events this process's copy holds.
    pub async fn applied(&self) -> i64 {
        self.progress.lock().await.applied
    }

    fn copy(&self) -> Arc<dyn Fold> {
        self.copy
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Takes the view's transaction-scoped lock: appends to the journal and checks of a
    /// tentative event are one at a time, across processes.
    async fn lock(&self, conn: &mut PgConnection) -> Result<(), OutboxError> {
        sqlx::query(
            "SELECT pg_advisory_xact_lock(hashtext('eventbus_view:' || current_schema()), hashtext($1))",
        )
        .bind(&self.name)
        .execute(conn)
        .await?;
        Ok(())
    }

    /// Folds the journal's events after `progress.applied` into the copy. With `locked` (the
    /// caller holds the view's lock) it first settles what the copy may hold that the journal
    /// does not: an event applied in a transaction that did not commit rebuilds the copy from
    /// the journal. Without the lock it does nothing while something is unsettled.
    async fn catch_up(
        &self,
        conn: &mut PgConnection,
        progress: &mut Progress,
        locked: bool,
    ) -> Result<(), OutboxError> {
        loop {
            // The event to find at its place, read with the rows after it in one query.
            let expected = match progress.unsettled.take() {
                None => None,
                Some(unsettled) if !locked => {
                    progress.unsettled = Some(unsettled);
                    return Ok(());
                }
                Some(Unsettled::Applied { seq, id }) => Some((seq, id)),
                Some(Unsettled::Broken) => {
                    self.rebuild(progress);
                    None
                }
            };
            if self.fold_journal(conn, progress, expected).await? {
                return Ok(());
            }
            tracing::info!(view = %self.name, "rebuilding the view from its journal: an update did not commit");
            self.rebuild(progress);
        }
    }

    /// Empties the copy, to fold the journal from the start.
    fn rebuild(&self, progress: &mut Progress) {
        *self.copy.lock().unwrap_or_else(PoisonError::into_inner) = (self.make)();
        *progress = Progress::default();
    }

    /// Folds the journal's rows after `progress.applied` (from `expected`'s place when given,
    /// which the copy already holds). `false` when `expected` is not in the journal there: its
    /// transaction rolled back.
    async fn fold_journal(
        &self,
        conn: &mut PgConnection,
        progress: &mut Progress,
        mut expected: Option<(i64, EventId)>,
    ) -> Result<bool, OutboxError> {
        let after = expected.map_or(progress.applied, |(seq, _)| seq - 1);
        let copy = self.copy();
        let mut rows = sqlx::query(
            "SELECT seq, event_id, event::text FROM eventbus_view_journal
             WHERE view = $1 AND seq > $2 ORDER BY seq",
        )
        .bind(&self.name)
        .bind(after)
        .fetch(&mut *conn);
        while let Some(row) = rows.try_next().await? {
            let seq: i64 = row.try_get(0)?;
            if let Some((place, id)) = expected.take() {
                let found: Uuid = row.try_get(1)?;
                if seq != place || found != *id.as_uuid() {
                    return Ok(false);
                }
                continue;
            }
            let body: String = row.try_get(2)?;
            // Follow-ups of journal events were published by the process that handled them.
            let folded = serde_json::from_str::<Event>(&body)
                .map_err(|e| e.to_string())
                .and_then(|event| copy.fold(&event).map_err(|e| e.to_string()));
            if let Err(error) = folded {
                tracing::warn!(view = %self.name, seq, %error, "a journal event could not be folded; skipped");
            }
            progress.applied = seq;
        }
        Ok(expected.is_none())
    }
}

#[async_trait]
impl TransactionalHandler for PostgresView {
    fn name(&self) -> &str {
        &self.name
    }

    async fn handle(&self, event: &Event, tx: &mut InboxTransaction) -> Result<(), HandlerError> {
        let db = crate::inbox::to_handler_error;
        // Most of the journal is folded before taking the lock, which other processes wait on.
        self.catch_up(tx.connection(), &mut *self.progress.lock().await, false)
            .await
            .map_err(db)?;
        self.lock(tx.connection()).await.map_err(db)?;
        let mut progress = self.progress.lock().await;
        self.catch_up(tx.connection(), &mut progress, true)
            .await
            .map_err(db)?;
        let follow_ups = match self.copy().fold(event) {
            Ok(follow_ups) => follow_ups,
            Err(error) => {
                progress.unsettled = Some(Unsettled::Broken);
                return Err(error);
            }
        };
        // From here the copy is ahead of the journal until the transaction commits.
        let seq = progress.applied + 1;
        progress.applied = seq;
        progress.unsettled = Some(Unsettled::Applied { seq, id: event.id });
        let body = serde_json::to_string(event).map_err(HandlerError::permanent)?;
        sqlx::query(
            "INSERT INTO eventbus_view_journal (view, seq, event_id, event)
             VALUES ($1, $2, $3, $4::json)",
        )
        .bind(&self.name)
        .bind(seq)
        .bind(event.id.as_uuid())
        .bind(body)
        .execute(tx.connection())
        .await
        .map_err(|e| db(e.into()))?;
        tx.publish(follow_ups).await.map_err(db)?;
        Ok(())
    }
}

#[async_trait]
impl View for PostgresView {
    fn name(&self) -> &str {
        &self.name
    }

    /// This process's copy: current as of the last event it handled or the last
    /// [`refresh`](View::refresh).
    fn snapshot(&self) -> serde_json::Value {
        self.copy().snapshot()
    }

    /// Folds what every process committed since, under the view's lock (so an event whose
    /// transaction is committing is settled first).
    async fn refresh(&self) -> Result<(), BoxError> {
        let mut tx = self.pool.begin().await?;
        self.catch_up(&mut tx, &mut *self.progress.lock().await, false)
            .await?;
        self.lock(&mut tx).await?;
        self.catch_up(&mut tx, &mut *self.progress.lock().await, true)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}
