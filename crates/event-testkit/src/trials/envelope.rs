//! The envelope survives the trip: every field, to a handler and through replay.

use anyhow::{Context as _, ensure};
use event_core::{Event, EventId, EventType, ReplayQuery};
use serde_json::{Value, json};
use time::{Duration, OffsetDateTime};

use crate::fixture::Fixture;
use crate::support::{Recorder, SOURCE, fresh_type, replay_all, subscribe};

/// A random version 4 UUID, so the trial also checks that ids not made by this crate are kept.
fn foreign_id() -> anyhow::Result<EventId> {
    let hex = format!("{:032x}", fastrand::u128(..));
    let id = format!(
        "{}-{}-4{}-8{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    );
    Ok(id.parse()?)
}

/// An event with every envelope field set to something that is easy to damage in transit.
fn rich_event(event_type: &EventType) -> anyhow::Result<Event> {
    let at = (OffsetDateTime::now_utc() - Duration::seconds(2)).replace_microsecond(654_321)?;
    let mut event = Event::builder(event_type.clone(), "envelope_trial_source")
        .id(foreign_id()?)
        .timestamp(at)
        .payload(json!({
            "title": "Ünïcödé ✓ 日本語 🚀 \"quoted\" back\\slash\nnew line\ttab \u{0}",
            "nested": {
                "list": [1, "two", {"three": 3.5}, null, true, [[]]],
                "empty_object": {},
                "empty_list": [],
                "deeper": {"a": {"b": {"c": {"d": "e"}}}}
            },
            "u64_max": u64::MAX,
            "i64_min": i64::MIN,
            "zero": 0,
            "tenth": 0.1,
            "pi": std::f64::consts::PI,
            "huge": 1.797_693_134_862_315_7e308,
            "tiny": 5e-324,
            "negative": -273.15,
            "integral_float": 2.0,
        }))
        .correlation_id("req-456-ü")
        .causation_id("evt-123")
        .partition_key("key-ü-🚀")
        .metadata("publisher_source", "opportunity_service")
        .metadata("published_at", "2026-11-26T22:00:00.123456Z")
        .metadata("trace", json!({"spans": [1, 2, 3], "sampled": true}))
        .schema_version(7)
        .aggregate("opportunity", "opp-123")
        .build()?;
    event.aggregate_version = Some(42);
    event
        .extra
        .insert("x_future_field".into(), json!({"deep": [1, 2.5, "s"]}));
    event.extra.insert("x_trace".into(), json!("abc"));
    Ok(event)
}

/// Checks two envelopes are equal, naming the fields that differ.
fn same_envelope(expected: &Event, actual: &Event) -> anyhow::Result<()> {
    if expected == actual {
        return Ok(());
    }
    let (Value::Object(want), Value::Object(got)) = (
        serde_json::to_value(expected)?,
        serde_json::to_value(actual)?,
    ) else {
        anyhow::bail!("an envelope did not encode to an object");
    };
    let mut differences = Vec::new();
    for (key, value) in &want {
        if got.get(key) != Some(value) {
            differences.push(format!("{key}: sent {value}, got {:?}", got.get(key)));
        }
    }
    for key in got.keys().filter(|k| !want.contains_key(*k)) {
        differences.push(format!("{key}: not sent, got {}", got[key]));
    }
    anyhow::bail!(
        "the envelope changed in transit:\n  {}",
        differences.join("\n  ")
    )
}

/// Every envelope field (ids, unicode, big numbers, floats, microseconds, extra fields) reaches a handler unchanged.
pub(crate) async fn fields_survive_delivery(fx: &Fixture) -> anyhow::Result<()> {
    let bus = fx.bus().await?;
    let event_type = fresh_type("created");
    let recorder = Recorder::fresh();
    subscribe(&*bus, &recorder, [event_type.clone()]).await?;
    let event = rich_event(&event_type)?;
    let id = bus.publish(event.clone()).await?;
    ensure!(
        id == event.id,
        "publish returned {id}, not the event's id {}",
        event.id
    );
    recorder.wait_for_event(&id).await?;
    let handled = recorder.handled();
    ensure!(
        handled.len() == 1,
        "the handler got {} events",
        handled.len()
    );
    same_envelope(&event, &handled[0]).context("delivered to a handler")?;
    bus.shutdown().await?;
    Ok(())
}

/// Every envelope field comes back unchanged through replay.
pub(crate) async fn fields_survive_replay(fx: &Fixture) -> anyhow::Result<()> {
    let bus = fx.bus().await?;
    let event_type = fresh_type("created");
    let event = rich_event(&event_type)?;
    bus.publish(event.clone()).await?;
    let from = event.timestamp - Duration::seconds(1);
    let replayed = replay_all(&*bus, ReplayQuery::new([event_type], from)).await?;
    ensure!(
        replayed.len() == 1,
        "replay returned {} events",
        replayed.len()
    );
    same_envelope(&event, &replayed[0]).context("read back by replay")?;
    bus.shutdown().await?;
    Ok(())
}

/// An event with only the required fields arrives with its optional fields still empty.
pub(crate) async fn minimal_event_survives(fx: &Fixture) -> anyhow::Result<()> {
    let bus = fx.bus().await?;
    let event_type = fresh_type("created");
    let recorder = Recorder::fresh();
    subscribe(&*bus, &recorder, [event_type.clone()]).await?;
    let event = Event::builder(event_type.clone(), SOURCE).build()?;
    let id = bus.publish(event.clone()).await?;
    recorder.wait_for_event(&id).await?;
    let got = &recorder.handled()[0];
    same_envelope(&event, got)?;
    ensure!(
        got.correlation_id.is_none()
            && got.causation_id.is_none()
            && got.partition_key.is_none()
            && got.aggregate_id.is_none()
            && got.aggregate_type.is_none()
            && got.aggregate_version.is_none(),
        "optional fields were filled in transit: {got:?}"
    );
    ensure!(
        got.payload.is_empty() && got.metadata.is_empty() && got.extra.is_empty(),
        "empty objects were filled in transit: {got:?}"
    );
    ensure!(
        got.schema_version == event_core::CURRENT_SCHEMA_VERSION,
        "schema version {} instead of {}",
        got.schema_version,
        event_core::CURRENT_SCHEMA_VERSION
    );
    bus.shutdown().await?;
    Ok(())
}
