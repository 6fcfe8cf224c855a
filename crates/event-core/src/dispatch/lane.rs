//! One lane of a dispatcher: runs its deliveries one at a time, parks retries on timers, and
//! keeps later events of a parked key waiting behind it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;
use time::OffsetDateTime;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tracing::Instrument as _;

use super::{Delivery, DeliverySink, DispatchSettings, HandlerCounters, ordering_hash};
use crate::trace::{self, Relation};
use crate::{DeadLetter, DeadLetterReason, EventHandler, FailureKind, FailureRecord, HandlerError};

/// What every lane of one dispatcher shares.
pub(super) struct LaneShared<T> {
    pub(super) handler: Arc<dyn EventHandler>,
    pub(super) settings: DispatchSettings,
    pub(super) sink: Arc<dyn DeliverySink<T>>,
    pub(super) counters: Arc<HandlerCounters>,
    pub(super) room: Arc<Semaphore>,
}

/// A delivery inside a lane, with its failure history.
struct Item<T> {
    delivery: Delivery<T>,
    key: u64,
    failures: Option<FailureRecord>,
}

impl<T> Item<T> {
    fn attempts_so_far(&self) -> u32 {
        self.delivery.prior_attempts + self.failures.as_ref().map_or(0, |f| f.attempts)
    }
}

enum Outcome<T> {
    /// Handled: acknowledge.
    Done(T),
    /// Stored as a dead letter (and acknowledged by the sink).
    DeadLettered,
    /// Try again after the delay.
    Retry(Item<T>, std::time::Duration),
}

/// The state of one lane.
struct Lane<T> {
    shared: Arc<LaneShared<T>>,
    /// Deliveries to run, in order.
    ready: VecDeque<Item<T>>,
    /// Keys with a parked retry, and the deliveries of that key that arrived behind it.
    blocked: HashMap<u64, VecDeque<Item<T>>>,
    /// Parked retries by due time (the counter breaks ties).
    timers: BTreeMap<(Instant, u64), Item<T>>,
    timer_seq: u64,
    acks: Vec<T>,
    /// Deliveries finished since the last flush (room to give back).
    finished: usize,
    /// When acknowledgements were last sent.
    last_flush: Instant,
}

/// A busy lane sends its acknowledgements at least this often, so a crash or a slow handler
/// never leaves many finished events unacknowledged (to be delivered again, or claimed by
/// another consumer while already done).
const ACK_INTERVAL: std::time::Duration = std::time::Duration::from_millis(50);

pub(super) async fn run<T: Send + 'static>(
    mut rx: mpsc::UnboundedReceiver<Vec<Delivery<T>>>,
    shared: Arc<LaneShared<T>>,
) {
    let mut lane = Lane {
        shared,
        ready: VecDeque::new(),
        blocked: HashMap::new(),
        timers: BTreeMap::new(),
        timer_seq: 0,
        acks: Vec::new(),
        finished: 0,
        last_flush: Instant::now(),
    };
    let mut open = true;
    loop {
        if lane.ready.is_empty() {
            lane.flush().await;
            if !open && lane.timers.is_empty() {
                break;
            }
            let next_timer = lane.timers.first_key_value().map(|((at, _), _)| *at);
            tokio::select! {
                biased;
                batch = rx.recv(), if open => match batch {
                    Some(batch) => lane.accept(batch),
                    None => open = false,
                },
                () = sleep_until(next_timer), if next_timer.is_some() => {}
            }
        }
        while let Ok(batch) = rx.try_recv() {
            lane.accept(batch);
        }
        lane.wake_due_timers();
        lane.run_ready().await;
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl<T: Send + 'static> Lane<T> {
    fn accept(&mut self, batch: Vec<Delivery<T>>) {
        self.ready.extend(batch.into_iter().map(|delivery| Item {
            key: ordering_hash(&delivery.event),
            delivery,
            failures: None,
        }));
    }

    /// Moves retries whose time has come to the front of the queue.
    fn wake_due_timers(&mut self) {
        let now = Instant::now();
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            self.ready.push_front(entry.remove());
        }
    }

    async fn run_ready(&mut self) {
        while let Some(item) = self.ready.pop_front() {
            // A first attempt of a blocked key waits behind the parked retry; a retry
            // (it has failures) is the head of its key and runs.
            if item.failures.is_none()
                && let Some(waiting) = self.blocked.get_mut(&item.key)
            {
                waiting.push_back(item);
                continue;
            }
            let key = item.key;
            let was_retry = item.failures.is_some();
            match attempt(&self.shared, item).await {
                Outcome::Done(token) => {
                    self.acks.push(token);
                    self.finish(key, was_retry);
                }
                Outcome::DeadLettered => self.finish(key, was_retry),
                Outcome::Retry(item, delay) => {
                    self.blocked.entry(key).or_default();
                    self.timer_seq += 1;
                    self.timers
                        .insert((Instant::now() + delay, self.timer_seq), item);
                }
            }
            if self.acks.len() >= self.shared.settings.ack_batch
                || (self.finished > 0 && self.last_flush.elapsed() >= ACK_INTERVAL)
            {
                self.flush().await;
            }
            if self
                .timers
                .first_key_value()
                .is_some_and(|((at, _), _)| *at <= Instant::now())
            {
                self.wake_due_timers();
            }
        }
    }

    /// A delivery is over: give its room back at the next flush, and if it was the parked head
    /// of its key, release the deliveries waiting behind it, in order, at the front.
    fn finish(&mut self, key: u64, was_retry: bool) {
        self.finished += 1;
        if was_retry && let Some(waiting) = self.blocked.remove(&key) {
            for item in waiting.into_iter().rev() {
                self.ready.push_front(item);
            }
        }
    }

    async fn flush(&mut self) {
        self.last_flush = Instant::now();
        if !self.acks.is_empty() {
            let tokens = std::mem::take(&mut self.acks);
            self.shared.sink.ack(tokens).await;
        }
        if self.finished > 0 {
            self.shared.counters.mark_progress();
            self.shared.room.add_permits(self.finished);
            self.finished = 0;
        }
    }
}

/// Runs one attempt of a delivery and decides what follows: done, retry, or dead letter.
async fn attempt<T: Send + 'static>(shared: &LaneShared<T>, mut item: Item<T>) -> Outcome<T> {
    let event = &item.delivery.event;
    if crate::fault::lose_this(shared.handler.name()) {
        return Outcome::Done(item.delivery.token);
    }
    let settings = &shared.settings;
    let mut processing = trace::process(
        settings.system,
        &settings.group,
        shared.handler.name(),
        (event, item.delivery.position),
        Relation::Child,
    );
    let result = processing
        .run(AssertUnwindSafe(shared.handler.handle(event)).catch_unwind())
        .await;
    let error = match result {
        Ok(Ok(())) => {
            shared.counters.add_processed(1);
            return Outcome::Done(item.delivery.token);
        }
        Ok(Err(error)) => {
            let kind = match error.kind() {
                FailureKind::Transient => "transient",
                FailureKind::Permanent => "permanent",
            };
            processing.record_error(kind);
            error
        }
        Err(panic) => {
            processing.record_error("panic");
            HandlerError::new(
                FailureKind::Transient,
                format!("handler panicked: {}", panic_message(&*panic)),
            )
        }
    };
    shared.counters.add_failed();
    let attempt = item.attempts_so_far() + 1;
    // A panicking error hook must not take the lane down with it.
    let _ = AssertUnwindSafe(shared.handler.on_error(event, &error, attempt))
        .catch_unwind()
        .await;
    match &mut item.failures {
        Some(record) => record.record(error.to_string()),
        None => item.failures = Some(FailureRecord::first(error.to_string(), 1)),
    }
    if error.is_transient() && shared.settings.retry.should_retry(attempt) {
        shared.counters.add_retried();
        let delay = shared.settings.retry.delay(attempt);
        return Outcome::Retry(item, delay);
    }
    let reason = if error.is_transient() {
        DeadLetterReason::RetriesExhausted
    } else {
        DeadLetterReason::PermanentFailure
    };
    let record = item
        .failures
        .take()
        .unwrap_or_else(|| FailureRecord::first(error.to_string(), 1));
    let letter = DeadLetter {
        id: String::new(),
        handler: shared.handler.name().to_string(),
        group: shared.settings.group.clone(),
        reason,
        event: Some((*item.delivery.event).clone()),
        raw: None,
        attempts: attempt,
        first_error: record.first_error,
        last_error: record.last_error,
        first_failed_at: record.first_failed_at,
        last_failed_at: record.last_failed_at,
        dead_lettered_at: OffsetDateTime::now_utc(),
    };
    shared.counters.add_dead_lettered();
    tracing::warn!(
        handler = shared.handler.name(),
        event_id = %letter.event.as_ref().map(|e| e.id.to_string()).unwrap_or_default(),
        attempts = attempt,
        ?reason,
        "event moved to the dead-letter queue: {}",
        letter.last_error
    );
    let span = trace::dead_letter_span(
        shared.settings.system,
        &shared.settings.group,
        shared.handler.name(),
        letter.event.as_ref(),
    );
    shared
        .sink
        .dead_letter(item.delivery.token, letter)
        .instrument(span)
        .await;
    Outcome::DeadLettered
}

pub(super) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}
