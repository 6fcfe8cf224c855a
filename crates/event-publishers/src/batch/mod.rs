//! [`BatchPublisher`]: buffers events and publishes them with one `publish_batch` call per
//! flush, when `EVENT_BATCH_SIZE` events are waiting or `EVENT_FLUSH_INTERVAL_MS` has passed
//! (a real timer: it fires with no further events), reporting the result of every event and
//! never dropping a failed one in silence.

mod report;

use std::mem;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use event_core::{Config, Event, EventType, JsonObject};
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
/// - Dropping it with unflushed events logs a warning and flushes them in the background;
///   call [`close`](BatchPublisher::close) to know their fate.
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
    timer: JoinHandle<()>,
}

#[derive(Debug)]
struct Shared {
    publisher: EventPublisher,
    settings: BatchSettings,
    /// Events waiting, oldest first.
    buffer: Mutex<Vec<Event>>,
    /// Events that automatic flushes could not publish and will not retry.
    failed: Mutex<Vec<FailedEvent>>,
    /// One flush at a time, so events leave in the order they came; it holds the copies'
    /// buffer, reused from one batch to the next.
    flushing: tokio::sync::Mutex<Copies>,
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
            flushing: tokio::sync::Mutex::new(Copies::default()),
        });
        let timer = tokio::spawn(run_timer(Arc::downgrade(&shared), settings.flush_interval));
        Self { shared, timer }
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
    pub async fn close(self) -> FlushReport {
        self.timer.abort();
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
        self.timer.abort();
        let pending = self.pending();
        let failed = lock(&self.shared.failed).len();
        if pending == 0 && failed == 0 {
            return;
        }
        tracing::warn!(
            source = self.shared.publisher.source(),
            pending,
            failed,
            "BatchPublisher dropped with {pending} unflushed events and {failed} failed events not taken; \
             flushing in the background: call close() or use scope() to get every result"
        );
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let shared = self.shared.clone();
            runtime.spawn(async move {
                let report = shared.flush(1, true).await;
                shared.keep_failed(report);
            });
        }
    }
}

/// Flushes every `period`, whatever happens to `add`, until the publisher is gone.
async fn run_timer(shared: Weak<Shared>, period: Duration) {
    let mut ticker = tokio::time::interval_at(Instant::now() + period, period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let report = shared.flush(1, false).await;
        shared.keep_failed(report);
    }
}

impl Shared {
    /// Publishes the events buffered when the flush starts, in batches of at most
    /// `batch_size`, if at least `min` are buffered. Transient failures go back to the front
    /// of the buffer, unless `last` (then they are handed back).
    async fn flush(&self, min: usize, last: bool) -> FlushReport {
        let mut copies = self.flushing.lock().await;
        let mut report = FlushReport::default();
        let mut remaining = {
            let buffer = lock(&self.buffer);
            if buffer.len() < min.max(1) {
                return report;
            }
            buffer.len()
        };
        let mut retry = Vec::new();
        while remaining > 0 {
            let batch: Vec<Event> = {
                let mut buffer = lock(&self.buffer);
                let n = remaining.min(self.settings.batch_size).min(buffer.len());
                buffer.drain(..n).collect()
            };
            if batch.is_empty() {
                break;
            }
            remaining -= batch.len();
            // The bus takes the events; copies are kept to hand back the ones that fail.
            copies.fill(&batch);
            let mut results = self.publisher.bus().publish_batch(batch).await.into_iter();
            report.batches += 1;
            for index in 0..copies.len() {
                let result = results.next().unwrap_or_else(|| {
                    Err(event_core::Error::backend(
                        "batch publisher",
                        "the bus returned fewer results than events; the event's fate is unknown",
                        false,
                    ))
                });
                match result {
                    Ok(id) => report.published.push(id),
                    Err(error) => {
                        let event = copies.restore(index);
                        if error.is_transient() && !last {
                            report.retrying.push((event.id, clone_error(&error)));
                            retry.push(event);
                        } else {
                            report.failed.push(FailedEvent { event, error });
                        }
                    }
                }
            }
        }
        if !retry.is_empty() {
            lock(&self.buffer).splice(0..0, retry);
        }
        for (id, error) in &report.retrying {
            tracing::debug!(event_id = %id, "batched event kept for the next flush: {error}");
        }
        report
    }

    /// Keeps the events an automatic flush handed back, for the next explicit flush.
    fn keep_failed(&self, report: FlushReport) {
        if report.failed.is_empty() {
            return;
        }
        for failed in &report.failed {
            tracing::warn!(
                source = self.publisher.source(),
                event_id = %failed.event.id,
                event_type = %failed.event.event_type,
                "batched event not published and handed back: {}",
                failed.error
            );
        }
        lock(&self.failed).extend(report.failed);
    }
}

/// `event_core::Error` is not `Clone`; the report keeps a copy of a transient error's
/// message and kind (the event itself stays buffered with no error attached).
fn clone_error(error: &event_core::Error) -> event_core::Error {
    match error {
        event_core::Error::Timeout { operation, after } => event_core::Error::Timeout {
            operation,
            after: *after,
        },
        event_core::Error::Backend {
            backend,
            message,
            transient,
            ..
        } => event_core::Error::backend(backend, message.clone(), *transient),
        other => event_core::Error::backend("batch publisher", other.to_string(), true),
    }
}

/// Copies of a batch's events, kept until the bus has answered, to hand back the ones that
/// fail. They are encoded into one buffer: a batch of 100 then costs a few allocations
/// instead of the twenty or so a deep clone of each event takes, which on the in-memory bus
/// halved the batch publisher's throughput (`cargo xtask bench publishers`). Only a failed
/// event is decoded.
#[derive(Debug, Default)]
struct Copies {
    bytes: Vec<u8>,
    /// Where each event's bytes end; an event kept as a clone has an empty range.
    ends: Vec<usize>,
    /// Events kept as clones: those with unknown envelope fields (`extra`), which could
    /// collide with a known field in the encoding, and any that failed to encode.
    cloned: Vec<(usize, Event)>,
}

impl Copies {
    /// Replaces the copies with those of `batch`, reusing the buffers: a new buffer of
    /// 50 KB per batch would make the allocator consolidate its free lists each time.
    fn fill(&mut self, batch: &[Event]) {
        self.bytes.clear();
        self.ends.clear();
        self.cloned.clear();
        for (index, event) in batch.iter().enumerate() {
            let start = self.bytes.len();
            if !event.extra.is_empty() || serde_json::to_writer(&mut self.bytes, event).is_err() {
                self.bytes.truncate(start);
                self.cloned.push((index, event.clone()));
            }
            self.ends.push(self.bytes.len());
        }
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    /// The event at `index`, as it was when the copies were made.
    fn restore(&self, index: usize) -> Event {
        if let Some((_, event)) = self.cloned.iter().find(|(i, _)| *i == index) {
            return event.clone();
        }
        let start = index.checked_sub(1).map_or(0, |i| self.ends[i]);
        let bytes = &self.bytes[start..self.ends[index]];
        // These bytes were encoded from an envelope without unknown fields a moment ago; the
        // codec's round trip is exact (event-core's codec tests), so they decode.
        serde_json::from_slice(bytes).expect("an envelope encoded by this process decodes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn copies_restore_every_event_exactly() {
        let plain = Event::builder(EventType::SIGNAL_DETECTED, "svc")
            .payload(json!({"signal_id": "s-1", "score": 0.5, "when": "2026-11-27T01:00:00Z"}))
            .partition_key("s-1")
            .correlation_id("req-1")
            .metadata("published_at", "now")
            .build()
            .unwrap();
        let mut with_extra = Event::builder(EventType::AGENT_ERROR, "svc")
            .field("agent_id", "a")
            .build()
            .unwrap();
        // An unknown envelope field named like a known one must not corrupt the copy.
        with_extra.extra.insert("source".into(), json!("shadow"));
        with_extra.extra.insert("trace".into(), json!({"span": 7}));
        let batch = vec![plain.clone(), with_extra.clone(), plain.clone()];
        let mut copies = Copies::default();
        copies.fill(std::slice::from_ref(&with_extra));
        copies.fill(&batch);
        assert_eq!(copies.len(), 3);
        assert_eq!(copies.restore(0), plain);
        assert_eq!(copies.restore(1), with_extra);
        assert_eq!(copies.restore(2), plain);
    }
}
