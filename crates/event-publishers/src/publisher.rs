//! [`EventPublisher`]: publishes typed (and untyped custom) events with the envelope filled in
//! the way every service should: source, a correlation id per request or unit of work, an
//! optional causation id, and the metadata `publisher_source` and `published_at`.

use std::fmt;
use std::sync::Arc;

use event_core::{Event, EventBus, EventId, EventType, JsonObject};
use serde_json::Value;

use crate::{DomainEvent, Error, catalog_entry};

/// Publishes events on a bus for one source and one request or unit of work.
///
/// The correlation id belongs to a request or unit of work, never to the process: make a
/// publisher per request with [`for_request`](EventPublisher::for_request) (or let
/// [`new`](EventPublisher::new) draw a fresh id for a unit of work), and one for the
/// consequences of a received event with [`caused_by`](EventPublisher::caused_by). Publishers
/// are cheap to make and to clone (the bus is shared).
///
/// ```
/// use std::sync::Arc;
/// use event_core::{Config, MemoryBus};
/// use event_publishers::{EventPublisher, UserRegistered};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let bus = Arc::new(MemoryBus::new(Config::default())?);
/// let service = EventPublisher::new(bus, "user_service");
///
/// // In the request handler, with the request's id:
/// let publisher = service.for_request("req-456");
/// publisher
///     .publish(UserRegistered {
///         user_id: "user-1".into(),
///         email: "ada@example.com".into(),
///         ..Default::default()
///     })
///     .await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct EventPublisher {
    bus: Arc<dyn EventBus>,
    source: Arc<str>,
    correlation_id: String,
    causation_id: Option<String>,
    metadata: JsonObject,
}

impl fmt::Debug for EventPublisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventPublisher")
            .field("source", &self.source)
            .field("correlation_id", &self.correlation_id)
            .field("causation_id", &self.causation_id)
            .field("metadata", &self.metadata)
            .finish_non_exhaustive()
    }
}

impl EventPublisher {
    /// A publisher for `source` on `bus`, with a fresh correlation id (a UUIDv7) for a new
    /// unit of work.
    pub fn new(bus: Arc<dyn EventBus>, source: impl Into<String>) -> Self {
        Self {
            bus,
            source: Arc::from(source.into()),
            correlation_id: new_correlation_id(),
            causation_id: None,
            metadata: JsonObject::new(),
        }
    }

    /// The same publisher for another request: its events carry `correlation_id`.
    pub fn for_request(&self, correlation_id: impl Into<String>) -> Self {
        Self {
            correlation_id: correlation_id.into(),
            causation_id: None,
            ..self.clone()
        }
    }

    /// The same publisher for a new unit of work (a job, a scheduled run): a fresh
    /// correlation id.
    pub fn for_unit_of_work(&self) -> Self {
        self.for_request(new_correlation_id())
    }

    /// The same publisher for events caused by `event`: they carry its correlation id (or
    /// this publisher's when it has none) and its id as causation id.
    pub fn caused_by(&self, event: &Event) -> Self {
        Self {
            correlation_id: event
                .correlation_id
                .clone()
                .unwrap_or_else(|| self.correlation_id.clone()),
            causation_id: Some(event.id.to_string()),
            ..self.clone()
        }
    }

    /// Sets the causation id of the events published from now on.
    pub fn with_causation_id(mut self, causation_id: impl Into<String>) -> Self {
        self.causation_id = Some(causation_id.into());
        self
    }

    /// Adds a metadata entry to every event; it is written after `publisher_source` and
    /// `published_at`, so it can override them, as the original allowed.
    pub fn with_metadata(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.metadata.insert(name.into(), value.into());
        self
    }

    /// The publishing service's name.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The correlation id of this request or unit of work.
    pub fn correlation_id(&self) -> &str {
        &self.correlation_id
    }

    /// The causation id, if any.
    pub fn causation_id(&self) -> Option<&str> {
        self.causation_id.as_deref()
    }

    /// The bus events go to.
    pub fn bus(&self) -> &Arc<dyn EventBus> {
        &self.bus
    }

    /// Builds the envelope of a typed payload without publishing it: derived fields computed,
    /// fields validated, type, key, schema version, correlation, causation and metadata set.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the field at fault, or [`Error::Bus`] for a bad envelope.
    pub fn event<P: DomainEvent>(&self, mut payload: P) -> Result<Event, Error> {
        payload.derive_fields();
        let builder = payload.to_event(self.source.as_ref())?;
        self.finish(builder)
    }

    /// Builds the envelope of an untyped payload. Payloads of the catalog's types (the 20
    /// standard types and `agent.task_started`) are checked as the typed ones are; other
    /// (custom) types are published as given.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the field at fault, or [`Error::Bus`] for a bad envelope.
    pub fn json_event(
        &self,
        event_type: EventType,
        payload: JsonObject,
        partition_key: Option<String>,
    ) -> Result<Event, Error> {
        let mut builder = Event::builder(event_type.clone(), self.source.as_ref());
        if let Some(entry) = catalog_entry(&event_type) {
            entry.check(&payload)?;
            builder = builder.schema_version(entry.schema_version);
            if partition_key.is_none()
                && let Some(field) = entry.partition_key
                && let Some(Value::String(key)) = payload.get(field)
            {
                builder = builder.partition_key(key.clone());
            }
        }
        if let Some(key) = partition_key {
            builder = builder.partition_key(key);
        }
        self.finish(builder.payload(payload))
    }

    fn finish(&self, mut builder: event_core::EventBuilder) -> Result<Event, Error> {
        builder = builder
            .correlation_id(self.correlation_id.clone())
            .metadata("publisher_source", self.source.as_ref())
            .metadata(
                "published_at",
                event_core::timestamp::format(time::OffsetDateTime::now_utc()),
            );
        if let Some(causation) = &self.causation_id {
            builder = builder.causation_id(causation.clone());
        }
        for (name, value) in &self.metadata {
            builder = builder.metadata(name.clone(), value.clone());
        }
        Ok(builder.build()?)
    }

    /// Validates and publishes a typed payload; returns the event's id.
    ///
    /// # Errors
    /// [`Error::Invalid`] (nothing published) or [`Error::Bus`].
    pub async fn publish<P: DomainEvent>(&self, payload: P) -> Result<EventId, Error> {
        let event = self.event(payload)?;
        Ok(self.bus.publish(event).await?)
    }

    /// Publishes an untyped payload; see [`json_event`](EventPublisher::json_event).
    ///
    /// # Errors
    /// [`Error::Invalid`] (nothing published) or [`Error::Bus`].
    pub async fn publish_json(
        &self,
        event_type: EventType,
        payload: JsonObject,
        partition_key: Option<String>,
    ) -> Result<EventId, Error> {
        let event = self.json_event(event_type, payload, partition_key)?;
        Ok(self.bus.publish(event).await?)
    }
}

fn new_correlation_id() -> String {
    uuid::Uuid::now_v7().to_string()
}
