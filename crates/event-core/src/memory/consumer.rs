//! One subscription's consumer loop on the in-memory bus, and its acknowledgement sink.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use async_trait::async_trait;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use super::Inner;
use super::store::Token;
use crate::dispatch::{DeliverySink, Dispatcher};
use crate::{DeadLetter, Error, SubscriptionControl};

/// A running subscription, as the bus keeps it.
pub(super) struct Member {
    pub(super) stop: watch::Sender<bool>,
    /// Yields whether the dispatcher finished everything it held; taken by the first stopper.
    pub(super) task: Option<JoinHandle<bool>>,
    /// Turns `true` when the loop has ended. Unsubscribe and shutdown may stop a member at the
    /// same time: the one that did not take `task` waits on this, so neither returns before
    /// the in-flight events are done.
    ended: watch::Receiver<bool>,
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
    let (stop_tx, stop_rx) = watch::channel(false);
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
    mut stop: watch::Receiver<bool>,
) -> bool {
    let batch = inner.config.batch_size;
    loop {
        if *stop.borrow() {
            break;
        }
        let room = tokio::select! {
            biased;
            _ = stop.changed() => break,
            room = dispatcher.reserve(batch) => room,
        };
        let deliveries = inner.store().take(&handler, room);
        dispatcher.release(room - deliveries.len());
        if deliveries.is_empty() {
            tokio::select! {
                biased;
                _ = stop.changed() => break,
                () = notify.notified() => {}
            }
            continue;
        }
        dispatcher.dispatch(deliveries);
    }
    let drained = dispatcher.close(inner.config.shutdown_timeout).await;
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
pub(super) async fn stop(inner: &Arc<Inner>, member: u64) {
    let (task, mut ended) = {
        let mut members = inner.members();
        let Some(entry) = members.get_mut(&member) else {
            return;
        };
        let _ = entry.stop.send(true);
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
        stop(&self.inner, self.member).await;
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
