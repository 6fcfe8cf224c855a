//! Stream entries: how an event is written (`id`, `type`, `key`, `traceparent`,
//! `tracestate`, `event` fields) and read back, and stream ids as times.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use event_core::{Error, Event, JsonCodec, trace};
use fred::types::Value;

use crate::reply::RawEntry;

/// The field holding the envelope JSON.
pub(crate) const EVENT_FIELD: &str = "event";

/// The fields of one event's entry: routing fields a foreign consumer can read without parsing
/// the JSON, then the envelope.
pub(crate) fn fields(event: &Event, json: Vec<u8>) -> Vec<(&'static str, Value)> {
    let mut fields = vec![
        ("id", Value::from(event.id.to_string())),
        ("type", Value::from(event.event_type.as_str())),
    ];
    if let Some(key) = &event.partition_key {
        fields.push(("key", Value::from(key.as_str())));
    }
    if let Some(parent) = &event.traceparent {
        fields.push((trace::TRACEPARENT, Value::from(parent.as_str())));
    }
    if let Some(state) = &event.tracestate {
        fields.push((trace::TRACESTATE, Value::from(state.as_str())));
    }
    fields.push((EVENT_FIELD, Value::Bytes(json.into())));
    fields
}

/// Decodes the envelope of an entry; the error says why the entry is not one of ours.
pub(crate) fn decode(codec: &JsonCodec, entry: &RawEntry) -> Result<Event, Error> {
    let Some(fields) = &entry.fields else {
        return Err(Error::InvalidEvent {
            reason: "the stream entry was deleted".into(),
        });
    };
    if let Some(problem) = &entry.malformed {
        return Err(Error::InvalidEvent {
            reason: format!("malformed stream entry: {problem}"),
        });
    }
    let raw = field(fields, EVENT_FIELD).ok_or_else(|| Error::InvalidEvent {
        reason: format!(
            "stream entry has no `{EVENT_FIELD}` field (fields: {})",
            field_names(fields)
        ),
    })?;
    let mut event = codec.decode(raw)?;
    // A producer that traced the entry but not the envelope (another language's client).
    if event.traceparent.is_none() {
        let text = |name| field(fields, name).and_then(|v| std::str::from_utf8(v).ok());
        event.traceparent = text(trace::TRACEPARENT).map(str::to_owned);
        event.tracestate = text(trace::TRACESTATE).map(str::to_owned);
    }
    Ok(event)
}

/// The value of the first field named `name`.
pub(crate) fn field<'a>(fields: &'a [(Bytes, Bytes)], name: &str) -> Option<&'a Bytes> {
    fields
        .iter()
        .find(|(n, _)| n.as_ref() == name.as_bytes())
        .map(|(_, v)| v)
}

/// The entry as text, for a dead letter of an entry that is not a valid envelope: `name=value`
/// pairs in stored order, separated by spaces; a name or value that is not UTF-8 is written
/// `b64:` and its bytes in base64, so nothing is lost. At most 64 KiB.
pub(crate) fn raw_text(fields: &[(Bytes, Bytes)]) -> String {
    let text = fields
        .iter()
        .map(|(k, v)| format!("{}={}", readable(k), readable(v)))
        .collect::<Vec<_>>()
        .join(" ");
    event_core::backend::cut_raw_text(text)
}

fn readable(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_string(),
        Err(_) => format!("b64:{}", BASE64.encode(bytes)),
    }
}

fn field_names(fields: &[(Bytes, Bytes)]) -> String {
    fields
        .iter()
        .map(|(name, _)| readable(name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The bytes of a string-like value; other kinds as their text form.
pub(crate) fn value_bytes(value: &Value) -> Vec<u8> {
    match value {
        Value::Bytes(b) => b.to_vec(),
        Value::String(s) => s.as_bytes().to_vec(),
        other => other.as_string().unwrap_or_default().into_bytes(),
    }
}

/// The milliseconds part of a stream id (`1732660000123-0`).
pub(crate) fn id_millis(id: &str) -> Option<i64> {
    id.split_once('-').map_or(id, |(ms, _)| ms).parse().ok()
}

/// A stream id as numbers, for ordering entries of several streams (`(0, 0)` if malformed).
pub(crate) fn id_order(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

/// The lowest stream id at or after a Unix time in milliseconds.
pub(crate) fn id_at(millis: i64) -> String {
    format!("{}-0", millis.max(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use event_core::EventType;

    fn raw(fields: Vec<(&'static [u8], &'static [u8])>) -> RawEntry {
        RawEntry {
            id: "1-0".into(),
            fields: Some(
                fields
                    .into_iter()
                    .map(|(k, v)| (Bytes::from_static(k), Bytes::from_static(v)))
                    .collect(),
            ),
            malformed: None,
        }
    }

    #[test]
    fn written_fields_decode_back() {
        let codec = JsonCodec::default();
        let event = Event::builder(EventType::USER_REGISTERED, "s")
            .partition_key("u-1")
            .build()
            .unwrap();
        let fields: Vec<(Bytes, Bytes)> = fields(&event, codec.encode(&event).unwrap())
            .into_iter()
            .map(|(k, v)| (Bytes::from(k), v.into_bytes().unwrap()))
            .collect();
        assert_eq!(field(&fields, "type").unwrap().as_ref(), b"user.registered");
        assert_eq!(field(&fields, "key").unwrap().as_ref(), b"u-1");
        let entry = RawEntry {
            id: "1-0".into(),
            fields: Some(fields),
            malformed: None,
        };
        assert_eq!(decode(&codec, &entry).unwrap(), event);
    }

    #[test]
    fn foreign_entries_give_reasons() {
        let codec = JsonCodec::default();
        let err = decode(&codec, &raw(vec![(b"payload", b"hello")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no `event` field") && err.contains("payload"),
            "{err}"
        );
        let entry = raw(vec![(b"event", b"{not json"), (b"payload", b"hello")]);
        assert!(
            decode(&codec, &entry)
                .unwrap_err()
                .to_string()
                .contains("not a valid event envelope")
        );
        assert_eq!(
            raw_text(entry.fields.as_deref().unwrap()),
            "event={not json payload=hello"
        );
        let mut odd = raw(vec![(b"event", b"{}")]);
        odd.malformed = Some("a name without a value".into());
        assert!(
            decode(&codec, &odd)
                .unwrap_err()
                .to_string()
                .contains("malformed")
        );
        let gone = RawEntry {
            id: "1-0".into(),
            fields: None,
            malformed: None,
        };
        assert!(
            decode(&codec, &gone)
                .unwrap_err()
                .to_string()
                .contains("deleted")
        );
    }

    #[test]
    fn binary_fields_are_kept_in_base64() {
        let fields = raw(vec![(b"\xff\xfename", b"x"), (b"event", b"\x00\x9f")]);
        let text = raw_text(fields.fields.as_deref().unwrap());
        assert_eq!(text, "b64://5uYW1l=x event=b64:AJ8=");
        let err = decode(&JsonCodec::default(), &fields)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a valid event envelope"), "{err}");
    }

    #[test]
    fn ids_and_times() {
        assert_eq!(id_millis("1732660000123-7"), Some(1_732_660_000_123));
        assert_eq!(id_millis("12"), Some(12));
        assert_eq!(id_millis("x-1"), None);
        assert_eq!(id_at(-5), "0-0");
        assert!(id_order("9-10") > id_order("9-9") && id_order("10-0") > id_order("9-99"));
    }
}
