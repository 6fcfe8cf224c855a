//! Benchmark of [`BatchPublisher`] against the backend's raw `publish_batch`, in the same run,
//! on `MemoryBus`, and on `RedisBus` and `KafkaBus` when `EVENTBUS_TEST_REDIS_URL` and
//! `EVENTBUS_TEST_KAFKA_BROKERS` are set.
//!
//! Both sides start from the same typed payloads, build the same envelopes (validated, with
//! the publisher's metadata, through `EventPublisher::event`) and publish batches of
//! `EVENT_BATCH_SIZE` (100): the raw side calls `publish_batch` itself; the batch publisher
//! adds its buffer, its timer, the copies it keeps to hand failed events back, and a result
//! per event. After a warm-up round that counts for nothing, nine rounds each run both sides
//! back to back, in alternating order, on fresh buses; the medians are reported.
//!
//! Run it with `cargo xtask bench publishers`, which starts a Redis server and a Kafka broker
//! and writes
//! `docs/benchmarks.md` from the `RESULT` lines (format in `xtask/src/bench.rs`).

use std::sync::Arc;
use std::time::Instant;

use event_core::{Config, EventBus, MemoryBus};
use event_kafka::{KafkaBus, KafkaConfig};
use event_publishers::{BatchPublisher, BatchSettings, EventPublisher, SignalDetected};
use event_redis::{RedisBus, RedisConfig};
use event_testkit::bench::median;

const ROUNDS: usize = 9;

fn result(kind: &str, id: &str, value: f64, unit: &str, target: &str, label: &str) {
    println!("RESULT\t{kind}\t{id}\t{value:.1}\t{unit}\t{target}\t{label}");
}

fn note(text: &str) {
    println!("RESULT\tnote\t{text}");
}

fn payloads(n: usize) -> Vec<SignalDetected> {
    (0..n)
        .map(|i| SignalDetected {
            signal_id: format!("signal-{i}"),
            source: "reddit".into(),
            signal_type: "pain_point".into(),
            content: format!("Market signal {i}: customers ask for answers outside office hours"),
            confidence: 0.75,
            ..Default::default()
        })
        .collect()
}

/// Raw: build the same envelopes (same publisher, same metadata) and call `publish_batch`
/// per batch yourself.
async fn raw(bus: Arc<dyn EventBus>, payloads: Vec<SignalDetected>, size: usize) -> f64 {
    let n = payloads.len();
    let publisher = EventPublisher::new(bus.clone(), "bench").for_request("bench-run");
    let start = Instant::now();
    let mut payloads = payloads.into_iter();
    loop {
        let events: Vec<_> = payloads
            .by_ref()
            .take(size)
            .map(|p| publisher.event(p).expect("a valid event"))
            .collect();
        if events.is_empty() {
            break;
        }
        for r in bus.publish_batch(events).await {
            r.expect("raw publish");
        }
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// Through the batch publisher: `add` every payload, then `close`.
async fn batched(bus: Arc<dyn EventBus>, payloads: Vec<SignalDetected>, size: usize) -> f64 {
    let n = payloads.len();
    let publisher = EventPublisher::new(bus, "bench").for_request("bench-run");
    let settings = BatchSettings::new(size, Config::default().flush_interval);
    let start = Instant::now();
    let batch = BatchPublisher::new(publisher, settings);
    for p in payloads {
        batch.add(p).await.expect("valid payload");
    }
    let report = batch.close().await;
    let rate = n as f64 / start.elapsed().as_secs_f64();
    assert!(report.is_complete(), "events failed: {report:?}");
    rate
}

async fn compare<F, Fut>(backend: &str, n: usize, size: usize, make_bus: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn EventBus>>,
{
    let side = async |side: usize| {
        let bus = make_bus().await;
        let rate = if side == 0 {
            raw(bus.clone(), payloads(n), size).await
        } else {
            batched(bus.clone(), payloads(n), size).await
        };
        bus.shutdown().await.ok();
        rate
    };
    // A round first that counts for nothing: it creates the topic or stream and warms the
    // server (a JVM broker compiles its hot paths in its first seconds), which otherwise made
    // whichever side ran first in round 1 look slow (ratios of 131-189 % there).
    side(0).await;
    side(1).await;
    let (mut raws, mut batcheds, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        // The two sides run back to back, in alternating order, so that a load from outside
        // (the machine is shared) weighs on both alike; the ratio is taken per round.
        let mut r = 0.0;
        let mut b = 0.0;
        for which in [round % 2, 1 - round % 2] {
            let rate = side(which).await;
            if which == 0 {
                r = rate;
            } else {
                b = rate;
            }
        }
        println!(
            "{backend} round {}: raw publish_batch {r:.0} events/s, BatchPublisher {b:.0} events/s ({:.0}%)",
            round + 1,
            100.0 * b / r
        );
        raws.push(r);
        batcheds.push(b);
        ratios.push(100.0 * b / r);
    }
    let [raw, batched, ratio] =
        [raws, batcheds, ratios].map(|values| median(values).unwrap_or(f64::NAN));
    result(
        "bus",
        &format!("{backend}_batched"),
        batched,
        "events/s",
        "-",
        &format!("{backend}: BatchPublisher, {n} typed events in batches of {size}"),
    );
    result(
        "bus",
        &format!("{backend}_ratio"),
        ratio,
        "%",
        ">=90",
        &format!(
            "{backend}: BatchPublisher as a share of raw `publish_batch` (median of the rounds' ratios)"
        ),
    );
    result(
        "reference",
        &format!("{backend}_raw"),
        raw,
        "events/s",
        "-",
        &format!(
            "{backend}: raw `publish_batch` of {size}, the same envelopes built by `EventPublisher::event`"
        ),
    );
}

/// mimalloc, as a service built for throughput would use: with glibc's allocator the Kafka
/// end-to-end run was about half as fast (`docs/benchmarks.md`, "Where the time goes").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let size = Config::default().batch_size;
    note(&format!(
        "batches of {size} (`EVENT_BATCH_SIZE`), flush interval {} ms; `signal.detected` payloads of about 150 bytes; a warm-up round, then {ROUNDS} rounds, each running both sides back to back in alternating order on fresh buses; medians reported; mimalloc as the global allocator",
        Config::default().flush_interval.as_millis()
    ));
    if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
        let load: Vec<&str> = load.split_whitespace().take(3).collect();
        note(&format!(
            "load average at the start (1, 5, 15 min): {} on {} cores; other work on the machine weighs on both sides of each round alike, not on the ratio",
            load.join(", "),
            std::thread::available_parallelism().map_or(0, usize::from)
        ));
    }
    runtime.block_on(async {
        compare("memory", 200_000, size, || async {
            Arc::new(MemoryBus::new(Config::default()).expect("memory bus")) as Arc<dyn EventBus>
        })
        .await;
        match std::env::var("EVENTBUS_TEST_REDIS_URL") {
            Ok(url) => {
                let prefix = format!("eventbus-bench-{:08x}", std::process::id());
                compare("redis", 200_000, size, || {
                    let url = url.clone();
                    let prefix = prefix.clone();
                    async move {
                        let mut redis = RedisConfig::default();
                        redis.url = url;
                        redis.key_prefix = prefix;
                        Arc::new(
                            RedisBus::connect(redis, Config::default())
                                .await
                                .expect("a Redis server"),
                        )
                            as Arc<dyn EventBus>
                    }
                })
                .await;
            }
            Err(_) => eprintln!(
                "no EVENTBUS_TEST_REDIS_URL: Redis skipped; `cargo xtask bench publishers` starts a server"
            ),
        }
        match std::env::var("EVENTBUS_TEST_KAFKA_BROKERS") {
            Ok(brokers) => {
                let prefix = format!("eventbus-bench-{:08x}", std::process::id());
                compare("kafka", 300_000, size, || {
                    let mut kafka = KafkaConfig::default();
                    kafka.bootstrap_servers =
                        brokers.split(',').map(|s| s.trim().to_string()).collect();
                    kafka.topic_prefix = prefix.clone();
                    async move {
                        Arc::new(
                            KafkaBus::connect(kafka, Config::default())
                                .await
                                .expect("a Kafka broker"),
                        ) as Arc<dyn EventBus>
                    }
                })
                .await;
            }
            Err(_) => eprintln!(
                "no EVENTBUS_TEST_KAFKA_BROKERS: Kafka skipped; `cargo xtask bench publishers` starts a broker"
            ),
        }
    });
}
