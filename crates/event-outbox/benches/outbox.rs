//! Benchmark of the outbox against the bus it relays to, in the same run
//! (`EVENTBUS_TEST_POSTGRES_URL`, and `EVENTBUS_TEST_REDIS_URL` and/or
//! `EVENTBUS_TEST_KAFKA_BROKERS`):
//!
//! - relay throughput: a backlog of committed events (transactions of 100) drained by one
//!   relay, against the same events given to the bus's raw `publish_batch` in batches of the
//!   relay's size (500);
//! - latency from commit to handler: single-event transactions at about 200 a second, the
//!   relay woken by `NOTIFY`, a handler subscribed on Redis (or Kafka);
//! - an inbox handler (one `INSERT`, in the inbox's transaction with its record) against the
//!   same `INSERT` in a transaction of its own, 8 deliveries at a time.
//!
//! Run it with `cargo xtask bench outbox`, which starts the servers and writes
//! `docs/benchmarks.md` from the `RESULT` lines (format in `xtask/src/bench.rs`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use event_core::{
    Event, EventBus, EventHandler, EventId, EventType, HandlerError, SubscriptionSpec,
};
use event_outbox::{
    InboxConfig, InboxLayer, InboxTransaction, Outbox, Relay, RelayConfig, TransactionalHandler,
};
use futures::StreamExt as _;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tower::Layer as _;

const BACKLOG: usize = 20_000;
const PER_TRANSACTION: usize = 100;
const LATENCY_EVENTS: usize = 400;
const INBOX_EVENTS: usize = 4_000;

fn result(kind: &str, id: &str, value: f64, unit: &str, target: &str, label: &str) {
    println!("RESULT\t{kind}\t{id}\t{value:.1}\t{unit}\t{target}\t{label}");
}

/// A fresh schema of the server, migrated, and a pool with it first in the search path.
async fn database(url: &str, name: &str) -> PgPool {
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .expect("PostgreSQL");
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
        .execute(&admin)
        .await
        .expect("drop schema");
    sqlx::query(&format!("CREATE SCHEMA {name}"))
        .execute(&admin)
        .await
        .expect("create schema");
    let options = url
        .parse::<PgConnectOptions>()
        .expect("URL")
        .options([("search_path", name)]);
    let pool = PgPoolOptions::new()
        .max_connections(16)
        .connect_with(options)
        .await
        .expect("pool");
    event_outbox::migrate(&pool).await.expect("migrate");
    pool
}

fn events(event_type: &EventType, n: usize) -> Vec<Event> {
    (0..n)
        .map(|i| {
            Event::builder(event_type.clone(), "bench")
                .payload(serde_json::json!({"account": format!("account-{}", i % 64), "amount": i}))
                .partition_key(format!("account-{}", i % 64))
                .build()
                .expect("event")
        })
        .collect()
}

async fn raw(bus: &Arc<dyn EventBus>, events: Vec<Event>) -> f64 {
    let n = events.len();
    let start = Instant::now();
    let mut events = events.into_iter();
    loop {
        let batch: Vec<Event> = events
            .by_ref()
            .take(RelayConfig::default().batch_size)
            .collect();
        if batch.is_empty() {
            break;
        }
        for r in bus.publish_batch(batch).await {
            r.expect("raw publish");
        }
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// Commits `events` in transactions of `PER_TRANSACTION` (not timed), then times one relay
/// draining them.
async fn relayed(
    pool: &PgPool,
    outbox: &Outbox,
    bus: &Arc<dyn EventBus>,
    events: Vec<Event>,
) -> f64 {
    let n = events.len() as u64;
    let mut events = events.into_iter();
    loop {
        let chunk: Vec<Event> = events.by_ref().take(PER_TRANSACTION).collect();
        if chunk.is_empty() {
            break;
        }
        let mut tx = pool.begin().await.expect("begin");
        outbox.add(&mut tx, chunk).await.expect("add");
        tx.commit().await.expect("commit");
    }
    let start = Instant::now();
    let relay = Relay::new(
        pool.clone(),
        outbox.clone(),
        bus.clone(),
        RelayConfig::default(),
    )
    .spawn();
    while relay.stats().delivered < n {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    relay.shut_down().await.expect("relay");
    rate
}

/// Records when each event arrives.
struct Arrivals(Mutex<HashMap<EventId, Instant>>);

#[async_trait]
impl EventHandler for Arrivals {
    fn name(&self) -> &str {
        "bench-arrivals"
    }

    async fn handle(&self, event: &Event) -> Result<(), HandlerError> {
        self.0
            .lock()
            .expect("lock")
            .insert(event.id, Instant::now());
        Ok(())
    }
}

/// Single-event transactions at about 200 a second with a relay running; the time from each
/// commit's return to its handler call, in milliseconds: p50 and p99.
async fn latency(
    pool: &PgPool,
    outbox: &Outbox,
    bus: &Arc<dyn EventBus>,
    event_type: &EventType,
) -> (f64, f64) {
    let arrivals = Arc::new(Arrivals(Mutex::new(HashMap::new())));
    let subscription = bus
        .subscribe(
            SubscriptionSpec::new("bench-arrivals", [event_type.clone()]),
            arrivals.clone(),
        )
        .await
        .expect("subscribe");
    let relay = Relay::new(
        pool.clone(),
        outbox.clone(),
        bus.clone(),
        RelayConfig::default(),
    )
    .spawn();
    let mut committed = HashMap::new();
    for event in events(event_type, LATENCY_EVENTS) {
        let id = event.id;
        let mut tx = pool.begin().await.expect("begin");
        outbox.add(&mut tx, [event]).await.expect("add");
        tx.commit().await.expect("commit");
        committed.insert(id, Instant::now());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while arrivals.0.lock().expect("lock").len() < LATENCY_EVENTS {
        assert!(Instant::now() < deadline, "events lost on the way");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    relay.shut_down().await.expect("relay");
    subscription.unsubscribe().await.expect("unsubscribe");
    let arrived = arrivals.0.lock().expect("lock");
    let mut ms: Vec<f64> = committed
        .iter()
        .map(|(id, at)| arrived[id].saturating_duration_since(*at).as_secs_f64() * 1000.0)
        .collect();
    ms.sort_by(f64::total_cmp);
    (ms[ms.len() / 2], ms[ms.len() * 99 / 100])
}

/// One `INSERT` per event.
const INSERT: &str = "INSERT INTO bench_ledger (event_id, amount) VALUES ($1, $2)";

struct InTransaction;

#[async_trait]
impl TransactionalHandler for InTransaction {
    fn name(&self) -> &str {
        "bench-ledger"
    }

    async fn handle(&self, event: &Event, tx: &mut InboxTransaction) -> Result<(), HandlerError> {
        sqlx::query(INSERT)
            .bind(event.id.as_uuid())
            .bind(event.payload["amount"].as_i64())
            .execute(tx.connection())
            .await
            .map_err(|e| HandlerError::transient(e.to_string()))?;
        Ok(())
    }
}

struct Plain(PgPool);

#[async_trait]
impl EventHandler for Plain {
    fn name(&self) -> &str {
        "bench-ledger-plain"
    }

    async fn handle(&self, event: &Event) -> Result<(), HandlerError> {
        let mut tx = self
            .0
            .begin()
            .await
            .map_err(|e| HandlerError::transient(e.to_string()))?;
        sqlx::query(INSERT)
            .bind(event.id.as_uuid())
            .bind(event.payload["amount"].as_i64())
            .execute(&mut *tx)
            .await
            .map_err(|e| HandlerError::transient(e.to_string()))?;
        tx.commit()
            .await
            .map_err(|e| HandlerError::transient(e.to_string()))?;
        Ok(())
    }
}

/// Events handled per second, 8 at a time.
async fn handled(handler: Arc<dyn EventHandler>, events: Vec<Event>) -> f64 {
    let n = events.len();
    let start = Instant::now();
    futures::stream::iter(events)
        .for_each_concurrent(8, |event| {
            let handler = handler.clone();
            async move { handler.handle(&event).await.expect("handled") }
        })
        .await;
    n as f64 / start.elapsed().as_secs_f64()
}

async fn inbox(pool: &PgPool) -> (f64, f64) {
    sqlx::query("CREATE TABLE bench_ledger (event_id uuid PRIMARY KEY, amount bigint)")
        .execute(pool)
        .await
        .expect("table");
    let event_type = EventType::new("bench.inbox").expect("type");
    let plain = handled(
        Arc::new(Plain(pool.clone())),
        events(&event_type, INBOX_EVENTS),
    )
    .await;
    let layer = InboxLayer::new(pool.clone(), Outbox::new(), InboxConfig::default());
    let through = handled(
        Arc::new(layer.layer(InTransaction)),
        events(&event_type, INBOX_EVENTS),
    )
    .await;
    (plain, through)
}

async fn backend(name: &str, bus: Arc<dyn EventBus>, pool: &PgPool) {
    let event_type = EventType::new(format!("bench.outbox_{name}")).expect("type");
    let raw_rate = raw(&bus, events(&event_type, BACKLOG)).await;
    let outbox = Outbox::with_channel(format!("bench_outbox_{name}"));
    let relay_rate = relayed(pool, &outbox, &bus, events(&event_type, BACKLOG)).await;
    println!("{name}: raw publish_batch {raw_rate:.0}/s, relay {relay_rate:.0}/s");
    result(
        "reference",
        &format!("{name}_raw_batch"),
        raw_rate,
        "events/s",
        "-",
        &format!("{name}: raw `publish_batch` of 500, {BACKLOG} events"),
    );
    result(
        "bus",
        &format!("{name}_relay"),
        relay_rate,
        "events/s",
        &format!(">={:.0}", raw_rate / 2.0),
        &format!(
            "{name}: one relay draining {BACKLOG} committed events ({:.0} % of raw `publish_batch`; target: 50 %)",
            relay_rate / raw_rate * 100.0
        ),
    );
    let latency_type = EventType::new(format!("bench.latency_{name}")).expect("type");
    let (p50, p99) = latency(pool, &outbox, &bus, &latency_type).await;
    result(
        "bus",
        &format!("{name}_commit_p50"),
        p50,
        "ms",
        "<20",
        &format!(
            "{name}: commit to handler, p50 ({LATENCY_EVENTS} single-event transactions, `NOTIFY`)"
        ),
    );
    result(
        "bus",
        &format!("{name}_commit_p99"),
        p99,
        "ms",
        "-",
        &format!("{name}: commit to handler, p99"),
    );
    bus.shutdown().await.expect("shutdown");
}

fn main() {
    let Ok(url) = std::env::var("EVENTBUS_TEST_POSTGRES_URL") else {
        eprintln!(
            "set EVENTBUS_TEST_POSTGRES_URL, or run `cargo xtask bench outbox`, which starts the servers"
        );
        std::process::exit(2);
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let pool = database(&url, "eventbus_bench_outbox").await;
        if let Ok(redis) = std::env::var("EVENTBUS_TEST_REDIS_URL") {
            let mut config = event_redis::RedisConfig::default();
            config.url = redis;
            config.key_prefix = format!("bench-outbox-{:08x}", fastrand::u32(..));
            let bus = event_redis::RedisBus::connect(config, event_core::Config::default())
                .await
                .expect("Redis");
            backend("redis", Arc::new(bus), &pool).await;
        }
        if let Ok(brokers) = std::env::var("EVENTBUS_TEST_KAFKA_BROKERS") {
            let mut config = event_kafka::KafkaConfig::default();
            config.bootstrap_servers = brokers.split(',').map(str::to_string).collect();
            config.topic_prefix = format!("bench-outbox-{:08x}", fastrand::u32(..));
            let bus = event_kafka::KafkaBus::connect(config, event_core::Config::default())
                .await
                .expect("Kafka");
            backend("kafka", Arc::new(bus), &pool).await;
        }
        let (plain, through) = inbox(&pool).await;
        result("reference", "inbox_plain", plain, "events/s", "-", &format!("a handler's `INSERT` in a transaction of its own, {INBOX_EVENTS} events, 8 at a time"));
        result("bus", "inbox", through, "events/s", "-", &format!("the same `INSERT` through `InboxLayer` (its record in the same transaction): {:.0} % of the plain handler", through / plain * 100.0));
    });
}
