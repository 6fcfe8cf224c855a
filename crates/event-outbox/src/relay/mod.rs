//! [`Relay`]: delivers committed outbox rows to a bus, at least once, in per-key order, woken
//! by `LISTEN/NOTIFY` with polling as the fallback; and cleans up delivered rows.

mod config;
mod round;
mod stats;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use event_core::EventBus;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use config::RelayConfig;
pub use round::RoundReport;
pub use stats::RelayStats;

use self::config::Backoff;
use self::stats::Counters;
use crate::{Outbox, OutboxError};

/// A hook run after each batch of a round is published, before it is recorded, for fault tests.
#[doc(hidden)]
pub type AfterPublish = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// Delivers the outbox's committed events to a bus with
/// [`publish_batch`](EventBus::publish_batch).
///
/// - **At least once**, with the event's own id: a relay that stops between publishing and
///   recording (killed, cut off from PostgreSQL) leaves the rows pending, and they are
///   published again.
/// - **Per-key order**, also with several relays on one outbox: a key is held by one relay at
///   a time with a transaction-scoped advisory lock (see `docs/outbox.md`).
/// - **Woken by `LISTEN/NOTIFY`** on the outbox's channel; it also looks every
///   [`poll_interval`](RelayConfig::poll_interval).
/// - **Parks** events the bus refuses for good (an unknown type, too large), with the reason;
///   retries the others with a back-off.
/// - **Cleans up** delivered rows after [`retention`](RelayConfig::retention).
///
/// Cheap to clone; clones share their counters.
#[derive(Clone)]
pub struct Relay {
    inner: Arc<RelayInner>,
}

pub(crate) struct RelayInner {
    pub(crate) pool: PgPool,
    pub(crate) outbox: Outbox,
    pub(crate) bus: Arc<dyn EventBus>,
    pub(crate) config: RelayConfig,
    pub(crate) counters: Counters,
    pub(crate) after_publish: Option<AfterPublish>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("channel", &self.inner.outbox.channel())
            .field("backend", &self.inner.bus.capabilities().backend)
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Relay {
    /// A relay of `outbox`'s rows in `pool`'s database to `bus`.
    pub fn new(pool: PgPool, outbox: Outbox, bus: Arc<dyn EventBus>, config: RelayConfig) -> Self {
        Self::build(pool, outbox, bus, config, None)
    }

    /// A relay that runs `hook` after publishing each round's events and before recording
    /// them: a test makes it wait forever, then kills the relay there.
    #[doc(hidden)]
    pub fn with_after_publish(
        pool: PgPool,
        outbox: Outbox,
        bus: Arc<dyn EventBus>,
        config: RelayConfig,
        hook: AfterPublish,
    ) -> Self {
        Self::build(pool, outbox, bus, config, Some(hook))
    }

    fn build(
        pool: PgPool,
        outbox: Outbox,
        bus: Arc<dyn EventBus>,
        config: RelayConfig,
        after_publish: Option<AfterPublish>,
    ) -> Self {
        Self {
            inner: Arc::new(RelayInner {
                pool,
                outbox,
                bus,
                config,
                counters: Counters::default(),
                after_publish,
            }),
        }
    }

    /// What this relay has done so far.
    pub fn stats(&self) -> RelayStats {
        self.inner.counters.snapshot()
    }

    /// One round: claims up to [`batch_size`](RelayConfig::batch_size) ×
    /// [`batches_per_round`](RelayConfig::batches_per_round) events of keys no other relay
    /// holds, publishes them `batch_size` at a time, and records the outcome in one
    /// transaction.
    ///
    /// # Errors
    /// [`OutboxError::Database`]; the round's rows are then left as they were.
    pub async fn deliver_once(&self) -> Result<RoundReport, OutboxError> {
        round::run_round(&self.inner).await
    }

    /// Rounds until one claims nothing: every event committed before the call whose key no
    /// other relay holds is then delivered or parked, unless a publish failed transiently
    /// (the sum's [`failed`](RoundReport::failed) says so; those wait for a later call).
    ///
    /// # Errors
    /// [`OutboxError::Database`].
    pub async fn deliver_pending(&self) -> Result<RoundReport, OutboxError> {
        let mut total = RoundReport::default();
        loop {
            let round = self.deliver_once().await?;
            total.claimed += round.claimed;
            total.delivered += round.delivered;
            total.parked += round.parked;
            total.failed += round.failed;
            if round.claimed == 0 || round.failed > 0 {
                return Ok(total);
            }
        }
    }

    /// Deletes delivered rows older than the [`retention`](RelayConfig::retention); returns
    /// how many.
    ///
    /// # Errors
    /// [`OutboxError::Database`].
    pub async fn clean_up(&self) -> Result<u64, OutboxError> {
        let cleaned = round::clean_up(&self.inner.pool, self.inner.config.retention).await?;
        Counters::add(&self.inner.counters.cleaned, cleaned as usize);
        Ok(cleaned)
    }

    /// Runs until `shutdown` completes: delivers whatever is pending, then waits for a
    /// notification or the poll interval, and cleans up every
    /// [`cleanup_interval`](RelayConfig::cleanup_interval). PostgreSQL and bus failures are
    /// logged and retried with a back-off; they do not end the relay. A round cut short by the
    /// shutdown is rolled back, and its events are delivered again by the next relay.
    ///
    /// # Errors
    /// [`OutboxError::SchemaOutdated`] at start when the migrations have not been run (a
    /// PostgreSQL that cannot be reached at start is waited for, with the back-off).
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), OutboxError> {
        let config = &self.inner.config;
        let mut backoff = Backoff::new(config);
        tokio::pin!(shutdown);
        loop {
            let wait = match crate::check_schema(&self.inner.pool).await {
                Ok(()) => break,
                Err(error) if error.is_transient() => {
                    Counters::add(&self.inner.counters.database_errors, 1);
                    tracing::warn!(%error, "outbox relay: cannot check the schema; retrying");
                    backoff.failed()
                }
                Err(error) => return Err(error),
            };
            tokio::select! {
                biased;
                () = &mut shutdown => return Ok(()),
                () = tokio::time::sleep(wait) => {}
            }
        }
        backoff.reset();
        let mut listener = None;
        let mut next_cleanup = Instant::now();
        loop {
            if listener.is_none() {
                listener = self.listen().await;
            }
            let round = tokio::select! {
                biased;
                () = &mut shutdown => return Ok(()),
                round = self.deliver_once() => round,
            };
            let wait = match round {
                Ok(report) if report.failed > 0 => backoff.failed(),
                // More may be waiting: go on at once.
                Ok(report) if report.claimed > 0 => {
                    backoff.reset();
                    continue;
                }
                Ok(_) => {
                    backoff.reset();
                    config.poll_interval
                }
                Err(error) => {
                    Counters::add(&self.inner.counters.database_errors, 1);
                    tracing::warn!(%error, "outbox relay: round failed; retrying after a back-off");
                    backoff.failed()
                }
            };
            if Instant::now() >= next_cleanup {
                if let Err(error) = self.clean_up().await {
                    tracing::warn!(%error, "outbox relay: clean-up failed");
                }
                next_cleanup = Instant::now() + config.cleanup_interval;
            }
            tokio::select! {
                biased;
                () = &mut shutdown => return Ok(()),
                woken = wait_for_notification(&mut listener) => {
                    if !woken {
                        listener = None;
                    }
                }
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Runs the relay on a task of its own; see [`RelayHandle`].
    pub fn spawn(self) -> RelayHandle {
        let (stop, stopped) = oneshot::channel::<()>();
        let relay = self.clone();
        let task = tokio::spawn(self.run(async move {
            let _ = stopped.await;
        }));
        RelayHandle {
            relay,
            stop: Some(stop),
            task,
        }
    }

    async fn listen(&self) -> Option<PgListener> {
        let listening = async {
            let mut listener = PgListener::connect_with(&self.inner.pool).await?;
            listener.listen(self.inner.outbox.channel()).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        match listening.await {
            Ok(listener) => Some(listener),
            Err(error) => {
                tracing::warn!(%error, "outbox relay: LISTEN failed; polling until it works");
                None
            }
        }
    }
}

/// Waits for a notification (and takes the others already received: one round serves them
/// all). `false` when the connection failed; without a listener, waits forever (the poll
/// interval ends the wait).
async fn wait_for_notification(listener: &mut Option<PgListener>) -> bool {
    let Some(active) = listener else {
        return std::future::pending().await;
    };
    match active.try_recv().await {
        Ok(Some(_)) => {
            while active.next_buffered().is_some() {}
            true
        }
        // The connection was lost: notifications may have been missed, so look now.
        Ok(None) | Err(_) => false,
    }
}

/// A relay running on a task of its own ([`Relay::spawn`]).
#[derive(Debug)]
pub struct RelayHandle {
    relay: Relay,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), OutboxError>>,
}

impl RelayHandle {
    /// What the relay has done so far.
    pub fn stats(&self) -> RelayStats {
        self.relay.stats()
    }

    /// Whether the task has ended (by shutdown, an error at start, or an abort).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Asks the relay to stop after its current round (a round in flight is rolled back) and
    /// waits for it.
    ///
    /// # Errors
    /// The error [`Relay::run`] ended with.
    pub async fn shut_down(mut self) -> Result<(), OutboxError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match (&mut self.task).await {
            Ok(result) => result,
            Err(join) if join.is_cancelled() => Ok(()),
            Err(join) => std::panic::resume_unwind(join.into_panic()),
        }
    }

    /// Stops the relay at once, wherever it is, as a crash would: a round in flight is
    /// abandoned and rolled back by PostgreSQL.
    pub fn abort(&self) {
        self.task.abort();
    }
}
