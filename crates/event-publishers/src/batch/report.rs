//! What a flush of the [`BatchPublisher`](super::BatchPublisher) did with each event.

use event_core::{Event, EventId};

/// An event the bus refused, handed back with the reason.
#[derive(Debug)]
pub struct FailedEvent {
    /// The event, as it was sent: publish it again, store it, or drop it knowingly.
    pub event: Event,
    /// Why the bus refused it.
    pub error: event_core::Error,
}

/// The result of every event of one or more flushes.
///
/// `published` succeeded; `retrying` failed transiently and stay buffered for the next flush
/// (their ids and errors); `failed` are handed back with their events: they failed
/// permanently (an event too large, a bus shut down), or transiently at
/// [`close`](super::BatchPublisher::close), when no later flush will come.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct FlushReport {
    /// Ids of the events published.
    pub published: Vec<EventId>,
    /// Events that failed transiently and are kept for the next flush.
    pub retrying: Vec<(EventId, event_core::Error)>,
    /// Events handed back: they will not be sent again by the batch publisher.
    pub failed: Vec<FailedEvent>,
    /// How many `publish_batch` calls were made.
    pub batches: usize,
}

impl FlushReport {
    /// Whether every event was published.
    pub fn is_complete(&self) -> bool {
        self.retrying.is_empty() && self.failed.is_empty()
    }

    /// How many events the report covers.
    pub fn len(&self) -> usize {
        self.published.len() + self.retrying.len() + self.failed.len()
    }

    /// Whether the report covers no event.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The result of [`BatchPublisher::scope`](super::BatchPublisher::scope): the body's result
/// and the final flush's report, both, whether or not the body failed.
#[derive(Debug)]
pub struct ScopeOutcome<T, E> {
    /// What the body returned.
    pub result: Result<T, E>,
    /// The final flush.
    pub flush: FlushReport,
}
