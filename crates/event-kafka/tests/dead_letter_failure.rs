//! A dead letter that cannot be stored (the dead-letter topic refuses every record) is retried
//! until it is, health says so meanwhile, and the group's commit never passes it; other keys
//! of the partition go on being handled. Against a real broker (`EVENTBUS_TEST_KAFKA_BROKERS`)
//! with Kafka's Java client (`EVENTBUS_TEST_KAFKA_CLASSPATH`) to change the topic's config.

mod support;

use support::Settings;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::ensure;
use event_core::{
    Event, EventBus, EventId, EventType, HandlerError, HealthStatus, StartFrom, SubscriptionSpec,
    handler_fn,
};
use support::{committed_to_the_end, exactly, kafka_script, quiescent, tool_offsets};

const EVENTS: usize = 600;
const POISON_AT: usize = 150;

async fn wait_for<F, Fut>(within: Duration, what: &str, mut ready: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !ready().await? {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

#[tokio::test]
async fn an_unstorable_dead_letter_is_retried_reported_and_never_committed_past()
-> anyhow::Result<()> {
    let Some(brokers) = event_testkit::test_server("EVENTBUS_TEST_KAFKA_BROKERS", "kafka")? else {
        return Ok(());
    };
    let Some(classpath) = event_testkit::test_server("EVENTBUS_TEST_KAFKA_CLASSPATH", "kafka")?
    else {
        return Ok(());
    };
    let mut config = Settings::default();
    config.kafka.bootstrap_servers = brokers.split(',').map(|s| s.trim().to_string()).collect();
    config.kafka.topic_prefix = event_testkit::unique("eventbus-dlqfail");
    config.kafka.partitions = 1;
    let prefix = config.kafka.topic_prefix.clone();
    let group = format!("{}.", config.bus.consumer_group);
    let bus = config.connect().await?;
    let tag = format!("{:08x}", fastrand::u32(..));
    let event_type = EventType::new(format!("test.poison{tag}"))?;
    let handler = format!("poisoned{tag}");
    let dead_letters = format!("{prefix}.dlq.{group}{handler}");

    let handled = Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = handled.clone();
    let calls = Arc::new(AtomicU64::new(0));
    let counted = calls.clone();
    let poisoned = handler_fn(handler.clone(), move |event: Arc<Event>| {
        let record = record.clone();
        let counted = counted.clone();
        async move {
            counted.fetch_add(1, Ordering::Relaxed);
            if event.payload.get("poison").is_some() {
                return Err(HandlerError::permanent("this event can never be handled"));
            }
            record.lock().unwrap().push(event.id);
            Ok(())
        }
    });
    // Several lanes: the poisoned event's lane waits for its dead letter, the others go on.
    bus.subscribe(
        SubscriptionSpec::new(handler.clone(), [event_type.clone()])
            .start_from(StartFrom::Earliest)
            .concurrency(4),
        poisoned,
    )
    .await?;
    // The dead-letter topic now refuses every record: each is bigger than 64 bytes.
    kafka_script(
        &classpath,
        &brokers,
        &format!("CONFIG\t{dead_letters}\tmax.message.bytes\t64\n"),
    )
    .await?;

    let events: Vec<Event> = (0..EVENTS)
        .map(|n| {
            let builder = Event::builder(event_type.clone(), "test");
            if n == POISON_AT {
                builder
                    .partition_key("poison")
                    .field("poison", true)
                    .build()
            } else {
                builder.partition_key(format!("key-{}", n % 17)).build()
            }
        })
        .collect::<Result<_, _>>()?;
    let poison_id = events[POISON_AT].id;
    let mut good = HashSet::new();
    for result in bus.publish_batch(events).await {
        let id: EventId = result?;
        if id != poison_id {
            good.insert(id);
        }
    }

    // Health reports the dead letter that cannot be stored.
    wait_for(
        Duration::from_secs(60),
        "health to report the dead letter",
        || async {
            let health = bus.health().await;
            Ok(health.status != HealthStatus::Healthy
                && health
                    .problems
                    .iter()
                    .any(|p| p.contains(&handler) && p.contains("cannot be stored")))
        },
    )
    .await?;
    // Events after it, in other lanes, are handled meanwhile...
    wait_for(
        Duration::from_secs(60),
        "events after the poisoned one",
        || async { Ok(handled.lock().unwrap().len() > POISON_AT + 50) },
    )
    .await?;
    // ...but the group's commit never passes the poisoned event (Kafka's tool reads it).
    let offsets = tool_offsets(&classpath, &brokers, &format!("{group}{handler}")).await?;
    let event_topic = format!("{prefix}.{event_type}");
    let lag = offsets
        .iter()
        .find(|o| o.topic == event_topic)
        .and_then(|o| o.lag);
    ensure!(
        lag.is_some_and(|lag| lag >= (EVENTS - POISON_AT) as i64),
        "the commit passed the event whose dead letter is not stored: {offsets:?}"
    );
    ensure!(
        bus.dead_letters(&handler, 10).await?.is_empty(),
        "no dead letter can be stored yet"
    );

    // The topic is fixed: the dead letter is stored, the commit goes to the end.
    kafka_script(
        &classpath,
        &brokers,
        &format!("CONFIG\t{dead_letters}\tmax.message.bytes\t-\n"),
    )
    .await?;
    quiescent(&bus, &handler, Duration::from_secs(60)).await?;
    committed_to_the_end(&classpath, &brokers, &format!("{group}{handler}"), 1).await?;
    let letters = bus.dead_letters(&handler, 10).await?;
    ensure!(
        letters.len() == 1 && letters[0].event.as_ref().is_some_and(|e| e.id == poison_id),
        "expected the poisoned event's dead letter alone: {letters:?}"
    );
    exactly(&handled.lock().unwrap(), &good)?;
    let health = bus.health().await;
    ensure!(
        !health
            .problems
            .iter()
            .any(|p| p.contains("cannot be stored")),
        "health still reports the stored dead letter: {health:?}"
    );
    bus.shutdown().await?;
    Ok(())
}
