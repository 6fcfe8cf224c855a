//! How the relay handles refusals, transient failures, retention, wake-ups and a real Redis
//! bus, against the real PostgreSQL (`EVENTBUS_TEST_POSTGRES_URL`).

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use event_core::{Config, Event, EventBus, EventId, EventType, MemoryBus};
use event_outbox::{Outbox, Relay, RelayConfig};
use support::{Recorder, check, keyed_event, seed, tapped, test_db, write_randomly};

fn relay_config() -> RelayConfig {
    let mut config = RelayConfig::default();
    config.poll_interval = Duration::from_millis(200);
    config.retry_backoff = Duration::from_millis(20);
    config
}

/// An event the bus refuses for good (over its size limit) is parked with the reason and
/// counted, and the events after it of the same key are delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_event_is_parked_with_its_reason_and_its_key_goes_on() -> anyhow::Result<()> {
    let Some(db) = test_db().await? else {
        return Ok(());
    };
    let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::new(Config::from_vars([(
        "EVENT_MAX_PAYLOAD_BYTES",
        "2048",
    )])?)?);
    let recorder = Recorder::subscribe(&bus).await?;
    let relay = db.relay(&bus, relay_config());
    let too_large = Event::builder(EventType::OPPORTUNITY_CREATED, "outbox_test")
        .payload(serde_json::json!({"key": "k", "n": 1, "blob": "x".repeat(10_000)}))
        .partition_key("k")
        .build()?;
    let events = vec![keyed_event("k", 0), too_large.clone(), keyed_event("k", 2)];
    let ids: Vec<EventId> = events.iter().map(|e| e.id).collect();
    let mut tx = db.pool.begin().await?;
    db.outbox.add(&mut tx, events).await?;
    tx.commit().await?;

    let report = relay.deliver_pending().await?;
    assert_eq!((report.delivered, report.parked, report.failed), (2, 1, 0));
    recorder.wait_for(&HashSet::from([ids[0], ids[2]])).await?;
    let delivered: Vec<EventId> = recorder.snapshot().iter().map(|d| d.id).collect();
    assert_eq!(delivered, [ids[0], ids[2]]);
    let stats = Outbox::stats(&db.pool).await?;
    assert_eq!((stats.pending, stats.parked, stats.delivered), (0, 1, 2));
    assert_eq!(relay.stats().parked, 1);
    let parked = Outbox::parked(&db.pool, 10).await?;
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].event_id, too_large.id);
    assert!(
        parked[0].reason.contains("large") || parked[0].reason.contains("bytes"),
        "{}",
        parked[0].reason
    );
    // Parked rows are never retried on their own...
    assert_eq!(relay.deliver_pending().await?.claimed, 0);
    // ...and come back in line when unparked (refused again here: the limit is unchanged).
    assert_eq!(Outbox::unpark(&db.pool, &[too_large.id]).await?, 1);
    assert_eq!(Outbox::stats(&db.pool).await?.pending, 1);
    assert_eq!(relay.deliver_pending().await?.parked, 1);
    bus.shutdown().await?;
    db.drop_schema().await
}

/// Transient publish failures leave the events pending, counted, and they are delivered later
/// in per-key order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_publish_failures_are_retried_in_order() -> anyhow::Result<()> {
    let Some(db) = test_db().await? else {
        return Ok(());
    };
    let seed = seed("transient_publish_failures_are_retried_in_order");
    let memory: Arc<dyn EventBus> = Arc::new(MemoryBus::new(Config::default())?);
    let recorder = Recorder::subscribe(&memory).await?;
    let tap = tapped(memory.clone());
    tap.hook().fail_next.store(5, Ordering::SeqCst);
    let written = write_randomly(&db, seed, 4, 25, 2000).await?;
    let tapped: Arc<dyn EventBus> = tap.clone();
    let relay = db.relay(&tapped, relay_config()).spawn();
    recorder.wait_for(&written.committed).await?;
    assert_eq!(check(&written, &recorder.snapshot())?, 0);
    // The handler sees a round's events before the relay records them as delivered.
    let committed = written.committed.len() as u64;
    support::wait_until("the relay to record every delivery", || {
        let delivered = relay.stats().delivered;
        (delivered >= committed)
            .then_some(())
            .ok_or_else(|| format!("{delivered} of {committed} recorded"))
    })
    .await?;
    let stats = relay.stats();
    assert!(stats.publish_failures > 0, "{stats:?}");
    assert_eq!(stats.delivered as usize, written.committed.len());
    relay.shut_down().await?;
    memory.shutdown().await?;
    db.drop_schema().await
}

/// Delivered rows are deleted once past the retention, and not before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivered_rows_are_deleted_after_the_retention() -> anyhow::Result<()> {
    let Some(db) = test_db().await? else {
        return Ok(());
    };
    let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::new(Config::default())?);
    let mut tx = db.pool.begin().await?;
    db.outbox
        .add(
            &mut tx,
            (0..1500).map(|n| keyed_event(&format!("k{}", n % 7), n)),
        )
        .await?;
    tx.commit().await?;
    let keep = db.relay(&bus, relay_config());
    assert_eq!(keep.deliver_pending().await?.delivered, 1500);
    assert_eq!(
        keep.clean_up().await?,
        0,
        "an hour-old retention keeps them"
    );
    let mut config = relay_config();
    config.retention = Duration::ZERO;
    let purge = db.relay(&bus, config);
    // More than one chunk of a thousand.
    assert_eq!(purge.clean_up().await?, 1500);
    assert_eq!(purge.stats().cleaned, 1500);
    let stats = Outbox::stats(&db.pool).await?;
    assert_eq!((stats.pending, stats.delivered), (0, 0));
    bus.shutdown().await?;
    db.drop_schema().await
}

/// A relay that polls once an hour is woken by `LISTEN/NOTIFY` alone: each committed event
/// reaches the handler; prints the latency from commit to handler.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_wakes_the_relay_without_polling() -> anyhow::Result<()> {
    let Some(db) = test_db().await? else {
        return Ok(());
    };
    let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::new(Config::default())?);
    let recorder = Recorder::subscribe(&bus).await?;
    let mut config = relay_config();
    config.poll_interval = Duration::from_secs(3600);
    let relay = db.relay(&bus, config).spawn();
    // The relay's first round (which finds nothing) may still be running: the events below
    // are then found by it or by a notification; either way no poll is involved after it.
    let mut latencies = Vec::new();
    for n in 0..200 {
        let event = keyed_event(&format!("k{}", n % 10), n);
        let id = event.id;
        let mut tx = db.pool.begin().await?;
        db.outbox.add(&mut tx, [event]).await?;
        tx.commit().await?;
        let committed = Instant::now();
        recorder.wait_for(&HashSet::from([id])).await?;
        let at = recorder
            .snapshot()
            .iter()
            .find(|d| d.id == id)
            .map(|d| d.at)
            .expect("delivered");
        latencies.push(at.saturating_duration_since(committed));
    }
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    eprintln!(
        "commit to handler over LISTEN/NOTIFY (memory bus, 200 events): p50 {:.1} ms, p99 {:.1} ms",
        ms(latencies[latencies.len() / 2]),
        ms(latencies[latencies.len() * 99 / 100])
    );
    relay.shut_down().await?;
    bus.shutdown().await?;
    db.drop_schema().await
}

/// The relay delivers to a real Redis bus: every committed event, with its id, in per-key
/// order, and no rolled-back one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_delivers_to_redis() -> anyhow::Result<()> {
    let Some(db) = test_db().await? else {
        return Ok(());
    };
    let Some(url) = event_testkit::test_server("EVENTBUS_TEST_REDIS_URL", "redis")? else {
        return db.drop_schema().await;
    };
    let seed = seed("the_relay_delivers_to_redis");
    let redis = event_redis::RedisConfig::builder()
        .url(url)
        .key_prefix(event_testkit::unique("outbox"))
        .build()?;
    let mut config = Config::default();
    config.consumer_group = event_testkit::unique("outbox");
    let bus: Arc<dyn EventBus> = Arc::new(event_redis::RedisBus::connect(redis, config).await?);
    let recorder = Recorder::subscribe(&bus).await?;
    let relay = db.relay(&bus, relay_config()).spawn();
    let started = Instant::now();
    let written = write_randomly(&db, seed, 4, 50, 3000).await?;
    recorder.wait_for(&written.committed).await?;
    let took = started.elapsed();
    // Redis may deliver an event again (at least once): repeats are allowed, never losses.
    let repeats = check(&written, &recorder.snapshot())?;
    eprintln!(
        "Redis: {} committed events written and delivered in {:.2}s ({repeats} repeats)",
        written.committed.len(),
        took.as_secs_f64()
    );
    relay.shut_down().await?;
    bus.shutdown().await?;
    db.drop_schema().await
}

/// A relay will not start on a schema the migrations have not brought up to date.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_refuses_to_start_before_the_migrations() -> anyhow::Result<()> {
    let Some(db) = test_db().await? else {
        return Ok(());
    };
    event_outbox::check_schema(&db.pool).await?;
    sqlx::query("DROP TABLE eventbus_outbox_migrations")
        .execute(&db.pool)
        .await?;
    let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::new(Config::default())?);
    let relay = db.relay(&bus, relay_config());
    let error = relay.run(std::future::pending()).await.unwrap_err();
    assert!(
        matches!(
            error,
            event_outbox::OutboxError::SchemaOutdated {
                found: 0,
                needed: 2
            }
        ),
        "{error}"
    );
    assert!(!error.is_transient());
    bus.shutdown().await?;
    db.drop_schema().await
}

/// A relay started while PostgreSQL cannot be reached waits for it, counting the failures,
/// rather than ending; and it still shuts down on request. (No server needed.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_waits_for_an_unreachable_postgres() -> anyhow::Result<()> {
    // A port nobody listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(Duration::from_millis(500))
        .connect_lazy_with(
            sqlx::postgres::PgConnectOptions::new()
                .host("127.0.0.1")
                .port(port),
        );
    let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::new(Config::default())?);
    let relay = Relay::new(pool, Outbox::new(), bus.clone(), relay_config()).spawn();
    support::wait_until("failed attempts counted", || {
        let errors = relay.stats().database_errors;
        (errors >= 3)
            .then_some(())
            .ok_or_else(|| format!("{errors} database errors so far"))
    })
    .await?;
    assert!(!relay.is_finished());
    relay.shut_down().await?;
    bus.shutdown().await?;
    Ok(())
}

/// Fails the events of key `k0` transiently (with the rest of that key in the batch, as
/// `publish_batch` promises) the first `times` batches that hold one; publishes the rest.
struct FailsOneKey {
    times: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl event_testkit::PublishHook for FailsOneKey {
    async fn publish_batch(
        &self,
        inner: &dyn EventBus,
        events: Vec<Event>,
    ) -> Vec<Result<EventId, event_core::Error>> {
        let failing = events
            .iter()
            .any(|e| e.partition_key.as_deref() == Some("k0"))
            && self
                .times
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
        let (others, positions): (Vec<Event>, Vec<usize>) = events
            .iter()
            .enumerate()
            .filter(|(_, e)| !failing || e.partition_key.as_deref() != Some("k0"))
            .map(|(i, e)| (e.clone(), i))
            .unzip();
        let mut published = inner.publish_batch(others).await.into_iter();
        let mut results: Vec<Result<EventId, event_core::Error>> = events
            .iter()
            .map(|_| Err(event_core::Error::backend("test", "injected failure", true)))
            .collect();
        for position in positions {
            if let Some(result) = published.next() {
                results[position] = result;
            }
        }
        results
    }
}

/// A key whose events fail in one batch of a round sits out the round's later batches, while
/// the other keys go on; its events are delivered later, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_that_fails_sits_out_the_rest_of_its_round() -> anyhow::Result<()> {
    let Some(db) = test_db().await? else {
        return Ok(());
    };
    let memory: Arc<dyn EventBus> = Arc::new(MemoryBus::new(Config::default())?);
    let recorder = Recorder::subscribe(&memory).await?;
    let bus: Arc<dyn EventBus> =
        event_testkit::InterceptedBus::new(memory.clone(), FailsOneKey { times: 2.into() });
    // Three keys, 40 events each, interleaved: one round reads them all (4 batches of 30).
    let mut tx = db.pool.begin().await?;
    db.outbox
        .add(
            &mut tx,
            (0..120).map(|n| keyed_event(&format!("k{}", n % 3), n)),
        )
        .await?;
    tx.commit().await?;
    let mut config = relay_config();
    config.batch_size = 30;
    let relay = db.relay(&bus, config);
    let first = relay.deliver_once().await?;
    // k0 failed in the first batch: its 10 events there failed, its 30 later ones were not
    // published; k1 and k2 went through all four batches.
    assert_eq!((first.claimed, first.delivered, first.failed), (90, 80, 10));
    let mut rounds = 0;
    while Outbox::stats(&db.pool).await?.pending > 0 {
        relay.deliver_pending().await?;
        rounds += 1;
        assert!(rounds < 10, "k0 never got through");
    }
    let deliveries = recorder.snapshot();
    for key in ["k0", "k1", "k2"] {
        let ns: Vec<u64> = deliveries
            .iter()
            .filter(|d| d.key == key)
            .map(|d| d.n)
            .collect();
        let expected: Vec<u64> = (0..120).filter(|n| format!("k{}", n % 3) == key).collect();
        assert_eq!(ns, expected, "the deliveries of {key}");
    }
    memory.shutdown().await?;
    db.drop_schema().await
}
