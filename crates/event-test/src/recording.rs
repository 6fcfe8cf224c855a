//! The bus the harness hands out, which records what is published and by which handler, and
//! the wrapper around each subscribed handler, which records its attempts.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use async_trait::async_trait;
use event_core::{
    AggregateAppend, BusStats, Capabilities, DeadLetter, DeadLetterSelection, Error, Event,
    EventBus, EventHandler, EventId, EventStream, HandlerError, Health, MemoryBus, RedriveReport,
    ReplayQuery, Subscription, SubscriptionSpec, Unpublished,
};
use futures::FutureExt;

use crate::records::{Outcome, SharedRecords};

tokio::task_local! {
    /// The handler whose `handle` runs in this task: publishes are attributed to it.
    static HANDLING: Arc<str>;
}

/// The handler whose `handle` is running in this task, if any.
fn publisher() -> Option<Arc<str>> {
    HANDLING.try_with(Arc::clone).ok()
}

/// A [`MemoryBus`] that records what is published through it and wraps the handlers
/// subscribed through it.
pub(crate) struct RecordingBus {
    pub(crate) inner: MemoryBus,
    pub(crate) records: SharedRecords,
}

impl RecordingBus {
    fn record(&self, events: impl IntoIterator<Item = Event>) {
        self.records.published(events, publisher().as_deref());
    }

    /// Records the events of a batch that were stored: those whose result is `Ok`.
    fn record_stored<T, E>(&self, events: Vec<Event>, results: &[Result<T, E>]) {
        self.record(
            events
                .into_iter()
                .zip(results)
                .filter(|(_, r)| r.is_ok())
                .map(|(e, _)| e),
        );
    }
}

#[async_trait]
impl EventBus for RecordingBus {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn publish(&self, event: Event) -> Result<EventId, Error> {
        let copy = event.clone();
        let id = self.inner.publish(event).await?;
        self.record([copy]);
        Ok(id)
    }

    async fn publish_batch(&self, events: Vec<Event>) -> Vec<Result<EventId, Error>> {
        let copies = events.clone();
        let results = self.inner.publish_batch(events).await;
        self.record_stored(copies, &results);
        results
    }

    async fn publish_batch_returning(
        &self,
        events: Vec<Event>,
    ) -> Vec<Result<EventId, Unpublished>> {
        let copies = events.clone();
        let results = self.inner.publish_batch_returning(events).await;
        self.record_stored(copies, &results);
        results
    }

    async fn subscribe(
        &self,
        spec: SubscriptionSpec,
        handler: Arc<dyn EventHandler>,
    ) -> Result<Subscription, Error> {
        let name: Arc<str> = Arc::from(handler.name());
        let recorded = Arc::new(RecordingHandler {
            name: name.clone(),
            inner: handler,
            records: self.records.clone(),
        });
        let subscription = self.inner.subscribe(spec, recorded).await?;
        self.records.register(&name);
        Ok(subscription)
    }

    async fn replay(&self, query: ReplayQuery) -> Result<EventStream, Error> {
        self.inner.replay(query).await
    }

    async fn stats(&self) -> Result<BusStats, Error> {
        self.inner.stats().await
    }

    async fn health(&self) -> Health {
        self.inner.health().await
    }

    async fn dead_letters(&self, handler: &str, limit: usize) -> Result<Vec<DeadLetter>, Error> {
        self.inner.dead_letters(handler, limit).await
    }

    async fn redrive_dead_letters(
        &self,
        handler: &str,
        selection: DeadLetterSelection,
    ) -> Result<RedriveReport, Error> {
        self.inner.redrive_dead_letters(handler, selection).await
    }

    async fn purge_dead_letters(
        &self,
        handler: &str,
        selection: DeadLetterSelection,
    ) -> Result<u64, Error> {
        self.inner.purge_dead_letters(handler, selection).await
    }

    async fn append_to_aggregate(&self, append: AggregateAppend) -> Result<u64, Error> {
        let copy = append.clone();
        let version = self.inner.append_to_aggregate(append).await?;
        // The events as stored carry their versions: made again from the version they
        // were appended at (the append checked it, so this cannot fail but for a race with
        // another append to the same aggregate, where the plain events are recorded).
        let before = version.saturating_sub(copy.events.len() as u64);
        let stored = copy.prepare(before).unwrap_or(copy.events);
        self.record(stored);
        Ok(version)
    }

    async fn load_aggregate(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Result<Vec<Event>, Error> {
        self.inner
            .load_aggregate(aggregate_type, aggregate_id)
            .await
    }

    async fn shutdown(&self) -> Result<(), Error> {
        self.inner.shutdown().await
    }
}

/// A subscribed handler, recording each attempt and its outcome, and marking its task so
/// the events it publishes are attributed to it.
struct RecordingHandler {
    name: Arc<str>,
    inner: Arc<dyn EventHandler>,
    records: SharedRecords,
}

#[async_trait]
impl EventHandler for RecordingHandler {
    fn name(&self) -> &str {
        &self.name
    }

    async fn handle(&self, event: &Event) -> Result<(), HandlerError> {
        let index = self.records.start(&self.name, event);
        let handling = AssertUnwindSafe(self.inner.handle(event)).catch_unwind();
        match HANDLING.scope(self.name.clone(), handling).await {
            Ok(result) => {
                self.records.finish(&self.name, index, Outcome::of(&result));
                result
            }
            Err(panic) => {
                let message = panic_message(&*panic);
                self.records
                    .finish(&self.name, index, Outcome::Panicked { message });
                // The bus sees the panic as it would without the harness.
                std::panic::resume_unwind(panic)
            }
        }
    }

    async fn on_error(&self, event: &Event, error: &HandlerError, attempt: u32) {
        self.inner.on_error(event, error, attempt).await;
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}
