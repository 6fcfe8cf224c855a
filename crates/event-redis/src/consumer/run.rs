//! One attempt of a subscription's loop: reserve room, claim, read, dispatch, until asked to
//! stop. The bus's supervisor runs it and starts a new attempt when it panics or ends unasked.
//!
//! `XREADGROUP ... COUNT n` applies to each stream, and every subscription reads at least two
//! (its types and its redrive stream), so one read can return more entries than the room
//! reserved. Those are not dropped nor handed out beyond the room: they wait in a carry-over
//! queue owned by the attempt, registered in flight (claims skip them, the claim keeper keeps
//! them fresh), and go out first at the next pass, so each stream's order holds.
//!
//! When an attempt dies (a panic), its claim keeper and reader die with it, and its dispatcher
//! is closed in the background with the usual grace (`EVENT_SHUTDOWN_TIMEOUT_MS`): the lanes
//! finish and acknowledge what they hold. The next attempt waits for that close (so it never
//! takes back an entry the old lanes are still handling, which would run twice), then takes
//! back what the dead attempt read and did not finish (its carry-over, unfinished events)
//! from the consumer's own pending history (`XREADGROUP` from id `0`), and hands those out
//! before any newer entry, so each key's order holds across the restart. Every attempt starts
//! so: a subscription that reuses the consumer name of one that ended in this process takes
//! back what that one left, and a read whose reply a dropped connection lost is taken back
//! the same way before the next read.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use event_core::dispatch::{Delivery, Dispatcher, StopMode, StopSignal};
use fred::prelude::{Client, ClientLike};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{Subscriber, Token, create_group, slots, take};
use crate::client;

/// Aborts a task when dropped: the claim keeper dies with its attempt, also when the attempt
/// panics. A keeper left running would keep refreshing the dead attempt's entries, and no
/// consumer could ever claim them.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The attempt's blocking-read connection, closed when the attempt ends, also by a panic.
struct Reader(Client);

impl Drop for Reader {
    fn drop(&mut self) {
        let reader = self.0.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = reader.quit().await;
            });
        }
    }
}

/// An attempt's dispatcher. Closed by the attempt when it ends normally; when the attempt
/// dies instead, closed in the background, the handle left for the next attempt.
struct DispatcherGuard {
    dispatcher: Option<Dispatcher<Token>>,
    grace: Duration,
    abandoned: Arc<std::sync::Mutex<Option<JoinHandle<bool>>>>,
}

impl DispatcherGuard {
    fn get(&self) -> &Dispatcher<Token> {
        self.dispatcher
            .as_ref()
            .expect("the dispatcher is only taken when the attempt ends")
    }
}

impl Drop for DispatcherGuard {
    fn drop(&mut self) {
        let Some(dispatcher) = self.dispatcher.take() else {
            return;
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let closing = runtime.spawn(dispatcher.close(self.grace));
            *self
                .abandoned
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(closing);
        }
    }
}

/// Runs one attempt of the loop. `reader` is the connection for blocking reads (the first
/// attempt's comes from subscribe; later ones connect their own); `failures` says how many
/// attempts failed before this one. Returns whether every event taken was finished.
pub(super) async fn attempt(
    sub: Arc<Subscriber>,
    reader: Option<Client>,
    dispatcher: Dispatcher<Token>,
    mut stop: StopSignal,
    failures: u32,
) -> bool {
    let config = &sub.inner.config;
    let claim_every =
        (config.claim_idle / 2).clamp(Duration::from_millis(100), Duration::from_secs(5));
    if failures > 0 {
        tracing::info!(
            handler = %sub.handler,
            failures,
            "consumer loop restarted; it takes back the entries the failed loop held once that loop's handler calls are over"
        );
    }
    // Apart from the loop, which can wait a long time for room while slow handlers hold it.
    let keeper = AbortOnDrop(tokio::spawn(take::keep_claims(sub.clone(), claim_every)));
    // The dispatcher of a failed attempt, if it is still finishing its events.
    let abandoned = sub
        .abandoned
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .take();
    let mut dispatcher = DispatcherGuard {
        dispatcher: Some(dispatcher),
        grace: config.shutdown_timeout,
        abandoned: sub.abandoned.clone(),
    };
    let reader = match reader {
        Some(reader) => Reader(reader),
        None => match connect_reader(&sub, &mut stop).await {
            Some(reader) => Reader(reader),
            None => return close(&sub, &mut dispatcher, &stop).await,
        },
    };
    let mut carry: VecDeque<Delivery<Token>> = VecDeque::new();
    // The failed attempt's lanes finish first (within the grace), then what it read and did
    // not finish is taken back, in order, before any newer entry: a key's events never
    // overtake each other across a restart. The same for a subscription that took over the
    // consumer name of one that ended here (an unsubscribe, then a subscribe).
    if let Some(closing) = abandoned {
        tokio::select! {
            biased;
            _ = stop.changed() => {}
            _ = closing => {}
        }
    }
    let mut taken = take::Taken::default();
    if let Err(e) = take::read_own_pending(&sub, &reader.0, &mut taken).await {
        tracing::warn!(handler = %sub.handler, "taking back the entries this consumer left pending failed; they are claimed once idle: {e}");
    }
    take::settle(&sub, &mut taken).await;
    sub.in_flight()
        .extend(taken.deliveries.iter().map(|d| d.token.clone()));
    carry.extend(taken.deliveries);
    let mut next_claim = Instant::now();
    let mut read_failures = 0u32;
    // A read or claim failed: its reply, and the entries Redis registered to this consumer
    // with it, may be lost. They are taken back before anything newer is read.
    let mut take_back = false;
    loop {
        // Events stay in the streams, so any stop (drain included) takes nothing more; what
        // is carried over stays pending, for a claim later.
        if stop.mode() != StopMode::Run {
            break;
        }
        // After the stop check: a stopping loop does not take a fault meant for a running one.
        event_core::fault::checkpoint(&sub.handler);
        let room = tokio::select! {
            biased;
            changed = stop.changed() => if changed { continue } else { break },
            room = dispatcher.get().reserve(config.batch_size) => room,
        };
        let mut taken = take::Taken::default();
        let mut outcome = Ok(());
        // Claims and reads add at most what the room has left after the carry-over.
        let want = room.saturating_sub(carry.len());
        if take_back {
            outcome = take::read_own_pending(&sub, &reader.0, &mut taken).await;
            take_back = outcome.is_err();
            if !taken.deliveries.is_empty() {
                tracing::info!(handler = %sub.handler, count = taken.deliveries.len(), "took back entries whose read was lost with its connection");
            }
        }
        if outcome.is_ok() && want > taken.deliveries.len() && Instant::now() >= next_claim {
            next_claim = Instant::now() + claim_every;
            outcome = take::claim(&sub, want, &mut taken).await;
        }
        let free = want.saturating_sub(taken.deliveries.len());
        if outcome.is_ok() && free > 0 {
            outcome = match sub.slots.len() {
                1 => take::read(&sub, &reader.0, free, &mut taken).await,
                _ => slots::read(&sub, &reader.0, free, &mut taken).await,
            };
        }
        take::settle(&sub, &mut taken).await;
        if !taken.deliveries.is_empty() {
            sub.in_flight()
                .extend(taken.deliveries.iter().map(|d| d.token.clone()));
            carry.extend(taken.deliveries);
        }
        let batch: Vec<Delivery<Token>> = carry.drain(..room.min(carry.len())).collect();
        dispatcher.get().release(room - batch.len());
        if !batch.is_empty() {
            dispatcher.get().dispatch(batch);
        }
        match outcome {
            Ok(()) => read_failures = 0,
            Err(e) => {
                take_back = true;
                read_failures = read_failures.saturating_add(1);
                if read_failures == 1 || read_failures.is_multiple_of(50) {
                    tracing::warn!(handler = %sub.handler, failures = read_failures, "reading from Redis failed, retrying: {e}");
                }
                if e.to_string().contains("NOGROUP") {
                    // The stream or the group was deleted under us: make them again, from the
                    // start of what is left.
                    for stream in &sub.streams {
                        let _ = create_group(&sub.inner.client, stream, &sub.group, "0").await;
                    }
                }
                if !pause(&mut stop, read_failures).await {
                    break;
                }
            }
        }
    }
    let drained = close(&sub, &mut dispatcher, &stop).await;
    // Only now: while the dispatcher finished its events, their claims were kept fresh.
    drop(keeper);
    drained
}

/// Closes the attempt's dispatcher, waiting for its events until the stop's deadline.
async fn close(sub: &Subscriber, dispatcher: &mut DispatcherGuard, stop: &StopSignal) -> bool {
    let Some(dispatcher) = dispatcher.dispatcher.take() else {
        return true;
    };
    let drained = dispatcher
        .close(stop.remaining(sub.inner.config.shutdown_timeout))
        .await;
    if !drained {
        tracing::warn!(
            handler = %sub.handler,
            "handler did not finish its in-flight events in time; they stay pending and will be claimed again"
        );
    }
    drained
}

/// Waits after the `failures`-th failure in a row (100 ms more each time, up to 5 s); `false`
/// when nobody can ask the loop to stop any more (the bus is gone).
async fn pause(stop: &mut StopSignal, failures: u32) -> bool {
    let pause = Duration::from_millis(100 * u64::from(failures.min(50)));
    tokio::select! {
        biased;
        changed = stop.changed() => changed,
        () = tokio::time::sleep(pause) => true,
    }
}

/// Connects a new reader for a restarted attempt, retrying until it succeeds or a stop is
/// asked for (`None`).
async fn connect_reader(sub: &Subscriber, stop: &mut StopSignal) -> Option<Client> {
    let mut failures = 0u32;
    loop {
        if stop.mode() != StopMode::Run {
            return None;
        }
        let reader = sub.inner.client.clone_new();
        match client::connect(&reader, &sub.inner.redis).await {
            Ok(()) => return Some(reader),
            Err(e) => {
                let _ = reader.quit().await;
                failures = failures.saturating_add(1);
                if failures == 1 || failures.is_multiple_of(50) {
                    tracing::warn!(handler = %sub.handler, failures, "connecting the consumer's reader failed, retrying: {e}");
                }
                if !pause(stop, failures).await {
                    return None;
                }
            }
        }
    }
}
