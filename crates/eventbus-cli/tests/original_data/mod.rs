//! The original Python system's events as its publishers made them, whatever they were written
//! to: shared by `migrate_original.rs` (its Redis layout, `migrate_original/python.rs`) and
//! `migrate_original_kafka.rs` (its Kafka topics, `migrate_original_kafka/original.rs`), which
//! each write them their own way. `imported` reads back what the import stored in a Redis bus.

use std::io;

use serde::Serialize;
use serde_json::{Value as Json, json};
use time::OffsetDateTime;

pub(crate) mod imported;

/// `Event.to_dict()`: the dataclass fields in order, `timestamp` as `isoformat()`.
#[derive(Serialize)]
pub(crate) struct PythonEvent {
    pub(crate) id: String,
    pub(crate) event_type: String,
    pub(crate) payload: Json,
    pub(crate) timestamp: String,
    pub(crate) source: String,
    pub(crate) correlation_id: Option<String>,
    pub(crate) metadata: Json,
}

/// `json.dumps` with its defaults: `", "` and `": "` separators, non-ASCII escaped.
pub(crate) fn python_json(event: &PythonEvent) -> String {
    let mut out = Vec::new();
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, PythonFormatter);
    // Strings and maps of JSON values always serialize, and the formatter writes only ASCII.
    let _ = event.serialize(&mut serializer);
    String::from_utf8(out).unwrap_or_default()
}

struct PythonFormatter;

impl serde_json::ser::Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }
    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }
    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        for c in fragment.chars() {
            if c.is_ascii() {
                w.write_all(&[c as u8])?;
            } else {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    write!(w, "\\u{unit:04x}")?;
                }
            }
        }
        Ok(())
    }
}

/// `datetime.isoformat()` of an aware UTC time: no fraction when it is zero.
pub(crate) fn isoformat(t: OffsetDateTime) -> String {
    let fraction = match t.microsecond() {
        0 => String::new(),
        us => format!(".{us:06}"),
    };
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{fraction}+00:00",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// `str(uuid.uuid4())`.
pub(crate) fn uuid4(rng: &mut fastrand::Rng) -> String {
    let hex: String = (0..32)
        .map(|_| char::from_digit(rng.u32(0..16), 16).unwrap_or('0'))
        .collect();
    let variant = char::from_digit(rng.u32(8..12), 16).unwrap_or('8');
    format!(
        "{}-{}-4{}-{variant}{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    )
}

/// Which event of a mix is being made.
pub(crate) struct Nth {
    /// Its number in the whole stream.
    pub(crate) n: usize,
    /// How many times the mix went round before it: `n / kinds`.
    pub(crate) round: usize,
    /// When the publisher enriched it (`isoformat`), a little after its timestamp.
    pub(crate) published: String,
}

/// One kind of event of a mix: what a publisher of the original put in it.
pub(crate) struct Case {
    /// `str(event_type)`: `EventType.X` or a dotted string.
    pub(crate) type_name: &'static str,
    /// The bus's dotted type.
    pub(crate) dotted: &'static str,
    /// The payload field that is the partition key.
    pub(crate) key_field: Option<&'static str>,
    pub(crate) source: &'static str,
    pub(crate) payload: Json,
    pub(crate) metadata: Json,
    /// Whether the publisher set a correlation id.
    pub(crate) correlated: bool,
    /// The sourcing fields the import moves out of the metadata: aggregate id, version and
    /// causation id.
    pub(crate) sourcing: Option<(String, u64, String)>,
}

impl Case {
    /// An event of a typed publisher: enriched metadata, correlated, no sourcing.
    pub(crate) fn published(
        nth: &Nth,
        (type_name, dotted): (&'static str, &'static str),
        key_field: Option<&'static str>,
        source: &'static str,
        payload: Json,
    ) -> Self {
        Self {
            type_name,
            dotted,
            key_field,
            source,
            payload,
            metadata: json!({"publisher_source": source, "published_at": nth.published}),
            correlated: true,
            sourcing: None,
        }
    }
}

/// The kinds of event a test's stream cycles through.
pub(crate) type Kind = fn(&Nth) -> Case;

/// `publish_opportunity_created`, with the market size estimate given.
pub(crate) fn opportunity_created(nth: &Nth, market_size_estimate: Json) -> Case {
    let n = nth.n;
    Case::published(
        nth,
        ("EventType.OPPORTUNITY_CREATED", "opportunity.created"),
        Some("opportunity_id"),
        "opportunity_service",
        json!({"opportunity_id": format!("opp-{n}"), "title": format!("Caf\u{e9} analytics {n}"),
               "description": "Automated support", "ai_solution_type": "nlp",
               "market_size_estimate": market_size_estimate, "created_by": null}),
    )
}

/// `publish_user_registered`.
pub(crate) fn user_registered(nth: &Nth) -> Case {
    let n = nth.n;
    Case::published(
        nth,
        ("EventType.USER_REGISTERED", "user.registered"),
        Some("user_id"),
        "user_service",
        json!({"user_id": format!("user-{n}"), "email": format!("u{n}@example.com"),
               "username": null, "user_type": "user"}),
    )
}

/// `publish_agent_task_completed`.
pub(crate) fn agent_task_completed(nth: &Nth) -> Case {
    let n = nth.n;
    Case::published(
        nth,
        ("EventType.AGENT_TASK_COMPLETED", "agent.task_completed"),
        Some("agent_id"),
        "agent_orchestrator",
        json!({"agent_id": format!("agent-{}", n % 4), "task_id": format!("task-{n}"),
               "task_type": "scan_subreddit", "duration_seconds": 12.5, "success": true,
               "result": {"signals_found": n % 5}}),
    )
}

/// The API's /publish: a plain string type and the caller's metadata only.
pub(crate) fn posted_opportunity(nth: &Nth) -> Case {
    Case {
        type_name: "opportunity.created",
        dotted: "opportunity.created",
        key_field: Some("opportunity_id"),
        source: "admin_api",
        payload: json!({"opportunity_id": format!("opp-{}", nth.n), "title": "Posted by hand",
                        "description": "From the API", "ai_solution_type": "vision"}),
        metadata: json!({"requested_by": "admin-1"}),
        correlated: false,
        sourcing: None,
    }
}

/// A feature flag change, with a plain string type.
pub(crate) fn feature_flag_updated(nth: &Nth) -> Case {
    Case {
        type_name: "feature_flag.updated",
        dotted: "feature_flag.updated",
        key_field: None,
        source: "feature_flags",
        payload: json!({"flag_name": "new_ranking", "enabled": nth.n.is_multiple_of(2),
                        "updated_by": "admin-1"}),
        metadata: json!({}),
        correlated: false,
        sourcing: None,
    }
}

/// The API middleware's request event: a plain string type, its own correlation id in the
/// metadata.
pub(crate) fn request_completed(_: &Nth) -> Case {
    Case {
        type_name: "api.request_completed",
        dotted: "api.request_completed",
        key_field: None,
        source: "api_middleware",
        payload: json!({"method": "GET", "path": "/api/v1/opportunities", "status_code": 200,
                        "response_time_ms": 18.75, "success": true}),
        metadata: json!({"correlation_id": "req-77", "component": "api_middleware"}),
        correlated: true,
        sourcing: None,
    }
}

/// publish_event_with_sourcing: the sourcing fields in the metadata, the version one more
/// each round.
pub(crate) fn opportunity_updated_with_sourcing(nth: &Nth) -> Case {
    let (n, version) = (nth.n, nth.round + 1);
    let cause = format!("cmd-{n}");
    Case {
        type_name: "EventType.OPPORTUNITY_UPDATED",
        dotted: "opportunity.updated",
        key_field: Some("opportunity_id"),
        source: "opportunity_service",
        payload: json!({"opportunity_id": format!("opp-{}", n % 7), "changes": {"title": "New title"},
                        "updated_by": "user-456", "change_count": 1}),
        metadata: json!({"aggregate_id": format!("opp-{}", n % 7), "aggregate_type": "opportunity",
                         "aggregate_version": version, "causation_id": cause, "command_id": cause,
                         "version": "1.0"}),
        correlated: true,
        sourcing: Some((format!("opp-{}", n % 7), version as u64, cause)),
    }
}

/// A test's stream of events.
pub(crate) struct Mix {
    /// The kinds, in the order the stream cycles through them.
    pub(crate) kinds: Vec<Kind>,
    /// Every so many events, one on a whole second (`isoformat` without a fraction).
    pub(crate) whole_second_every: usize,
    /// The oldest an event may be, in seconds (the youngest is a minute old).
    pub(crate) oldest: i64,
}

/// One event as a publisher of the original made it.
pub(crate) struct OriginalEvent {
    pub(crate) event: PythonEvent,
    dotted: &'static str,
    key_field: Option<&'static str>,
    sourcing: Option<(String, u64, String)>,
}

/// The `n`th event of `mix`, with `correlation` as its correlation id if its publisher sets
/// one.
pub(crate) fn make(
    n: usize,
    rng: &mut fastrand::Rng,
    mix: &Mix,
    correlation: String,
) -> OriginalEvent {
    let micros = if n.is_multiple_of(mix.whole_second_every) {
        0
    } else {
        rng.i64(1..1_000_000)
    };
    let at = OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
        - time::Duration::seconds(rng.i64(60..mix.oldest))
        + time::Duration::microseconds(micros);
    let nth = Nth {
        n,
        round: n / mix.kinds.len(),
        published: isoformat(at + time::Duration::microseconds(70)),
    };
    let case = mix.kinds[n % mix.kinds.len()](&nth);
    OriginalEvent {
        event: PythonEvent {
            id: uuid4(rng),
            event_type: case.type_name.to_string(),
            payload: case.payload,
            timestamp: isoformat(at),
            source: case.source.to_string(),
            correlation_id: case.correlated.then_some(correlation),
            metadata: case.metadata,
        },
        dotted: case.dotted,
        key_field: case.key_field,
        sourcing: case.sourcing,
    }
}

impl OriginalEvent {
    /// The partition key the import must set: the publisher's key field of the payload.
    pub(crate) fn partition_key(&self) -> Option<Json> {
        self.key_field.map(|f| self.event.payload[f].clone())
    }

    /// What the bus must hold for it: the fields compared.
    pub(crate) fn expected(&self) -> Json {
        let event = &self.event;
        let mut metadata = event.metadata.clone();
        let (mut aggregate_id, mut aggregate_type, mut aggregate_version, mut causation) =
            (Json::Null, Json::Null, Json::Null, Json::Null);
        if let Some((id, version, cause)) = &self.sourcing {
            if let Some(m) = metadata.as_object_mut() {
                for moved in [
                    "aggregate_id",
                    "aggregate_type",
                    "aggregate_version",
                    "causation_id",
                    "version",
                ] {
                    m.remove(moved);
                }
            }
            aggregate_id = json!(id);
            aggregate_type = json!("opportunity");
            aggregate_version = json!(version);
            causation = json!(cause);
        }
        let at =
            event_core::timestamp::parse(&event.timestamp).unwrap_or(OffsetDateTime::UNIX_EPOCH);
        json!({
            "id": event.id,
            "event_type": self.dotted,
            "payload": event.payload,
            "timestamp": event_core::timestamp::format(at),
            "source": event.source,
            "correlation_id": event.correlation_id,
            "causation_id": causation,
            "metadata": metadata,
            "aggregate_id": aggregate_id,
            "aggregate_type": aggregate_type,
            "aggregate_version": aggregate_version,
            "partition_key": self.partition_key().unwrap_or(Json::Null),
        })
    }
}

/// A body that is not JSON, and the type it was published under.
pub(crate) const NOT_JSON: (&str, &str) = ("EventType.AGENT_STARTED", "{'id': 'agent-1', not json");

/// Events the import cannot store, published at `now`: one failing its schema, two of a type
/// that is not known.
pub(crate) fn unimportable(rng: &mut fastrand::Rng, now: &str) -> Vec<PythonEvent> {
    [
        (
            "EventType.USER_REGISTERED",
            json!({"user_id": "user-x", "username": "no-email"}),
        ),
        ("EventType.BILLING_PAID", json!({"invoice": 1})),
        ("EventType.BILLING_PAID", json!({"invoice": 2})),
    ]
    .into_iter()
    .map(|(type_name, payload)| plain(uuid4(rng), type_name, payload, now))
    .collect()
}

/// An event of source `svc` with no correlation id and no metadata.
pub(crate) fn plain(id: String, type_name: &str, payload: Json, now: &str) -> PythonEvent {
    PythonEvent {
        id,
        event_type: type_name.into(),
        payload,
        timestamp: now.into(),
        source: "svc".into(),
        correlation_id: None,
        metadata: json!({}),
    }
}
