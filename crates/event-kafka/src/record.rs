//! Kafka records of events: how an envelope is written (key, value, headers, timestamp) and
//! read back, and the reason when a record is not one of ours.
//!
//! The value is the envelope JSON from [`JsonCodec`], the same bytes as on every backend, so a
//! plain Kafka consumer in any language reads our events. The headers repeat a few envelope
//! fields for consumers that route without parsing the JSON; on the way back the envelope is the
//! only source of truth and the headers are not trusted, except that a `content_type` other
//! than JSON says at once that the record is not an envelope.

use std::collections::BTreeMap;

use event_core::backend::RAW_TEXT_LIMIT;
use event_core::{Error, Event, JsonCodec, trace};
use rskafka::chrono::{DateTime, Utc};
use rskafka::record::{Record, UndecodableRecords};
use time::OffsetDateTime;

/// Header names, also read by foreign consumers: keep them stable.
pub(crate) mod header {
    /// The event id (UUID text).
    pub(crate) const EVENT_ID: &str = "event_id";
    /// The dotted event type.
    pub(crate) const EVENT_TYPE: &str = "event_type";
    /// The correlation id, present only when the event has one.
    pub(crate) const CORRELATION_ID: &str = "correlation_id";
    /// Always [`CONTENT_TYPE_JSON`](super::CONTENT_TYPE_JSON) on our records.
    pub(crate) const CONTENT_TYPE: &str = "content_type";
    /// The payload's schema version, in decimal.
    pub(crate) const SCHEMA_VERSION: &str = "schema_version";
}

/// The content type of our records' values.
pub(crate) const CONTENT_TYPE_JSON: &str = "application/json";

/// Encodes an event into its record, enforcing the codec's size limit.
///
/// # Errors
/// What [`JsonCodec::encode`] refuses: an event over `EVENT_MAX_PAYLOAD_BYTES`, or one serde
/// cannot write.
pub(crate) fn encode(codec: &JsonCodec, event: &Event) -> Result<Record, Error> {
    Ok(to_record(event, codec.encode(event)?))
}

/// The record of an event whose envelope is already encoded as `json`.
///
/// The key is the event's ordering key (its partition key, or its id), the bytes the
/// partitioner hashes, so every Kafka client agrees on where a key lives. The timestamp is the
/// event's, cut to the millisecond Kafka keeps; the envelope keeps the microseconds.
pub(crate) fn to_record(event: &Event, json: Vec<u8>) -> Record {
    let mut headers = BTreeMap::new();
    headers.insert(
        header::EVENT_ID.to_owned(),
        event.id.to_string().into_bytes(),
    );
    headers.insert(
        header::EVENT_TYPE.to_owned(),
        event.event_type.as_str().as_bytes().to_vec(),
    );
    if let Some(correlation) = &event.correlation_id {
        headers.insert(
            header::CORRELATION_ID.to_owned(),
            correlation.as_bytes().to_vec(),
        );
    }
    headers.insert(
        header::CONTENT_TYPE.to_owned(),
        CONTENT_TYPE_JSON.as_bytes().to_vec(),
    );
    headers.insert(
        header::SCHEMA_VERSION.to_owned(),
        event.schema_version.to_string().into_bytes(),
    );
    // W3C trace context where Kafka tools and other clients' instrumentation look for it.
    if let Some(parent) = &event.traceparent {
        headers.insert(trace::TRACEPARENT.to_owned(), parent.as_bytes().to_vec());
    }
    if let Some(state) = &event.tracestate {
        headers.insert(trace::TRACESTATE.to_owned(), state.as_bytes().to_vec());
    }
    Record {
        key: Some(event.ordering_key().as_bytes().to_vec()),
        value: Some(json),
        headers,
        timestamp: kafka_timestamp(event.timestamp),
    }
}

/// Decodes the event of a record; the error says why the record is not an envelope (no value,
/// another content type, not JSON, a missing or bad field).
pub(crate) fn decode(codec: &JsonCodec, record: &Record) -> Result<Event, Error> {
    if let Some(content_type) = record.headers.get(header::CONTENT_TYPE) {
        let content_type = String::from_utf8_lossy(content_type);
        // Media types are case-insensitive and may carry parameters (`; charset=utf-8`).
        let essence = content_type.split(';').next().unwrap_or_default().trim();
        if !essence.eq_ignore_ascii_case(CONTENT_TYPE_JSON) {
            return Err(Error::InvalidEvent {
                reason: format!(
                    "record has content_type {content_type:?}, not {CONTENT_TYPE_JSON}: it is not an event envelope"
                ),
            });
        }
    }
    let value = record.value.as_deref().ok_or_else(|| Error::InvalidEvent {
        reason: "record has no value (a tombstone, or a record not written by the event bus)"
            .into(),
    })?;
    let mut event = codec.decode(value)?;
    // A producer that traced the record but not the envelope (another language's client).
    if event.traceparent.is_none() {
        let text = |name| {
            record
                .headers
                .get(name)
                .and_then(|v| std::str::from_utf8(v).ok())
        };
        event.traceparent = text(trace::TRACEPARENT).map(str::to_owned);
        event.tracestate = text(trace::TRACESTATE).map(str::to_owned);
    }
    Ok(event)
}

/// The record as text, for the dead letter of a record that is not a valid envelope: key,
/// headers and value, invalid UTF-8 replaced, cut at 64 KiB.
pub(crate) fn raw_text(record: &Record) -> String {
    let lossy = |bytes: &Option<Vec<u8>>| {
        bytes.as_deref().map_or_else(
            || "null".to_owned(),
            |b| String::from_utf8_lossy(b).into_owned(),
        )
    };
    let headers: Vec<_> = record
        .headers
        .iter()
        .map(|(k, v)| format!("{k}={}", String::from_utf8_lossy(v)))
        .collect();
    let text = format!(
        "key={} headers=[{}] value={}",
        lossy(&record.key),
        headers.join(", "),
        lossy(&record.value)
    );
    event_core::backend::cut_raw_text(text)
}

/// Data a fetch could not decode, as text for its dead letter: a record's key, headers and
/// value as [`raw_text`] shows them; a batch's bytes in base64 (they are binary), cut at
/// 64 KiB.
pub(crate) fn raw_undecodable(undecodable: &UndecodableRecords) -> String {
    use base64::Engine as _;
    // rskafka names a whole batch so; a single record keeps its key, headers and value.
    if undecodable.reason.starts_with("Undecodable record batch") {
        let bytes = undecodable.value.as_deref().unwrap_or_default();
        let shown = &bytes[..bytes.len().min(RAW_TEXT_LIMIT / 4 * 3)];
        let mut text = format!(
            "batch bytes (base64)={}",
            base64::engine::general_purpose::STANDARD.encode(shown)
        );
        if shown.len() < bytes.len() {
            text.push_str("...");
        }
        return text;
    }
    raw_text(&Record {
        key: undecodable.key.clone(),
        value: undecodable.value.clone(),
        headers: undecodable.headers.clone(),
        timestamp: DateTime::UNIX_EPOCH,
    })
}

/// An event time as a Kafka record timestamp: milliseconds, rounded down (also before 1970).
pub(crate) fn kafka_timestamp(at: OffsetDateTime) -> DateTime<Utc> {
    let millis = unix_millis(at);
    // Every `OffsetDateTime` (years -9999..=9999) is within chrono's range.
    DateTime::from_timestamp_millis(millis).unwrap_or(DateTime::UNIX_EPOCH)
}

/// Milliseconds since the Unix epoch, rounded down, as Kafka's timestamps and ListOffsets use.
pub(crate) fn unix_millis(at: OffsetDateTime) -> i64 {
    // Years -9999..=9999 are about ±3.2e14 ms: far inside i64.
    at.unix_timestamp_nanos().div_euclid(1_000_000) as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use event_core::EventType;
    use proptest::prelude::*;
    use serde_json::json;
    use time::macros::datetime;

    fn sample() -> Event {
        Event::builder(EventType::OPPORTUNITY_CREATED, "opportunity_service")
            .payload(json!({"opportunity_id": "opp-123", "score": 4.5}))
            .correlation_id("req-456")
            .partition_key("opp-123")
            .timestamp(datetime!(2026-11-26 22:00:00.123456 UTC))
            .schema_version(2)
            .build()
            .unwrap()
    }

    fn header(record: &Record, name: &str) -> String {
        String::from_utf8(record.headers[name].clone()).unwrap()
    }

    #[test]
    fn a_record_carries_key_headers_timestamp_and_the_envelope() {
        let codec = JsonCodec::default();
        let event = sample();
        let record = encode(&codec, &event).unwrap();
        assert_eq!(record.key.as_deref(), Some(&b"opp-123"[..]));
        assert_eq!(record.value, Some(codec.encode(&event).unwrap()));
        assert_eq!(header(&record, "event_id"), event.id.to_string());
        assert_eq!(header(&record, "event_type"), "opportunity.created");
        assert_eq!(header(&record, "correlation_id"), "req-456");
        assert_eq!(header(&record, "content_type"), "application/json");
        assert_eq!(header(&record, "schema_version"), "2");
        assert_eq!(record.headers.len(), 5);
        assert_eq!(record.timestamp.timestamp_millis(), 1_795_730_400_123);
        assert_eq!(decode(&codec, &record).unwrap(), event);
    }

    #[test]
    fn without_a_partition_key_the_id_is_the_key_and_no_correlation_header() {
        let event = Event::builder(EventType::USER_REGISTERED, "s")
            .build()
            .unwrap();
        let record = encode(&JsonCodec::default(), &event).unwrap();
        assert_eq!(record.key, Some(event.id.to_string().into_bytes()));
        assert!(!record.headers.contains_key("correlation_id"));
    }

    #[test]
    fn oversized_events_make_no_record() {
        let event = Event::builder(EventType::USER_REGISTERED, "s")
            .field("blob", "x".repeat(500))
            .build()
            .unwrap();
        let err = encode(&JsonCodec::new(300), &event).unwrap_err();
        assert!(matches!(err, Error::EventTooLarge { .. }), "{err}");
    }

    fn foreign(value: Option<&[u8]>, headers: &[(&str, &str)]) -> Record {
        Record {
            key: None,
            value: value.map(<[u8]>::to_vec),
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
                .collect(),
            timestamp: DateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn foreign_records_give_reasons() {
        let codec = JsonCodec::default();
        let cases: [(Record, &str); 5] = [
            (foreign(None, &[]), "record has no value"),
            (foreign(Some(b"hello"), &[]), "not a valid event envelope"),
            (
                foreign(Some(br#"{"id":"x"}"#), &[]),
                "not a valid event envelope",
            ),
            (
                foreign(Some(b"\x00avro"), &[("content_type", "avro/binary")]),
                "content_type \"avro/binary\"",
            ),
            (
                foreign(
                    Some(b"{}"),
                    &[("content_type", "Application/JSON; charset=utf-8")],
                ),
                "missing field",
            ),
        ];
        for (record, expected) in cases {
            let err = decode(&codec, &record).unwrap_err();
            assert!(matches!(err, Error::InvalidEvent { .. }), "{err}");
            assert!(
                err.to_string().contains(expected),
                "{err} should mention {expected}"
            );
        }
    }

    #[test]
    fn raw_text_shows_the_record_and_is_bounded() {
        let record = foreign(Some(b"hello \xff"), &[("origin", "console")]);
        assert_eq!(
            raw_text(&record),
            "key=null headers=[origin=console] value=hello \u{fffd}"
        );
        let big = "é".repeat(RAW_TEXT_LIMIT);
        let text = raw_text(&foreign(Some(big.as_bytes()), &[]));
        assert!(text.len() <= RAW_TEXT_LIMIT + 3 && text.ends_with("..."));
    }

    #[test]
    fn timestamps_round_down_to_the_millisecond() {
        assert_eq!(unix_millis(datetime!(1970-01-01 00:00:00.001999 UTC)), 1);
        assert_eq!(unix_millis(datetime!(1969-12-31 23:59:59.999500 UTC)), -1);
        assert_eq!(
            kafka_timestamp(datetime!(2026-11-26 22:00:00.123456 UTC)).timestamp_millis(),
            1_795_730_400_123
        );
    }

    proptest! {
        #[test]
        fn any_event_round_trips_through_its_record(
            payload in prop::collection::btree_map("[a-z_]{1,8}", ".{0,16}", 0..6),
            correlation in proptest::option::of(".{0,24}"),
            key in proptest::option::of(".{0,24}"),
            version in 1u32..1000,
            micros in -2_000_000_000_000_000i64..4_000_000_000_000_000,
        ) {
            let codec = JsonCodec::default();
            let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000).unwrap();
            let mut builder = Event::builder(EventType::SIGNAL_DETECTED, "s")
                .payload(&payload)
                .schema_version(version)
                .timestamp(at);
            if let Some(c) = &correlation { builder = builder.correlation_id(c); }
            if let Some(k) = &key { builder = builder.partition_key(k); }
            let event = builder.build().unwrap();
            let record = encode(&codec, &event).unwrap();
            prop_assert_eq!(record.timestamp.timestamp_millis(), micros.div_euclid(1000));
            prop_assert_eq!(record.key.clone(), Some(event.ordering_key().as_bytes().to_vec()));
            prop_assert_eq!(
                record.headers.get("correlation_id").cloned(),
                correlation.map(String::into_bytes)
            );
            prop_assert_eq!(decode(&codec, &record).unwrap(), event);
        }

        #[test]
        fn decoding_any_record_never_panics(
            value in proptest::option::of(prop::collection::vec(any::<u8>(), 0..128)),
            content_type in proptest::option::of(prop::collection::vec(any::<u8>(), 0..24)),
            key in proptest::option::of(prop::collection::vec(any::<u8>(), 0..64)),
            headers in prop::collection::btree_map("\\PC{0,12}", prop::collection::vec(any::<u8>(), 0..32), 0..6),
        ) {
            let mut record = foreign(None, &[]);
            record.value = value;
            record.key = key;
            record.headers.extend(headers);
            if let Some(c) = content_type {
                record.headers.insert("content_type".into(), c);
            }
            let _ = decode(&JsonCodec::default(), &record);
            let _ = raw_text(&record);
        }
    }
}
