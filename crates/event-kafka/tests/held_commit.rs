//! An event its handler holds (a slow call, or retries) holds its partition's commit point,
//! while the partition's other keys go on. The bus reads at most a bounded distance past that
//! point, so when the instance goes away (a rebalance, a crash, a broker restart) the next
//! owner hands out again at most that much, not the whole backlog behind the held event.
//! One handler on two types, each with a held event and 10,000 events behind it. Against a
//! real broker (`EVENTBUS_TEST_KAFKA_BROKERS`).

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
use support::{all_handled, keyed_events, recorder};
use tokio::time::Instant;

/// Events published behind each held one: about ten times the bound.
const BEHIND: usize = 10_000;
/// The most a partition is read past its commit point (`MAX_AHEAD` in the fetch loop), times
/// the partitions here: one for each of the handler's two types.
const BOUND: usize = 2 * 1024;

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
    // A handler whose partitions wait behind held events is reported soon.
    config.bus.stall_timeout = Duration::from_secs(2);
    let types = [
        EventType::new("test.held")?,
        EventType::new("test.held_too")?,
    ];
    let handler = "held";
    let spec = || SubscriptionSpec::new(handler, types.clone()).start_from(StartFrom::Earliest);

    // Each type's topic: an event whose call will never return, then the backlog behind it.
    let first = config.connect().await?;
    let (mut ids, mut held_ids) = (HashSet::new(), HashSet::new());
    for event_type in &types {
        let held = Event::builder(event_type.clone(), "test")
            .partition_key("held")
            .build()?;
        held_ids.insert(held.id);
        ids.insert(held.id);
        first.publish(held).await?;
        let behind = keyed_events(event_type, "test", BEHIND, 97)?;
        ids.extend(behind.iter().map(|e| e.id));
        for result in first.publish_batch(behind).await {
            result?;
        }
    }

    // The first instance's calls on the held events never return; the others are recorded.
    let past = Arc::new(Mutex::new(Vec::new()));
    let record = past.clone();
    let held = held_ids.clone();
    first
        .subscribe(
            spec(),
            handler_fn(handler, move |event: Arc<Event>| {
                let (record, held) = (record.clone(), held.clone());
                async move {
                    if held.contains(&event.id) {
                        std::future::pending::<()>().await;
                    }
                    record.lock().unwrap().push(event.id);
                    Ok::<(), HandlerError>(())
                }
            }),
        )
        .await?;

    // Reading pauses: what was handed out (handled, or waiting behind a held event for its
    // turn in the dispatcher) reaches the bound, and the rest of the backlogs is not read.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let count = past.lock().unwrap().len();
        let (pending, lag) = pending_and_lag(&first, handler).await?;
        ensure!(
            count <= BOUND,
            "{count} events handled past the held ones, more than {BOUND}"
        );
        if count as u64 + pending >= BOUND as u64 && lag > 0 {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "reading never paused behind the held events: {count} handled past them, {pending} pending, lag {lag}"
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
            "{count} events handled past the held ones, more than {BOUND}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Health says so: the handler is alive, has a backlog, and makes no progress.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let health = first.health().await;
        let consumer = health.consumers.iter().find(|c| c.handler == handler);
        if consumer.is_some_and(|c| c.alive && c.stalled && c.lag > 0) {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "health does not report the held handler as stalled: {consumer:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let handled_first: HashSet<EventId> = past.lock().unwrap().iter().copied().collect();
    first.shutdown().await?;

    // The next owner starts from the commit points, the held events, and hands out again what
    // the first one read past them: at most the bound.
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
        held_ids
            .iter()
            .all(|id| handled_second.lock().unwrap().contains(id)),
        "a held event was never handled"
    );
    ensure!(
        again <= BOUND,
        "{again} events handed out again after the first instance went away, more than {BOUND}"
    );
    eprintln!(
        "{} handled past the held events, {again} handed out again",
        handled_first.len()
    );
    second.shutdown().await?;
    Ok(())
}
