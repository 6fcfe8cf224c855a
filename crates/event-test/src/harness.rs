//! [`TestBus`]: the embedded bus with recording, quiescence and the virtual clock.

use std::sync::Arc;
use std::time::Duration;

use event_core::{
    BusStats, Config, DeadLetter, Event, EventBus, EventHandler, EventId, EventType, MemoryBus,
    Subscription, SubscriptionSpec,
};
use tokio::time::Instant;

use crate::error::BusyHandler;
use crate::recording::RecordingBus;
use crate::records::{Attempt, Published, Records, SharedRecords};
use crate::{TestBusError, clock};

/// How long [`TestBus::settle`] waits by default, on tokio's clock.
pub const DEFAULT_SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The first pause between two looks at the bus while settling.
const MIN_POLL: Duration = Duration::from_millis(1);

/// The longest pause between two looks at the bus while settling, reached only while nothing
/// changes (the bus waits for a retry): long enough that a paused clock reaches a retry
/// minutes away in a few thousand cheap looks, short enough that settling moves a paused
/// clock little past the moment the bus went quiet.
const MAX_POLL: Duration = Duration::from_millis(100);

/// A [`MemoryBus`] for testing your handlers: publish, [`settle`](Self::settle) until the bus
/// is quiet, then assert what each handler [received](Self::received), what it
/// [published](Self::published_by) and what was [dead-lettered](Self::dead_letters).
///
/// The crate documentation shows it at work. Everything subscribed or published through the
/// harness, or through [`bus`](Self::bus) (the handle to give the handlers under test, and
/// anything that takes an `Arc<dyn EventBus>`), is recorded.
pub struct TestBus {
    bus: Arc<RecordingBus>,
    records: SharedRecords,
    settle_timeout: Duration,
}

impl std::fmt::Debug for TestBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestBus")
            .field("bus", &self.bus.inner)
            .field("settle_timeout", &self.settle_timeout)
            .finish_non_exhaustive()
    }
}

impl Default for TestBus {
    fn default() -> Self {
        Self::new()
    }
}

impl TestBus {
    /// A harness on a bus with the default configuration, whatever the environment says, so
    /// tests do not depend on it: the retry policy is production's (`EVENT_MAX_RETRIES`=3,
    /// backoff from 100 ms to 30 s), instant on a paused clock.
    pub fn new() -> Self {
        Self::on(MemoryBus::default())
    }

    /// A harness on a bus with `config` (say, `handler_concurrency` or `max_retries` as in
    /// production, or `Config::from_env()`).
    ///
    /// # Errors
    /// [`TestBusError::Bus`] with [`event_core::Error::Config`] when the configuration is
    /// invalid.
    pub fn with_config(config: Config) -> Result<Self, TestBusError> {
        Ok(Self::on(MemoryBus::new(config)?))
    }

    fn on(bus: MemoryBus) -> Self {
        let records = Arc::new(Records::default());
        Self {
            bus: Arc::new(RecordingBus {
                inner: bus,
                records: records.clone(),
            }),
            records,
            settle_timeout: DEFAULT_SETTLE_TIMEOUT,
        }
    }

    /// Sets how long [`settle`](Self::settle) waits before it fails (default 30 s, on
    /// tokio's clock: virtual when paused).
    #[must_use]
    pub fn settle_timeout(mut self, timeout: Duration) -> Self {
        self.settle_timeout = timeout;
        self
    }

    /// The bus to hand the code under test: publishes through it are recorded, attributed to
    /// the handler whose `handle` made them, and handlers subscribed through it are recorded
    /// like those of [`subscribe`](Self::subscribe).
    pub fn bus(&self) -> Arc<dyn EventBus> {
        self.bus.clone()
    }

    /// The bus's configuration.
    pub fn config(&self) -> &Config {
        self.bus.inner.config()
    }

    /// Subscribes `handler` (under its own name) to `event_types`, from the next event
    /// published.
    ///
    /// # Errors
    /// [`TestBusError::Bus`] for a bad handler name, no types, or a handler already
    /// subscribed to other types.
    pub async fn subscribe(
        &self,
        event_types: impl IntoIterator<Item = EventType>,
        handler: Arc<dyn EventHandler>,
    ) -> Result<Subscription, TestBusError> {
        let spec = SubscriptionSpec::new(handler.name(), event_types);
        self.subscribe_with(spec, handler).await
    }

    /// Subscribes `handler` with a spec of your own (where to start, concurrency).
    ///
    /// # Errors
    /// As [`subscribe`](Self::subscribe).
    pub async fn subscribe_with(
        &self,
        spec: SubscriptionSpec,
        handler: Arc<dyn EventHandler>,
    ) -> Result<Subscription, TestBusError> {
        Ok(self.bus.subscribe(spec, handler).await?)
    }

    /// Publishes one event (recorded as published by the test).
    ///
    /// # Errors
    /// [`TestBusError::Bus`]: the event is too large, or the bus is shut down.
    pub async fn publish(&self, event: Event) -> Result<EventId, TestBusError> {
        Ok(self.bus.publish(event).await?)
    }

    /// Publishes events in one batch; fails with the first event the bus refused (the others
    /// are published).
    ///
    /// # Errors
    /// As [`publish`](Self::publish).
    pub async fn publish_all(
        &self,
        events: impl IntoIterator<Item = Event>,
    ) -> Result<Vec<EventId>, TestBusError> {
        let results = self.bus.publish_batch(events.into_iter().collect()).await;
        Ok(results.into_iter().collect::<Result<Vec<_>, _>>()?)
    }

    /// Waits until the bus is quiet, at most the [settle timeout](Self::settle_timeout).
    ///
    /// Quiet means: every event published to a subscribed handler has been handled or
    /// dead-lettered, none is running, queued or waiting for a retry, and so no handler can
    /// publish anything more. Follow-ups count: a handler's publish is stored before its
    /// event is finished, so a chain of follow-ups keeps the bus busy to its end. Work a
    /// handler hands to a task of its own is not seen.
    ///
    /// On a paused clock the wait runs the clock forward, so retries pass instantly; it
    /// moves it as far as the retries need, plus at most 100 ms (the pause between two
    /// looks at the bus while it waits for a retry), or about a millisecond without retries.
    ///
    /// # Errors
    /// [`TestBusError::NotQuiet`], saying what each busy handler still had (the events it was
    /// running and for how long), when the timeout passes first; [`TestBusError::Bus`] when
    /// the bus's stats fail.
    pub async fn settle(&self) -> Result<(), TestBusError> {
        self.settle_within(self.settle_timeout).await
    }

    /// [`settle`](Self::settle) with its own timeout.
    ///
    /// # Errors
    /// As [`settle`](Self::settle).
    pub async fn settle_within(&self, timeout: Duration) -> Result<(), TestBusError> {
        let started = Instant::now();
        let mut pause = MIN_POLL;
        let mut last = None;
        loop {
            let (busy, progress) = self.busy().await?;
            if busy.is_empty() {
                return Ok(());
            }
            let waited = started.elapsed();
            if waited >= timeout {
                let busy = busy
                    .into_iter()
                    .map(|b| BusyHandler {
                        running: self.records.running(&b.handler),
                        ..b
                    })
                    .collect();
                return Err(TestBusError::NotQuiet { waited, busy });
            }
            // Look again soon while the bus moves, less and less often while it waits.
            pause = if last == Some(progress) {
                (pause * 2).min(MAX_POLL)
            } else {
                MIN_POLL
            };
            last = Some(progress);
            tokio::time::sleep(pause.min(timeout - waited)).await;
        }
    }

    /// The subscribed handlers that still have work, and a sum of the bus's counters that
    /// changes as it makes progress. One look at the bus's stats, taken under its lock, so a
    /// handler's follow-up is either still in its event's acknowledgement or already in its
    /// subscribers' lag.
    async fn busy(&self) -> Result<(Vec<BusyHandler>, [u64; 4]), TestBusError> {
        let stats = self.bus.stats().await?;
        let mut progress = [0; 4];
        for h in stats.handlers.values() {
            progress[0] += h.processed;
            progress[1] += h.failed;
            progress[2] += h.lag;
            progress[3] += h.pending;
        }
        let busy = stats
            .handlers
            .into_iter()
            .filter(|(_, h)| h.subscriptions > 0 && (h.lag > 0 || h.pending > 0))
            .map(|(handler, h)| BusyHandler {
                // Filled in only for the error: it walks the handler's attempts.
                running: Vec::new(),
                handler,
                waiting: h.lag,
                in_flight: h.pending,
            })
            .collect();
        Ok((busy, progress))
    }

    /// The events delivered to `handler`, each once (however many attempts), in the order of
    /// their first delivery.
    ///
    /// # Errors
    /// [`TestBusError::UnknownHandler`] for a handler never subscribed here.
    pub fn received(&self, handler: &str) -> Result<Vec<Event>, TestBusError> {
        self.records.received(handler)
    }

    /// Every attempt of `handler`, retries included, with its outcome, in the order they
    /// started.
    ///
    /// # Errors
    /// [`TestBusError::UnknownHandler`] for a handler never subscribed here.
    pub fn attempts(&self, handler: &str) -> Result<Vec<Attempt>, TestBusError> {
        self.records.attempts(handler)
    }

    /// The events `handler` finished with `Ok`, in the order it finished them.
    ///
    /// # Errors
    /// [`TestBusError::UnknownHandler`] for a handler never subscribed here.
    pub fn handled(&self, handler: &str) -> Result<Vec<Event>, TestBusError> {
        self.records.handled(handler)
    }

    /// Every event published through the harness or its [`bus`](Self::bus), by the test or
    /// by handlers, in the order the publishes returned.
    pub fn published(&self) -> Vec<Published> {
        self.records.all_published()
    }

    /// The events `handler` published from inside its `handle`.
    ///
    /// # Errors
    /// [`TestBusError::UnknownHandler`] for a handler never subscribed here.
    pub fn published_by(&self, handler: &str) -> Result<Vec<Event>, TestBusError> {
        self.records.published_by(handler)
    }

    /// The dead letters of `handler`, oldest first, with their provenance (attempts, first
    /// and last error).
    ///
    /// # Errors
    /// [`TestBusError::Bus`] with [`event_core::Error::UnknownHandler`] for a handler the
    /// bus has never seen.
    pub async fn dead_letters(&self, handler: &str) -> Result<Vec<DeadLetter>, TestBusError> {
        Ok(self.bus.dead_letters(handler, usize::MAX).await?)
    }

    /// The bus's statistics.
    ///
    /// # Errors
    /// [`TestBusError::Bus`], which the in-memory bus does not return.
    pub async fn stats(&self) -> Result<BusStats, TestBusError> {
        Ok(self.bus.stats().await?)
    }

    /// Moves the virtual clock forward by `by`: retries due by then run, and events stored
    /// longer ago than `EVENT_TTL_SECONDS` are trimmed. [`settle`](Self::settle) afterwards
    /// to wait for what the retries do.
    ///
    /// The virtual clock is tokio's, paused: `#[tokio::test(start_paused = true)]`.
    /// Event timestamps are not moved (they are set when events are built, by the wall
    /// clock); replay by time and `StartFrom::Time` go by them.
    ///
    /// # Errors
    /// [`TestBusError::ClockNotPaused`] when tokio's clock is not paused.
    pub async fn advance(&self, by: Duration) -> Result<(), TestBusError> {
        clock::advance(by).await
    }

    /// Shuts the bus down, letting running handlers finish.
    ///
    /// # Errors
    /// [`TestBusError::Bus`], which the in-memory bus does not return.
    pub async fn shutdown(&self) -> Result<(), TestBusError> {
        Ok(self.bus.shutdown().await?)
    }
}
