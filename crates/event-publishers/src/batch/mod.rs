//! [`BatchPublisher`]: buffers events and publishes them with one `publish_batch` call per
//! flush, when `EVENT_BATCH_SIZE` events are waiting or `EVENT_FLUSH_INTERVAL_MS` has passed
//! (a real timer: it fires with no further events), reporting the result of every event and
//! never dropping a failed one in silence.

mod flush;
mod report;

use std::mem;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use event_core::{Config, Event, EventType, JsonObject};
use tokio::runtime::Handle;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

pub use report::{FailedEvent, FlushReport, ScopeOutcome};

use crate::{DomainEvent, Error, EventPublisher};

/// When a [`BatchPublisher`] flushes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BatchSettings {
    /// Events per flush: reaching it flushes at once (`EVENT_BATCH_SIZE`, default 100, at
    /// least 1).
    pub batch_size: usize,
    /// The flush timer's period (`EVENT_FLUSH_INTERVAL_MS`, default 1000 ms): buffered events
    /// wait at most this long.
    pub flush_interval: Duration,
}

impl Default for BatchSettings {
    fn default() -> Self {
        Self::from_config(&Config::default())
    }
}

impl BatchSettings {
    /// Settings with the given size and interval (a size of 0 counts as 1, a zero interval
    /// as 1 ms).
    pub fn new(batch_size: usize, flush_interval: Duration) -> Self {
        Self {
            batch_size: batch_size.max(1),
            flush_interval: flush_interval.max(Duration::from_millis(1)),
        }
    }

    /// `EVENT_BATCH_SIZE` and `EVENT_FLUSH_INTERVAL_MS` from a configuration.
    pub fn from_config(config: &Config) -> Self {
        Self::new(config.batch_size, config.flush_interval)
    }
}

/// Buffers events and publishes them in batches.
///
/// - A flush sends at most [`batch_size`](BatchSettings::batch_size) events per
///   `publish_batch` call (one round trip on Redis), and reads the result of each event.
/// - It flushes when `batch_size` events are buffered (the call to `add` that fills the
///   batch waits for that flush: backpressure), and every
///   [`flush_interval`](BatchSettings::flush_interval) by a timer task, also when no event
///   arrives.
/// - An event that fails transiently stays buffered, in order, for the next flush; one that
///   fails permanently is handed back: in the report of [`flush`](BatchPublisher::flush) or
///   [`close`](BatchPublisher::close), or, for the automatic flushes, kept until the next of
///   those calls (or [`take_failed`](BatchPublisher::take_failed)) and logged at `warn`.
/// - [`scope`](BatchPublisher::scope) runs a body and flushes at its end, also when the body
///   fails, and returns both results.
/// - Cancelling an `add` or a `flush` (dropping its future, under `select!` or a timeout)
///   stops the wait, not the flush: each flush runs in a task of its own and owns the events
///   it took, which are published, kept for the next flush (transient failures, in order)
///   or kept for the next `flush`/`close`/`take_failed` (permanent failures).
/// - [`close`](BatchPublisher::close) waits for a flush in progress (the timer's too) and
///   then flushes the rest: every event is published or in its report.
/// - Dropping it with unflushed events logs a warning and flushes them in the background
///   (after the timer's flush in progress, retrying transient failures twice); call
///   [`close`](BatchPublisher::close) to know their fate.
///
/// Events get the envelope of the [`EventPublisher`] it was made from (source, correlation
/// and causation ids, metadata). It must be created inside a Tokio runtime (it spawns its
/// timer).
///
/// ```
/// use std::sync::Arc;
/// use event_core::{Config, MemoryBus};
/// use event_publishers::{BatchPublisher, BatchSettings, EventPublisher, SignalDetected};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let bus = Arc::new(MemoryBus::new(Config::default())?);
/// let publisher = EventPublisher::new(bus, "batch_service");
/// let batch = BatchPublisher::new(publisher, BatchSettings::default());
/// let outcome = batch
///     .scope(async |batch| {
///         for i in 0..250 {
///             batch
///                 .add(SignalDetected {
///                     signal_id: format!("signal-{i}"),
///                     source: "reddit".into(),
///                     signal_type: "pain_point".into(),
///                     content: format!("Market signal {i}"),
///                     confidence: 0.7,
///                     ..Default::default()
///                 })
///                 .await?;
///         }
///         Ok::<_, event_publishers::Error>(())
///     })
///     .await;
/// outcome.result?;
/// assert!(outcome.flush.is_complete());
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct BatchPublisher {
    shared: Arc<Shared>,
    /// `None` once `close` has waited for it.
    timer: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct Shared {
    publisher: EventPublisher,
    settings: BatchSettings,
    /// Events waiting, oldest first.
    buffer: Mutex<Vec<Event>>,
    /// Events that automatic flushes could not publish and will not retry.
    failed: Mutex<Vec<FailedEvent>>,
    /// One flush at a time, so events leave in the order they came.
    flushing: tokio::sync::Mutex<()>,
    /// Where flushes run, in tasks of their own (see `flush.rs`).
    runtime: Handle,
    /// Tells the timer to stop once the flush it may be running is over.
    stop_timer: Arc<Notify>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The data under these locks stays consistent at every await-free step, so a panic
    // elsewhere does not make it unusable.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl BatchPublisher {
    /// A batch publisher that sends `publisher`'s events with `settings`.
    ///
    /// # Panics
    /// Outside a Tokio runtime (the flush timer is a task).
    pub fn new(publisher: EventPublisher, settings: BatchSettings) -> Self {
        let shared = Arc::new(Shared {
            publisher,
            settings,
            buffer: Mutex::new(Vec::with_capacity(settings.batch_size)),
            failed: Mutex::new(Vec::new()),
            flushing: tokio::sync::Mutex::new(()),
            runtime: Handle::current(),
            stop_timer: Arc::new(Notify::new()),
        });
        let timer = tokio::spawn(run_timer(
            Arc::downgrade(&shared),
            shared.stop_timer.clone(),
            settings.flush_interval,
        ));
        Self {
            shared,
            timer: Some(timer),
        }
    }

    /// The settings in use.
    pub fn settings(&self) -> BatchSettings {
        self.shared.settings
    }

    /// The publisher whose envelope the events get.
    pub fn publisher(&self) -> &EventPublisher {
        &self.shared.publisher
    }

    /// Events buffered and not yet published (including those waiting for a retry).
    pub fn pending(&self) -> usize {
        lock(&self.shared.buffer).len()
    }

    /// Validates a typed payload and buffers it; flushes when the batch is full.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the field at fault; nothing is buffered.
    pub async fn add<P: DomainEvent>(&self, payload: P) -> Result<(), Error> {
        let event = self.shared.publisher.event(payload)?;
        self.add_event(event).await;
        Ok(())
    }

    /// Buffers an untyped payload, checked as
    /// [`EventPublisher::json_event`] checks it; flushes when the batch is full.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the field at fault; nothing is buffered.
    pub async fn add_json(
        &self,
        event_type: EventType,
        payload: JsonObject,
        partition_key: Option<String>,
    ) -> Result<(), Error> {
        let event = self
            .shared
            .publisher
            .json_event(event_type, payload, partition_key)?;
        self.add_event(event).await;
        Ok(())
    }

    /// Buffers a ready envelope as it is; flushes when the batch is full.
    pub async fn add_event(&self, event: Event) {
        let full = {
            let mut buffer = lock(&self.shared.buffer);
            buffer.push(event);
            buffer.len() >= self.shared.settings.batch_size
        };
        if full {
            let report = self
                .shared
                .flush(self.shared.settings.batch_size, false)
                .await;
            self.shared.keep_failed(report);
        }
    }

    /// Publishes everything buffered now, and hands back the events earlier automatic
    /// flushes could not publish.
    pub async fn flush(&self) -> FlushReport {
        let mut report = self.shared.flush(1, false).await;
        report.failed.splice(0..0, self.take_failed());
        report
    }

    /// The events automatic flushes could not publish and will not retry, oldest first.
    pub fn take_failed(&self) -> Vec<FailedEvent> {
        mem::take(&mut *lock(&self.shared.failed))
    }

    /// Stops the timer, publishes everything buffered and hands back what could not be
    /// published, transient failures included (no later flush will retry them).
    ///
    /// A flush in progress (the timer's, or one whose caller was cancelled) is waited for,
    /// never abandoned: its events are published or in this report.
    pub async fn close(mut self) -> FlushReport {
        self.shared.stop_timer.notify_one();
        if let Some(timer) = self.timer.as_mut() {
            // The timer ends after its flush in progress. A panic in it (a panicking bus) was
            // the bus's; what that flush held is back in the buffer or kept.
            let _ = timer.await;
            self.timer = None;
        }
        let mut report = self.shared.flush(1, true).await;
        report.failed.splice(0..0, self.take_failed());
        report
    }

    /// Runs `body` with this publisher, then [closes](BatchPublisher::close) it, also when
    /// the body fails: the outcome has both the body's result and the final flush's report.
    pub async fn scope<T, E>(
        self,
        body: impl AsyncFnOnce(&BatchPublisher) -> Result<T, E>,
    ) -> ScopeOutcome<T, E> {
        let result = body(&self).await;
        let flush = self.close().await;
        ScopeOutcome { result, flush }
    }
}

impl Drop for BatchPublisher {
    fn drop(&mut self) {
        self.shared.stop_timer.notify_one();
        let timer = self.timer.take();
        let pending = self.pending();
        let failed = lock(&self.shared.failed).len();
        if pending > 0 || failed > 0 {
            tracing::warn!(
                source = self.shared.publisher.source(),
                pending,
                failed,
                "BatchPublisher dropped with {pending} unflushed events and {failed} failed events not taken; \
                 flushing in the background: call close() or use scope() to get every result"
            );
        }
        // Closed, and no flush running (a cancelled `close` leaves its flush running): nothing
        // is left. Otherwise the timer may be flushing (its transient failures come back to
        // the buffer when it ends), so the background flush waits for it.
        let flush_running = self.shared.flushing.try_lock().is_err();
        if timer.is_none() && pending == 0 && failed == 0 && !flush_running {
            return;
        }
        let shared = self.shared.clone();
        self.shared.runtime.spawn(async move {
            if let Some(timer) = timer {
                let _ = timer.await;
            }
            shared.flush_abandoned().await;
        });
    }
}

/// Flushes of a dropped publisher: transient failures are tried this many times in all.
const ABANDONED_ATTEMPTS: u32 = 3;

impl Shared {
    /// Publishes what a dropped publisher left, retrying transient failures a few times;
    /// what still fails has no one to go to and is logged at `error`, event by event.
    async fn flush_abandoned(self: &Arc<Self>) {
        let pause = self.settings.flush_interval.min(Duration::from_secs(1));
        for attempt in 1..=ABANDONED_ATTEMPTS {
            let report = self.flush(1, attempt == ABANDONED_ATTEMPTS).await;
            lock(&self.failed).extend(report.failed);
            if lock(&self.buffer).is_empty() {
                break;
            }
            tokio::time::sleep(pause).await;
        }
        for failed in mem::take(&mut *lock(&self.failed)) {
            tracing::error!(
                source = self.publisher.source(),
                event_id = %failed.event.id,
                event_type = %failed.event.event_type,
                "batched event lost: its BatchPublisher was dropped without close() and it could not be published: {}",
                failed.error
            );
        }
    }
}

/// Flushes every `period`, whatever happens to `add`, until told to stop or the publisher is
/// gone. It is never aborted: a flush it started runs to its end.
async fn run_timer(shared: Weak<Shared>, stop: Arc<Notify>, period: Duration) {
    let mut ticker = tokio::time::interval_at(Instant::now() + period, period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = stop.notified() => return,
            _ = ticker.tick() => {}
        }
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if lock(&shared.buffer).is_empty() {
            continue;
        }
        let report = shared.flush(1, false).await;
        shared.keep_failed(report);
    }
}
