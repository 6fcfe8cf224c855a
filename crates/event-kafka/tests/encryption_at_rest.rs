//! Payload encryption as a foreign reader of the topics sees it: Kafka's own console consumer
//! (from the jars on `EVENTBUS_TEST_KAFKA_CLASSPATH`) reads the event topic and the dead-letter
//! topic of a bus with `ENABLE_EVENT_ENCRYPTION=true`, and finds the routing fields (key,
//! `event_type` header, envelope id and type) but never a payload's plaintext, while the handler
//! and the dead letters get every event unchanged.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, ensure};
use event_core::encryption::EncryptionKeys;
use event_core::{
    Event, EventBus, EventType, HandlerError, StartFrom, SubscriptionSpec, handler_fn,
};
use serde_json::json;
use support::{Settings, kafka_tool};

const KEYS: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
/// What every payload holds and no record may show.
const SECRET: &str = "s3cret-payload";
const EVENTS: usize = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_consumer_sees_only_ciphertext() -> anyhow::Result<()> {
    let Some(brokers) = event_testkit::test_server("EVENTBUS_TEST_KAFKA_BROKERS", "kafka")? else {
        return Ok(());
    };
    let Some(classpath) = event_testkit::test_server("EVENTBUS_TEST_KAFKA_CLASSPATH", "kafka")?
    else {
        return Ok(());
    };
    let mut config = Settings::on(&brokers);
    config.kafka.topic_prefix = format!("eventbus-encrypt-{:08x}", fastrand::u32(..));
    config.bus.encryption_keys = Some(EncryptionKeys::parse(KEYS).map_err(anyhow::Error::msg)?);
    config.bus.encrypt_payloads = true;
    let bus = config.connect().await?;
    let event_type = EventType::new(format!("card.paid{:08x}", fastrand::u32(..)))?;
    let events: Vec<Event> = (0..EVENTS)
        .map(|n| {
            Event::builder(event_type.clone(), "encryption_test")
                .payload(json!({"n": n, "card": format!("{SECRET}-{n}"), "fail": n == 7}))
                .partition_key(format!("k{}", n % 8))
                .build()
        })
        .collect::<Result<_, _>>()?;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let handler = handler_fn("settle", move |event: Arc<Event>| {
        record.lock().unwrap().push(event.clone());
        async move {
            if event.payload["fail"] == json!(true) {
                Err(HandlerError::permanent("refused"))
            } else {
                Ok(())
            }
        }
    });
    let spec =
        SubscriptionSpec::new("settle", [event_type.clone()]).start_from(StartFrom::Earliest);
    let _subscription = bus.subscribe(spec, handler).await?;
    for chunk in events.chunks(100) {
        for id in bus.publish_batch(chunk.to_vec()).await {
            id?;
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let letters = loop {
        let letters = bus.dead_letters("settle", 10).await?;
        if seen.lock().unwrap().len() >= EVENTS && !letters.is_empty() {
            break letters;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting: {} handled, {} dead letters",
            seen.lock().unwrap().len(),
            letters.len()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    ensure!(
        letters[0]
            .event
            .as_ref()
            .is_some_and(|e| e.payload == events[7].payload),
        "the dead letter does not hold the plaintext event: {letters:?}"
    );
    for event in seen.lock().unwrap().iter() {
        let original = events
            .iter()
            .find(|e| e.id == event.id)
            .context("unknown event")?;
        ensure!(
            **event == *original,
            "the handler got {event:?}, not {original:?}"
        );
    }

    let topic = format!("{}.{event_type}", config.kafka.topic_prefix);
    let records = console_consume(&classpath, &brokers, &topic, EVENTS).await?;
    ensure!(
        records.lines().count() >= EVENTS,
        "the console consumer read {} records",
        records.lines().count()
    );
    ensure!(
        !records.contains(SECRET),
        "a record shows a plaintext payload"
    );
    for needle in [
        "ciphertext",
        "encryption_key_id",
        event_type.as_str(),
        &events[0].id.to_string(),
        "k3",
    ] {
        ensure!(records.contains(needle), "no record shows {needle:?}");
    }
    let group = format!("{}.settle", config.bus.consumer_group);
    let dlq = format!("{}.dlq.{group}", config.kafka.topic_prefix);
    let letters = console_consume(&classpath, &brokers, &dlq, 1).await?;
    ensure!(
        letters.contains("ciphertext"),
        "the dead-letter topic holds no sealed event"
    );
    ensure!(
        !letters.contains(SECRET),
        "the dead-letter topic shows a plaintext payload"
    );
    bus.shutdown().await?;
    Ok(())
}

/// The first `n` records of `topic`, one per line with key and headers, read by Kafka's
/// `ConsoleConsumer`.
async fn console_consume(
    classpath: &str,
    brokers: &str,
    topic: &str,
    n: usize,
) -> anyhow::Result<String> {
    let n = n.to_string();
    let (stdout, _) = kafka_tool(
        classpath,
        "org.apache.kafka.tools.consumer.ConsoleConsumer",
        brokers,
        &[
            "--topic",
            topic,
            "--from-beginning",
            "--max-messages",
            &n,
            "--timeout-ms",
            "30000",
            "--property",
            "print.key=true",
            "--property",
            "print.headers=true",
        ],
    )
    .await?;
    Ok(stdout)
}
