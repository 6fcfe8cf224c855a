//! Stream entries: how an event is written (`id`, `type`, `key`, `event` fields) and read
//! back, and stream ids as times.

use std::collections::HashMap;

use event_core::{Error, Event, JsonCodec};
use fred::types::Value;

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
    fields.push((EVENT_FIELD, Value::Bytes(json.into())));
    fields
}

/// Decodes the envelope of an entry; the error says why the entry is not one of ours.
pub(crate) fn decode(codec: &JsonCodec, fields: &HashMap<String, Value>) -> Result<Event, Error> {
    let raw = fields.get(EVENT_FIELD).ok_or_else(|| Error::InvalidEvent {
        reason: format!(
            "stream entry has no `{EVENT_FIELD}` field (fields: {})",
            field_names(fields)
        ),
    })?;
    codec.decode(&value_bytes(raw))
}

/// The entry as text, for a dead letter of an entry that is not a valid envelope.
pub(crate) fn raw_text(fields: &HashMap<String, Value>) -> String {
    let mut pairs: Vec<_> = fields
        .iter()
        .map(|(k, v)| format!("{k}={}", String::from_utf8_lossy(&value_bytes(v))))
        .collect();
    pairs.sort();
    let mut text = pairs.join(" ");
    if text.len() > 64 * 1024 {
        let mut cut = 64 * 1024;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("...");
    }
    text
}

fn field_names(fields: &HashMap<String, Value>) -> String {
    let mut names: Vec<_> = fields.keys().map(String::as_str).collect();
    names.sort_unstable();
    names.join(", ")
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

    #[test]
    fn written_fields_decode_back() {
        let codec = JsonCodec::default();
        let event = Event::builder(EventType::USER_REGISTERED, "s")
            .partition_key("u-1")
            .build()
            .unwrap();
        let map: HashMap<String, Value> = fields(&event, codec.encode(&event).unwrap())
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        assert_eq!(map["type"].as_str().as_deref(), Some("user.registered"));
        assert_eq!(map["key"].as_str().as_deref(), Some("u-1"));
        assert_eq!(decode(&codec, &map).unwrap(), event);
    }

    #[test]
    fn foreign_entries_give_reasons() {
        let codec = JsonCodec::default();
        let mut map = HashMap::new();
        map.insert("payload".to_string(), Value::from("hello"));
        let err = decode(&codec, &map).unwrap_err().to_string();
        assert!(
            err.contains("no `event` field") && err.contains("payload"),
            "{err}"
        );
        map.insert(EVENT_FIELD.to_string(), Value::from("{not json"));
        assert!(
            decode(&codec, &map)
                .unwrap_err()
                .to_string()
                .contains("not a valid event envelope")
        );
        assert_eq!(raw_text(&map), "event={not json payload=hello");
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
