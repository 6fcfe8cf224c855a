//! The broker killed and restarted while publishers and a consumer run: every publish that
//! returned success is handled afterwards, nothing is lost. The test runs a broker of its own
//! (the shared test broker must not be stopped under other tests), from the Kafka jars of
//! `EVENTBUS_TEST_KAFKA_CLASSPATH`, with Java from `JAVA_HOME` or the `PATH`.

mod support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::ensure;
use event_core::{
    Event, EventBus, EventId, EventType, HandlerError, StartFrom, SubscriptionSpec, handler_fn,
};
use support::Settings;
use support::brokers::{KafkaNodes, kafka_classpath};

#[tokio::test]
async fn nothing_published_is_lost_when_the_broker_restarts() -> anyhow::Result<()> {
    let Some(classpath) = kafka_classpath()? else {
        return Ok(());
    };
    let mut broker = KafkaNodes::start(&classpath, 1).await?;
    let mut config = Settings::default();
    config.kafka.bootstrap_servers = broker.bootstrap_servers();
    config.kafka.topic_prefix = "restart".into();
    let bus = Arc::new(config.connect().await?);
    let event_type = EventType::new("test.restarted")?;
    let handled = Arc::new(Mutex::new(HashSet::new()));
    let record = handled.clone();
    bus.subscribe(
        SubscriptionSpec::new("survivor", [event_type.clone()]).start_from(StartFrom::Earliest),
        handler_fn("survivor", move |event: Arc<Event>| {
            let record = record.clone();
            async move {
                record.lock().unwrap().insert(event.id);
                Ok::<(), HandlerError>(())
            }
        }),
    )
    .await?;

    // Two publishers go on through the outage; only what they were told succeeded counts.
    let running = Arc::new(AtomicBool::new(true));
    let published = Arc::new(Mutex::new(Vec::<EventId>::new()));
    let mut publishers = Vec::new();
    for n in 0..2 {
        let (bus, running, published, event_type) = (
            bus.clone(),
            running.clone(),
            published.clone(),
            event_type.clone(),
        );
        publishers.push(tokio::spawn(async move {
            let mut i = 0u64;
            while running.load(Ordering::Acquire) {
                let event = Event::builder(event_type.clone(), "restart_test")
                    .partition_key(format!("p{n}-{}", i % 5))
                    .build()
                    .expect("a valid event");
                if let Ok(id) = bus.publish(event).await {
                    published.lock().unwrap().push(id);
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    broker.kill(1);
    tokio::time::sleep(Duration::from_secs(1)).await;
    broker.restart(1).await?;
    // Publishing resumes once the broker is back.
    let before = published.lock().unwrap().len();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while published.lock().unwrap().len() < before + 50 {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "publishing did not resume after the broker restarted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    running.store(false, Ordering::Release);
    for p in publishers {
        p.await?;
    }
    let published: Vec<EventId> = published.lock().unwrap().clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let missing = {
            let handled = handled.lock().unwrap();
            published.iter().filter(|id| !handled.contains(id)).count()
        };
        if missing == 0 {
            break;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "{missing} of {} published events were never handled after the broker restarted",
            published.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "{} events published with success across the restart, all handled",
        published.len()
    );
    bus.shutdown().await?;
    Ok(())
}
