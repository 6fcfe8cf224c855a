//! The original's data, written as its Python code wrote it: the helper of
//! `migrate_original.rs`.

use std::io;

use fred::prelude::{Client, ClientLike};
use serde::Serialize;
use serde_json::{Value as Json, json};
use time::OffsetDateTime;

use fred::types::Value;

use super::{Written, now_minus};

/// Ids in a timeline whose body has expired.
pub(crate) const EXPIRED: usize = 20;
/// Bodies that cannot be imported: one not JSON, one failing its schema, two of a type
/// that is not known.
pub(crate) const BAD: usize = 4;
/// Decodable events written: over 500 in each timeline, more than one page of the import.
const EVENTS: usize = 4_600;

/// `Event.to_dict()`: the dataclass fields in order, `timestamp` as `isoformat()`.
#[derive(Serialize)]
pub(crate) struct PythonEvent {
    pub(crate) id: String,
    event_type: String,
    payload: Json,
    timestamp: String,
    source: String,
    correlation_id: Option<String>,
    metadata: Json,
    /// The timeline's score: `timestamp.timestamp()`.
    #[serde(skip)]
    pub(crate) score: f64,
}

/// `json.dumps` with its defaults: `", "` and `": "` separators, non-ASCII escaped.
pub(crate) fn python_json(event: &PythonEvent) -> anyhow::Result<String> {
    let mut out = Vec::new();
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, PythonFormatter);
    event.serialize(&mut serializer)?;
    Ok(String::from_utf8(out)?)
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
fn isoformat(t: OffsetDateTime) -> String {
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
fn uuid4(rng: &mut fastrand::Rng) -> String {
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

/// One event as a publisher of the original made it.
struct Made {
    timeline: String,
    event: PythonEvent,
    /// The dotted type, the partition key field, and the sourcing fields moved out of
    /// the metadata.
    dotted: &'static str,
    key_field: Option<&'static str>,
    sourcing: Option<(String, u64, String)>,
}

fn make(n: usize, rng: &mut fastrand::Rng, correlations: &[String]) -> Made {
    let micros = if n.is_multiple_of(50) {
        0
    } else {
        rng.i64(1..1_000_000)
    };
    let at = now_minus(rng.i64(60..6 * 86_400), 0) + time::Duration::microseconds(micros);
    let published = isoformat(at + time::Duration::microseconds(70));
    let correlation = Some(correlations[n % correlations.len()].clone());
    let enriched = |source: &str| json!({"publisher_source": source, "published_at": published});
    let (timeline, dotted, key_field, source, payload, metadata, correlation, sourcing) = match n
        % 9
    {
        0 => (
            "EventType.OPPORTUNITY_CREATED",
            "opportunity.created",
            Some("opportunity_id"),
            "opportunity_service",
            json!({"opportunity_id": format!("opp-{n}"), "title": format!("Caf\u{e9} analytics {n}"),
                   "description": "Automated support", "ai_solution_type": "nlp",
                   "market_size_estimate": if n.is_multiple_of(2) { json!(5_000_000.0) } else { Json::Null },
                   "created_by": null}),
            enriched("opportunity_service"),
            correlation,
            None,
        ),
        1 => (
            "EventType.USER_REGISTERED",
            "user.registered",
            Some("user_id"),
            "user_service",
            json!({"user_id": format!("user-{n}"), "email": format!("u{n}@example.com"),
                   "username": null, "user_type": "user"}),
            enriched("user_service"),
            correlation,
            None,
        ),
        2 => (
            "EventType.AGENT_TASK_COMPLETED",
            "agent.task_completed",
            Some("agent_id"),
            "agent_orchestrator",
            json!({"agent_id": format!("agent-{}", n % 4), "task_id": format!("task-{n}"),
                   "task_type": "scan_subreddit", "duration_seconds": 12.5, "success": true,
                   "result": {"signals_found": n % 5}}),
            enriched("agent_orchestrator"),
            correlation,
            None,
        ),
        3 => (
            "EventType.SIGNAL_DETECTED",
            "signal.detected",
            Some("signal_id"),
            "monitoring_agent",
            json!({"signal_id": format!("signal-{n}"), "source": "reddit", "signal_type": "pain_point",
                   "content": "", "confidence": 0.82, "engagement_metrics": {"upvotes": n}}),
            enriched("monitoring_agent"),
            correlation,
            None,
        ),
        4 => (
            "EventType.SYSTEM_HEALTH_CHECK",
            "system.health_check",
            Some("component"),
            "system",
            json!({"component": "api", "status": "healthy", "response_time_ms": 3.25, "details": null}),
            enriched("system"),
            correlation,
            None,
        ),
        // The API's /publish: a plain string type and the caller's metadata only.
        5 => (
            "opportunity.created",
            "opportunity.created",
            Some("opportunity_id"),
            "admin_api",
            json!({"opportunity_id": format!("opp-{n}"), "title": "Posted by hand",
                   "description": "From the API", "ai_solution_type": "vision"}),
            json!({"requested_by": "admin-1"}),
            None,
            None,
        ),
        6 => (
            "feature_flag.updated",
            "feature_flag.updated",
            None,
            "feature_flags",
            json!({"flag_name": "new_ranking", "enabled": n.is_multiple_of(2), "updated_by": "admin-1"}),
            json!({}),
            None,
            None,
        ),
        7 => (
            "api.request_completed",
            "api.request_completed",
            None,
            "api_middleware",
            json!({"method": "GET", "path": "/api/v1/opportunities", "status_code": 200,
                   "response_time_ms": 18.75, "success": true}),
            json!({"correlation_id": "req-77", "component": "api_middleware"}),
            correlation,
            None,
        ),
        // publish_event_with_sourcing: the sourcing fields in the metadata.
        _ => {
            let cause = format!("cmd-{n}");
            (
                "EventType.OPPORTUNITY_UPDATED",
                "opportunity.updated",
                Some("opportunity_id"),
                "opportunity_service",
                json!({"opportunity_id": format!("opp-{}", n % 7), "changes": {"title": "New title"},
                   "updated_by": "user-456", "change_count": 1}),
                json!({"aggregate_id": format!("opp-{}", n % 7), "aggregate_type": "opportunity",
                   "aggregate_version": n / 9 + 1, "causation_id": cause, "command_id": cause,
                   "version": "1.0"}),
                correlation,
                Some((format!("opp-{}", n % 7), (n / 9 + 1) as u64, cause)),
            )
        }
    };
    let score = at.unix_timestamp_nanos() as f64 / 1e9;
    Made {
        timeline: timeline.to_string(),
        event: PythonEvent {
            id: uuid4(rng),
            event_type: timeline.to_string(),
            payload,
            timestamp: isoformat(at),
            source: source.to_string(),
            correlation_id: correlation,
            metadata,
            score,
        },
        dotted,
        key_field,
        sourcing,
    }
}

/// What the bus must hold for `made`.
fn expected(made: &Made) -> Json {
    let event = &made.event;
    let mut metadata = event.metadata.clone();
    let (mut aggregate_id, mut aggregate_type, mut aggregate_version, mut causation) =
        (Json::Null, Json::Null, Json::Null, Json::Null);
    if let Some((id, version, cause)) = &made.sourcing {
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
    let at = event_core::timestamp::parse(&event.timestamp).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    json!({
        "id": event.id,
        "event_type": made.dotted,
        "payload": event.payload,
        "timestamp": event_core::timestamp::format(at),
        "source": event.source,
        "correlation_id": event.correlation_id,
        "causation_id": causation,
        "metadata": metadata,
        "aggregate_id": aggregate_id,
        "aggregate_type": aggregate_type,
        "aggregate_version": aggregate_version,
        "partition_key": made.key_field.map(|f| event.payload[f].clone()).unwrap_or(Json::Null),
    })
}

/// Writes several hundred events over several types (both spellings), some expired, and
/// the bad bodies; returns what was written.
pub(crate) async fn write_original(client: &Client) -> anyhow::Result<Vec<Written>> {
    let mut rng = fastrand::Rng::with_seed(24);
    let correlations: Vec<String> = (0..5).map(|_| uuid4(&mut rng)).collect();
    let mut written = Vec::new();
    for n in 0..EVENTS + EXPIRED {
        let made = make(n, &mut rng, &correlations);
        publish_original(client, &made.timeline, &made.event).await?;
        // Every 17th body has passed its TTL: its id stays in the timeline.
        let expired = n % 17 == 5
            && written
                .iter()
                .filter(|w: &&Written| w.expected.is_none())
                .count()
                < EXPIRED;
        if expired {
            command(
                client,
                "DEL",
                vec![format!("event:{}", made.event.id).into()],
            )
            .await?;
        }
        written.push(Written {
            id: made.event.id.clone(),
            timeline: made.timeline.clone(),
            score: made.event.score,
            expected: (!expired).then(|| expected(&made)),
        });
    }
    let expired = written.iter().filter(|w| w.expected.is_none()).count();
    anyhow::ensure!(expired == EXPIRED, "{expired} expired");
    let bad = |timeline: &str, body: String, rng: &mut fastrand::Rng| {
        let id = uuid4(rng);
        (timeline.to_string(), id, body)
    };
    let now = isoformat(now_minus(30, 0));
    let mut bodies = vec![bad(
        "EventType.AGENT_STARTED",
        "{'id': 'agent-1', not json".into(),
        &mut rng,
    )];
    let shaped = |id: &str, event_type: &str, payload: Json| {
        json!({"id": id, "event_type": event_type, "payload": payload, "timestamp": now,
               "source": "svc", "correlation_id": null, "metadata": {}})
        .to_string()
    };
    for (timeline, payload) in [
        (
            "EventType.USER_REGISTERED",
            json!({"user_id": "user-x", "username": "no-email"}),
        ),
        ("EventType.BILLING_PAID", json!({"invoice": 1})),
        ("EventType.BILLING_PAID", json!({"invoice": 2})),
    ] {
        let id = uuid4(&mut rng);
        bodies.push((
            timeline.to_string(),
            id.clone(),
            shaped(&id, timeline, payload),
        ));
    }
    for (timeline, id, body) in bodies {
        command(
            client,
            "SETEX",
            vec![format!("event:{id}").into(), 604_800.into(), body.into()],
        )
        .await?;
        command(
            client,
            "ZADD",
            vec![
                format!("timeline:{timeline}").into(),
                "1764000000.5".into(),
                id.clone().into(),
            ],
        )
        .await?;
        written.push(Written {
            id,
            timeline,
            score: 1_764_000_000.5,
            expected: None,
        });
    }
    // A body in another type's timeline: imported with its own type, and found by the second
    // run although no timeline names that type.
    let id = uuid4(&mut rng);
    let payload = json!({"flag_name": "dark_mode", "enabled": true});
    let body = shaped(&id, "feature_flag.created", payload.clone());
    command(
        client,
        "SETEX",
        vec![format!("event:{id}").into(), 604_800.into(), body.into()],
    )
    .await?;
    let timeline = "EventType.AGENT_STARTED".to_string();
    command(
        client,
        "ZADD",
        vec![
            format!("timeline:{timeline}").into(),
            "1764000001.5".into(),
            id.clone().into(),
        ],
    )
    .await?;
    let at = event_core::timestamp::parse(&now)?;
    let expected = json!({
        "id": id, "event_type": "feature_flag.created", "payload": payload,
        "timestamp": event_core::timestamp::format(at), "source": "svc",
        "correlation_id": null, "causation_id": null, "metadata": {},
        "aggregate_id": null, "aggregate_type": null, "aggregate_version": null,
        "partition_key": null,
    });
    written.push(Written {
        id,
        timeline,
        score: 1_764_000_001.5,
        expected: Some(expected),
    });
    Ok(written)
}

/// One raw Redis command.
pub(crate) async fn command(
    client: &Client,
    name: &'static str,
    args: Vec<Value>,
) -> anyhow::Result<Value> {
    Ok(client.custom(fred::cmd!(name), args).await?)
}

/// The original's `publish_event`: four separate commands, with no pipeline.
async fn publish_original(
    client: &Client,
    timeline_type: &str,
    event: &PythonEvent,
) -> anyhow::Result<String> {
    let body = python_json(event)?;
    let ttl = Value::from(604_800);
    command(
        client,
        "PUBLISH",
        vec![
            format!("events:{timeline_type}").into(),
            body.clone().into(),
        ],
    )
    .await?;
    command(
        client,
        "SETEX",
        vec![
            format!("event:{}", event.id).into(),
            ttl.clone(),
            body.clone().into(),
        ],
    )
    .await?;
    command(
        client,
        "ZADD",
        vec![
            format!("timeline:{timeline_type}").into(),
            Value::from(event.score.to_string()),
            event.id.clone().into(),
        ],
    )
    .await?;
    command(
        client,
        "EXPIRE",
        vec![format!("timeline:{timeline_type}").into(), ttl],
    )
    .await?;
    Ok(body)
}
