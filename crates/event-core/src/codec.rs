//! The JSON codec: envelope to bytes and back, with the size limit.
//!
//! Every backend that stores bytes uses this codec, so the wire format is the same on all of
//! them. The in-memory bus never encodes; it only measures ([`JsonCodec::encoded_len`]) to
//! enforce the same limit.

use std::io;

use crate::{Error, Event};

/// The default limit on an encoded event: 1 MiB (`EVENT_MAX_PAYLOAD_BYTES`).
pub const DEFAULT_MAX_EVENT_BYTES: usize = 1024 * 1024;

/// Encodes and decodes envelopes as JSON and enforces the size limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JsonCodec {
    max_bytes: usize,
}

impl Default for JsonCodec {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_EVENT_BYTES)
    }
}

impl JsonCodec {
    /// A codec that refuses encoded events larger than `max_bytes`.
    pub const fn new(max_bytes: usize) -> Self {
        Self { max_bytes }
    }

    /// The limit, in bytes, on one encoded event.
    pub const fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// Encodes an event to its JSON bytes.
    ///
    /// # Errors
    /// [`Error::EventTooLarge`] when the encoding is over the limit; [`Error::InvalidEvent`]
    /// when serde_json refuses a value (a map with non-string keys in `extra`, for example).
    pub fn encode(&self, event: &Event) -> Result<Vec<u8>, Error> {
        let bytes = serde_json::to_vec(event).map_err(|e| Error::InvalidEvent {
            reason: format!("event {} cannot be encoded as JSON: {e}", event.id),
        })?;
        self.check(event, bytes.len())?;
        Ok(bytes)
    }

    /// Decodes one envelope.
    ///
    /// # Errors
    /// [`Error::InvalidEvent`] saying what is wrong (not JSON, a missing field, a bad event
    /// type, a payload that is not an object, ...). Decoding never panics on any input.
    pub fn decode(&self, bytes: &[u8]) -> Result<Event, Error> {
        if bytes.len() > self.max_bytes.saturating_mul(2) {
            // Twice the limit leaves room for events written under a larger limit, and keeps a
            // hostile multi-gigabyte record from being parsed at all.
            return Err(Error::InvalidEvent {
                reason: format!(
                    "record of {} bytes is over twice the event limit",
                    bytes.len()
                ),
            });
        }
        serde_json::from_slice(bytes).map_err(|e| Error::InvalidEvent {
            reason: format!("not a valid event envelope: {e}"),
        })
    }

    /// The size of the event's JSON encoding, measured without allocating it.
    pub fn encoded_len(&self, event: &Event) -> Result<usize, Error> {
        let mut counter = ByteCounter(0);
        serde_json::to_writer(&mut counter, event).map_err(|e| Error::InvalidEvent {
            reason: format!("event {} cannot be encoded as JSON: {e}", event.id),
        })?;
        Ok(counter.0)
    }

    /// Checks the limit without keeping the encoding (the in-memory bus's path).
    ///
    /// # Errors
    /// [`Error::EventTooLarge`] when the event's encoding is over the limit.
    pub fn check_size(&self, event: &Event) -> Result<(), Error> {
        // Most events are far below the limit: a bound found without formatting anything
        // settles them, and only events near the limit are measured exactly.
        if max_encoded_len(event) <= self.max_bytes {
            return Ok(());
        }
        self.check(event, self.encoded_len(event)?)
    }

    fn check(&self, event: &Event, size: usize) -> Result<(), Error> {
        if size > self.max_bytes {
            return Err(Error::EventTooLarge {
                id: event.id,
                event_type: event.event_type.clone(),
                size,
                limit: self.max_bytes,
            });
        }
        Ok(())
    }
}

/// The most bytes any JSON encoding of `event` can take: field names and punctuation, every
/// string as if each byte needed a six-byte `\u00XX` escape, every number at its longest.
fn max_encoded_len(event: &Event) -> usize {
    /// Field names, quotes, colons, commas, braces, the id, the timestamp and the numbers.
    const FIXED: usize = 400;
    let text = |s: &str| 2 + 6 * s.len();
    let optional = |s: &Option<String>| s.as_deref().map_or(4, text);
    FIXED
        + text(event.event_type.as_str())
        + text(&event.source)
        + optional(&event.correlation_id)
        + optional(&event.causation_id)
        + optional(&event.partition_key)
        + optional(&event.aggregate_id)
        + optional(&event.aggregate_type)
        + object_bound(&event.payload)
        + object_bound(&event.metadata)
        + object_bound(&event.extra)
}

fn object_bound(map: &serde_json::Map<String, serde_json::Value>) -> usize {
    2 + map
        .iter()
        .map(|(k, v)| 2 + 6 * k.len() + 2 + value_bound(v))
        .sum::<usize>()
}

fn value_bound(value: &serde_json::Value) -> usize {
    use serde_json::Value;
    match value {
        Value::Null | Value::Bool(_) => 5,
        // The longest f64 (`-2.2250738585072014e-308`) or i64/u64 is under 32 characters.
        Value::Number(_) => 32,
        Value::String(s) => 2 + 6 * s.len(),
        Value::Array(items) => 2 + items.iter().map(|v| value_bound(v) + 1).sum::<usize>(),
        Value::Object(map) => object_bound(map),
    }
}

struct ByteCounter(usize);

impl io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EventType;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    fn sample() -> Event {
        Event::builder(EventType::OPPORTUNITY_CREATED, "opportunity_service")
            .payload(json!({"opportunity_id": "opp-123", "score": 4.5, "tags": ["nlp"]}))
            .correlation_id("req-456")
            .partition_key("opp-123")
            .metadata("publisher_source", "opportunity_service")
            .build()
            .unwrap()
    }

    #[test]
    fn round_trip_keeps_every_field_and_the_wire_names() {
        let codec = JsonCodec::default();
        let event = sample();
        let bytes = codec.encode(&event).unwrap();
        assert_eq!(codec.encoded_len(&event).unwrap(), bytes.len());
        let json: Value = serde_json::from_slice(&bytes).unwrap();
        for field in [
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
        ] {
            assert!(json.get(field).is_some(), "missing {field}");
        }
        assert_eq!(json["event_type"], "opportunity.created");
        assert!(json.get("aggregate_id").is_none());
        assert_eq!(codec.decode(&bytes).unwrap(), event);
    }

    #[test]
    fn unknown_fields_survive_decode_and_encode() {
        let codec = JsonCodec::default();
        let mut json: Value = serde_json::to_value(sample()).unwrap();
        json["trace_parent"] = json!("00-abc-01");
        json["future"] = json!({"nested": [1, 2]});
        let event = codec.decode(&serde_json::to_vec(&json).unwrap()).unwrap();
        assert_eq!(event.extra["trace_parent"], "00-abc-01");
        let again: Value = serde_json::from_slice(&codec.encode(&event).unwrap()).unwrap();
        assert_eq!(again, json);
    }

    #[test]
    fn reads_the_original_python_envelope() {
        let original =
            br#"{"id":"54ea1b7c-8f1e-4d2a-9c6b-0a1b2c3d4e5f","event_type":"opportunity.created",
            "payload":{"opportunity_id":"opp-1"},"timestamp":"2026-11-26T21:46:01.285034+00:00",
            "source":"opportunity_service","correlation_id":"corr-1","metadata":null}"#;
        let event = JsonCodec::default().decode(original).unwrap();
        assert_eq!(event.schema_version, 1);
        assert!(event.metadata.is_empty());
        assert_eq!(event.partition_key, None);
    }

    #[test]
    fn bad_envelopes_are_clear_errors() {
        let codec = JsonCodec::default();
        let cases: [(&[u8], &str); 5] = [
            (b"not json", "not a valid event envelope"),
            (br#"{"event_type":"a.b"}"#, "missing field"),
            (
                br#"{"id":"54ea1b7c-8f1e-4d2a-9c6b-0a1b2c3d4e5f","event_type":"EventType.X","payload":{},"timestamp":"2026-11-26T21:46:01Z","source":"s"}"#,
                "event type",
            ),
            (
                br#"{"id":"54ea1b7c-8f1e-4d2a-9c6b-0a1b2c3d4e5f","event_type":"a.b","payload":[1],"timestamp":"2026-11-26T21:46:01Z","source":"s"}"#,
                "payload must be a JSON object",
            ),
            (
                br#"{"id":"54ea1b7c-8f1e-4d2a-9c6b-0a1b2c3d4e5f","event_type":"a.b","payload":{},"timestamp":"noon","source":"s"}"#,
                "not RFC 3339",
            ),
        ];
        for (bytes, expected) in cases {
            let err = codec.decode(bytes).unwrap_err().to_string();
            assert!(err.contains(expected), "{err} should mention {expected}");
        }
    }

    #[test]
    fn oversized_events_are_refused_with_the_sizes() {
        let codec = JsonCodec::new(200);
        let event = Event::builder(EventType::SIGNAL_DETECTED, "s")
            .field("content", "x".repeat(300))
            .build()
            .unwrap();
        let err = codec.encode(&event).unwrap_err();
        assert!(
            matches!(err, Error::EventTooLarge { limit: 200, .. }),
            "{err}"
        );
        assert!(codec.check_size(&event).is_err());
        assert!(codec.check_size(&sample()).is_err());
        assert!(JsonCodec::default().check_size(&sample()).is_ok());
    }

    fn json_leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            (-1.0e12f64..1.0e12).prop_map(|f| json!(f)),
            ".{0,20}".prop_map(Value::String),
        ]
    }

    fn json_value() -> impl Strategy<Value = Value> {
        json_leaf().prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map("[a-z_]{1,8}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn any_event_round_trips(
            payload in prop::collection::btree_map(".{1,12}", json_value(), 0..8),
            source in "[a-z_]{1,16}",
            correlation in proptest::option::of(".{0,24}"),
            key in proptest::option::of(".{0,24}"),
            version in 1u32..10,
            extra in prop::collection::btree_map("x_[a-z]{1,8}", json_value(), 0..4),
        ) {
            let codec = JsonCodec::default();
            let mut builder = Event::builder(EventType::SIGNAL_DETECTED, source)
                .payload(&payload)
                .schema_version(version);
            if let Some(c) = correlation { builder = builder.correlation_id(c); }
            if let Some(k) = key { builder = builder.partition_key(k); }
            let mut event = builder.build().unwrap();
            event.extra = extra.into_iter().collect();
            let bytes = codec.encode(&event).unwrap();
            prop_assert_eq!(codec.decode(&bytes).unwrap(), event);
        }

        #[test]
        fn the_size_bound_is_never_below_the_encoding(
            payload in prop::collection::btree_map(".{1,12}", json_value(), 0..8),
            source in "[a-z].{0,15}",
            key in proptest::option::of(".{0,24}"),
        ) {
            let mut builder = Event::builder(EventType::SIGNAL_DETECTED, source).payload(&payload);
            if let Some(k) = key { builder = builder.partition_key(k); }
            let event = builder.build().unwrap();
            let codec = JsonCodec::default();
            prop_assert!(max_encoded_len(&event) >= codec.encoded_len(&event).unwrap());
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = JsonCodec::default().decode(&bytes);
        }
    }
}
