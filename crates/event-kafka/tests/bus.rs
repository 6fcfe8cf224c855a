//! What the conformance suite does not check and is particular to Kafka: a foreign record in
//! an event topic is dead-lettered with provenance and never wedges its partition; dead
//! letters are records with provenance headers; a topic that existed with other settings is
//! reported by health; concurrent single publishes gathered into shared requests keep each
//! key's order. Against a real broker (`EVENTBUS_TEST_KAFKA_BROKERS`).

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::Settings;

use anyhow::{Context as _, ensure};
use event_core::{
    DeadLetterReason, Event, EventBus, EventType, HandlerError, HealthStatus, SubscriptionSpec,
    handler_fn,
};
use rskafka::client::ClientBuilder;
use rskafka::client::partition::{OffsetAt, UnknownTopicHandling};

fn config(brokers: &str) -> Settings {
    let mut config = Settings::default();
    config.kafka.bootstrap_servers = brokers.split(',').map(|s| s.trim().to_string()).collect();
    config.kafka.topic_prefix = format!("eventbus-bus-test-{:08x}", fastrand::u32(..));
    config.kafka.partitions = 1;
    config
}

fn fresh(what: &str) -> String {
    format!("{what}{:08x}", fastrand::u32(..))
}

async fn wait_until(what: &str, mut ready: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !ready() {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

#[tokio::test]
async fn a_foreign_record_is_dead_lettered_with_provenance() -> anyhow::Result<()> {
    let Some(brokers) = event_testkit::test_server("EVENTBUS_TEST_KAFKA_BROKERS", "kafka")? else {
        return Ok(());
    };
    let config = config(&brokers);
    let bus = config.connect().await?;
    let event_type = EventType::new(format!("test.{}", fresh("created")))?;
    let handler = fresh("audit");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    bus.subscribe(
        SubscriptionSpec::new(handler.clone(), [event_type.clone()]),
        handler_fn(handler.clone(), move |event: Arc<Event>| {
            let record = record.clone();
            async move {
                record.lock().unwrap().push(event.id);
                Ok::<(), HandlerError>(())
            }
        }),
    )
    .await?;

    // Another client, Kafka's own console producer, writes a record that is not an envelope
    // (the topic is new, so it is offset 0), then we publish an event.
    let topic = format!("{}.{}", config.kafka.topic_prefix, event_type);
    let Some(classpath) = event_testkit::test_server("EVENTBUS_TEST_KAFKA_CLASSPATH", "kafka")?
    else {
        return Ok(());
    };
    support::console_produce(&classpath, &brokers, &topic, &[], "not an envelope\n").await?;
    let client = ClientBuilder::new(vec![brokers.clone()]).build().await?;
    let event = Event::builder(event_type.clone(), "bus_test").build()?;
    let id = bus.publish(event).await?;
    wait_until("the event after the foreign record", || {
        seen.lock().unwrap().contains(&id)
    })
    .await?;

    let letters = bus.dead_letters(&handler, 10).await?;
    ensure!(letters.len() == 1, "dead letters: {letters:?}");
    let letter = &letters[0];
    ensure!(
        letter.reason == DeadLetterReason::InvalidEnvelope,
        "{letter:?}"
    );
    ensure!(letter.event.is_none(), "{letter:?}");
    let raw = letter.raw.as_deref().context("no raw text")?;
    ensure!(raw.contains("not an envelope"), "raw text {raw:?}");

    // The dead letter is a record with its provenance in headers.
    let group = format!("{}.{handler}", config.bus.consumer_group);
    let dlq = client
        .partition_client(
            format!("{}.dlq.{group}", config.kafka.topic_prefix),
            0,
            UnknownTopicHandling::Retry,
        )
        .await?;
    let start = dlq.get_offset(OffsetAt::Earliest).await?;
    let (records, _) = dlq.fetch_records(start, 1..1_000_000, 1_000).await?;
    let stored = records.first().context("no dead-letter record")?;
    let header = |name: &str| {
        stored
            .record
            .headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    ensure!(
        header("dlq_reason").as_deref() == Some("invalid_envelope")
            || header("dlq_reason").is_some_and(|r| r.to_lowercase().contains("invalid")),
        "dlq_reason {:?}",
        header("dlq_reason")
    );
    ensure!(header("dlq_handler").as_deref() == Some(handler.as_str()));
    ensure!(header("dlq_group").as_deref() == Some(group.as_str()));
    ensure!(header("dlq_original_topic").as_deref() == Some(topic.as_str()));
    ensure!(header("dlq_original_partition").as_deref() == Some("0"));
    ensure!(header("dlq_original_offset").as_deref() == Some("0"));
    bus.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn health_reports_a_topic_with_other_settings() -> anyhow::Result<()> {
    let Some(brokers) = event_testkit::test_server("EVENTBUS_TEST_KAFKA_BROKERS", "kafka")? else {
        return Ok(());
    };
    let mut config = config(&brokers);
    config.kafka.partitions = 2;
    let event_type = EventType::new(format!("test.{}", fresh("created")))?;
    let topic = format!("{}.{}", config.kafka.topic_prefix, event_type);
    let client = ClientBuilder::new(vec![brokers.clone()]).build().await?;
    client
        .controller_client()?
        .create_topic(topic.clone(), 1, 1, 10_000)
        .await?;
    let bus = config.connect().await?;
    bus.publish(Event::builder(event_type, "bus_test").build()?)
        .await?;
    let health = bus.health().await;
    ensure!(
        health.status == HealthStatus::Degraded,
        "health is {health:?}"
    );
    ensure!(
        health
            .problems
            .iter()
            .any(|p| p.contains(&topic) && p.contains("1 partitions")),
        "problems: {:?}",
        health.problems
    );
    bus.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn stats_show_handlers_of_other_processes() -> anyhow::Result<()> {
    let Some(brokers) = event_testkit::test_server("EVENTBUS_TEST_KAFKA_BROKERS", "kafka")? else {
        return Ok(());
    };
    let config = config(&brokers);
    let event_type = EventType::new(format!("test.{}", fresh("created")))?;
    let handler = fresh("audit");
    let consumer = config.connect().await?;
    let seen = Arc::new(Mutex::new(0usize));
    let count = seen.clone();
    consumer
        .subscribe(
            SubscriptionSpec::new(handler.clone(), [event_type.clone()]),
            handler_fn(handler.clone(), move |_: Arc<Event>| {
                let count = count.clone();
                async move {
                    *count.lock().unwrap() += 1;
                    Ok::<(), HandlerError>(())
                }
            }),
        )
        .await?;
    for _ in 0..3 {
        consumer
            .publish(Event::builder(event_type.clone(), "bus_test").build()?)
            .await?;
    }
    wait_until("three events handled", || *seen.lock().unwrap() == 3).await?;
    consumer.shutdown().await?;

    // Another process (another bus) publishes two more and reads the stats.
    let other = config.connect().await?;
    for _ in 0..2 {
        other
            .publish(Event::builder(event_type.clone(), "bus_test").build()?)
            .await?;
    }
    let stats = other.stats().await?;
    let seen = stats
        .handlers
        .get(&handler)
        .with_context(|| format!("stats do not list {handler}: {stats:?}"))?;
    ensure!(
        seen.group == format!("{}.{handler}", config.bus.consumer_group),
        "{seen:?}"
    );
    ensure!(seen.event_types == [event_type.to_string()], "{seen:?}");
    ensure!(seen.lag == 2 && seen.subscriptions == 0, "{seen:?}");
    other.shutdown().await?;
    Ok(())
}

/// Many tasks publishing single events of two types (one handler takes both) to one partition
/// each at once: their publishes are gathered into shared produce requests (more than one
/// request's worth at a time, about 1.4 MB in all, more than one fetch returns), and still
/// every publish that returned `Ok` is handled, once, and each key's events arrive in the
/// order its task published them. Faults in the middle (a broker killed, a leader failing
/// over) are the chaos and cluster tests', whose publishers use single publishes too.
#[tokio::test]
async fn concurrent_single_publishes_keep_each_keys_order() -> anyhow::Result<()> {
    const TASKS: usize = 32;
    const EACH: usize = 150;
    let Some(brokers) = event_testkit::test_server("EVENTBUS_TEST_KAFKA_BROKERS", "kafka")? else {
        return Ok(());
    };
    let config = config(&brokers);
    let event_types = [
        EventType::new(format!("test.{}", fresh("gathered")))?,
        EventType::new(format!("test.{}", fresh("gathered")))?,
    ];
    let bus = config.connect().await?;
    let handled: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
    let seen = handled.clone();
    bus.subscribe(
        SubscriptionSpec::new(fresh("gathered"), event_types.clone())
            .start_from(event_core::StartFrom::Earliest),
        handler_fn("gathered", move |event: Arc<Event>| {
            let seen = seen.clone();
            async move {
                let key = event.partition_key.clone().unwrap_or_default();
                let seq = event
                    .payload
                    .get("seq")
                    .and_then(|v| v.as_u64())
                    .unwrap_or(u64::MAX);
                seen.lock().unwrap().push((key, seq));
                Ok::<(), HandlerError>(())
            }
        }),
    )
    .await?;
    let filler = "x".repeat(200);
    let publishers: Vec<_> = (0..TASKS)
        .map(|task| {
            // Half the tasks publish one type, half the other: two partitions' queues.
            let event_type = event_types[task % 2].clone();
            let (bus, filler) = (bus.clone(), filler.clone());
            tokio::spawn(async move {
                for seq in 0..EACH {
                    let event = Event::builder(event_type.clone(), "bus_test")
                        .partition_key(format!("key-{task}"))
                        .field("seq", seq)
                        .field("filler", filler.as_str())
                        .build()?;
                    bus.publish(event).await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    for publisher in publishers {
        tokio::time::timeout_at(deadline, publisher)
            .await
            .context("a publish did not return within 120 s")???;
    }
    while handled.lock().unwrap().len() < TASKS * EACH {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "{} of {} events handled after 120 s",
            handled.lock().unwrap().len(),
            TASKS * EACH
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let handled = handled.lock().unwrap().clone();
    ensure!(
        handled.len() == TASKS * EACH,
        "{} handled for {} published",
        handled.len(),
        TASKS * EACH
    );
    let mut next: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    for (key, seq) in handled {
        let expected = next.entry(key.clone()).or_insert(0);
        ensure!(
            seq == *expected,
            "{key}: event {seq} handled where {expected} was due"
        );
        *expected += 1;
    }
    ensure!(
        next.len() == TASKS,
        "{} keys handled, {TASKS} published",
        next.len()
    );
    bus.shutdown().await?;
    Ok(())
}
