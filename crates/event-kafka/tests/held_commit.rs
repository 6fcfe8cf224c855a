//! An event its handler holds (a slow call, or retries) holds its partition's commit point,
//! while the partition's other keys go on. The bus reads at most a bounded distance past that
//! point, so when the instance goes away (a rebalance, a crash, a broker restart) the next
//! owner hands out again at most that much, not the whole backlog behind the held event.
//! Against a real broker (`EVENTBUS_TEST_KAFKA_BROKERS`).

mod support;

use support::Settings;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::ensure;
use event_core::{
    Event, EventBus, EventId, EventType, HandlerError, StartFrom, SubscriptionSpec, handler_fn,
};
use event_kafka::KafkaBus;
use support::{all_handled, recorder};
use tokio::time::Instant;

/// Events published behind the held one: about ten times the bound.
const BEHIND: usize = 10_000;
/// The most a partition is read past its commit point (`MAX_AHEAD` in the fetch loop).
const BOUND: usize = 1024;

async fn pending_and_lag(bus: &KafkaBus, handler: &str) -> anyhow::Result<(u64, u64)> {
    let stats = bus.stats().await?;
    Ok(stats
        .handlers
        .get(handler)
        .map_or((u64::MAX, 0), |h| (h.pending, h.lag)))
}

#[tokio::test]
async fn a_held_event_bounds_what_is_handed_out_again() -> anyhow::Result<()> {
    let Some(brokers) = event_testkit::test_server("EVENTBUS_TEST_KAFKA_BROKERS", "kafka")? else {
        return Ok(());
    };
    let mut config = Settings::on(&brokers);
    config.kafka.topic_prefix = event_testkit::unique("eventbus-held");
    config.kafka.partitions = 1;
    config.bus.handler_concurrency = 64;
    // The held call is abandoned at shutdown, uncommitted.
    config.bus.shutdown_timeout = Duration::from_secs(1);
    let event_type = EventType::new("test.held")?;
    let handler = "held";
    let spec =
        || SubscriptionSpec::new(handler, [event_type.clone()]).start_from(StartFrom::Earliest);

    let first = config.connect().await?;
    let held = Event::builder(event_type.clone(), "test")
        .partition_key("held")
        .build()?;
    let held_id = held.id;
    let behind: Vec<Event> = (0..BEHIND)
        .map(|i| {
            Event::builder(event_type.clone(), "test")
                .partition_key(format!("key-{}", i % 97))
                .build()
        })
        .collect::<Result<_, _>>()?;
    let mut ids: HashSet<EventId> = behind.iter().map(|e| e.id).collect();
    ids.insert(held_id);
    first.publish(held).await?;
    for result in first.publish_batch(behind).await {
        result?;
    }

    // The first instance's call on the held event never returns; the others are recorded.
    let past = Arc::new(Mutex::new(Vec::new()));
    let record = past.clone();
    first
        .subscribe(
            spec(),
            handler_fn(handler, move |event: Arc<Event>| {
                let record = record.clone();
                async move {
                    if event.id == held_id {
                        std::future::pending::<()>().await;
                    }
                    record.lock().unwrap().push(event.id);
                    Ok::<(), HandlerError>(())
                }
            }),
        )
        .await?;

    // Reading pauses: what was handed out (handled, or waiting behind the held event for its
    // turn in the dispatcher) reaches the bound, and the rest of the backlog is not read.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let count = past.lock().unwrap().len();
        let (pending, lag) = pending_and_lag(&first, handler).await?;
        ensure!(
            count <= BOUND,
            "{count} events handled past the held one, more than {BOUND}"
        );
        if count as u64 + pending >= BOUND as u64 && lag > 0 {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "reading never paused behind the held event: {count} handled past it, {pending} pending, lag {lag}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And stays paused while the event is held: without the bound, the fetch loop would go on
    // through the backlog (thousands of events a second here).
    let watch = Instant::now() + Duration::from_secs(3);
    while Instant::now() < watch {
        let count = past.lock().unwrap().len();
        ensure!(
            count <= BOUND,
            "{count} events handled past the held one, more than {BOUND}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let handled_first: HashSet<EventId> = past.lock().unwrap().iter().copied().collect();
    first.shutdown().await?;

    // The next owner starts from the commit point, the held event, and hands out again what
    // the first one read past it: at most the bound.
    let second = config.connect().await?;
    let (recorder, handled_second) = recorder(handler);
    second.subscribe(spec(), recorder).await?;
    all_handled(&[&past, &handled_second], &ids, Duration::from_secs(180)).await?;
    let again = handled_second
        .lock()
        .unwrap()
        .iter()
        .filter(|id| handled_first.contains(id))
        .count();
    ensure!(
        handled_second.lock().unwrap().contains(&held_id),
        "the held event was never handled"
    );
    ensure!(
        again <= BOUND,
        "{again} events handed out again after the first instance went away, more than {BOUND}"
    );
    eprintln!(
        "{} handled past the held event, {again} handed out again",
        handled_first.len()
    );
    second.shutdown().await?;
    Ok(())
}
