//! The event envelope (wire format v1) and its builder.

mod event_type;
mod id;
pub mod timestamp;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;

pub use event_type::EventType;
pub use id::EventId;

use crate::Error;

/// A JSON object: the shape of an event's payload and metadata.
pub type JsonObject = Map<String, Value>;

/// The schema version written by this crate when the publisher names none.
pub const CURRENT_SCHEMA_VERSION: u32 = 1;

/// One event, as published and as delivered: wire format v1.
///
/// The field names are the original system's, so a plain JSON consumer in any language (and
/// services that consumed the Python bus) can read it:
///
/// ```json
/// {"id":"0193...","event_type":"opportunity.created","payload":{"opportunity_id":"opp-123"},
///  "timestamp":"2026-11-26T22:00:00.123456Z","source":"opportunity_service",
///  "correlation_id":"req-456","causation_id":null,"partition_key":"opp-123",
///  "metadata":{},"schema_version":1}
/// ```
///
/// Fields this version does not know are kept in [`Event::extra`] and written back on encode,
/// so a service that re-publishes an event from a newer producer loses nothing.
///
/// Build events with [`Event::builder`]:
///
/// ```
/// use event_core::{Event, EventType};
/// use serde_json::json;
///
/// let event = Event::builder(EventType::OPPORTUNITY_CREATED, "opportunity_service")
///     .payload(json!({"opportunity_id": "opp-123", "title": "AI-Powered Customer Service"}))
///     .correlation_id("req-456")
///     .partition_key("opp-123")
///     .build()?;
/// assert_eq!(event.payload["opportunity_id"], "opp-123");
/// # Ok::<(), event_core::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Event {
    /// Unique id; a UUIDv7 made at build time unless given.
    pub id: EventId,
    /// The dotted event type.
    pub event_type: EventType,
    /// The event's data: always a JSON object.
    #[serde(deserialize_with = "payload_object")]
    pub payload: JsonObject,
    /// When the event happened, in UTC with microsecond precision.
    #[serde(with = "timestamp")]
    pub timestamp: OffsetDateTime,
    /// The service or component that published it.
    pub source: String,
    /// Id of the request or unit of work this event belongs to.
    #[serde(default)]
    pub correlation_id: Option<String>,
    /// Id of the event that caused this one.
    #[serde(default)]
    pub causation_id: Option<String>,
    /// Events with the same partition key are delivered to a handler in publish order.
    /// When absent, the event id is the key (no ordering with other events).
    #[serde(default)]
    pub partition_key: Option<String>,
    /// Free-form context (the publishers add `publisher_source` and `published_at`).
    #[serde(default, deserialize_with = "null_as_empty")]
    pub metadata: JsonObject,
    /// Version of the payload's schema, for upcasting older events.
    #[serde(default = "default_schema_version")]
    pub schema_version: u32,
    /// Event sourcing: the aggregate this event belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregate_id: Option<String>,
    /// Event sourcing: the kind of aggregate (`opportunity`, `user`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregate_type: Option<String>,
    /// Event sourcing: this event's position in its aggregate's history, from 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregate_version: Option<u64>,
    /// The W3C Trace Context `traceparent` of the span that published it (the CloudEvents
    /// distributed-tracing extension's attribute): set by `publish` when that span is traced
    /// (see [`trace`](crate::trace)), kept by redrives and copies, and continued by each
    /// handling attempt's span. Absent when nothing traced the publish.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// The W3C Trace Context `tracestate` that goes with [`traceparent`](Self::traceparent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracestate: Option<String>,
    /// Envelope fields this version does not know, kept for forward compatibility.
    #[serde(flatten)]
    pub extra: JsonObject,
}

fn default_schema_version() -> u32 {
    CURRENT_SCHEMA_VERSION
}

fn payload_object<'de, D: Deserializer<'de>>(d: D) -> Result<JsonObject, D::Error> {
    match Value::deserialize(d)? {
        Value::Object(map) => Ok(map),
        other => Err(serde::de::Error::custom(format!(
            "payload must be a JSON object, found {}",
            json_kind(&other)
        ))),
    }
}

fn null_as_empty<'de, D: Deserializer<'de>>(d: D) -> Result<JsonObject, D::Error> {
    Ok(Option::<JsonObject>::deserialize(d)?.unwrap_or_default())
}

/// A short name for a JSON value's kind, for error messages.
pub(crate) fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl Event {
    /// The envelope's field names on the wire (format v1); a reader keeps any other name in
    /// [`extra`](Self::extra).
    pub const FIELDS: &'static [&'static str] = &[
        "id",
        "event_type",
        "payload",
        "timestamp",
        "source",
        "correlation_id",
        "causation_id",
        "partition_key",
        "metadata",
        "schema_version",
        "aggregate_id",
        "aggregate_type",
        "aggregate_version",
        "traceparent",
        "tracestate",
    ];

    /// Starts building an event of `event_type` published by `source`.
    pub fn builder(event_type: EventType, source: impl Into<String>) -> EventBuilder {
        EventBuilder::new(event_type, source.into())
    }

    /// The key that orders this event: the partition key, or the id when there is none.
    pub fn ordering_key(&self) -> std::borrow::Cow<'_, str> {
        match &self.partition_key {
            Some(key) => std::borrow::Cow::Borrowed(key),
            None => std::borrow::Cow::Owned(self.id.to_string()),
        }
    }

    /// Deserializes the payload into a typed value.
    ///
    /// # Errors
    /// [`Error::InvalidEvent`] naming the event when the payload does not fit `T`.
    pub fn payload_as<T: DeserializeOwned>(&self) -> Result<T, Error> {
        T::deserialize(Value::Object(self.payload.clone())).map_err(|e| Error::InvalidEvent {
            reason: format!(
                "payload of {} event {} does not fit: {e}",
                self.event_type, self.id
            ),
        })
    }

    /// Starts an event caused by this one: same correlation id, `causation_id` = this id.
    pub fn caused(&self, event_type: EventType, source: impl Into<String>) -> EventBuilder {
        let mut builder = Event::builder(event_type, source).causation_id(self.id.to_string());
        if let Some(correlation) = &self.correlation_id {
            builder = builder.correlation_id(correlation.clone());
        }
        builder
    }
}

/// Builds an [`Event`]; made by [`Event::builder`].
#[derive(Debug)]
#[must_use = "a builder does nothing until .build() is called"]
pub struct EventBuilder {
    event: Event,
    error: Option<Error>,
}

impl EventBuilder {
    fn new(event_type: EventType, source: String) -> Self {
        Self {
            event: Event {
                id: EventId::new(),
                event_type,
                payload: JsonObject::new(),
                timestamp: timestamp::now(),
                source,
                correlation_id: None,
                causation_id: None,
                partition_key: None,
                metadata: JsonObject::new(),
                schema_version: CURRENT_SCHEMA_VERSION,
                aggregate_id: None,
                aggregate_type: None,
                aggregate_version: None,
                traceparent: None,
                tracestate: None,
                extra: JsonObject::new(),
            },
            error: None,
        }
    }

    /// Sets the payload from anything serde can serialize to a JSON object (dates, UUIDs and
    /// nested structs included). A value that is not an object makes [`build`](Self::build) fail.
    pub fn payload(mut self, payload: impl Serialize) -> Self {
        match serde_json::to_value(payload) {
            Ok(Value::Object(map)) => self.event.payload = map,
            Ok(other) => {
                self.error = Some(Error::InvalidEvent {
                    reason: format!("payload must be a JSON object, found {}", json_kind(&other)),
                });
            }
            Err(e) => {
                self.error = Some(Error::InvalidEvent {
                    reason: format!("payload cannot be serialized to JSON: {e}"),
                });
            }
        }
        self
    }

    /// Sets one payload field.
    pub fn field(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.event.payload.insert(name.into(), value.into());
        self
    }

    /// Uses a given id instead of a new UUIDv7 (when copying or re-publishing).
    pub fn id(mut self, id: EventId) -> Self {
        self.event.id = id;
        self
    }

    /// Uses a given time instead of now (truncated to microseconds, converted to UTC).
    pub fn timestamp(mut self, at: OffsetDateTime) -> Self {
        self.event.timestamp = timestamp::truncate(at);
        self
    }

    /// Sets the correlation id.
    pub fn correlation_id(mut self, id: impl Into<String>) -> Self {
        self.event.correlation_id = Some(id.into());
        self
    }

    /// Sets the causation id.
    pub fn causation_id(mut self, id: impl Into<String>) -> Self {
        self.event.causation_id = Some(id.into());
        self
    }

    /// Sets the partition key: events with the same key reach each handler in publish order.
    pub fn partition_key(mut self, key: impl Into<String>) -> Self {
        self.event.partition_key = Some(key.into());
        self
    }

    /// Adds one metadata entry.
    pub fn metadata(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.event.metadata.insert(name.into(), value.into());
        self
    }

    /// Sets the payload's schema version (default [`CURRENT_SCHEMA_VERSION`]).
    pub fn schema_version(mut self, version: u32) -> Self {
        self.event.schema_version = version;
        self
    }

    /// Marks the event as belonging to an aggregate. The version is set when the event is
    /// appended with [`EventBus::append_to_aggregate`](crate::EventBus::append_to_aggregate).
    pub fn aggregate(mut self, aggregate_type: impl Into<String>, id: impl Into<String>) -> Self {
        self.event.aggregate_type = Some(aggregate_type.into());
        self.event.aggregate_id = Some(id.into());
        self
    }

    /// Finishes the event.
    ///
    /// # Errors
    /// [`Error::InvalidEvent`] when the payload given was not a JSON object, or the source is
    /// empty.
    pub fn build(self) -> Result<Event, Error> {
        if let Some(error) = self.error {
            return Err(error);
        }
        if self.event.source.trim().is_empty() {
            return Err(Error::InvalidEvent {
                reason: "source must name the publishing service, found an empty string".into(),
            });
        }
        Ok(self.event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_are_what_a_full_event_writes() {
        let mut event = Event::builder(EventType::AGENT_ERROR, "a")
            .correlation_id("c")
            .partition_key("k")
            .build()
            .unwrap();
        event.causation_id = Some("x".into());
        event.aggregate_id = Some("agg".into());
        event.aggregate_type = Some("t".into());
        event.aggregate_version = Some(1);
        event.traceparent = Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into());
        event.tracestate = Some("a=b".into());
        let written = serde_json::to_value(&event).unwrap();
        let mut names: Vec<&str> = written
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut fields = Event::FIELDS.to_vec();
        names.sort_unstable();
        fields.sort_unstable();
        assert_eq!(names, fields);
    }

    #[test]
    fn builder_rejects_non_object_payload_and_empty_source() {
        let err = Event::builder(EventType::AGENT_ERROR, "a")
            .payload(json!([1, 2]))
            .build();
        assert!(err.unwrap_err().to_string().contains("found an array"));
        let err = Event::builder(EventType::AGENT_ERROR, " ").build();
        assert!(err.unwrap_err().to_string().contains("source"));
    }

    #[test]
    fn caused_carries_correlation_and_causation() {
        let parent = Event::builder(EventType::AGENT_ERROR, "a")
            .correlation_id("req-1")
            .build()
            .unwrap();
        let child = parent.caused(EventType::SYSTEM_ERROR, "b").build().unwrap();
        assert_eq!(child.correlation_id.as_deref(), Some("req-1"));
        assert_eq!(child.causation_id, Some(parent.id.to_string()));
    }

    #[test]
    fn ordering_key_falls_back_to_id() {
        let e = Event::builder(EventType::AGENT_ERROR, "a").build().unwrap();
        assert_eq!(e.ordering_key(), e.id.to_string());
        let e = Event::builder(EventType::AGENT_ERROR, "a")
            .partition_key("k")
            .build()
            .unwrap();
        assert_eq!(e.ordering_key(), "k");
    }

    #[test]
    fn payload_as_reads_typed_values() {
        #[derive(Deserialize)]
        struct P {
            n: u32,
        }
        let e = Event::builder(EventType::AGENT_ERROR, "a")
            .field("n", 7)
            .build()
            .unwrap();
        assert_eq!(e.payload_as::<P>().unwrap().n, 7);
        let e = Event::builder(EventType::AGENT_ERROR, "a")
            .field("n", "x")
            .build()
            .unwrap();
        assert!(e.payload_as::<P>().is_err());
    }
}
