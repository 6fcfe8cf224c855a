//! What a migration writes (`eventbus copy`): a topic's records with offsets and event ids, a
//! handler's start set by committed offsets (which win over `StartFrom`), and dead letters
//! imported with their provenance.

mod support;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::ensure;
use event_core::{
    DeadLetter, DeadLetterReason, Event, EventBus, EventId, EventType, HandlerError, StartFrom,
    SubscriptionSpec, handler_fn,
};
use event_testkit::{test_server, unique};
use support::Settings;
use tokio::time::Instant;

/// Events published before the handler's start is set (more than one fetch).
const EVENTS: usize = 1200;

#[tokio::test]
async fn a_group_starts_at_committed_offsets_and_dead_letters_keep_their_provenance()
-> anyhow::Result<()> {
    let Some(brokers) = test_server("EVENTBUS_TEST_KAFKA_BROKERS", "kafka")? else {
        return Ok(());
    };
    let prefix = unique("kafka-migration");
    let mut config = Settings::on(&brokers);
    config.kafka.topic_prefix = prefix.clone();
    config.kafka.partitions = 3;
    config.bus.consumer_group = prefix.clone();
    config.bus.enable_event_sourcing = false;
    let bus = config.connect().await?;
    let event_type = EventType::new("migrated.thing")?;

    // A new topic is created, empty.
    let empty = bus.topic_records(&event_type).await?;
    ensure!(empty.len() == 3 && empty.iter().all(|p| p.end == 0 && p.records.is_empty()));

    let event = |n: usize| {
        Event::builder(event_type.clone(), "migration-test")
            .field("n", n)
            .partition_key(format!("k{}", n % 12))
            .build()
    };
    let events: Vec<Event> = (0..EVENTS).map(event).collect::<Result<_, _>>()?;
    for chunk in events.chunks(300) {
        for r in bus.publish_batch(chunk.to_vec()).await {
            r?;
        }
    }
    let records = bus.topic_records(&event_type).await?;
    let listed: HashSet<EventId> = records
        .iter()
        .flat_map(|p| p.records.iter().filter_map(|(_, id)| *id))
        .collect();
    ensure!(listed == events.iter().map(|e| e.id).collect::<HashSet<_>>());
    ensure!(records.iter().map(|p| p.records.len()).sum::<usize>() == EVENTS);

    // The handler starts half-way through partition 0 and at the end of the others.
    let first = &records[0];
    let half = first.records.len() / 2;
    let mut expected: HashSet<EventId> = first.records[half..]
        .iter()
        .filter_map(|(_, id)| *id)
        .collect();
    let offsets: Vec<(i32, i64)> = records
        .iter()
        .map(|p| {
            if p.partition == 0 {
                (0, p.records[half].0)
            } else {
                (p.partition, p.end)
            }
        })
        .collect();
    bus.commit_group_offsets("mover", &event_type, &offsets)
        .await?;
    let handled = Arc::new(Mutex::new(Vec::<EventId>::new()));
    let record = handled.clone();
    bus.subscribe(
        // Earliest applies to partitions without a committed offset: none here.
        SubscriptionSpec::new("mover", [event_type.clone()]).start_from(StartFrom::Earliest),
        handler_fn("mover", move |event: Arc<Event>| {
            let record = record.clone();
            async move {
                record.lock().unwrap().push(event.id);
                Ok::<(), HandlerError>(())
            }
        }),
    )
    .await?;
    let later: Vec<Event> = (EVENTS..EVENTS + 30).map(event).collect::<Result<_, _>>()?;
    for r in bus.publish_batch(later.clone()).await {
        r?;
    }
    expected.extend(later.iter().map(|e| e.id));
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let seen: HashSet<EventId> = handled.lock().unwrap().iter().copied().collect();
        if seen.is_superset(&expected) {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "{} of {} handled",
            seen.intersection(&expected).count(),
            expected.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // With a member live, Kafka refuses a standalone commit.
    ensure!(
        bus.commit_group_offsets("mover", &event_type, &offsets)
            .await
            .is_err(),
        "a commit over a live group was accepted"
    );
    bus.shutdown().await?;
    let seen: HashSet<EventId> = handled.lock().unwrap().iter().copied().collect();
    ensure!(
        seen == expected,
        "{} handled outside the start",
        seen.difference(&expected).count()
    );

    // A dead letter from another backend, with its provenance.
    let bus = config.connect().await?;
    let failed_at = time::OffsetDateTime::now_utc() - time::Duration::hours(3);
    let letter = DeadLetter {
        id: "1764201600000-0".into(),
        handler: "mover".into(),
        group: "elsewhere.mover".into(),
        reason: DeadLetterReason::RetriesExhausted,
        event: Some(events[7].clone()),
        raw: None,
        attempts: 4,
        first_error: "first: timeout".into(),
        last_error: "last: refused".into(),
        first_failed_at: failed_at,
        last_failed_at: failed_at + time::Duration::minutes(2),
        dead_lettered_at: failed_at + time::Duration::minutes(3),
    };
    bus.import_dead_letter(&letter).await?;
    let letters = bus.dead_letters("mover", 10).await?;
    ensure!(letters.len() == 1, "{letters:?}");
    let found = &letters[0];
    ensure!(
        found.group == format!("{prefix}.mover")
            && DeadLetter {
                id: letter.id.clone(),
                group: letter.group.clone(),
                ..found.clone()
            } == letter,
        "the dead letter changed: {found:?}"
    );
    bus.shutdown().await?;
    Ok(())
}
