//! [`ReplayQuery`]: which retained events to read again, and [`replay_into`] to feed them to a
//! handler.

use futures::StreamExt;
use futures::stream::BoxStream;
use time::OffsetDateTime;

use crate::{Error, Event, EventBus, EventHandler, EventType};

/// A stream of replayed events in timestamp order.
pub type EventStream = BoxStream<'static, Result<Event, Error>>;

/// Which events to replay: types, a time window `[from, to)`, and a limit.
///
/// ```
/// use event_core::{EventType, ReplayQuery};
/// use time::{Duration, OffsetDateTime};
///
/// let hour_ago = OffsetDateTime::now_utc() - Duration::hours(1);
/// let query = ReplayQuery::new([EventType::OPPORTUNITY_CREATED], hour_ago).limit(500);
/// assert_eq!(query.limit, Some(500));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplayQuery {
    /// The types to read; empty means every type the backend holds.
    pub event_types: Vec<EventType>,
    /// Events with a timestamp at or after this time.
    pub from: OffsetDateTime,
    /// Events with a timestamp before this time; `None` is up to now.
    pub to: Option<OffsetDateTime>,
    /// At most this many events (the earliest ones).
    pub limit: Option<usize>,
}

impl ReplayQuery {
    /// Events of `event_types` from `from` on.
    pub fn new(event_types: impl IntoIterator<Item = EventType>, from: OffsetDateTime) -> Self {
        Self {
            event_types: event_types.into_iter().collect(),
            from,
            to: None,
            limit: None,
        }
    }

    /// [`event_types`](Self::event_types) without repeats, in their first order: what a
    /// backend reads (a type named twice is read once, not twice).
    pub fn distinct_types(&self) -> Vec<EventType> {
        let mut seen = std::collections::HashSet::new();
        self.event_types
            .iter()
            .filter(|t| seen.insert(*t))
            .cloned()
            .collect()
    }

    /// Stops before this time.
    pub fn to(mut self, to: OffsetDateTime) -> Self {
        self.to = Some(to);
        self
    }

    /// Returns at most this many events.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Whether an event falls in the query's window and types.
    pub fn matches(&self, event: &Event) -> bool {
        event.timestamp >= self.from
            && self.to.is_none_or(|to| event.timestamp < to)
            && (self.event_types.is_empty() || self.event_types.contains(&event.event_type))
    }

    /// Checks the window.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `to` is before `from` or the limit is zero.
    pub fn validate(&self) -> Result<(), Error> {
        if let Some(to) = self.to
            && to < self.from
        {
            return Err(Error::InvalidArgument(format!(
                "replay window ends ({to}) before it starts ({})",
                self.from
            )));
        }
        if self.limit == Some(0) {
            return Err(Error::InvalidArgument(
                "replay limit must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// What [`replay_into`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Events read.
    pub replayed: u64,
    /// Events the handler accepted.
    pub handled: u64,
    /// Events the handler failed, with the event id and the error message.
    pub failed: Vec<(crate::EventId, String)>,
}

/// Replays the query's events into one handler, in timestamp order, without touching any live
/// consumer group: "replay into handler X". Failures are collected, not retried.
///
/// # Errors
/// An error from the bus while reading; handler failures are in the report.
pub async fn replay_into(
    bus: &dyn EventBus,
    query: ReplayQuery,
    handler: &dyn EventHandler,
) -> Result<ReplayReport, Error> {
    let system = bus.capabilities().backend;
    let mut stream = bus.replay(query).await?;
    let mut report = ReplayReport::default();
    while let Some(event) = stream.next().await {
        let event = event?;
        report.replayed += 1;
        // A replay is not caused by the publish: its span links the publishing span.
        let mut processing = crate::trace::process(
            system,
            "replay",
            handler.name(),
            (&event, None),
            crate::trace::Relation::Link,
        );
        match processing.run(handler.handle(&event)).await {
            Ok(()) => report.handled += 1,
            Err(e) => {
                processing.record_error("replay_failed");
                report.failed.push((event.id, e.to_string()));
            }
        }
    }
    Ok(report)
}
