//! The original's data, written as its Python code wrote it: the helper of
//! `migrate_original.rs`. The events themselves are `original_data`'s.

use fred::prelude::Client;
use fred::types::Value;
use serde_json::{Value as Json, json};

use super::original_data::imported::command;
use super::original_data::{
    Case, Mix, NOT_JSON, Nth, OriginalEvent, PythonEvent, agent_task_completed,
    feature_flag_updated, isoformat, make, opportunity_created, opportunity_updated_with_sourcing,
    plain, posted_opportunity, python_json, request_completed, unimportable, user_registered,
    uuid4,
};
use super::{Written, now_minus};

/// Ids in a timeline whose body has expired.
pub(crate) const EXPIRED: usize = 20;
/// Bodies that cannot be imported: one not JSON, one failing its schema, two of a type
/// that is not known.
pub(crate) const BAD: usize = 4;
/// Decodable events written: over 500 in each timeline, more than one page of the import.
const EVENTS: usize = 4_600;

/// Nine kinds over six days, in both spellings of the type; every 50th on a whole second.
fn mix() -> Mix {
    Mix {
        kinds: vec![
            |nth| {
                let sized = nth.n.is_multiple_of(2);
                opportunity_created(
                    nth,
                    if sized {
                        json!(5_000_000.0)
                    } else {
                        Json::Null
                    },
                )
            },
            user_registered,
            agent_task_completed,
            signal_detected,
            health_check,
            posted_opportunity,
            feature_flag_updated,
            request_completed,
            opportunity_updated_with_sourcing,
        ],
        whole_second_every: 50,
        oldest: 6 * 86_400,
    }
}

/// `publish_signal_detected`.
fn signal_detected(nth: &Nth) -> Case {
    let n = nth.n;
    Case::published(
        nth,
        ("EventType.SIGNAL_DETECTED", "signal.detected"),
        Some("signal_id"),
        "monitoring_agent",
        json!({"signal_id": format!("signal-{n}"), "source": "reddit", "signal_type": "pain_point",
               "content": "", "confidence": 0.82, "engagement_metrics": {"upvotes": n}}),
    )
}

/// `publish_system_health_check`.
fn health_check(nth: &Nth) -> Case {
    Case::published(
        nth,
        ("EventType.SYSTEM_HEALTH_CHECK", "system.health_check"),
        Some("component"),
        "system",
        json!({"component": "api", "status": "healthy", "response_time_ms": 3.25, "details": null}),
    )
}

/// Its timeline score: `timestamp.timestamp()`.
fn score(event: &PythonEvent) -> anyhow::Result<f64> {
    Ok(event_core::timestamp::parse(&event.timestamp)?.unix_timestamp_nanos() as f64 / 1e9)
}

/// A body as the tests write those the import cannot store: compact JSON.
fn compact(event: &PythonEvent) -> anyhow::Result<String> {
    Ok(serde_json::to_value(event)?.to_string())
}

/// Writes several hundred events over several types (both spellings), some expired, and
/// the bad bodies; returns what was written.
pub(crate) async fn write_original(client: &Client) -> anyhow::Result<Vec<Written>> {
    let mut rng = fastrand::Rng::with_seed(24);
    let correlations: Vec<String> = (0..5).map(|_| uuid4(&mut rng)).collect();
    let mix = mix();
    let mut written = Vec::new();
    for n in 0..EVENTS + EXPIRED {
        let correlation = correlations[n % correlations.len()].clone();
        let made: OriginalEvent = make(n, &mut rng, &mix, correlation);
        let timeline = made.event.event_type.clone();
        let score = score(&made.event)?;
        publish_original(client, &timeline, &made.event, score).await?;
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
            timeline,
            score,
            expected: (!expired).then(|| made.expected()),
        });
    }
    let expired = written.iter().filter(|w| w.expected.is_none()).count();
    anyhow::ensure!(expired == EXPIRED, "{expired} expired");
    let now = isoformat(now_minus(30, 0));
    let (not_json_type, not_json) = NOT_JSON;
    let mut bodies = vec![(
        not_json_type.to_string(),
        uuid4(&mut rng),
        not_json.to_string(),
    )];
    for event in unimportable(&mut rng, &now) {
        bodies.push((event.event_type.clone(), event.id.clone(), compact(&event)?));
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
    let body = compact(&plain(
        id.clone(),
        "feature_flag.created",
        payload.clone(),
        &now,
    ))?;
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

/// The original's `publish_event`: four separate commands, with no pipeline.
async fn publish_original(
    client: &Client,
    timeline_type: &str,
    event: &PythonEvent,
    score: f64,
) -> anyhow::Result<String> {
    let body = python_json(event);
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
            Value::from(score.to_string()),
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
