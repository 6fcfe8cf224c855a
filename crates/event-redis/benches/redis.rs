//! Benchmark of [`RedisBus`] against a real redis-server (`EVENTBUS_TEST_REDIS_URL`), with
//! `redis-benchmark` sending the same `XADD` of the same 300-byte envelope as the raw
//! reference, in the same run on the same server.
//!
//! Run it with `cargo xtask bench redis`, which starts a server and writes
//! `docs/benchmarks.md` from the `RESULT` lines (format in `xtask/src/bench.rs`).

use std::process::Command;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use event_core::{
    Config, EnvSettings as _, Event, EventBus, EventHandler, EventType, HandlerError, JsonCodec,
    SubscriptionSpec,
};
use event_redis::{RedisBus, RedisConfig};
use event_testkit::bench::median;
use serde_json::Value;

const EVENT_TYPE: EventType = EventType::SIGNAL_DETECTED;
const ENVELOPE_BYTES: usize = 300;
const LATENCY_RATE: u64 = 10_000;
const LATENCY_DURATION: Duration = Duration::from_secs(3);

fn result(kind: &str, id: &str, value: f64, unit: &str, target: &str, label: &str) {
    println!("RESULT\t{kind}\t{id}\t{value:.1}\t{unit}\t{target}\t{label}");
}

fn note(text: &str) {
    println!("RESULT\tnote\t{text}");
}

/// Rounds of single publishes, each with its references.
const SINGLE_ROUNDS: usize = 3;
/// Single publishes made before the clock starts.
const WARM_UP: u64 = 1_000;

/// How many event types the events spread over: one on a single server; on a cluster
/// ([`CLUSTER_VAR`]), six, whose streams lie on the different masters.
static TYPES: OnceLock<usize> = OnceLock::new();

/// Names the one measurement to run, for profiling it (see `main`).
const ONLY_VAR: &str = "EVENTBUS_BENCH_ONLY";

/// Set to run the benchmark on the Redis Cluster of `EVENTBUS_TEST_REDIS_CLUSTER_URL`.
const CLUSTER_VAR: &str = "EVENTBUS_BENCH_REDIS_CLUSTER";

/// The `n`th of `count` event types named after `base` (`base` itself when there is one).
fn nth_type(base: &str, n: u64) -> EventType {
    let count = *TYPES.get().unwrap_or(&1) as u64;
    if count == 1 {
        return EventType::new(base).expect("a valid type");
    }
    let (domain, action) = base.split_once('.').expect("a dotted type");
    EventType::new(format!("{domain}{}.{action}", n % count)).expect("a valid type")
}

/// Every type [`nth_type`] gives for `base`.
fn all_types(base: &str) -> Vec<EventType> {
    let count = *TYPES.get().unwrap_or(&1) as u64;
    (0..count).map(|n| nth_type(base, n)).collect()
}

/// An event whose envelope encodes to about [`ENVELOPE_BYTES`] bytes.
fn event(n: u64, sent_ns: u64) -> Event {
    let build = |filler: usize| {
        Event::builder(nth_type(EVENT_TYPE.as_str(), n), "bench")
            .field("n", n)
            .field("sent_ns", sent_ns)
            .field("content", "x".repeat(filler))
            .partition_key(format!("signal-{}", n % 1024))
            .build()
            .expect("a valid event")
    };
    let base = JsonCodec::default().encoded_len(&build(0)).unwrap_or(0);
    build(ENVELOPE_BYTES.saturating_sub(base))
}

/// Counts handled events; records latency from the `sent_ns` field when asked.
struct Counter {
    name: String,
    base: Instant,
    count: AtomicUsize,
    latencies: Option<Vec<AtomicU64>>,
}

#[async_trait]
impl EventHandler for Counter {
    fn name(&self) -> &str {
        &self.name
    }

    async fn handle(&self, event: &Event) -> Result<(), HandlerError> {
        let i = self.count.fetch_add(1, Ordering::Relaxed);
        if let Some(latencies) = &self.latencies {
            let sent = event
                .payload
                .get("sent_ns")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            let now = self.base.elapsed().as_nanos() as u64;
            if let Some(slot) = latencies.get(i) {
                slot.store(now.saturating_sub(sent), Ordering::Relaxed);
            }
        }
        Ok(())
    }
}

struct Bench {
    url: String,
    prefix: String,
    base: Instant,
}

impl Bench {
    async fn bus(&self) -> RedisBus {
        // The environment's settings (EVENT_BATCH_SIZE, EVENT_HANDLER_CONCURRENCY, ...) apply,
        // for experiments; `cargo xtask bench` runs with none set.
        let config = Config::from_env().expect("a valid configuration");
        let mut redis = RedisConfig::from_env().expect("a valid Redis configuration");
        redis.url = self.url.clone();
        redis.key_prefix = self.prefix.clone();
        RedisBus::connect(redis, config)
            .await
            .expect("the benchmark needs a Redis server")
    }

    /// `n` awaited single publishes from one task (as a request handler publishes; from the
    /// main thread's `block_on` each reply would also cross threads).
    async fn single(&self, n: u64) -> f64 {
        let bus = self.bus().await;
        let events: Vec<Event> = (0..n).map(|i| event(i, 0)).collect();
        let publisher = bus.clone();
        let rate = tokio::spawn(async move {
            // Untimed: the stream is created and the connections are up, as for the references
            // (`redis-benchmark` adds to a stream that exists).
            for i in 0..WARM_UP {
                publisher.publish(event(n + i, 0)).await.expect("publish");
            }
            let start = Instant::now();
            for e in events {
                publisher.publish(e).await.expect("publish");
            }
            n as f64 / start.elapsed().as_secs_f64()
        })
        .await
        .expect("the publishing task");
        bus.shutdown().await.ok();
        rate
    }

    /// The client the bus uses, alone: `n` awaited `XADD`s of the same fields, the envelope
    /// encoded before the clock starts. Only on a single server.
    async fn raw_client_single(&self, n: u64) -> Option<f64> {
        use fred::prelude::{ClientLike, KeysInterface, StreamsInterface};
        if is_cluster(&self.url) {
            return None;
        }
        let config = fred::types::config::Config::from_url(&self.url).ok()?;
        let client = fred::prelude::Builder::from_config(config).build().ok()?;
        client.init().await.ok()?;
        let e = event(0, 0);
        let json = bytes::Bytes::from(JsonCodec::default().encode(&e).ok()?);
        let (id, key) = (e.id.to_string(), format!("{}:raw-client", self.prefix));
        // From a task, as `single` publishes.
        let publisher = client.clone();
        let stream = key.clone();
        let rate = tokio::spawn(async move {
            let mut start = Instant::now();
            for i in 0..WARM_UP + n {
                if i == WARM_UP {
                    start = Instant::now();
                }
                let fields = vec![
                    ("id", fred::types::Value::from(id.as_str())),
                    ("type", fred::types::Value::from(EVENT_TYPE.as_str())),
                    ("key", fred::types::Value::from("signal-0")),
                    ("event", fred::types::Value::Bytes(json.clone())),
                ];
                let _: fred::types::Value = publisher
                    .xadd(stream.as_str(), false, ("MINID", "~", "0"), "*", fields)
                    .await
                    .ok()?;
            }
            Some(n as f64 / start.elapsed().as_secs_f64())
        })
        .await
        .ok()??;
        let _: Result<(), _> = client.del(key.as_str()).await;
        client.quit().await.ok()?;
        Some(rate)
    }

    async fn concurrent(&self, n: u64, publishers: u64) -> f64 {
        let bus = self.bus().await;
        let start = Instant::now();
        let tasks: Vec<_> = (0..publishers)
            .map(|p| {
                let bus = bus.clone();
                let events: Vec<Event> = (0..n / publishers).map(|i| event(p * n + i, 0)).collect();
                tokio::spawn(async move {
                    for e in events {
                        bus.publish(e).await.expect("publish");
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("publisher");
        }
        let rate = (n / publishers * publishers) as f64 / start.elapsed().as_secs_f64();
        bus.shutdown().await.ok();
        rate
    }

    async fn batches(&self, n: u64, size: usize) -> f64 {
        let bus = self.bus().await;
        let events: Vec<Event> = (0..n).map(|i| event(i, 0)).collect();
        let start = Instant::now();
        publish_in_batches(&bus, events, size).await;
        let rate = n as f64 / start.elapsed().as_secs_f64();
        bus.shutdown().await.ok();
        rate
    }

    /// Publishes `n` events in batches of 100 while `handlers` handlers consume; the clock
    /// stops when every handler has handled every event and nothing is left unacknowledged.
    async fn end_to_end(&self, n: u64, handlers: usize) -> f64 {
        let bus = self.bus().await;
        let base = format!("bench{}.e2e", fastrand::u32(..));
        let types = all_types(&base);
        let mut counters = Vec::new();
        for h in 0..handlers {
            let counter = Arc::new(Counter {
                name: format!("e2e{h}"),
                base: self.base,
                count: AtomicUsize::new(0),
                latencies: None,
            });
            bus.subscribe(
                SubscriptionSpec::new(counter.name.clone(), types.clone()),
                counter.clone(),
            )
            .await
            .expect("subscribe");
            counters.push(counter);
        }
        let events: Vec<Event> = (0..n)
            .map(|i| {
                let mut e = event(i, 0);
                e.event_type = nth_type(&base, i);
                e
            })
            .collect();
        let start = Instant::now();
        publish_in_batches(&bus, events, 100).await;
        let deadline = Instant::now() + Duration::from_secs(300);
        while counters
            .iter()
            .any(|c| c.count.load(Ordering::Relaxed) < n as usize)
        {
            assert!(Instant::now() < deadline, "handlers did not finish");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        loop {
            let stats = bus.stats().await.expect("stats");
            let pending: u64 = counters
                .iter()
                .filter_map(|c| stats.handlers.get(&c.name))
                .map(|h| h.pending)
                .sum();
            if pending == 0 {
                break;
            }
            assert!(Instant::now() < deadline, "acknowledgements did not finish");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let rate = n as f64 / start.elapsed().as_secs_f64();
        bus.shutdown().await.ok();
        rate
    }

    /// Single publishes paced at [`LATENCY_RATE`]; returns sorted latencies in microseconds.
    async fn latency(&self) -> Vec<f64> {
        let bus = self.bus().await;
        let base = format!("bench{}.latency", fastrand::u32(..));
        let total = (LATENCY_RATE * LATENCY_DURATION.as_secs()) as usize;
        let counter = Arc::new(Counter {
            name: "latency".into(),
            base: self.base,
            count: AtomicUsize::new(0),
            latencies: Some((0..total).map(|_| AtomicU64::new(0)).collect()),
        });
        bus.subscribe(
            SubscriptionSpec::new("latency", all_types(&base)),
            counter.clone(),
        )
        .await
        .expect("subscribe");
        let tick = Duration::from_millis(1);
        let per_tick = LATENCY_RATE / 1000;
        let mut next = Instant::now();
        let mut sent = 0;
        while sent < total {
            for _ in 0..per_tick {
                let mut e = event(sent as u64, self.base.elapsed().as_nanos() as u64);
                e.event_type = nth_type(&base, sent as u64);
                bus.publish(e).await.expect("publish");
                sent += 1;
            }
            next += tick;
            tokio::time::sleep_until(next.into()).await;
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while counter.count.load(Ordering::Relaxed) < total && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        bus.shutdown().await.ok();
        let mut us: Vec<f64> = counter
            .latencies
            .iter()
            .flatten()
            .map(|l| l.load(Ordering::Relaxed) as f64 / 1000.0)
            .collect();
        us.sort_by(f64::total_cmp);
        us
    }
}

async fn publish_in_batches(bus: &RedisBus, events: Vec<Event>, size: usize) {
    let mut events = events.into_iter();
    loop {
        let batch: Vec<Event> = events.by_ref().take(size).collect();
        if batch.is_empty() {
            return;
        }
        for r in bus.publish_batch(batch).await {
            r.expect("publish");
        }
    }
}

/// `redis-benchmark` sending our `XADD` (same fields, same 300-byte envelope); requests/s.
fn redis_benchmark(url: &str, clients: u32, pipeline: u32, requests: u32) -> Option<f64> {
    let (host, port) = seed(url)?;
    // On a cluster, `{tag}` in the key is replaced by a tag of each client's master: the
    // XADDs spread over every master, as the bus's six types do.
    let (cluster, key) = if is_cluster(url) {
        (vec!["--cluster"], "bench:{tag}:raw")
    } else {
        (vec![], "bench:raw")
    };
    let e = event(0, 0);
    let json = String::from_utf8(JsonCodec::default().encode(&e).ok()?).ok()?;
    let output = Command::new("redis-benchmark")
        .args([
            "-h",
            host,
            "-p",
            port,
            "-c",
            &clients.to_string(),
            "-P",
            &pipeline.to_string(),
        ])
        .args(["-n", &requests.to_string(), "-q"])
        .args(cluster)
        .args([
            "XADD",
            key,
            "MINID",
            "~",
            "0",
            "*",
            "id",
            &e.id.to_string(),
            "type",
        ])
        .args([EVENT_TYPE.as_str(), "key", "signal-0", "event", &json])
        .output()
        .ok()?;
    // `-q` prints `<command>: <rate> requests per second, p50=...`; the command itself holds
    // the envelope, so the rate is the word just before "requests per second".
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.contains(" requests per second"))?;
    let before = &line[..line.find(" requests per second")?];
    before.split_whitespace().last()?.parse().ok()
}

/// Whether `url` names a Redis Cluster.
fn is_cluster(url: &str) -> bool {
    url.starts_with("redis-cluster://")
}

/// The host and port of the server, or of the first node of a cluster.
fn seed(url: &str) -> Option<(&str, &str)> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', ',', '?']).next()?;
    authority.rsplit_once(':')
}

/// Sets `appendfsync everysec`, Redis's default durability with AOF on: the test servers
/// fsync every write (for the fault tests), which measures the disk rather than the bus. On a
/// cluster, on every node (`redis-cli --cluster call`).
fn fsync_every_second(url: &str) -> Option<()> {
    use std::io::{Read, Write};
    if is_cluster(url) {
        let (host, port) = seed(url)?;
        let status = Command::new("redis-cli")
            .args(["--cluster", "call", &format!("{host}:{port}")])
            .args(["CONFIG", "SET", "appendfsync", "everysec"])
            .output()
            .ok()?
            .status;
        return status.success().then_some(());
    }
    let authority = url.trim_start_matches("redis://").split('/').next()?;
    let mut stream = std::net::TcpStream::connect(authority).ok()?;
    let command = "*4\r\n$6\r\nCONFIG\r\n$3\r\nSET\r\n$11\r\nappendfsync\r\n$8\r\neverysec\r\n";
    stream.write_all(command.as_bytes()).ok()?;
    let mut reply = [0u8; 64];
    let n = stream.read(&mut reply).ok()?;
    reply[..n].starts_with(b"+OK").then_some(())
}

fn percentile(sorted: &[f64], per_mille: usize) -> f64 {
    sorted
        .get((sorted.len() * per_mille / 1000).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or(f64::NAN)
}

/// mimalloc, as a service built for throughput would use: with glibc's allocator the Kafka
/// end-to-end run was about half as fast (`docs/benchmarks.md`, "Where the time goes").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cluster = std::env::var_os(CLUSTER_VAR).is_some();
    let variable = if cluster {
        "EVENTBUS_TEST_REDIS_CLUSTER_URL"
    } else {
        "EVENTBUS_TEST_REDIS_URL"
    };
    let Ok(url) = std::env::var(variable) else {
        eprintln!(
            "set {variable}, or run `cargo xtask bench redis` (`redis-cluster`), which starts the servers"
        );
        std::process::exit(2);
    };
    TYPES.set(if cluster { 6 } else { 1 }).expect("set once");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let bench = Bench {
        url: url.clone(),
        prefix: format!("eventbus-bench-{:08x}", fastrand::u32(..)),
        base: Instant::now(),
    };
    let size = JsonCodec::default().encoded_len(&event(0, 0)).unwrap_or(0);
    println!("RedisBus benchmark on {url}, envelopes of {size} bytes");

    // For profiling one measurement: `EVENTBUS_BENCH_ONLY=single` (`batches`, `e2e_one`, `e2e_four`; `e2e_sampled`, `e2e_sampled_1`:
    // with every trace, 1 % of traces sampled) runs it alone, without the reference, and prints no RESULT lines; `e2e_traced`
    // runs the three end to ends in processes of their own and prints theirs.
    if let Ok(only) = std::env::var(ONLY_VAR) {
        if only == "e2e_traced" {
            event_testkit::bench_tracing::traced_end_to_end(ONLY_VAR, 3);
            return;
        }
        let rate = runtime.block_on(async {
            match only.as_str() {
                "single" => bench.single(20_000).await,
                "raw_client_single" => bench.raw_client_single(20_000).await.unwrap_or(0.0),
                "batches" => bench.batches(500_000, 100).await,
                "e2e_one" => bench.end_to_end(200_000, 1).await,
                "e2e_four" => bench.end_to_end(100_000, 4).await,
                "e2e_sampled" | "e2e_sampled_1" => {
                    event_testkit::bench_tracing::sampled_end_to_end(
                        &only,
                        bench.end_to_end(200_000, 1),
                    )
                    .await
                }
                other => panic!("{ONLY_VAR}: unknown measurement `{other}`"),
            }
        });
        println!("{only}: {rate:.0} events/s");
        return;
    }
    let fsync_note = match fsync_every_second(&url) {
        Some(()) => "`appendonly yes` with `appendfsync everysec` (set by the benchmark)",
        None => "the server's own persistence settings (CONFIG SET appendfsync failed)",
    };
    // Single publishes in turn with their references, the medians of a few rounds: one short
    // run each is at the mercy of the machine's moment (ratios from 70 % to 100 % in
    // consecutive runs of one).
    let (mut raws, mut buses, mut clients) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=SINGLE_ROUNDS {
        raws.extend(redis_benchmark(&url, 1, 1, 20_000));
        buses.push(runtime.block_on(bench.single(20_000)));
        clients.extend(runtime.block_on(bench.raw_client_single(20_000)));
        println!(
            "single awaited publishes, round {round}: redis-benchmark {:?}, the bus {:?}, fred alone {:?} per second",
            raws.last(),
            buses.last(),
            clients.last()
        );
    }
    let (raw_single, single, raw_client) = (median(raws), median(buses), median(clients));
    let single = single.unwrap_or(f64::NAN);
    let raw_concurrent = redis_benchmark(&url, 64, 1, 200_000);
    let raw_pipelined = redis_benchmark(&url, 1, 100, 500_000);

    runtime.block_on(async {
        let concurrent = bench.concurrent(200_000, 64).await;
        println!("64 concurrent publishers: {concurrent:.0} events/s");
        let batches = bench.batches(500_000, 100).await;
        println!("batches of 100: {batches:.0} events/s");
        let e2e_one = bench.end_to_end(200_000, 1).await;
        println!("end to end, 1 handler: {e2e_one:.0} events/s");
        let e2e_four = bench.end_to_end(100_000, 4).await;
        println!("end to end, 4 handlers: {e2e_four:.0} events/s");
        let latencies = bench.latency().await;
        let (p50, p99, p999) = (
            percentile(&latencies, 500),
            percentile(&latencies, 990),
            percentile(&latencies, 999),
        );
        println!(
            "latency at {LATENCY_RATE}/s: p50 {p50:.0} µs, p99 {p99:.0} µs, p99.9 {p999:.0} µs"
        );

        // Issue 20's targets, as shares of the server's own tool in this run.
        let share = |raw: Option<f64>, share: f64| {
            raw.map_or("-".to_string(), |r| format!(">={:.0}", r * share))
        };
        result(
            "bus",
            "single",
            single,
            "events/s",
            &share(raw_single, 0.8),
            "Single publishes, each awaited, from a task (target: 80 % of `redis-benchmark -c 1 -P 1`; medians of 3 rounds in turn with the references)",
        );
        result(
            "bus",
            "concurrent",
            concurrent,
            "events/s",
            "-",
            "64 concurrent publishers, single publishes",
        );
        result(
            "bus",
            "batches",
            batches,
            "events/s",
            &share(raw_pipelined, 0.5),
            "`publish_batch` of 100, one publisher (target: half of `redis-benchmark -P 100`)",
        );
        result(
            "bus",
            "e2e_one",
            e2e_one,
            "events/s",
            &share(raw_pipelined, 0.3),
            "End to end (publish, handle, ack), 1 handler (target: 30 % of `redis-benchmark -P 100`)",
        );
        result(
            "bus",
            "e2e_four",
            e2e_four,
            "events/s",
            &share(raw_pipelined, 0.15),
            "End to end, 4 handlers (events published per second, each handled 4 times; target: 15 % of `redis-benchmark -P 100`)",
        );
        result(
            "bus",
            "latency_p50",
            p50,
            "µs",
            "-",
            "Latency publish to handled at 10,000 events/s: p50",
        );
        result(
            "bus",
            "latency_p99",
            p99,
            "µs",
            "<5000",
            "Latency publish to handled at 10,000 events/s: p99",
        );
        result(
            "bus",
            "latency_p999",
            p999,
            "µs",
            "-",
            "Latency publish to handled at 10,000 events/s: p99.9",
        );
    });
    event_testkit::bench_tracing::traced_end_to_end(ONLY_VAR, 3);
    for (id, value, label) in [
        (
            "raw_client_single",
            raw_client,
            "fred (the client the bus uses) alone: the same `XADD`, each awaited from a task, envelope encoded beforehand (median of 3 rounds)",
        ),
        (
            "raw_single",
            raw_single,
            "`redis-benchmark -c 1 -P 1`, the same XADD (median of 3 rounds)",
        ),
        (
            "raw_concurrent",
            raw_concurrent,
            "`redis-benchmark -c 64 -P 1`, the same XADD",
        ),
        (
            "raw_pipelined",
            raw_pipelined,
            "`redis-benchmark -c 1 -P 100`, the same XADD",
        ),
    ] {
        match value {
            Some(v) => result("reference", id, v, "events/s", "-", label),
            None => note(&format!(
                "{label}: redis-benchmark did not run (is it installed?)"
            )),
        }
    }
    let servers = if cluster {
        "A Redis Cluster of three masters with a replica each (`cargo xtask services up redis --cluster`), all six `redis-server` processes"
    } else {
        "redis-server"
    };
    note(&format!(
        "{servers} on the same 2-core machine as the benchmark, with {fsync_note}; envelopes of {size} bytes; `Config::default()` (`EVENT_HANDLER_CONCURRENCY`=16, `EVENT_BATCH_SIZE`=100); Tokio multi-thread runtime with 2 workers; mimalloc as the global allocator."
    ));
    if cluster {
        note(
            "On the cluster the events spread over six event types, whose streams lie on the three masters (a handler subscribes to all six); `redis-benchmark --cluster` sends the same XADD to a key of each client's master (`{tag}`). Replication to the replicas is asynchronous (`REDIS_WAIT_REPLICAS`=0).",
        );
    }
    note(
        "End to end: one task publishes with `publish_batch` of 100 while the handlers consume; the clock stops when every handler has handled every event and `XINFO GROUPS` shows nothing pending.",
    );
    note(
        "Latency: single `publish` calls paced at 10 per millisecond for 3 s; each event carries its publish time; the handler records handled minus published.",
    );
}
