//! The virtual clock: retries' backoff and the in-memory retention both follow tokio's paused
//! clock, and `advance` moves them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use event_core::{
    Config, DeadLetterReason, Event, EventType, HandlerError, StartFrom, SubscriptionSpec,
    handler_fn,
};
use event_test::{Outcome, TestBus, TestBusError};

/// Partition keys: per key, events wait behind a retried one.
const KEYS: u64 = 100;

fn event(event_type: &EventType, n: u64) -> Event {
    Event::builder(event_type.clone(), "test")
        .field("n", n)
        .partition_key(format!("key-{}", n % KEYS))
        .build()
        .expect("a valid event")
}

/// With a backoff of minutes, 400 events over 100 keys that each fail twice are all handled
/// at the third attempt, on a virtual clock that moved by many minutes while the test took
/// seconds; per key, later events waited behind the retried one.
#[tokio::test(start_paused = true)]
async fn retries_of_minutes_pass_on_the_virtual_clock() -> anyhow::Result<()> {
    let mut config = Config::default();
    config.retry_base = Duration::from_secs(60);
    config.retry_max = Duration::from_secs(600);
    config.handler_concurrency = 4;
    let t = TestBus::with_config(config)?;
    let seen = Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
    let tries = seen.clone();
    t.subscribe(
        [EventType::SIGNAL_DETECTED],
        handler_fn("flaky", move |event| {
            let attempt = {
                let mut tries = tries.lock().unwrap();
                let n: &mut u32 = tries.entry(event.id).or_default();
                *n += 1;
                *n
            };
            async move {
                if attempt <= 2 {
                    return Err(HandlerError::transient(format!("attempt {attempt} failed")));
                }
                Ok(())
            }
        }),
    )
    .await?;
    let events: Vec<Event> = (0..400)
        .map(|n| event(&EventType::SIGNAL_DETECTED, n))
        .collect();
    t.publish_all(events.clone()).await?;
    let (virtual_start, real_start) = (tokio::time::Instant::now(), std::time::Instant::now());
    t.settle_within(Duration::from_secs(3600)).await?;

    // Two retries: at least 30 s and 60 s of backoff (jitter halves at most).
    assert!(virtual_start.elapsed() >= Duration::from_secs(90));
    assert!(real_start.elapsed() < virtual_start.elapsed());
    assert_eq!(t.handled("flaky")?.len(), 400);
    assert_eq!(t.received("flaky")?.len(), 400);
    let attempts = t.attempts("flaky")?;
    assert_eq!(attempts.len(), 1200);
    assert!(attempts.iter().all(|a| match a.number {
        1 | 2 => matches!(a.outcome, Outcome::Failed { .. }),
        _ => a.outcome == Outcome::Handled,
    }));
    // Per key, handled in publish order although each waited minutes for its retries.
    let mut last = std::collections::HashMap::new();
    for handled in t.handled("flaky")? {
        let n = handled.payload["n"].as_u64().unwrap_or_default();
        if let Some(before) = last.insert(n % KEYS, n) {
            assert!(before < n, "key {} handled {n} after {before}", n % KEYS);
        }
    }
    assert!(t.dead_letters("flaky").await?.is_empty());
    Ok(())
}

/// A handler that always fails transiently is dead-lettered after `EVENT_MAX_RETRIES`
/// retries, with its provenance; `advance` alone (no settle) fires the retries due.
#[tokio::test(start_paused = true)]
async fn advance_fires_the_retries_due() -> anyhow::Result<()> {
    let mut config = Config::default();
    config.max_retries = 2;
    config.retry_base = Duration::from_secs(10);
    config.retry_max = Duration::from_secs(10);
    let t = TestBus::with_config(config)?;
    let calls = Arc::new(AtomicU32::new(0));
    let counted = calls.clone();
    t.subscribe(
        [EventType::AGENT_ERROR],
        handler_fn("broken", move |_| {
            counted.fetch_add(1, Ordering::SeqCst);
            async { Err(HandlerError::transient("still broken")) }
        }),
    )
    .await?;
    let published = event(&EventType::AGENT_ERROR, 1);
    t.publish(published.clone()).await?;
    // The first attempt runs at once, then the retry waits 5 to 10 virtual seconds.
    wait_until(|| calls.load(Ordering::SeqCst) == 1).await;
    t.advance(Duration::from_secs(4)).await?;
    tokio::task::yield_now().await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "retried before its backoff"
    );
    t.advance(Duration::from_secs(6)).await?;
    wait_until(|| calls.load(Ordering::SeqCst) == 2).await;
    t.advance(Duration::from_secs(10)).await?;
    t.settle().await?;
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let dead = t.dead_letters("broken").await?;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].reason, DeadLetterReason::RetriesExhausted);
    assert_eq!(dead[0].attempts, 3);
    assert_eq!(dead[0].event.as_ref(), Some(&published));
    assert_eq!(dead[0].last_error, "still broken");
    Ok(())
}

/// Yields to the bus's tasks until `done` (no real time passes on a paused clock; tokio
/// moves it only when every task waits).
async fn wait_until(done: impl Fn() -> bool) {
    for _ in 0..10_000 {
        if done() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("the condition never held");
}

/// Retention follows the virtual clock: with `EVENT_TTL_SECONDS=60`, events of two types
/// (more than a read batch) stay for 60 virtual seconds and are gone after, from stats,
/// replay and new groups; a handler that lagged behind counts what expired before it got it.
#[tokio::test(start_paused = true)]
async fn retention_follows_the_virtual_clock() -> anyhow::Result<()> {
    let mut config = Config::default();
    config.event_ttl = Duration::from_secs(60);
    let t = TestBus::with_config(config)?;
    let types = [EventType::USER_REGISTERED, EventType::USER_PROFILE_UPDATED];
    // A handler that is subscribed, then stopped: its group stays behind, lagging.
    let lagging = t
        .subscribe(types.clone(), handler_fn("lagging", |_| async { Ok(()) }))
        .await?;
    lagging.unsubscribe().await?;
    for event_type in &types {
        t.publish_all((0..250).map(|n| event(event_type, n)))
            .await?;
    }
    assert_eq!(t.stats().await?.total_events, 500);

    t.advance(Duration::from_secs(59)).await?;
    assert_eq!(t.stats().await?.total_events, 500, "trimmed before the TTL");
    t.advance(Duration::from_secs(2)).await?;
    let stats = t.stats().await?;
    assert_eq!(stats.total_events, 0, "kept past the TTL: {stats:?}");
    let replayed = event_test_replay(&t, &types).await?;
    assert_eq!(replayed, 0);

    // A new group from the earliest retained event gets nothing; the lagging one gets
    // nothing either, and counts the 500 it lost.
    t.subscribe_with(
        SubscriptionSpec::new("late", types.clone()).start_from(StartFrom::Earliest),
        handler_fn("late", |_| async { Ok(()) }),
    )
    .await?;
    t.subscribe(types.clone(), handler_fn("lagging", |_| async { Ok(()) }))
        .await?;
    t.publish(event(&types[0], 1_000)).await?;
    t.settle().await?;
    assert_eq!(t.received("late")?.len(), 1);
    assert_eq!(t.received("lagging")?.len(), 1);
    assert_eq!(t.stats().await?.handlers["lagging"].expired, 500);
    Ok(())
}

async fn event_test_replay(t: &TestBus, types: &[EventType]) -> anyhow::Result<usize> {
    use futures::StreamExt as _;
    let from = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    let query = event_core::ReplayQuery::new(types.to_vec(), from);
    Ok(t.bus().replay(query).await?.count().await)
}

/// On a running clock, `advance` is a clear error, and the rest of the harness works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advance_on_a_running_clock_is_a_clear_error() -> anyhow::Result<()> {
    let t = TestBus::new();
    let error = t.advance(Duration::from_secs(1)).await.unwrap_err();
    assert!(matches!(error, TestBusError::ClockNotPaused));
    assert!(
        error
            .to_string()
            .contains("#[tokio::test(start_paused = true)]")
    );
    t.subscribe(
        [EventType::SYSTEM_HEALTH_CHECK],
        handler_fn("ok", |_| async { Ok(()) }),
    )
    .await?;
    t.publish(event(&EventType::SYSTEM_HEALTH_CHECK, 0)).await?;
    t.settle().await?;
    assert_eq!(t.handled("ok")?.len(), 1);
    Ok(())
}
