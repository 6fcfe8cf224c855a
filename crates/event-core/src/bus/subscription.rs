//! What a subscription asks for ([`SubscriptionSpec`]) and the handle it returns
//! ([`Subscription`]).

use std::fmt;

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::{Error, EventType};

/// Where a new consumer group starts reading. Ignored when the handler's group already exists:
/// it then continues from its own position, so events published while the handler was away
/// are delivered when it comes back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum StartFrom {
    /// Only events published after the subscription (the default).
    #[default]
    Latest,
    /// Every retained event.
    Earliest,
    /// Retained events with a timestamp at or after this time.
    Time(OffsetDateTime),
}

/// What a handler subscribes to.
///
/// ```
/// use event_core::{EventType, StartFrom, SubscriptionSpec};
///
/// let spec = SubscriptionSpec::new("opportunity", [EventType::OPPORTUNITY_CREATED, EventType::OPPORTUNITY_UPDATED])
///     .start_from(StartFrom::Earliest)
///     .concurrency(8);
/// assert_eq!(spec.handler, "opportunity");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubscriptionSpec {
    /// The handler's name; its consumer group is `{EVENT_CONSUMER_GROUP}.{handler}`.
    pub handler: String,
    /// The event types delivered to it (at least one).
    pub event_types: Vec<EventType>,
    /// Where a new group starts.
    pub start: StartFrom,
    /// Events in progress at once; `None` uses `EVENT_HANDLER_CONCURRENCY`.
    pub concurrency: Option<usize>,
}

impl SubscriptionSpec {
    /// A subscription of `handler` to `event_types`, starting at the latest event.
    pub fn new(
        handler: impl Into<String>,
        event_types: impl IntoIterator<Item = EventType>,
    ) -> Self {
        Self {
            handler: handler.into(),
            event_types: event_types.into_iter().collect(),
            start: StartFrom::Latest,
            concurrency: None,
        }
    }

    /// Sets where a new group starts.
    pub fn start_from(mut self, start: StartFrom) -> Self {
        self.start = start;
        self
    }

    /// Sets how many events may be in progress at once (at least 1).
    pub fn concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = Some(concurrency);
        self
    }

    /// Checks the spec: a valid handler name, at least one type, concurrency 1 to 1024.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] saying what to change.
    pub fn validate(&self) -> Result<(), Error> {
        if !crate::config::valid_handler_name(&self.handler) {
            return Err(Error::InvalidArgument(format!(
                "handler name {:?} must start with a lower-case letter and hold only a-z, 0-9, '_' and '-' (at most 100 bytes): it becomes part of group and stream names",
                self.handler
            )));
        }
        if self.event_types.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "subscription of {:?} names no event types",
                self.handler
            )));
        }
        if let Some(n) = self.concurrency
            && !(1..=1024).contains(&n)
        {
            return Err(Error::InvalidArgument(format!(
                "concurrency {n} for {:?} must be from 1 to 1024",
                self.handler
            )));
        }
        Ok(())
    }
}

/// The backend side of a [`Subscription`]; implemented by each backend.
#[async_trait]
pub trait SubscriptionControl: Send + Sync + 'static {
    /// Stops delivery, waits for in-flight events (up to `EVENT_SHUTDOWN_TIMEOUT_MS`) and
    /// leaves everything unfinished to be delivered to the group again.
    async fn unsubscribe(&self) -> Result<(), Error>;

    /// Whether the subscription is still delivering.
    fn is_active(&self) -> bool;
}

/// A running subscription. Dropping it leaves it running (like a detached task); call
/// [`unsubscribe`](Subscription::unsubscribe) to stop it.
pub struct Subscription {
    handler: String,
    group: String,
    control: Box<dyn SubscriptionControl>,
}

impl Subscription {
    /// Wraps a backend's control; used by backends.
    pub fn new(handler: String, group: String, control: Box<dyn SubscriptionControl>) -> Self {
        Self {
            handler,
            group,
            control,
        }
    }

    /// The handler's name.
    pub fn handler(&self) -> &str {
        &self.handler
    }

    /// The consumer group, `{EVENT_CONSUMER_GROUP}.{handler}`.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// Whether it is still delivering.
    pub fn is_active(&self) -> bool {
        self.control.is_active()
    }

    /// Stops delivery to this handler and waits for its in-flight events to finish (bounded by
    /// `EVENT_SHUTDOWN_TIMEOUT_MS`). Events not finished stay with the group, so a later
    /// subscription of the same handler gets them.
    ///
    /// # Errors
    /// A backend error if the group's state could not be saved.
    pub async fn unsubscribe(self) -> Result<(), Error> {
        self.control.unsubscribe().await
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("handler", &self.handler)
            .field("group", &self.group)
            .field("active", &self.is_active())
            .finish()
    }
}
