//! One body of the original system (`event:{id}`: the JSON its `Event.to_dict()` stored) made
//! into this bus's envelope, or the reason it cannot be.
//!
//! The original's envelope has `id`, `event_type`, `payload`, `timestamp`, `source`,
//! `correlation_id` and `metadata`; its event-sourcing publisher put `aggregate_id`,
//! `aggregate_type`, `aggregate_version`, `causation_id`, `command_id` and `version` into
//! `metadata`. The first four and `version` become envelope fields here; `command_id`, which
//! has no envelope field, stays in `metadata`.

use event_core::{Event, EventId, EventType, JsonObject};
use serde_json::Value;
use time::OffsetDateTime;

/// Why a body was not imported: the `kind` of a report line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Problem {
    /// The body is not JSON at all.
    NotJson,
    /// JSON, but not an envelope: a field missing or of the wrong kind.
    BadEnvelope,
    /// A type that is neither one of the 20 `EventType.*` members nor a valid dotted type.
    UnknownType,
    /// A typed event whose payload fails its schema (`eventbus schema TYPE`).
    Schema,
    /// Decoded, but the target bus refused it.
    PublishFailed,
}

impl Problem {
    /// The name written in the report file.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Problem::NotJson => "not_json",
            Problem::BadEnvelope => "bad_envelope",
            Problem::UnknownType => "unknown_type",
            Problem::Schema => "schema",
            Problem::PublishFailed => "publish_failed",
        }
    }
}

/// A body that was not imported, and why.
#[derive(Debug)]
pub(crate) struct Rejection {
    pub(crate) problem: Problem,
    pub(crate) reason: String,
}

fn reject(problem: Problem, reason: impl Into<String>) -> Rejection {
    Rejection {
        problem,
        reason: reason.into(),
    }
}

/// The dotted type of a type as the original wrote it: `EventType.OPPORTUNITY_CREATED` (the
/// enum's name, Python 3.11) or `opportunity.created` (the value, or a string type such as
/// `feature_flag.created`). `None` when it is neither.
pub(crate) fn original_type(name: &str) -> Option<EventType> {
    match name.strip_prefix("EventType.") {
        Some(member) => EventType::STANDARD
            .iter()
            .find(|t| t.as_str().replacen('.', "_", 1).to_uppercase() == member)
            .cloned(),
        None => EventType::new(name).ok(),
    }
}

/// Decodes the body stored under `event:{key_id}`, found in the timeline of `timeline_type`
/// with score `score` (epoch seconds), into the event to import.
pub(crate) fn decode(
    key_id: &str,
    body: &[u8],
    timeline_type: &str,
    score: Option<f64>,
) -> Result<Event, Rejection> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| reject(Problem::NotJson, format!("the body is not JSON: {e}")))?;
    let Value::Object(mut body) = value else {
        return Err(reject(
            Problem::BadEnvelope,
            "the body is JSON but not an object",
        ));
    };
    let id_text = match body.get("id") {
        Some(Value::String(id)) => id.clone(),
        None | Some(Value::Null) => key_id.to_string(),
        Some(other) => {
            return Err(reject(
                Problem::BadEnvelope,
                format!("`id` is not a string: {other}"),
            ));
        }
    };
    let id: EventId = id_text
        .parse()
        .map_err(|e| reject(Problem::BadEnvelope, format!("{e}")))?;
    let type_name = match body.get("event_type") {
        Some(Value::String(name)) => name.clone(),
        _ => timeline_type.to_string(),
    };
    let event_type = original_type(&type_name).ok_or_else(|| {
        reject(
            Problem::UnknownType,
            format!(
                "event type {type_name:?} is neither one of the 20 EventType members nor a dotted type such as feature_flag.created"
            ),
        )
    })?;
    let payload = match body.remove("payload") {
        Some(Value::Object(payload)) => payload,
        Some(other) => {
            return Err(reject(
                Problem::BadEnvelope,
                format!("`payload` is not an object: {other}"),
            ));
        }
        None => return Err(reject(Problem::BadEnvelope, "`payload` is missing")),
    };
    let timestamp = match body.get("timestamp") {
        Some(Value::String(text)) => python_time(text).ok_or_else(|| {
            reject(
                Problem::BadEnvelope,
                format!("`timestamp` {text:?} is not an ISO 8601 time"),
            )
        })?,
        _ => score
            .and_then(|s| OffsetDateTime::from_unix_timestamp_nanos((s * 1e9) as i128).ok())
            .ok_or_else(|| {
                reject(
                    Problem::BadEnvelope,
                    "`timestamp` is missing and the timeline has no score",
                )
            })?,
    };
    let mut metadata = match body.remove("metadata") {
        Some(Value::Object(metadata)) => metadata,
        None | Some(Value::Null) => JsonObject::new(),
        Some(other) => {
            return Err(reject(
                Problem::BadEnvelope,
                format!("`metadata` is not an object: {other}"),
            ));
        }
    };
    let source = [body.get("source"), metadata.get("publisher_source")]
        .into_iter()
        .flatten()
        .find_map(|v| v.as_str().filter(|s| !s.trim().is_empty()))
        .map(str::to_string)
        .ok_or_else(|| reject(Problem::BadEnvelope, "`source` is missing or empty"))?;

    let mut event = Event::builder(event_type, source)
        .id(id)
        .timestamp(timestamp)
        .build()
        .map_err(|e| reject(Problem::BadEnvelope, e.to_string()))?;
    event.payload = payload;
    event.correlation_id = body.get("correlation_id").and_then(text);
    // The same fields at the top (a body written by something newer than the original) are
    // read alike; the metadata's win.
    for name in [
        "aggregate_id",
        "aggregate_type",
        "aggregate_version",
        "causation_id",
    ] {
        if let Some(value) = body.get(name).filter(|v| !v.is_null())
            && !metadata.contains_key(name)
        {
            metadata.insert(name.to_string(), value.clone());
        }
    }
    sourcing(&mut event, &mut metadata);
    event.metadata = metadata;
    event.extra = body
        .into_iter()
        .filter(|(name, _)| !Event::FIELDS.contains(&name.as_str()))
        .collect();
    if let Some(entry) = event_publishers::catalog_entry(&event.event_type) {
        entry
            .check(&event.payload)
            .map_err(|e| reject(Problem::Schema, e.to_string()))?;
        // The key this bus's own publishers give the event, so handlers see the imported
        // events of one entity in order, as they will see new ones.
        event.partition_key = entry
            .partition_key
            .and_then(|field| event.payload.get(field))
            .and_then(Value::as_str)
            .map(str::to_string);
    }
    Ok(event)
}

/// Moves the original's event-sourcing metadata to the envelope fields: `aggregate_id`,
/// `aggregate_type`, `aggregate_version`, `causation_id`, and `version` (the payload's,
/// `"1.0"`) as `schema_version`. A value that does not fit its field stays in `metadata`.
fn sourcing(event: &mut Event, metadata: &mut JsonObject) {
    let sourced = metadata.contains_key("aggregate_id") || metadata.contains_key("aggregate_type");
    if let Some(id) = metadata.get("aggregate_id").and_then(text) {
        event.aggregate_id = Some(id);
        metadata.remove("aggregate_id");
    }
    if let Some(kind) = metadata.get("aggregate_type").and_then(text) {
        event.aggregate_type = Some(kind);
        metadata.remove("aggregate_type");
    }
    if let Some(version) = metadata
        .get("aggregate_version")
        .and_then(whole_number)
        .filter(|v| *v >= 1)
    {
        event.aggregate_version = Some(version);
        metadata.remove("aggregate_version");
    }
    if let Some(cause) = metadata.get("causation_id").and_then(text) {
        event.causation_id = Some(cause);
        metadata.remove("causation_id");
    }
    // `version` is the sourcing publisher's only when it came with an aggregate; alone it may
    // be anything a caller put there.
    if sourced
        && let Some(version) = metadata
            .get("version")
            .and_then(whole_number)
            .and_then(|v| u32::try_from(v).ok())
            .filter(|v| *v >= 1)
    {
        event.schema_version = version;
        metadata.remove("version");
    }
}

/// A string, or a number or boolean as its JSON text; `None` for null, arrays and objects.
fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(_) | Value::Bool(_) => Some(value.to_string()),
        _ => None,
    }
}

/// `3`, `"3"`, `"3.0"` or `3.0` as 3.
fn whole_number(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0)
                .map(|f| f as u64)
        }),
        Value::String(s) => {
            let s = s.trim();
            s.strip_suffix(".0").unwrap_or(s).parse().ok()
        }
        _ => None,
    }
}

/// Python's `datetime.isoformat()`: `2026-11-26T21:46:01.285034+00:00`, without the fraction
/// when it is zero. A time without an offset (never written by the original's publishers,
/// which use `datetime.now(timezone.utc)`) is read as UTC.
fn python_time(text: &str) -> Option<OffsetDateTime> {
    event_core::timestamp::parse(text)
        .or_else(|_| event_core::timestamp::parse(&format!("{text}Z")))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn both_spellings_map_to_the_dotted_type() {
        for standard in EventType::STANDARD {
            let member = standard.as_str().replacen('.', "_", 1).to_uppercase();
            assert_eq!(
                original_type(&format!("EventType.{member}")).as_ref(),
                Some(standard)
            );
            assert_eq!(original_type(standard.as_str()).as_ref(), Some(standard));
        }
        assert_eq!(
            original_type("feature_flag.created").map(|t| t.to_string()),
            Some("feature_flag.created".into())
        );
        assert!(original_type("EventType.BILLING_PAID").is_none());
        assert!(original_type("Opportunity Created").is_none());
    }

    #[test]
    fn the_stored_json_keeps_every_field_and_moves_sourcing() {
        let body = json!({
            "id": "54ea1b7c-8f1e-4d2a-9c6b-0a1b2c3d4e5f",
            "event_type": "EventType.OPPORTUNITY_CREATED",
            "payload": {"opportunity_id": "opp-1", "title": "T", "description": "D",
                        "ai_solution_type": "nlp", "market_size_estimate": null, "created_by": null},
            "timestamp": "2026-11-26T21:46:01.285034+00:00",
            "source": "opportunity_service",
            "correlation_id": "corr-1",
            "metadata": {"publisher_source": "opportunity_service",
                         "published_at": "2026-11-26T21:46:01.285100+00:00",
                         "aggregate_id": "opp-1", "aggregate_type": "opportunity",
                         "aggregate_version": 3, "causation_id": "cmd-9",
                         "command_id": "cmd-9", "version": "1.0"},
            "origin_host": "web-1"
        });
        let event = decode(
            "54ea1b7c-8f1e-4d2a-9c6b-0a1b2c3d4e5f",
            body.to_string().as_bytes(),
            "EventType.OPPORTUNITY_CREATED",
            None,
        )
        .unwrap();
        assert_eq!(event.event_type, EventType::OPPORTUNITY_CREATED);
        assert_eq!(
            event_core::timestamp::format(event.timestamp),
            "2026-11-26T21:46:01.285034Z"
        );
        assert_eq!(event.correlation_id.as_deref(), Some("corr-1"));
        assert_eq!(event.partition_key.as_deref(), Some("opp-1"));
        assert_eq!(event.aggregate_id.as_deref(), Some("opp-1"));
        assert_eq!(event.aggregate_type.as_deref(), Some("opportunity"));
        assert_eq!(event.aggregate_version, Some(3));
        assert_eq!(event.causation_id.as_deref(), Some("cmd-9"));
        assert_eq!(event.schema_version, 1);
        let keys: Vec<&str> = event.metadata.keys().map(String::as_str).collect();
        assert_eq!(keys, ["command_id", "published_at", "publisher_source"]);
        assert_eq!(event.extra["origin_host"], "web-1");
    }

    #[test]
    fn bad_bodies_say_why() {
        let kind = |body: &[u8]| {
            decode(
                "54ea1b7c-8f1e-4d2a-9c6b-0a1b2c3d4e5f",
                body,
                "x.y",
                Some(1.0),
            )
            .unwrap_err()
            .problem
        };
        assert_eq!(kind(b"\xff\xfe not json"), Problem::NotJson);
        assert_eq!(kind(b"[1,2]"), Problem::BadEnvelope);
        assert_eq!(
            kind(br#"{"event_type":"EventType.NOPE","payload":{},"source":"s"}"#),
            Problem::UnknownType
        );
        assert_eq!(
            kind(br#"{"event_type":"user.registered","payload":{"user_id":"u"},"source":"s"}"#),
            Problem::Schema
        );
        assert_eq!(
            kind(br#"{"event_type":"x.y","payload":[],"source":"s"}"#),
            Problem::BadEnvelope
        );
        assert_eq!(
            kind(br#"{"event_type":"x.y","payload":{},"source":""}"#),
            Problem::BadEnvelope
        );
        // No timestamp: the timeline's score.
        let event = decode(
            "54ea1b7c-8f1e-4d2a-9c6b-0a1b2c3d4e5f",
            br#"{"event_type":"x.y","payload":{},"source":"s"}"#,
            "x.y",
            Some(1_764_193_561.5),
        )
        .unwrap();
        assert_eq!(event.timestamp.unix_timestamp(), 1_764_193_561);
        // Sourcing fields at the top are read too.
        let event = decode(
            "54ea1b7c-8f1e-4d2a-9c6b-0a1b2c3d4e5f",
            br#"{"event_type":"x.y","payload":{},"source":"s","causation_id":"c-1","aggregate_id":7}"#,
            "x.y",
            Some(1.0),
        )
        .unwrap();
        assert_eq!(event.causation_id.as_deref(), Some("c-1"));
        assert_eq!(event.aggregate_id.as_deref(), Some("7"));
        assert!(event.metadata.is_empty() && event.extra.is_empty());
    }
}
