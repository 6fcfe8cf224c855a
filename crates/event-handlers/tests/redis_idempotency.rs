//! The Redis idempotency store against a real `redis-server` (`EVENTBUS_TEST_REDIS_URL`, set
//! by `cargo xtask test`): its claim protocol, and two instances of a handler, each on its own
//! bus and with its own connection (two processes, as far as the store can tell), handling
//! the same events: each event runs once in all.

#![cfg(feature = "redis")]

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, ensure};
use common::{eventually, settled};
use event_core::{
    Config, Event, EventBus, EventType, HandlerError, MemoryBus, RetryPolicy, SubscriptionSpec,
    handler_fn,
};
use event_handlers::middleware::{
    Claim, IdempotencyLayer, IdempotencyStore, MetricsLayer, RedisIdempotencyStore, SharedHandler,
    TimeoutLayer, TracingLayer,
};
use event_testkit::test_server;
use fred::prelude::{Builder, ClientLike, KeysInterface};
use tower::ServiceBuilder;

async fn redis_url() -> anyhow::Result<Option<String>> {
    test_server("EVENTBUS_TEST_REDIS_URL", "redis")
}

/// A prefix of keys no other run uses.
fn fresh_prefix() -> String {
    format!("test:idempotency:{}", event_core::EventId::new())
}

#[tokio::test]
async fn claim_protocol_on_redis() -> anyhow::Result<()> {
    let Some(url) = redis_url().await? else {
        return Ok(());
    };
    let store = RedisIdempotencyStore::connect(&url).await?;
    let key = format!("{}:handler:event", fresh_prefix());
    let lease = Duration::from_secs(30);
    assert_eq!(store.claim(&key, "a", lease).await?, Claim::Claimed);
    assert_eq!(store.claim(&key, "b", lease).await?, Claim::InProgress);
    // Only the holder's token releases it.
    store.release(&key, "b").await?;
    assert_eq!(store.claim(&key, "b", lease).await?, Claim::InProgress);
    store.release(&key, "a").await?;
    assert_eq!(store.claim(&key, "b", lease).await?, Claim::Claimed);
    store.complete(&key, Duration::from_secs(60)).await?;
    assert_eq!(store.claim(&key, "c", lease).await?, Claim::Done);

    // What Redis holds: `done` with the remembered expiry.
    let client = Builder::from_config(fred::types::config::Config::from_url(&url)?).build()?;
    client.init().await?;
    let value: Option<String> = client.get(&key).await?;
    assert_eq!(value.as_deref(), Some("done"));
    let ttl: i64 = client.pttl(&key).await?;
    assert!(ttl > 0 && ttl <= 60_000, "{ttl}");

    // A claim whose holder died frees itself when its lease expires.
    let crashed = format!("{}:handler:crashed", fresh_prefix());
    assert_eq!(
        store
            .claim(&crashed, "dead", Duration::from_millis(50))
            .await?,
        Claim::Claimed
    );
    let deadline = tokio::time::Instant::now() + common::BOUND;
    loop {
        match store.claim(&crashed, "next", lease).await? {
            Claim::Claimed => break,
            Claim::InProgress => {
                ensure!(
                    tokio::time::Instant::now() < deadline,
                    "the lease never expired"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Claim::Done => anyhow::bail!("never completed"),
        }
    }
    client.del::<i64, _>(vec![key, crashed]).await?;
    client.quit().await?;
    store.close().await?;
    Ok(())
}

#[tokio::test]
async fn a_bad_url_and_an_unreachable_server_are_clear_errors() -> anyhow::Result<()> {
    let err = RedisIdempotencyStore::connect("http://nope")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not a Redis URL"), "{err}");
    // A port nothing listens on (bound, then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let url = format!("redis://user:s3cret@127.0.0.1:{port}/0");
    let err = RedisIdempotencyStore::connect(&url).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("127.0.0.1"), "{text}");
    assert!(!text.contains("s3cret"), "the password leaked: {text}");
    Ok(())
}

/// Two instances of the `mailer` handler, each on its own bus with its own store connection,
/// receive the same 50 events (same ids): every event is handled by exactly one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_sharing_the_redis_store_handle_each_event_once() -> anyhow::Result<()> {
    let Some(url) = redis_url().await? else {
        return Ok(());
    };
    let prefix = fresh_prefix();
    let handled: Arc<Mutex<HashMap<String, Vec<&'static str>>>> = Arc::default();
    let mut config = Config::default();
    config.retry_base = Duration::from_millis(5);
    config.retry_max = Duration::from_millis(50);
    config.max_retries = 20;
    let retry = RetryPolicy::new(config.max_retries, config.retry_base, config.retry_max);

    let mut instances = Vec::new();
    for instance in ["instance-a", "instance-b"] {
        let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::new(config.clone())?);
        let store = Arc::new(RedisIdempotencyStore::connect(&url).await?);
        let seen = handled.clone();
        let inner = handler_fn("mailer", move |e| {
            let seen = seen.clone();
            async move {
                // Long enough for the other instance to find the claim taken.
                tokio::time::sleep(Duration::from_millis(2)).await;
                seen.lock()
                    .unwrap()
                    .entry(e.id.to_string())
                    .or_default()
                    .push(instance);
                Ok::<(), HandlerError>(())
            }
        });
        let handler = ServiceBuilder::new()
            .layer(TracingLayer::new())
            .layer(MetricsLayer::new(retry))
            .layer(IdempotencyLayer::new(store.clone()).prefix(prefix.clone()))
            .layer(TimeoutLayer::new(Duration::from_secs(10)))
            .service(SharedHandler::new(inner));
        let subscription = bus
            .subscribe(
                SubscriptionSpec::new("mailer", [EventType::USER_REGISTERED]).concurrency(8),
                Arc::new(handler),
            )
            .await?;
        instances.push((bus, store, subscription));
    }

    let events: Vec<Event> = (0..50)
        .map(|i| {
            Event::builder(EventType::USER_REGISTERED, "user_service")
                .field("user_id", format!("u-{i}"))
                .partition_key(format!("u-{i}"))
                .build()
        })
        .collect::<Result<_, _>>()?;
    // Both instances get every event, at about the same time.
    let (a, b) = (instances[0].0.clone(), instances[1].0.clone());
    let (ea, eb) = (events.clone(), events.clone());
    let publish_a = tokio::spawn(async move { a.publish_batch(ea).await });
    let publish_b = tokio::spawn(async move { b.publish_batch(eb).await });
    for results in [publish_a.await?, publish_b.await?] {
        for result in results {
            result?;
        }
    }
    for (bus, ..) in &instances {
        settled(bus, "mailer", 50).await?;
    }
    let handled = handled.lock().unwrap().clone();
    assert_eq!(handled.len(), 50, "every event handled");
    for event in &events {
        let by = handled.get(&event.id.to_string()).context("missing")?;
        assert_eq!(by.len(), 1, "event {} handled by {by:?}", event.id);
    }
    let mut dead = 0;
    for (bus, ..) in &instances {
        let stats = bus.stats().await?.handlers["mailer"].clone();
        dead += stats.dead_lettered;
    }
    assert_eq!(dead, 0);

    // Every key ends `done`; clean up.
    let client = Builder::from_config(fred::types::config::Config::from_url(&url)?).build()?;
    client.init().await?;
    let keys: Vec<String> = events
        .iter()
        .map(|e| format!("{prefix}:mailer:{}", e.id))
        .collect();
    let values: Vec<Option<String>> = client.mget(keys.clone()).await?;
    assert!(
        values.iter().all(|v| v.as_deref() == Some("done")),
        "{values:?}"
    );
    client.del::<i64, _>(keys).await?;
    client.quit().await?;
    for (bus, store, subscription) in instances {
        subscription.unsubscribe().await?;
        bus.shutdown().await?;
        store.close().await?;
    }
    Ok(())
}

/// A duplicate delivered to a second instance long after the first finished is skipped
/// without running.
#[tokio::test]
async fn a_late_duplicate_on_another_instance_is_skipped() -> anyhow::Result<()> {
    let Some(url) = redis_url().await? else {
        return Ok(());
    };
    let prefix = fresh_prefix();
    let runs = Arc::new(AtomicU32::new(0));
    let make = |store: Arc<dyn IdempotencyStore>| {
        let runs = runs.clone();
        ServiceBuilder::new()
            .layer(IdempotencyLayer::new(store).prefix(prefix.clone()))
            .service(SharedHandler::new(handler_fn("billing", move |_e| {
                let runs = runs.clone();
                async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    Ok::<(), HandlerError>(())
                }
            })))
    };
    let first = make(Arc::new(RedisIdempotencyStore::connect(&url).await?));
    let second = make(Arc::new(RedisIdempotencyStore::connect(&url).await?));
    let event = Event::builder(EventType::USER_REGISTERED, "user_service").build()?;
    event_core::EventHandler::handle(&first, &event).await?;
    event_core::EventHandler::handle(&second, &event).await?;
    eventually("one run", || runs.load(Ordering::SeqCst) == 1).await?;
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    Ok(())
}
