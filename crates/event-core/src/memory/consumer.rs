//! One subscription's consumer loop on the in-memory bus, and its acknowledgement sink.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use async_trait::async_trait;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::Inner;
use super::store::Token;
use crate::dispatch::{DeliverySink, Dispatcher};
use crate::{DeadLetter, Error, SubscriptionControl};

/// A running subscription, as the bus keeps it.
pub(super) struct Member {
    pub(super) stop: watch::Sender<StopMode>,
    /// Yields whether the dispatcher finished everything it held; taken by the first stopper.
    pub(super) task: Option<JoinHandle<bool>>,
    /// Turns `true` when the loop has ended. Unsubscribe and shutdown may stop a member at the
    /// same time: the one that did not take `task` waits on this, so neither returns before
    /// the in-flight events are done.
    ended: watch::Receiver<bool>,
}

/// What a consumer loop is asked to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum StopMode {
    /// Keep delivering.
    Run,
    /// The bus is shutting down and keeps nothing afterwards: deliver what is already
    /// published, then stop, all before `until`.
    Drain { until: Instant },
    /// Unsubscribe: take nothing more (the group keeps it), finish in-flight events before
    /// `until`.
    Now { until: Instant },
}

impl StopMode {
    fn deadline(self) -> Option<Instant> {
        match self {
            StopMode::Run => None,
            StopMode::Drain { until } | StopMode::Now { until } => Some(until),
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Where the dispatcher acknowledges: the handler's group in the store.
pub(super) struct MemorySink {
    pub(super) inner: Arc<Inner>,
    pub(super) handler: String,
}

#[async_trait]
impl DeliverySink<Token> for MemorySink {
    async fn ack(&self, tokens: Vec<Token>) {
        self.inner.store().ack(&self.handler, tokens);
    }

    async fn dead_letter(&self, token: Token, letter: DeadLetter) {
        self.inner.store().dead_letter(&self.handler, token, letter);
    }
}

/// Starts the loop that moves events from the store to the dispatcher.
pub(super) fn spawn(
    inner: Arc<Inner>,
    handler: String,
    member: u64,
    dispatcher: Dispatcher<Token>,
    notify: Arc<Notify>,
) -> Member {
    let (stop_tx, stop_rx) = watch::channel(StopMode::Run);
    let (ended_tx, ended_rx) = watch::channel(false);
    let task = tokio::spawn(async move {
        let drained = run(inner, handler, member, dispatcher, notify, stop_rx).await;
        let _ = ended_tx.send(true);
        drained
    });
    Member {
        stop: stop_tx,
        task: Some(task),
        ended: ended_rx,
    }
}

async fn run(
    inner: Arc<Inner>,
    handler: String,
    member: u64,
    dispatcher: Dispatcher<Token>,
    notify: Arc<Notify>,
    mut stop: watch::Receiver<StopMode>,
) -> bool {
    let batch = inner.config.batch_size;
    loop {
        let mode = *stop.borrow_and_update();
        let deadline = mode.deadline();
        if matches!(mode, StopMode::Now { .. }) || deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let room = tokio::select! {
            biased;
            changed = stop.changed() => if changed.is_err() { break } else { continue },
            () = sleep_until(deadline) => break,
            room = dispatcher.reserve(batch) => room,
        };
        let deliveries = inner.store().take(&handler, room);
        dispatcher.release(room - deliveries.len());
        if deliveries.is_empty() {
            if matches!(mode, StopMode::Drain { .. }) {
                break;
            }
            tokio::select! {
                biased;
                changed = stop.changed() => if changed.is_err() { break },
                () = notify.notified() => {}
            }
            continue;
        }
        dispatcher.dispatch(deliveries);
    }
    let timeout = stop
        .borrow()
        .deadline()
        .map_or(inner.config.shutdown_timeout, |d| {
            d.saturating_duration_since(Instant::now())
        });
    let drained = dispatcher.close(timeout).await;
    if !drained {
        tracing::warn!(
            handler = %handler,
            timeout = ?inner.config.shutdown_timeout,
            "handler did not finish its in-flight events in time; they will be delivered again"
        );
    }
    inner.store().leave(&handler, member, drained);
    drained
}

/// Stops a member and waits for its loop to drain, also when another caller is stopping it.
pub(super) async fn stop(inner: &Arc<Inner>, member: u64, mode: StopMode) {
    let (task, mut ended) = {
        let mut members = inner.members();
        let Some(entry) = members.get_mut(&member) else {
            return;
        };
        // A drain asked for while an unsubscribe is under way does not undo it.
        entry.stop.send_if_modified(|current| {
            let stronger = matches!(mode, StopMode::Now { .. }) || *current == StopMode::Run;
            if stronger {
                *current = mode;
            }
            stronger
        });
        (entry.task.take(), entry.ended.clone())
    };
    match task {
        Some(task) => {
            if let Err(e) = task.await {
                tracing::error!("in-memory consumer task failed: {e}");
            }
        }
        // Another caller took the task: wait for the same loop to end. An error means the
        // task is gone without signalling (it panicked), which ends it too.
        None => {
            let _ = ended.wait_for(|ended| *ended).await;
        }
    }
    inner.members().remove(&member);
}

/// The [`SubscriptionControl`] of an in-memory subscription.
pub(super) struct MemoryControl {
    pub(super) inner: Arc<Inner>,
    pub(super) member: u64,
}

#[async_trait]
impl SubscriptionControl for MemoryControl {
    async fn unsubscribe(&self) -> Result<(), Error> {
        let until = Instant::now() + self.inner.config.shutdown_timeout;
        stop(&self.inner, self.member, StopMode::Now { until }).await;
        Ok(())
    }

    fn is_active(&self) -> bool {
        !self.inner.closed.load(Ordering::Acquire)
            && self
                .inner
                .members()
                .get(&self.member)
                .is_some_and(|m| m.task.as_ref().is_some_and(|t| !t.is_finished()))
    }
}
