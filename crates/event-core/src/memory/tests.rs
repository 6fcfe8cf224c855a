//! Tests of [`MemoryBus`](super::MemoryBus): shutdown, supervision of its consumer loops,
//! and restarts that neither lose nor repeat events.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::{EventType, HandlerError, handler_fn};

/// The in-memory bus keeps nothing after shutdown, so shutdown delivers what was already
/// published before it stops (the persistent backends deliver it after a restart).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_delivers_the_backlog_first() {
    let bus = MemoryBus::default();
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    let handler = handler_fn("counter", move |_| {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::Relaxed);
            Ok::<(), HandlerError>(())
        }
    });
    let spec = SubscriptionSpec::new("counter", [EventType::SIGNAL_DETECTED]);
    bus.subscribe(spec, handler).await.unwrap();
    let events: Vec<Event> = (0..2_000)
        .map(|i| {
            Event::builder(EventType::SIGNAL_DETECTED, "test")
                .field("i", i)
                .build()
                .unwrap()
        })
        .collect();
    assert!(bus.publish_batch(events).await.iter().all(Result::is_ok));
    bus.shutdown().await.unwrap();
    assert_eq!(seen.load(Ordering::Relaxed), 2_000);
    let refused = bus
        .subscribe(
            SubscriptionSpec::new("late", [EventType::SIGNAL_DETECTED]),
            handler_fn("late", |_| async { Ok(()) }),
        )
        .await;
    assert!(matches!(refused, Err(Error::ShutDown { .. })));
}

/// Events that retention removes before a lagging handler gets them are counted in its
/// stats (and logged), not skipped in silence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_expired_before_delivery_are_counted() {
    let config = Config {
        event_ttl: std::time::Duration::from_secs(1),
        ..Config::default()
    };
    let bus = MemoryBus::new(config).unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    let handler = handler_fn("late", move |_| {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::Relaxed);
            Ok::<(), HandlerError>(())
        }
    });
    let spec = || SubscriptionSpec::new("late", [EventType::SIGNAL_DETECTED]);
    bus.subscribe(spec(), handler.clone())
        .await
        .unwrap()
        .unsubscribe()
        .await
        .unwrap();
    let events: Vec<Event> = (0..250)
        .map(|_| {
            Event::builder(EventType::SIGNAL_DETECTED, "test")
                .build()
                .unwrap()
        })
        .collect();
    assert!(bus.publish_batch(events).await.iter().all(Result::is_ok));
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while bus.stats().await.unwrap().total_events > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "retention never trimmed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    bus.subscribe(spec(), handler).await.unwrap();
    let marker = Event::builder(EventType::SIGNAL_DETECTED, "test")
        .build()
        .unwrap();
    bus.publish(marker).await.unwrap();
    while seen.load(Ordering::Relaxed) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the marker never arrived"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let stats = bus.stats().await.unwrap();
    assert_eq!(stats.handlers["late"].expired, 250);
    assert_eq!(seen.load(Ordering::Relaxed), 1);
}

/// A consumer loop that fails while its lanes hold events lets them finish before the
/// restart hands anything out again: no event runs twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_loop_runs_no_event_twice() {
    let bus = MemoryBus::default();
    let name = format!("restarted-{:08x}", fastrand::u32(..));
    let calls = Arc::new(Mutex::new(
        std::collections::HashMap::<crate::EventId, u32>::new(),
    ));
    let record = calls.clone();
    let handler = handler_fn(name.clone(), move |event: Arc<Event>| {
        let record = record.clone();
        async move {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            *record.lock().unwrap().entry(event.id).or_default() += 1;
            Ok::<(), HandlerError>(())
        }
    });
    let types = [EventType::SIGNAL_DETECTED, EventType::OPPORTUNITY_CREATED];
    let spec = SubscriptionSpec::new(name.clone(), types.clone()).concurrency(8);
    bus.subscribe(spec, handler).await.unwrap();
    let events: Vec<Event> = (0..3_000)
        .map(|i| {
            Event::builder(types[i % 2].clone(), "test")
                .partition_key(format!("k{}", i % 40))
                .build()
                .unwrap()
        })
        .collect();
    assert!(bus.publish_batch(events).await.iter().all(Result::is_ok));
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    let handled = || calls.lock().unwrap().len();
    for failure in 1..=3 {
        while handled() < failure * 500 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "stuck at {}",
                handled()
            );
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        crate::fault::panic_loop_once(&name);
    }
    while handled() < 3_000 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "stuck at {}",
            handled()
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    crate::fault::clear(&name);
    let health = bus.health().await;
    let failures = health
        .consumers
        .iter()
        .map(|c| c.loop_failures)
        .sum::<u64>();
    assert!(failures >= 1, "no loop failure was recorded: {health:?}");
    bus.shutdown().await.unwrap();
    let calls = calls.lock().unwrap();
    let twice = calls.values().filter(|n| **n > 1).count();
    assert_eq!(twice, 0, "{twice} events ran more than once");
}

/// A loop that fails while it is being stopped (an unsubscribe) still leaves its group and
/// gives back what it held: the events its lanes could not finish go to the next
/// subscription. Before, the member stayed in the group for ever and those events were
/// never delivered again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loop_failing_while_stopped_still_leaves_its_group() {
    let config = Config {
        shutdown_timeout: std::time::Duration::from_millis(300),
        ..Config::default()
    };
    let bus = MemoryBus::new(config).unwrap();
    let name = format!("failing-stop-{:08x}", fastrand::u32(..));
    let started = Arc::new(AtomicUsize::new(0));
    let count = started.clone();
    // Takes every event and never finishes one.
    let stuck = handler_fn(name.clone(), move |_: Arc<Event>| {
        count.fetch_add(1, Ordering::Relaxed);
        std::future::pending::<Result<(), HandlerError>>()
    });
    let types = [EventType::SIGNAL_DETECTED];
    let subscription = bus
        .subscribe(SubscriptionSpec::new(name.clone(), types.clone()), stuck)
        .await
        .unwrap();
    let events: Vec<Event> = (0..50)
        .map(|_| Event::builder(types[0].clone(), "test").build().unwrap())
        .collect();
    assert!(bus.publish_batch(events).await.iter().all(Result::is_ok));
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while started.load(Ordering::Relaxed) == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no event started");
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    // The loop waits for new events; the stop wakes it, and it panics at once.
    crate::fault::panic_loop_once(&name);
    subscription.unsubscribe().await.unwrap();
    crate::fault::clear(&name);
    let stats = bus.stats().await.unwrap();
    assert_eq!(
        stats.handlers[&name].subscriptions, 0,
        "the stopped loop is still a member of its group"
    );
    let handled = Arc::new(AtomicUsize::new(0));
    let count = handled.clone();
    let recording = handler_fn(name.clone(), move |_: Arc<Event>| {
        count.fetch_add(1, Ordering::Relaxed);
        async { Ok::<(), HandlerError>(()) }
    });
    bus.subscribe(SubscriptionSpec::new(name.clone(), types), recording)
        .await
        .unwrap();
    while handled.load(Ordering::Relaxed) < 50 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of the 50 events the stopped loop held were delivered again",
            handled.load(Ordering::Relaxed)
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    bus.shutdown().await.unwrap();
}
