//! One subscription's consumer loop on the in-memory bus, and its acknowledgement sink.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::Inner;
use super::store::Token;
use crate::DeadLetter;
use crate::dispatch::{DeliverySink, Dispatcher, StopMode, StopSignal};

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

/// Moves events from the store to the dispatcher until asked to stop. On
/// [`StopMode::Drain`] (shutdown: the in-memory bus keeps nothing afterwards) it first
/// delivers what is already published; on [`StopMode::Now`] (unsubscribe) it takes nothing
/// more. Returns whether the dispatcher finished every event it held.
pub(super) async fn run(
    inner: Arc<Inner>,
    handler: String,
    member: u64,
    dispatcher: Dispatcher<Token>,
    notify: Arc<Notify>,
    mut stop: StopSignal,
) -> bool {
    let batch = inner.config.batch_size;
    loop {
        let mode = stop.mode();
        if matches!(mode, StopMode::Now { .. })
            || mode.deadline().is_some_and(|d| Instant::now() >= d)
        {
            break;
        }
        if mode == StopMode::Run {
            // Only in a running loop: a stopping one does not take a fault meant for the next.
            crate::fault::checkpoint(&handler);
        }
        let room = tokio::select! {
            biased;
            changed = stop.changed() => if changed { continue } else { break },
            () = mode.deadline_passed() => break,
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
                changed = stop.changed() => if !changed { break },
                () = notify.notified() => {}
            }
            continue;
        }
        dispatcher.dispatch(deliveries);
    }
    let drained = dispatcher
        .close(stop.remaining(inner.config.shutdown_timeout))
        .await;
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
