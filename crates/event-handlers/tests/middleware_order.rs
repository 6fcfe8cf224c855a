//! Why the middleware order matters, shown both ways; and the full stack in the right order
//! on a `MemoryBus`, with its metrics read from a recorder.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::settled;
use event_core::{
    Config, Event, EventBus, EventHandler, EventType, HandlerError, MemoryBus, RetryPolicy,
    SubscriptionSpec, handler_fn,
};
use event_handlers::middleware::{
    CircuitBreakerLayer, ConcurrencyLimitLayer, IdempotencyLayer, MemoryIdempotencyStore,
    MetricsLayer, SharedHandler, TimeoutLayer, TracingLayer, metric_names,
};
use metrics::{SharedString, Unit};
use metrics_util::CompositeKey;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use tower::ServiceBuilder;

fn event() -> Event {
    Event::builder(EventType::USER_REGISTERED, "test")
        .field("user_id", "u-1")
        .build()
        .expect("a valid event")
}

/// A handler whose first call hangs for a minute and whose later calls return at once,
/// counting the calls that reached it.
fn hangs_first_time(calls: Arc<AtomicU32>) -> SharedHandler {
    SharedHandler::new(handler_fn("hangs_first", move |_e| {
        let calls = calls.clone();
        async move {
            if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
            Ok::<(), HandlerError>(())
        }
    }))
}

/// Right: the timeout inside idempotency cancels only the handler; the idempotency layer
/// releases its claim and the retry runs.
#[tokio::test(start_paused = true)]
async fn timeout_inside_idempotency_lets_the_retry_run() {
    let calls = Arc::new(AtomicU32::new(0));
    let handler = ServiceBuilder::new()
        .layer(IdempotencyLayer::new(Arc::new(
            MemoryIdempotencyStore::new(),
        )))
        .layer(TimeoutLayer::new(Duration::from_secs(1)))
        .service(hangs_first_time(calls.clone()));
    let event = event();
    let first = handler.handle(&event).await.unwrap_err();
    assert!(first.message().contains("did not finish"), "{first}");
    handler.handle(&event).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

/// Wrong: the timeout outside idempotency cancels the idempotency layer between claim and
/// release; the claim stays until its lease expires and the retry is refused (it waits for
/// the stale claim, and the outer timeout cuts that wait too).
#[tokio::test(start_paused = true)]
async fn timeout_outside_idempotency_blocks_the_retry_until_the_lease_expires() {
    let calls = Arc::new(AtomicU32::new(0));
    let handler = ServiceBuilder::new()
        .layer(TimeoutLayer::new(Duration::from_secs(1)))
        .layer(
            IdempotencyLayer::new(Arc::new(MemoryIdempotencyStore::new()))
                .lease(Duration::from_secs(300)),
        )
        .service(hangs_first_time(calls.clone()));
    let event = event();
    handler.handle(&event).await.unwrap_err();
    let retry = handler.handle(&event).await.unwrap_err();
    assert!(retry.message().contains("did not finish"), "{retry}");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the retry never reached the handler"
    );
    // Only once the lease has expired does it run.
    tokio::time::advance(Duration::from_secs(301)).await;
    handler.handle(&event).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

/// Two events at once through a limit of one, each taking 0.8 s, with a 1 s timeout.
async fn two_at_once(handler: Arc<dyn EventHandler>) -> Vec<Result<(), HandlerError>> {
    let tasks: Vec<_> = (0..2)
        .map(|_| {
            let handler = handler.clone();
            tokio::spawn(async move { handler.handle(&event()).await })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.expect("no panic"));
    }
    results
}

fn takes_800ms() -> SharedHandler {
    SharedHandler::new(handler_fn("slowish", |_e| async {
        tokio::time::sleep(Duration::from_millis(800)).await;
        Ok::<(), HandlerError>(())
    }))
}

/// Right: the timeout inside the limit times the handler alone; both events pass.
#[tokio::test(start_paused = true)]
async fn timeout_inside_the_limit_times_the_handler_only() {
    let handler = ServiceBuilder::new()
        .layer(ConcurrencyLimitLayer::new(1))
        .layer(TimeoutLayer::new(Duration::from_secs(1)))
        .service(takes_800ms());
    let results = two_at_once(Arc::new(handler)).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
}

/// Wrong: the timeout outside the limit counts the wait for a permit; the second event times
/// out although the handler would take 0.8 s.
#[tokio::test(start_paused = true)]
async fn timeout_outside_the_limit_counts_the_queue() {
    let handler = ServiceBuilder::new()
        .layer(TimeoutLayer::new(Duration::from_secs(1)))
        .layer(ConcurrencyLimitLayer::new(1))
        .service(takes_800ms());
    let results = two_at_once(Arc::new(handler)).await;
    assert_eq!(
        results.iter().filter(|r| r.is_err()).count(),
        1,
        "{results:?}"
    );
}

/// One reading of every metric (reading resets the recorder's values).
type Readings = Vec<(CompositeKey, Option<Unit>, Option<SharedString>, DebugValue)>;

/// The counter `name` with these labels, summed over other labels; 0 when never recorded.
fn counter(readings: &Readings, name: &str, labels: &[(&str, &str)]) -> u64 {
    readings
        .iter()
        .filter(|(key, ..)| {
            let key = key.key();
            key.name() == name
                && labels
                    .iter()
                    .all(|(k, v)| key.labels().any(|l| l.key() == *k && l.value() == *v))
        })
        .map(|(.., value)| match value {
            DebugValue::Counter(n) => *n,
            _ => 0,
        })
        .sum()
}

/// Values recorded in the histogram `name`, over all labels.
fn histogram_count(readings: &Readings, name: &str) -> usize {
    readings
        .iter()
        .filter(|(key, ..)| key.key().name() == name)
        .map(|(.., value)| match value {
            DebugValue::Histogram(v) => v.len(),
            _ => 0,
        })
        .sum()
}

/// The full stack in the documented order on a real bus: a transient failure retried, a
/// permanent one dead-lettered, a redelivered event skipped; the metrics agree with the bus.
#[tokio::test(flavor = "current_thread")]
async fn full_stack_on_the_bus_records_what_the_bus_did() -> anyhow::Result<()> {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);

    let mut config = Config::default();
    config.max_retries = 3;
    config.retry_base = Duration::from_millis(1);
    config.retry_max = Duration::from_millis(5);
    let retry = RetryPolicy::new(config.max_retries, config.retry_base, config.retry_max);
    let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::new(config)?);

    // Fails twice (transient) on "flaky", always (permanent) on "poison", else succeeds.
    let runs = Arc::new(AtomicU32::new(0));
    let flaky_failures = Arc::new(AtomicU32::new(0));
    let (r, f) = (runs.clone(), flaky_failures.clone());
    let inner = handler_fn("mailer", move |e| {
        let (r, f) = (r.clone(), f.clone());
        async move {
            r.fetch_add(1, Ordering::SeqCst);
            match e.payload.get("kind").and_then(|k| k.as_str()) {
                Some("flaky") if f.fetch_add(1, Ordering::SeqCst) < 2 => {
                    Err(HandlerError::transient("smtp down"))
                }
                Some("poison") => Err(HandlerError::permanent("no address")),
                _ => Ok(()),
            }
        }
    });
    let handler = ServiceBuilder::new()
        .layer(TracingLayer::new())
        .layer(MetricsLayer::new(retry))
        .layer(IdempotencyLayer::new(Arc::new(
            MemoryIdempotencyStore::new(),
        )))
        .layer(CircuitBreakerLayer::new().failure_threshold(10))
        .layer(ConcurrencyLimitLayer::new(4))
        .layer(TimeoutLayer::new(Duration::from_secs(10)))
        .service(SharedHandler::new(inner));
    let subscription = bus
        .subscribe(
            SubscriptionSpec::new("mailer", [EventType::USER_REGISTERED]),
            Arc::new(handler),
        )
        .await?;
    let make = |kind: &str| {
        Event::builder(EventType::USER_REGISTERED, "user_service")
            .field("kind", kind)
            .build()
    };
    let ok = make("ok")?;
    bus.publish(ok.clone()).await?;
    bus.publish(make("flaky")?).await?;
    bus.publish(make("poison")?).await?;
    settled(&bus, "mailer", 3).await?;
    // The same event again (a publisher's retry, say): acknowledged without running.
    bus.publish(ok).await?;
    settled(&bus, "mailer", 4).await?;

    let stats = bus.stats().await?.handlers["mailer"].clone();
    assert_eq!(
        (stats.processed, stats.dead_lettered, stats.retried),
        (3, 1, 2)
    );
    assert_eq!(
        runs.load(Ordering::SeqCst),
        5,
        "ok, flaky x3, poison; not the duplicate"
    );
    let readings = snapshotter.snapshot().into_vec();
    let label = [("handler", "mailer"), ("event_type", "user.registered")];
    assert_eq!(counter(&readings, metric_names::HANDLED, &label), 3);
    assert_eq!(
        counter(&readings, metric_names::FAILED, &[("kind", "transient")]),
        2
    );
    assert_eq!(
        counter(&readings, metric_names::FAILED, &[("kind", "permanent")]),
        1
    );
    assert_eq!(
        counter(&readings, metric_names::RETRIED, &label),
        stats.retried
    );
    assert_eq!(
        counter(&readings, metric_names::DEAD_LETTERED, &label),
        stats.dead_lettered
    );
    assert_eq!(
        counter(&readings, metric_names::DUPLICATES_SKIPPED, &label),
        1
    );
    assert_eq!(histogram_count(&readings, metric_names::DURATION), 6);
    subscription.unsubscribe().await?;
    Ok(())
}
