//! Records another Kafka application wrote into the bus's topics, among thousands of events
//! of several types: tombstones, null keys, null header values, binary and non-UTF-8 values,
//! JSON that is no envelope, an envelope of another type than the topic's, and a record whose
//! timestamp the client cannot represent (its fetch could not be decoded at all before). Each
//! is dead-lettered once, every event is handled once, no partition is wedged, and a replay
//! returns the events alone. Against a real broker
//! (`EVENTBUS_TEST_KAFKA_BROKERS`) with Kafka's Java client (`EVENTBUS_TEST_KAFKA_CLASSPATH`).

mod support;

use support::Settings;

use std::collections::HashSet;
use std::time::Duration;

use anyhow::ensure;
use event_core::{
    DeadLetterReason, Event, EventBus, EventId, EventType, ReplayQuery, StartFrom, SubscriptionSpec,
};
use futures::TryStreamExt as _;
use support::{exactly, hex_field, kafka_script, quiescent, recorder};

/// Events of each type, published in two halves around the foreign records.
const EVENTS_PER_TYPE: usize = 1200;

/// The foreign records written to each partition of each topic: (what, key, value,
/// timestamp, headers), in `KafkaScript.java`'s fields. Each carries a `mark` header naming it.
fn foreign_records(
    valid_envelope: &str,
    other_type: &str,
) -> Vec<(&'static str, String, String, String, String)> {
    let far_future = i64::MAX.to_string();
    vec![
        (
            "tombstone",
            "k".into(),
            "-".into(),
            "-".into(),
            String::new(),
        ),
        (
            "binary, no key",
            "-".into(),
            hex_field(&[0, 159, 146, 150, 255]),
            "-".into(),
            String::new(),
        ),
        (
            "null header value",
            "k".into(),
            "plain text".into(),
            "-".into(),
            "\tempty=-".into(),
        ),
        (
            "not UTF-8",
            hex_field(&[0xc3, 0x28]),
            hex_field(&[0x7b, 0xc3, 0x28, 0x7d]),
            "-".into(),
            String::new(),
        ),
        (
            "JSON, no envelope",
            "k".into(),
            r#"{"id":"x","event_type":42}"#.into(),
            "-".into(),
            String::new(),
        ),
        (
            // A valid envelope, in the topic of another type: not for this topic's handlers.
            "envelope of another type",
            "k".into(),
            other_type.to_string(),
            "-".into(),
            String::new(),
        ),
        (
            // Valid JSON, but a timestamp past what the client's dates can hold: the fetch
            // could not be decoded at all.
            "timestamp out of range",
            "k".into(),
            valid_envelope.to_string(),
            far_future,
            String::new(),
        ),
    ]
}

#[tokio::test]
async fn foreign_records_are_dead_lettered_once_and_wedge_nothing() -> anyhow::Result<()> {
    let Some(brokers) = event_testkit::test_server("EVENTBUS_TEST_KAFKA_BROKERS", "kafka")? else {
        return Ok(());
    };
    let Some(classpath) = event_testkit::test_server("EVENTBUS_TEST_KAFKA_CLASSPATH", "kafka")?
    else {
        return Ok(());
    };
    let mut config = Settings::default();
    config.kafka.bootstrap_servers = brokers.split(',').map(|s| s.trim().to_string()).collect();
    config.kafka.topic_prefix = event_testkit::unique("eventbus-foreign");
    config.kafka.partitions = 2;
    let prefix = config.kafka.topic_prefix.clone();
    let bus = config.connect().await?;
    let tag = format!("{:08x}", fastrand::u32(..));
    let types = [
        EventType::new(format!("test.one{tag}"))?,
        EventType::new(format!("test.two{tag}"))?,
    ];
    let handler = format!("foreign{tag}");
    let (recorder, handled) = recorder(&handler);
    bus.subscribe(
        SubscriptionSpec::new(handler.clone(), types.clone()).start_from(StartFrom::Earliest),
        recorder,
    )
    .await?;

    let publish_half = |half: usize| {
        let bus = &bus;
        let types = &types;
        async move {
            let mut ids = Vec::new();
            for event_type in types {
                let events: Vec<Event> = (0..EVENTS_PER_TYPE / 2)
                    .map(|n| {
                        Event::builder(event_type.clone(), "bus")
                            .partition_key(format!("key-{}-{}", half, n % 13))
                            .build()
                    })
                    .collect::<Result<_, _>>()?;
                for chunk in events.chunks(200) {
                    for id in bus.publish_batch(chunk.to_vec()).await {
                        ids.push(id?);
                    }
                }
            }
            anyhow::Ok(ids)
        }
    };
    let mut valid: HashSet<EventId> = publish_half(0).await?.into_iter().collect();

    // The broker refuses timestamps an hour past its clock unless the topic allows them.
    let mut script = String::new();
    let mut marks = Vec::new();
    for event_type in &types {
        let topic = format!("{prefix}.{event_type}");
        script.push_str(&format!(
            "CONFIG\t{topic}\tmessage.timestamp.after.max.ms\t{}\n",
            i64::MAX
        ));
    }
    script.push_str("PRODUCER\t-\n");
    for event_type in &types {
        let topic = format!("{prefix}.{event_type}");
        for partition in 0..2 {
            let encode = |event_type: &EventType| -> anyhow::Result<String> {
                let envelope = Event::builder(event_type.clone(), "java").build()?;
                Ok(String::from_utf8(
                    event_core::JsonCodec::default().encode(&envelope)?,
                )?)
            };
            let other = types.iter().find(|t| *t != event_type).expect("two types");
            for (what, key, value, timestamp, headers) in
                foreign_records(&encode(event_type)?, &encode(other)?)
            {
                let mark = format!("{what}/{topic}/{partition}");
                script.push_str(&format!(
                    "SEND\t{topic}\t{partition}\t{key}\t{value}\t{timestamp}\tmark={mark}{headers}\n"
                ));
                marks.push(mark);
            }
        }
    }
    script.push_str("FLUSH\n");
    kafka_script(&classpath, &brokers, &script).await?;
    valid.extend(publish_half(1).await?);

    quiescent(&bus, &handler, Duration::from_secs(90)).await?;
    exactly(&handled.lock().unwrap(), &valid)?;
    let letters = bus.dead_letters(&handler, 10_000).await?;
    ensure!(
        letters
            .iter()
            .all(|l| l.reason == DeadLetterReason::InvalidEnvelope && l.event.is_none()),
        "unexpected dead letters: {letters:?}"
    );
    for mark in &marks {
        let found = letters
            .iter()
            .filter(|l| {
                l.raw
                    .as_deref()
                    .is_some_and(|raw| raw.contains(&format!("mark={mark}")))
            })
            .count();
        ensure!(found == 1, "{mark}: dead-lettered {found} times, not once");
    }
    ensure!(
        letters.len() == marks.len(),
        "{} dead letters for {} foreign records",
        letters.len(),
        marks.len()
    );
    let out_of_range = letters.iter().find(|l| {
        l.raw
            .as_deref()
            .is_some_and(|r| r.contains("mark=timestamp out of range"))
    });
    ensure!(
        out_of_range.is_some_and(|l| l.last_error.contains("undecodable")),
        "the record with a timestamp out of range should say why: {out_of_range:?}"
    );
    // A replay returns the events alone: no foreign record, and no envelope read from the
    // topic of another type (by type, and of every type).
    let from = time::OffsetDateTime::now_utc() - Duration::from_secs(3600);
    for query in [
        ReplayQuery::new(types.clone(), from),
        ReplayQuery::new([], from),
    ] {
        let replayed: Vec<Event> = bus.replay(query).await?.try_collect().await?;
        let ids: HashSet<EventId> = replayed.iter().map(|e| e.id).collect();
        ensure!(
            replayed.len() == valid.len() && ids == valid,
            "replay returned {} events ({} distinct) for {} published",
            replayed.len(),
            ids.len(),
            valid.len()
        );
    }
    bus.shutdown().await?;
    Ok(())
}
