//! Stream replies (`XREADGROUP`, `XCLAIM`, `XRANGE`) read as raw values, entry by entry.
//!
//! fred's typed stream replies turn field names into `String`, so one entry written by a
//! foreign producer with a name that is not UTF-8 fails the whole reply: every entry of it stays
//! pending, and claims and replay of that stream fail forever. Here names and values stay
//! bytes; an entry that cannot be an event is dead-lettered on its own (see [`crate::entry`]).

use bytes::Bytes;
use fred::types::Value;

/// One stream entry as Redis stored it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RawEntry {
    /// The entry id (`1732660000123-0`).
    pub(crate) id: String,
    /// Field names and values, in stored order; `None` when the entry is gone (deleted while
    /// pending: `XREADGROUP` of history and `XCLAIM` on Redis before 7 name it with no fields).
    pub(crate) fields: Option<Vec<(Bytes, Bytes)>>,
    /// What was wrong with the field list, if anything (an odd count, a nested value).
    pub(crate) malformed: Option<String>,
}

/// The entries of an `XRANGE` or `XCLAIM` reply. Items that are not entries at all (no id)
/// are logged and skipped: they name nothing that could be acknowledged.
pub(crate) fn entries(reply: Value) -> Vec<RawEntry> {
    match reply {
        Value::Array(items) => items.into_iter().filter_map(entry).collect(),
        Value::Null => Vec::new(),
        other => {
            tracing::warn!("a stream reply that is not a list of entries was ignored: {other:?}");
            Vec::new()
        }
    }
}

/// The entries of an `XREADGROUP` reply, by stream key: RESP2 answers
/// `[[key, [entry, ...]], ...]`, RESP3 a map of key to entries, and nil when nothing came.
pub(crate) fn streams(reply: Value) -> Vec<(String, Vec<RawEntry>)> {
    let pairs: Vec<(Value, Value)> = match reply {
        Value::Null => return Vec::new(),
        Value::Map(map) => map
            .inner()
            .into_iter()
            .map(|(k, v)| (Value::Bytes(k.into_bytes()), v))
            .collect(),
        Value::Array(items) => items
            .into_iter()
            .filter_map(|item| {
                let mut pair = item.into_array().into_iter();
                Some((pair.next()?, pair.next()?))
            })
            .collect(),
        other => {
            tracing::warn!("an XREADGROUP reply of an unknown shape was ignored: {other:?}");
            return Vec::new();
        }
    };
    pairs
        .into_iter()
        .filter_map(|(key, entries_of)| Some((text(&key)?, entries(entries_of))))
        .collect()
}

fn entry(item: Value) -> Option<RawEntry> {
    let mut parts = match item {
        Value::Array(parts) => parts.into_iter(),
        other => {
            tracing::warn!("a stream reply item that is not an entry was ignored: {other:?}");
            return None;
        }
    };
    let id = parts.next().as_ref().and_then(text);
    let Some(id) = id else {
        tracing::warn!("a stream entry without an id was ignored");
        return None;
    };
    let mut malformed = None;
    let fields = match parts.next() {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => {
            if items.len() % 2 == 1 {
                malformed = Some(format!(
                    "the entry has {} field names and values: a name without a value",
                    items.len()
                ));
            }
            let mut fields = Vec::with_capacity(items.len() / 2);
            let mut items = items.into_iter();
            while let Some(name) = items.next() {
                let value = items.next().unwrap_or(Value::Null);
                match (bytes(name), bytes(value)) {
                    (Some(name), Some(value)) => fields.push((name, value)),
                    (name, _) => {
                        malformed.get_or_insert_with(|| "a field is not a string".to_string());
                        fields.push((name.unwrap_or_default(), Bytes::new()));
                    }
                }
            }
            Some(fields)
        }
        // RESP3 can answer fields as a map.
        Some(Value::Map(map)) => Some(
            map.inner()
                .into_iter()
                .map(|(k, v)| {
                    let value = bytes(v).unwrap_or_else(|| {
                        malformed.get_or_insert_with(|| "a field is not a string".to_string());
                        Bytes::new()
                    });
                    (k.into_bytes(), value)
                })
                .collect(),
        ),
        Some(other) => {
            malformed = Some(format!("the entry's fields are not a list: {other:?}"));
            Some(Vec::new())
        }
    };
    Some(RawEntry {
        id,
        fields,
        malformed,
    })
}

/// The bytes of a string-like value; numbers as their text; nothing for nil, arrays, maps.
fn bytes(value: Value) -> Option<Bytes> {
    match value {
        Value::Bytes(b) => Some(b),
        Value::String(s) => Some(s.into_inner()),
        Value::Integer(i) => Some(Bytes::from(i.to_string())),
        Value::Double(d) => Some(Bytes::from(d.to_string())),
        Value::Boolean(b) => Some(Bytes::from(b.to_string())),
        _ => None,
    }
}

/// A string-like value as UTF-8 text.
fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.to_string()),
        Value::Bytes(b) => std::str::from_utf8(b).ok().map(str::to_string),
        _ => None,
    }
}

/// A flat `[name, value, ...]` array (RESP2) or a map (RESP3) as a map.
pub(crate) fn fields_of(value: Value) -> std::collections::HashMap<String, Value> {
    match value {
        Value::Map(map) => map
            .inner()
            .into_iter()
            .filter_map(|(k, v)| Some((k.into_string()?, v)))
            .collect(),
        other => {
            let mut out = std::collections::HashMap::new();
            let mut items = other.into_array().into_iter();
            while let (Some(k), Some(v)) = (items.next(), items.next()) {
                if let Some(k) = k.as_string() {
                    out.insert(k, v);
                }
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &'static [u8]) -> Value {
        Value::Bytes(Bytes::from_static(s))
    }

    fn s(s: &str) -> Value {
        Value::from(s)
    }

    #[test]
    fn binary_names_and_values_stay_bytes() {
        let reply = Value::Array(vec![
            Value::Array(vec![
                s("1-0"),
                Value::Array(vec![b(b"\xff\xfe"), b(b"\x00\x01")]),
            ]),
            Value::Array(vec![s("2-0"), Value::Array(vec![s("event"), s("{}")])]),
        ]);
        let got = entries(reply);
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[0].fields.as_deref(),
            Some(
                &[(
                    Bytes::from_static(b"\xff\xfe"),
                    Bytes::from_static(b"\x00\x01")
                )][..]
            )
        );
        assert!(got[0].malformed.is_none());
        assert_eq!(got[1].id, "2-0");
    }

    #[test]
    fn odd_and_odd_shaped_entries_are_marked_not_dropped() {
        let reply = Value::Array(vec![
            Value::Array(vec![
                s("1-0"),
                Value::Array(vec![s("event"), s("{}"), s("lonely")]),
            ]),
            Value::Array(vec![s("2-0"), Value::Null]),
            Value::Array(vec![s("3-0"), s("not a list")]),
            Value::Array(vec![
                s("4-0"),
                Value::Array(vec![s("k"), Value::Array(vec![])]),
            ]),
            s("garbage"),
            Value::Array(vec![]),
        ]);
        let got = entries(reply);
        assert_eq!(got.len(), 4, "{got:?}");
        assert!(
            got[0]
                .malformed
                .as_deref()
                .unwrap()
                .contains("without a value")
        );
        assert_eq!(got[1].fields, None);
        assert!(got[2].malformed.is_some());
        assert!(got[3].malformed.is_some());
    }

    #[test]
    fn readgroup_replies_by_stream() {
        let entry = Value::Array(vec![s("5-1"), Value::Array(vec![s("a"), s("b")])]);
        let reply = Value::Array(vec![
            Value::Array(vec![s("one"), Value::Array(vec![entry.clone()])]),
            Value::Array(vec![s("two"), Value::Array(vec![])]),
        ]);
        let got = streams(reply);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0, "one");
        assert_eq!(got[0].1[0].id, "5-1");
        assert!(streams(Value::Null).is_empty());
    }
}
