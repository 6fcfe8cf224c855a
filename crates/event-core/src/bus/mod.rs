//! The [`EventBus`] trait and the values it takes and returns.

mod capabilities;
mod dead_letter;
mod health;
mod replay;
mod sourcing;
mod stats;
mod subscription;
mod unpublished;

use std::sync::Arc;

use async_trait::async_trait;

pub use capabilities::Capabilities;
pub use dead_letter::{
    DeadLetter, DeadLetterReason, DeadLetterSelection, FailureRecord, RedriveReport,
};
pub use health::{ConsumerHealth, Health, HealthStatus, RECENT_LOOP_FAILURE};
pub use replay::{EventStream, ReplayQuery, ReplayReport, replay_into};
pub use sourcing::{AggregateAppend, ExpectedVersion};
pub use stats::{BusStats, GroupMemberStats, HandlerStats};
pub use subscription::{StartFrom, Subscription, SubscriptionControl, SubscriptionSpec};
pub use unpublished::Unpublished;

use crate::{Error, Event, EventHandler, EventId};

/// An event bus: publish events, subscribe handlers, replay, inspect, shut down.
///
/// Every backend ([`MemoryBus`](crate::MemoryBus), `RedisBus`, `KafkaBus`) implements it with
/// the same semantics, checked by the `event-testkit` conformance suite:
///
/// - **At least once**: a handler's success acknowledges an event; a failure, a panic or a
///   crash leaves it to be delivered again.
/// - **A consumer group per handler** (`{EVENT_CONSUMER_GROUP}.{handler}`): every handler sees
///   every event of its types; subscriptions of the same handler share the work.
/// - **Per-key order**: events of one type with the same partition key reach a handler in
///   publish order; other keys run concurrently, up to the subscription's concurrency.
/// - **Retries** with exponential backoff and jitter that never stall other keys; a permanent
///   error or the last failed attempt moves the event to the handler's dead-letter queue.
/// - **Replay** by time window, without moving any consumer group.
///
/// The trait is object-safe (through `async_trait`) so applications can hold an
/// `Arc<dyn EventBus>` and pick the backend at run time.
#[async_trait]
pub trait EventBus: Send + Sync + 'static {
    /// What this backend supports.
    fn capabilities(&self) -> Capabilities;

    /// Publishes one event and returns its id once it is stored.
    ///
    /// # Errors
    /// [`Error::EventTooLarge`] (nothing written), [`Error::ShutDown`], or a backend error.
    async fn publish(&self, event: Event) -> Result<EventId, Error>;

    /// Publishes several events at once, with one result per event in the same order: a bad
    /// event is rejected alone and the others are published.
    ///
    /// On a backend that keeps per-key order ([`Capabilities::per_key_order`]), the events of
    /// one type and partition key in a batch are stored in batch order, and when one of them is
    /// not stored for a reason other than the event itself (the connection, the server or the
    /// stream failed, rather than the event being invalid or too large), none after it is.
    /// A caller can thus publish several events of a key in one batch, as the outbox relay
    /// does, and retry the failed ones without reordering the key.
    async fn publish_batch(&self, events: Vec<Event>) -> Vec<Result<EventId, Error>>;

    /// Publishes several events at once like [`publish_batch`](Self::publish_batch), and hands
    /// back each event it did not take with the reason, so a caller that must keep failed
    /// events (a batch publisher) need not copy every event first.
    ///
    /// The default keeps compact copies of the events for the duration of the call (each
    /// event encoded once more); the built-in backends override it and copy nothing
    /// ([`backend::hand_back`](crate::backend::hand_back)).
    #[allow(
        clippy::result_large_err,
        reason = "the event comes back whole, in a Vec the caller walks once"
    )]
    async fn publish_batch_returning(
        &self,
        events: Vec<Event>,
    ) -> Vec<Result<EventId, Unpublished>> {
        let copies = unpublished::Copies::of(&events);
        let results = self.publish_batch(events).await;
        let mut handed_back: Vec<Result<EventId, Unpublished>> = results
            .into_iter()
            .enumerate()
            .map(|(i, result)| result.map_err(|error| Unpublished::new(copies.restore(i), error)))
            .collect();
        // A backend that answers fewer results than events leaves their fate unknown: they
        // come back rather than vanish.
        for i in handed_back.len()..copies.len() {
            handed_back.push(Err(Unpublished::new(
                copies.restore(i),
                crate::backend::fate_unknown(),
            )));
        }
        handed_back
    }

    /// Starts delivering events of `spec.event_types` to `handler`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a bad spec, [`Error::ShutDown`], or a backend error.
    async fn subscribe(
        &self,
        spec: SubscriptionSpec,
        handler: Arc<dyn EventHandler>,
    ) -> Result<Subscription, Error>;

    /// Reads retained events of the query, in timestamp order (ties by id), without touching
    /// any consumer group.
    ///
    /// # Errors
    /// [`Error::Disabled`] when `ENABLE_EVENT_REPLAY=false`, [`Error::InvalidArgument`] for a
    /// bad window, or a backend error.
    async fn replay(&self, query: ReplayQuery) -> Result<EventStream, Error>;

    /// Counts by type and by handler; trimmed events are never counted.
    ///
    /// # Errors
    /// A backend error.
    async fn stats(&self) -> Result<BusStats, Error>;

    /// Connectivity, consumers alive or stalled, and the problems found. Never fails: an
    /// unreachable backend is an [`HealthStatus::Unhealthy`] report.
    async fn health(&self) -> Health;

    /// Up to `limit` dead letters of a handler, oldest first.
    ///
    /// # Errors
    /// [`Error::UnknownHandler`] when the bus has never seen the handler, or a backend error.
    async fn dead_letters(&self, handler: &str, limit: usize) -> Result<Vec<DeadLetter>, Error>;

    /// Hands the selected dead letters back to their handler (only that handler: other
    /// handlers do not see them again) and removes them from the queue.
    ///
    /// # Errors
    /// [`Error::UnknownHandler`] or a backend error.
    async fn redrive_dead_letters(
        &self,
        handler: &str,
        selection: DeadLetterSelection,
    ) -> Result<RedriveReport, Error>;

    /// Deletes the selected dead letters; returns how many were deleted.
    ///
    /// # Errors
    /// [`Error::UnknownHandler`] or a backend error.
    async fn purge_dead_letters(
        &self,
        handler: &str,
        selection: DeadLetterSelection,
    ) -> Result<u64, Error>;

    /// Appends events to an aggregate if it is at the expected version, atomically, and
    /// publishes them; returns the aggregate's new version.
    ///
    /// # Errors
    /// [`Error::VersionConflict`] (nothing written), [`Error::Disabled`] when
    /// `ENABLE_EVENT_SOURCING=false`, [`Error::Unsupported`] when the backend cannot.
    async fn append_to_aggregate(&self, append: AggregateAppend) -> Result<u64, Error> {
        let _ = append;
        Err(Error::Unsupported {
            backend: self.capabilities().backend,
            operation: "event sourcing",
        })
    }

    /// The history of an aggregate, in version order (empty if it has none).
    ///
    /// # Errors
    /// As [`append_to_aggregate`](EventBus::append_to_aggregate).
    async fn load_aggregate(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Result<Vec<Event>, Error> {
        let _ = (aggregate_type, aggregate_id);
        Err(Error::Unsupported {
            backend: self.capabilities().backend,
            operation: "event sourcing",
        })
    }

    /// Stops accepting work, lets in-flight handlers finish (bounded by
    /// `EVENT_SHUTDOWN_TIMEOUT_MS`), acknowledges what finished and releases connections.
    /// Afterwards `publish` fails with [`Error::ShutDown`]. Calling it twice is harmless.
    ///
    /// # Errors
    /// A backend error while releasing resources.
    async fn shutdown(&self) -> Result<(), Error>;
}
