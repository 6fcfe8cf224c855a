//! [`InterceptedBus`]: a real bus whose publishing a test takes over (to fail, hold, or note
//! what passes), everything else forwarded as it is.

use std::sync::Arc;

use async_trait::async_trait;
use event_core::{
    AggregateAppend, BusStats, Capabilities, DeadLetter, DeadLetterSelection, Error, Event,
    EventBus, EventHandler, EventId, EventStream, Health, RedriveReport, ReplayQuery, Subscription,
    SubscriptionSpec,
};

/// What an [`InterceptedBus`] does with what is published; `publish` comes here as a batch of
/// one. `inner` is the bus it wraps, for the events the hook lets through.
#[async_trait]
pub trait PublishHook: Send + Sync + 'static {
    /// Publishes `events` (or not), one result per event, in order.
    async fn publish_batch(
        &self,
        inner: &dyn EventBus,
        events: Vec<Event>,
    ) -> Vec<Result<EventId, Error>>;
}

/// A bus that hands its publishes to a [`PublishHook`] and forwards everything else to the
/// bus it wraps (event sourcing's appends too, as they are).
pub struct InterceptedBus<H> {
    inner: Arc<dyn EventBus>,
    hook: H,
}

impl<H: PublishHook> InterceptedBus<H> {
    /// `inner`, its publishes going through `hook`.
    pub fn new(inner: Arc<dyn EventBus>, hook: H) -> Arc<Self> {
        Arc::new(Self { inner, hook })
    }

    /// The hook, to steer it or read what it noted.
    pub fn hook(&self) -> &H {
        &self.hook
    }
}

#[async_trait]
impl<H: PublishHook> EventBus for InterceptedBus<H> {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn publish(&self, event: Event) -> Result<EventId, Error> {
        let mut results = self.hook.publish_batch(&*self.inner, vec![event]).await;
        results.pop().expect("a hook gives one result per event")
    }

    async fn publish_batch(&self, events: Vec<Event>) -> Vec<Result<EventId, Error>> {
        self.hook.publish_batch(&*self.inner, events).await
    }

    async fn subscribe(
        &self,
        spec: SubscriptionSpec,
        handler: Arc<dyn EventHandler>,
    ) -> Result<Subscription, Error> {
        self.inner.subscribe(spec, handler).await
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
        self.inner.append_to_aggregate(append).await
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
