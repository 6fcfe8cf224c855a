//! An idempotency claim never costs an event its handling: a handler that panics releases its
//! claim and the retry handles the event; a claim left by a crashed instance is waited out
//! and taken over by another instance. Both on a real `MemoryBus` subscription with the
//! default retry policy (`EVENT_MAX_RETRIES=3`, 100 ms doubling: under a second in all,
//! far shorter than any lease), with the in-memory store and with the Redis store
//! (`EVENTBUS_TEST_REDIS_URL`, set by `cargo xtask test`). Hundreds of events over several
//! partition keys and two types; no event may be dead-lettered.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use anyhow::ensure;
use common::settled;
use event_core::{
    Config, Event, EventBus, EventId, EventType, HandlerError, MemoryBus, SubscriptionSpec,
    handler_fn,
};
use event_handlers::middleware::{
    Claim, IdempotencyLayer, IdempotencyStore, MemoryIdempotencyStore, SharedHandler, TimeoutLayer,
};
use event_testkit::unique;
use tokio::time::Instant;
use tower::ServiceBuilder;

const HANDLER: &str = "mailer";
const PANIC_MESSAGE: &str = "deliberate panic on the first attempt";

/// The test handler's panics are expected: keep them out of the output, and every other
/// panic in it.
fn quiet_deliberate_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let deliberate = info
                .payload()
                .downcast_ref::<&str>()
                .is_some_and(|m| m.contains(PANIC_MESSAGE));
            if !deliberate {
                default(info);
            }
        }));
    });
}

/// `count` events over `keys` partition keys, alternating two types.
fn events(count: usize, keys: usize) -> anyhow::Result<Vec<Event>> {
    (0..count)
        .map(|i| {
            let event_type = if i % 2 == 0 {
                EventType::USER_REGISTERED
            } else {
                EventType::USER_PROFILE_UPDATED
            };
            Ok(Event::builder(event_type, "user_service")
                .field("user_id", format!("u-{i}"))
                .partition_key(format!("key-{}", i % keys))
                .build()?)
        })
        .collect()
}

/// What the handler saw: attempts and successful runs per event, and when each ran.
#[derive(Default)]
struct Seen {
    attempts: HashMap<EventId, u32>,
    handled: HashMap<EventId, Vec<Instant>>,
}

/// A bus with the default configuration, its retry policy included, and `mailer` subscribed
/// behind the idempotency layer (the documented order: the timeout inside). The handler
/// panics on the first attempt of each event when `panic_first`.
async fn instance(
    layer: IdempotencyLayer,
    panic_first: bool,
    seen: Arc<Mutex<Seen>>,
) -> anyhow::Result<(Arc<dyn EventBus>, event_core::Subscription)> {
    let config = Config::default();
    ensure!(config.max_retries == 3, "the default retry policy");
    let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::new(config)?);
    let inner = handler_fn(HANDLER, move |e| {
        let seen = seen.clone();
        async move {
            let attempt = {
                let mut seen = seen.lock().unwrap();
                let attempts = seen.attempts.entry(e.id).or_default();
                *attempts += 1;
                *attempts
            };
            if panic_first && attempt == 1 {
                panic!("{PANIC_MESSAGE}");
            }
            seen.lock()
                .unwrap()
                .handled
                .entry(e.id)
                .or_default()
                .push(Instant::now());
            Ok::<(), HandlerError>(())
        }
    });
    let handler = ServiceBuilder::new()
        .layer(layer)
        .layer(TimeoutLayer::new(Duration::from_secs(10)))
        .service(SharedHandler::new(inner));
    let subscription = bus
        .subscribe(
            SubscriptionSpec::new(
                HANDLER,
                [EventType::USER_REGISTERED, EventType::USER_PROFILE_UPDATED],
            ),
            Arc::new(handler),
        )
        .await?;
    Ok((bus, subscription))
}

/// Publishes `events`, waits until each is finished, and checks that every one was handled
/// exactly once and none was dead-lettered.
async fn publish_and_check(
    bus: &Arc<dyn EventBus>,
    events: &[Event],
    seen: &Mutex<Seen>,
) -> anyhow::Result<()> {
    for result in bus.publish_batch(events.to_vec()).await {
        result?;
    }
    settled(bus, HANDLER, events.len() as u64).await?;
    let stats = bus.stats().await?.handlers[HANDLER].clone();
    let letters = bus.dead_letters(HANDLER, events.len()).await?;
    ensure!(
        stats.dead_lettered == 0 && letters.is_empty(),
        "{} of {} events dead-lettered (first: {:?})",
        stats.dead_lettered,
        events.len(),
        letters
            .first()
            .map(|l| (l.reason, l.attempts, l.last_error.clone()))
    );
    ensure!(stats.processed == events.len() as u64, "{stats:?}");
    let seen = seen.lock().unwrap();
    for event in events {
        let runs = seen.handled.get(&event.id).map_or(0, Vec::len);
        ensure!(runs == 1, "event {} handled {runs} times", event.id);
    }
    Ok(())
}

/// The store's key of each event.
fn keys(prefix: &str, events: &[Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| format!("{prefix}:{HANDLER}:{}", e.id))
        .collect()
}

/// A handler that panics on the first attempt of each of 300 events: the claim is released,
/// the retry handles the event. Returns the keys it used.
async fn panicking_handler_is_retried(
    store: Arc<dyn IdempotencyStore>,
) -> anyhow::Result<Vec<String>> {
    quiet_deliberate_panics();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let prefix = unique("test:idempotency");
    let layer = IdempotencyLayer::new(store).prefix(prefix.clone());
    let (bus, subscription) = instance(layer, true, seen.clone()).await?;
    let events = events(300, 12)?;
    publish_and_check(&bus, &events, &seen).await?;
    let attempts = seen.lock().unwrap().attempts.clone();
    ensure!(
        events.iter().all(|e| attempts.get(&e.id) == Some(&2)),
        "each event: one panic, one success"
    );
    subscription.unsubscribe().await?;
    bus.shutdown().await?;
    Ok(keys(&prefix, &events))
}

/// A crashed instance (`crashed`: claims taken, never released, its client gone) held every
/// other one of 200 events; another instance, on `store`, gets them all: the free ones at once,
/// the claimed ones once their lease has expired, none dead-lettered. Returns the keys it
/// used.
async fn crashed_instances_claims_are_taken_over(
    crashed: Arc<dyn IdempotencyStore>,
    store: Arc<dyn IdempotencyStore>,
) -> anyhow::Result<Vec<String>> {
    let prefix = unique("test:idempotency");
    let lease = Duration::from_secs(2);
    let events = events(200, 8)?;
    let keys = keys(&prefix, &events);
    let claimed_at = Instant::now();
    for key in keys.iter().step_by(2) {
        let claim = crashed.claim(key, "crashed-instance", lease).await?;
        ensure!(claim == Claim::Claimed, "{claim:?}");
    }
    drop(crashed);

    let seen = Arc::new(Mutex::new(Seen::default()));
    let layer = IdempotencyLayer::new(store).prefix(prefix).lease(lease);
    let (bus, subscription) = instance(layer, false, seen.clone()).await?;
    publish_and_check(&bus, &events, &seen).await?;
    // The first run of each event the crashed instance had claimed.
    let first_runs: Vec<(EventId, Instant)> = {
        let seen = seen.lock().unwrap();
        events
            .iter()
            .step_by(2)
            .map(|e| (e.id, seen.handled[&e.id][0]))
            .collect()
    };
    for (id, ran) in first_runs {
        // Loose: the store's clock (Redis's) expires the claims, not ours.
        ensure!(
            ran >= claimed_at + lease / 2,
            "event {id} ran {:?} after the crashed instance claimed it, before its lease of {lease:?} expired",
            ran - claimed_at
        );
    }
    subscription.unsubscribe().await?;
    bus.shutdown().await?;
    Ok(keys)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_is_handled_on_retry_not_dead_lettered_in_memory() -> anyhow::Result<()>
{
    panicking_handler_is_retried(Arc::new(MemoryIdempotencyStore::new())).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_instances_claims_are_taken_over_in_memory() -> anyhow::Result<()> {
    let store = Arc::new(MemoryIdempotencyStore::new());
    crashed_instances_claims_are_taken_over(store.clone(), store).await?;
    Ok(())
}

#[cfg(feature = "redis")]
mod redis {
    use std::sync::Arc;

    use anyhow::Context as _;
    use event_handlers::middleware::RedisIdempotencyStore;
    use event_testkit::test_server;
    use fred::prelude::{Builder, ClientLike, KeysInterface};

    use super::{crashed_instances_claims_are_taken_over, panicking_handler_is_retried};

    async fn redis_url() -> anyhow::Result<Option<String>> {
        test_server("EVENTBUS_TEST_REDIS_URL", "redis")
    }

    /// Deletes the test's keys.
    async fn delete(url: &str, keys: Vec<String>) -> anyhow::Result<()> {
        let client = Builder::from_config(fred::types::config::Config::from_url(url)?).build()?;
        client.init().await?;
        client.del::<i64, _>(keys).await?;
        client.quit().await?;
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_handler_is_handled_on_retry_not_dead_lettered_on_redis()
    -> anyhow::Result<()> {
        let Some(url) = redis_url().await? else {
            return Ok(());
        };
        let store = Arc::new(RedisIdempotencyStore::connect(&url).await?);
        let keys = panicking_handler_is_retried(store.clone()).await?;
        store.close().await?;
        delete(&url, keys).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_crashed_instances_claims_are_taken_over_on_redis() -> anyhow::Result<()> {
        let Some(url) = redis_url().await? else {
            return Ok(());
        };
        // Two clients, as two processes: the first claims and goes away without a release.
        let crashed = Arc::new(RedisIdempotencyStore::connect(&url).await?);
        let store = Arc::new(RedisIdempotencyStore::connect(&url).await?);
        let keys = crashed_instances_claims_are_taken_over(crashed, store.clone())
            .await
            .context("takeover on Redis")?;
        store.close().await?;
        delete(&url, keys).await
    }
}
