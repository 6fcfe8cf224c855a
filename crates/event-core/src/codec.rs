//! The JSON codec: envelope to bytes and back, with the size limit and, when configured,
//! payload encryption ([`crate::encryption`]).
//!
//! Every backend that stores bytes uses this codec, so the wire format is the same on all of
//! them. The in-memory bus never encodes; it only measures ([`JsonCodec::encoded_len`]) to
//! enforce the same limit.

use std::io;

use crate::encryption::{self, EncryptionKeys};
use crate::{Config, DeadLetter, DeadLetterReason, Error, Event};

/// The default limit on an encoded event: 1 MiB (`EVENT_MAX_PAYLOAD_BYTES`).
pub const DEFAULT_MAX_EVENT_BYTES: usize = 1024 * 1024;

/// Encodes and decodes envelopes as JSON and enforces the size limit; with
/// [encryption keys](Self::with_encryption), seals payloads as it encodes and opens them as it
/// decodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JsonCodec {
    max_bytes: usize,
    keys: Option<EncryptionKeys>,
    encrypt: bool,
}

impl Default for JsonCodec {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_EVENT_BYTES)
    }
}

impl JsonCodec {
    /// A codec that refuses encoded events larger than `max_bytes`.
    pub const fn new(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            keys: None,
            encrypt: false,
        }
    }

    /// The codec the configuration describes: its size limit (`EVENT_MAX_PAYLOAD_BYTES`) and
    /// encryption (`EVENT_ENCRYPTION_KEYS`, `ENABLE_EVENT_ENCRYPTION`).
    pub fn from_config(config: &Config) -> Self {
        Self::new(config.max_event_bytes)
            .with_encryption(config.encryption_keys.clone(), config.encrypt_payloads)
    }

    /// This codec decrypting with `keys`, and encrypting with the first of them when
    /// `encrypt` (without keys, `encrypt` does nothing). Events stored before encryption was
    /// turned on, or after it was turned off, stay readable: a plaintext payload is decoded as
    /// it is.
    pub fn with_encryption(mut self, keys: Option<EncryptionKeys>, encrypt: bool) -> Self {
        self.encrypt = encrypt && keys.is_some();
        self.keys = keys;
        self
    }

    /// The keys that decrypt, if any.
    pub fn encryption_keys(&self) -> Option<&EncryptionKeys> {
        self.keys.as_ref()
    }

    /// The event as this codec stores it: sealed when it encrypts, else as it is.
    ///
    /// # Errors
    /// What [`EncryptionKeys::seal`] refuses.
    pub fn seal(&self, event: &Event) -> Result<Option<Event>, Error> {
        match &self.keys {
            Some(keys) if self.encrypt => keys.seal(event).map(Some),
            _ => Ok(None),
        }
    }

    /// The event as it was published: a sealed payload decrypted, any other event as it is.
    ///
    /// # Errors
    /// [`Error::Undecryptable`], with the sealed event, when the event is sealed and no key of
    /// this codec opens it.
    pub fn open(&self, event: Event) -> Result<Event, Error> {
        if !encryption::is_sealed(&event) {
            return Ok(event);
        }
        match &self.keys {
            Some(keys) => keys.open(event),
            None => {
                let reason = "its payload is encrypted and EVENT_ENCRYPTION_KEYS is not set; set it with the event's key to read it, then redrive the dead letter".to_string();
                Err(encryption::undecryptable(event, reason))
            }
        }
    }

    /// The limit, in bytes, on one encoded event.
    pub const fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// Encodes a dead letter to its JSON bytes, its event sealed when this codec encrypts, so
    /// a dead-letter queue holds no more plaintext than the streams do.
    ///
    /// # Errors
    /// What [`EncryptionKeys::seal`] refuses; [`Error::InvalidEvent`] when serde_json refuses
    /// a value of the event.
    pub fn encode_letter(&self, letter: &DeadLetter) -> Result<Vec<u8>, Error> {
        let sealed = match &letter.event {
            Some(event) => self.seal(event)?,
            None => None,
        };
        let encoded = match sealed {
            Some(event) => serde_json::to_vec(&DeadLetter {
                event: Some(event),
                ..letter.clone()
            }),
            None => serde_json::to_vec(letter),
        };
        encoded.map_err(|e| Error::InvalidEvent {
            reason: format!("a dead letter cannot be encoded as JSON: {e}"),
        })
    }

    /// Decodes a stored dead letter, its event opened. An event no key opens stays sealed (its
    /// routing fields readable), so the letter can still be listed, purged or redriven.
    ///
    /// # Errors
    /// [`Error::InvalidEvent`] when the bytes are not a dead letter.
    pub fn decode_letter(&self, bytes: &[u8]) -> Result<DeadLetter, Error> {
        let mut letter: DeadLetter =
            serde_json::from_slice(bytes).map_err(|e| Error::InvalidEvent {
                reason: format!("not a dead letter: {e}"),
            })?;
        if let Some(event) = &letter.event
            && encryption::is_sealed(event)
            && let Some(keys) = &self.keys
            && let Ok(open) = keys.open(event.clone())
        {
            letter.event = Some(open);
        }
        Ok(letter)
    }

    /// A decoded event for a reader that returns what is stored rather than handles it
    /// (replay, `copy`): an event no key of this codec opens comes back sealed, never
    /// dropped, so a copy keeps it as it is and a reader with the key opens it.
    ///
    /// # Errors
    /// Any other error of `decoded`.
    pub fn keep_sealed(decoded: Result<Event, Error>) -> Result<Event, Error> {
        match decoded {
            Err(Error::Undecryptable { event, reason }) => {
                tracing::warn!(event = %event.id, "returned still sealed, no key opens it: {reason}");
                Ok(*event)
            }
            other => other,
        }
    }

    /// The reason and event of the dead letter for a record this codec cannot decode: a sealed
    /// event no key opens is [`Undecryptable`](DeadLetterReason::Undecryptable) and keeps the
    /// sealed event (redriven once the key is added); anything else is
    /// [`InvalidEnvelope`](DeadLetterReason::InvalidEnvelope) and has no event.
    pub fn failed_decode(error: Error) -> (DeadLetterReason, Option<Event>, String) {
        let message = error.to_string();
        match error {
            Error::Undecryptable { event, .. } => {
                (DeadLetterReason::Undecryptable, Some(*event), message)
            }
            _ => (DeadLetterReason::InvalidEnvelope, None, message),
        }
    }

    /// Encodes an event to its JSON bytes.
    ///
    /// # Errors
    /// [`Error::EventTooLarge`] when the encoding is over the limit; [`Error::InvalidEvent`]
    /// when serde_json refuses a value (a map with non-string keys in `extra`, for example).
    pub fn encode(&self, event: &Event) -> Result<Vec<u8>, Error> {
        let sealed = self.seal(event)?;
        let stored = sealed.as_ref().unwrap_or(event);
        let bytes = serde_json::to_vec(stored).map_err(|e| Error::InvalidEvent {
            reason: format!("event {} cannot be encoded as JSON: {e}", event.id),
        })?;
        self.check(event, bytes.len())?;
        Ok(bytes)
    }

    /// Decodes one envelope.
    ///
    /// # Errors
    /// [`Error::InvalidEvent`] saying what is wrong (not JSON, a missing field, a bad event
    /// type, a payload that is not an object, ...); [`Error::Undecryptable`] for a sealed
    /// payload no key of this codec opens. Decoding never panics on any input.
    pub fn decode(&self, bytes: &[u8]) -> Result<Event, Error> {
        self.open(self.decode_stored(bytes)?)
    }

    /// Decodes one envelope as stored, without decrypting its payload.
    ///
    /// # Errors
    /// As [`decode`](Self::decode), but never [`Error::Undecryptable`].
    pub fn decode_stored(&self, bytes: &[u8]) -> Result<Event, Error> {
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

    /// The size of the event's JSON encoding (sealed, when this codec encrypts), measured
    /// without allocating it when it does not.
    ///
    /// # Errors
    /// [`Error::InvalidEvent`] when serde_json refuses a value.
    pub fn encoded_len(&self, event: &Event) -> Result<usize, Error> {
        let sealed = self.seal(event)?;
        let stored = sealed.as_ref().unwrap_or(event);
        let mut counter = ByteCounter(0);
        serde_json::to_writer(&mut counter, stored).map_err(|e| Error::InvalidEvent {
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
        // settles them, and only events near the limit are measured exactly. A sealed payload
        // is longer than the plaintext (base64 of it, a nonce and a tag).
        if !self.encrypt && max_encoded_len(event) <= self.max_bytes {
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

    fn encrypting() -> JsonCodec {
        let keys = EncryptionKeys::parse("k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=");
        JsonCodec::default().with_encryption(keys.ok(), true)
    }

    #[test]
    fn an_encrypting_codec_stores_ciphertext_and_reads_both_kinds() {
        let codec = encrypting();
        let event = sample();
        let bytes = codec.encode(&event).unwrap();
        let stored: Value = serde_json::from_slice(&bytes).unwrap();
        assert!(stored["payload"]["ciphertext"].is_string(), "{stored}");
        assert_eq!(stored["metadata"]["encryption_key_id"], "k1");
        assert_eq!(stored["partition_key"], "opp-123");
        assert_eq!(codec.encoded_len(&event).unwrap(), bytes.len());
        assert_eq!(codec.decode(&bytes).unwrap(), event);
        assert!(codec.decode_stored(&bytes).unwrap().payload != event.payload);
        // Plaintext stored before encryption was on stays readable, and a reader that only
        // decrypts (ENABLE_EVENT_ENCRYPTION=false) reads ciphertext.
        let plain = JsonCodec::default().encode(&event).unwrap();
        assert_eq!(codec.decode(&plain).unwrap(), event);
        let reader = JsonCodec::default().with_encryption(codec.encryption_keys().cloned(), false);
        assert_eq!(reader.decode(&bytes).unwrap(), event);
        assert_eq!(reader.encode(&event).unwrap(), plain);
        // Without the key: an error holding the sealed event, never a panic or a plaintext guess.
        match JsonCodec::default().decode(&bytes) {
            Err(Error::Undecryptable {
                event: sealed,
                reason,
            }) => {
                assert_eq!(sealed.id, event.id);
                assert!(reason.contains("EVENT_ENCRYPTION_KEYS"), "{reason}");
                // Stored again without the key (a redrive), it is not sealed twice.
                assert_eq!(JsonCodec::default().encode(&sealed).unwrap(), bytes);
                assert_eq!(codec.encode(&sealed).unwrap(), bytes);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn dead_letters_are_stored_sealed_and_read_opened() {
        let codec = encrypting();
        let event = sample();
        let now = time::OffsetDateTime::now_utc();
        let letter = DeadLetter {
            id: String::new(),
            handler: "h".into(),
            group: "g".into(),
            reason: DeadLetterReason::RetriesExhausted,
            event: Some(event.clone()),
            raw: None,
            attempts: 3,
            first_error: "boom".into(),
            last_error: "boom".into(),
            first_failed_at: now,
            last_failed_at: now,
            dead_lettered_at: now,
        };
        let bytes = codec.encode_letter(&letter).unwrap();
        let stored: Value = serde_json::from_slice(&bytes).unwrap();
        assert!(
            stored["event"]["payload"]["ciphertext"].is_string(),
            "{stored}"
        );
        assert_eq!(codec.decode_letter(&bytes).unwrap(), letter);
        // Without the key the letter still reads, its event sealed with its routing fields.
        let sealed = JsonCodec::default().decode_letter(&bytes).unwrap();
        let sealed_event = sealed.event.clone().unwrap();
        assert!(encryption::is_sealed(&sealed_event));
        assert_eq!(sealed_event.partition_key, event.partition_key);
        assert_eq!(sealed.last_error, "boom");
        // A plain codec stores it as it is; what is not a dead letter is an error.
        let plain = JsonCodec::default().encode_letter(&letter).unwrap();
        assert_eq!(
            serde_json::from_slice::<DeadLetter>(&plain).unwrap(),
            letter
        );
        assert!(codec.decode_letter(b"{\"not\": 1}").is_err());
        // Readers that return what is stored keep a sealed event; other errors stay errors.
        let stored_event = codec.encode(&event).unwrap();
        let kept = JsonCodec::keep_sealed(JsonCodec::default().decode(&stored_event)).unwrap();
        assert_eq!(kept, codec.decode_stored(&stored_event).unwrap());
        assert!(encryption::is_sealed(&kept));
        assert!(JsonCodec::keep_sealed(codec.decode(b"[]")).is_err());
    }

    #[test]
    fn the_limit_counts_the_sealed_size() {
        let event = Event::builder(EventType::SIGNAL_DETECTED, "s")
            .field("content", "x".repeat(900))
            .build()
            .unwrap();
        let plain = JsonCodec::new(1200);
        assert!(plain.check_size(&event).is_ok());
        let sealed = JsonCodec::new(1200).with_encryption(encrypting().keys, true);
        assert!(matches!(
            sealed.check_size(&event),
            Err(Error::EventTooLarge { .. })
        ));
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
        fn any_event_round_trips_encrypted(
            payload in prop::collection::btree_map(".{1,12}", json_value(), 0..8),
            metadata in prop::collection::btree_map("[a-z_]{1,8}", json_value(), 0..4),
        ) {
            let codec = encrypting();
            let mut event = Event::builder(EventType::SIGNAL_DETECTED, "s").payload(&payload).build().unwrap();
            event.metadata = metadata.into_iter().collect();
            let bytes = codec.encode(&event).unwrap();
            prop_assert_eq!(codec.decode(&bytes).unwrap(), event);
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = JsonCodec::default().decode(&bytes);
        }
    }
}
