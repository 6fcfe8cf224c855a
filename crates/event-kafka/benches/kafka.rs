//! Benchmark of [`KafkaBus`] against a real Kafka broker (`EVENTBUS_TEST_KAFKA_BROKERS`), or
//! the three-node cluster with replication factor 3 (`cargo xtask bench kafka-cluster`), with
//! Kafka's own `org.apache.kafka.tools.ProducerPerformance` (from the jars in
//! `EVENTBUS_TEST_KAFKA_CLASSPATH`) as the raw reference, in the same run on the same broker,
//! with the same record size, `acks=all`, the same compression and the same partition count.
//!
//! Run it with `cargo xtask bench kafka`, which starts a broker and writes
//! `docs/benchmarks.md` from the `RESULT` lines (format in `xtask/src/bench.rs`).

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use event_core::{
    Config, EnvSettings as _, Event, EventBus, EventHandler, EventId, EventType, HandlerError,
    JsonCodec, StartFrom, SubscriptionSpec,
};
use event_kafka::{KafkaBus, KafkaConfig};
use event_testkit::bench::median;

const ENVELOPE_BYTES: usize = 300;
/// How long each publish measurement runs.
const RUN: Duration = Duration::from_secs(3);
const PUBLISHERS: usize = 64;
const BATCH: usize = 1_000;
/// Concurrent `publish_batch` callers in the second batch measurement and end to end.
const BATCH_PUBLISHERS: usize = 8;
const E2E_EVENTS: usize = 300_000;
/// Names one measurement to run alone (see `main`).
const ONLY_VAR: &str = "EVENTBUS_BENCH_ONLY";
/// `ProducerPerformance`'s record count (the label of its row says 1,000,000).
const RAW_RECORDS: u64 = 1_000_000;
/// `ProducerPerformance`'s record count one record at a time, per round (a few seconds'
/// worth: 2 s on one broker, 8 s on the three-node cluster).
const RAW_SINGLE_RECORDS: u64 = 6_000;
/// Rounds of single publishes, each the bus's [`RUN`] right after its reference's.
const SINGLE_ROUNDS: usize = 3;
/// The Java producer's `batch.size`: the bus produces up to 512 KiB per request.
const RAW_BATCH_BYTES: u32 = 512 * 1024;
/// Distinct prebuilt events, cloned (with a fresh id) for each publish.
const POOL: usize = 4_096;

fn result(kind: &str, id: &str, value: f64, unit: &str, target: &str, label: &str) {
    println!("RESULT\t{kind}\t{id}\t{value:.1}\t{unit}\t{target}\t{label}");
}

fn note(text: &str) {
    println!("RESULT\tnote\t{text}");
}

/// An event of `event_type` whose envelope encodes to about [`ENVELOPE_BYTES`] bytes.
fn event(event_type: &EventType, n: u64) -> Event {
    let build = |filler: usize| {
        Event::builder(event_type.clone(), "bench")
            .field("n", n)
            .field("sent_ns", 0u64)
            .field("content", "x".repeat(filler))
            .partition_key(format!("signal-{}", n % 1024))
            .build()
            .expect("a valid event")
    };
    let base = JsonCodec::default().encoded_len(&build(0)).unwrap_or(0);
    build(ENVELOPE_BYTES.saturating_sub(base))
}

/// [`POOL`] events of one type, built before any clock starts.
struct Pool(Vec<Event>);

impl Pool {
    fn new(event_type: &EventType) -> Arc<Self> {
        Arc::new(Pool(
            (0..POOL as u64).map(|n| event(event_type, n)).collect(),
        ))
    }

    /// The `i`-th event to publish: a pooled event with an id of its own.
    fn get(&self, i: usize) -> Event {
        let mut e = self.0[i % self.0.len()].clone();
        e.id = EventId::new();
        e
    }
}

/// Counts handled events.
struct Counter {
    name: String,
    count: AtomicUsize,
}

#[async_trait]
impl EventHandler for Counter {
    fn name(&self) -> &str {
        &self.name
    }

    async fn handle(&self, _event: &Event) -> Result<(), HandlerError> {
        self.count.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

struct Bench {
    config: Config,
    kafka: KafkaConfig,
    run: u32,
}

impl Bench {
    async fn bus(&self) -> KafkaBus {
        KafkaBus::connect(self.kafka.clone(), self.config.clone())
            .await
            .expect("the benchmark needs a Kafka broker")
    }

    /// A fresh event type (so a fresh topic) for one measurement.
    fn event_type(&self, what: &str) -> EventType {
        EventType::new(format!("bench{:08x}.{what}", self.run)).expect("a valid type")
    }

    /// A bus with the topic of a fresh type created and its connections open.
    async fn warm(&self, what: &str) -> (KafkaBus, Arc<Pool>) {
        self.warm_on(self.bus().await, what).await
    }

    /// [`Bench::warm`] on `bus`.
    async fn warm_on(&self, bus: KafkaBus, what: &str) -> (KafkaBus, Arc<Pool>) {
        let pool = Pool::new(&self.event_type(what));
        for r in bus
            .publish_batch((0..100).map(|i| pool.get(i)).collect())
            .await
        {
            r.expect("warm-up publish");
        }
        (bus, pool)
    }

    async fn single(&self) -> f64 {
        let (bus, pool) = self.warm("single").await;
        let start = Instant::now();
        let mut n = 0;
        while start.elapsed() < RUN {
            bus.publish(pool.get(n)).await.expect("publish");
            n += 1;
        }
        let rate = n as f64 / start.elapsed().as_secs_f64();
        bus.shutdown().await.ok();
        rate
    }

    async fn concurrent(&self) -> f64 {
        let (bus, pool) = self.warm("concurrent").await;
        let sent = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let tasks: Vec<_> = (0..PUBLISHERS)
            .map(|p| {
                let (bus, pool, sent) = (bus.clone(), pool.clone(), sent.clone());
                tokio::spawn(async move {
                    let mut i = p * 1_000_003;
                    while start.elapsed() < RUN {
                        bus.publish(pool.get(i)).await.expect("publish");
                        sent.fetch_add(1, Ordering::Relaxed);
                        i += 1;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("publisher");
        }
        let rate = sent.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
        bus.shutdown().await.ok();
        rate
    }

    /// `publishers` tasks, each calling `publish_batch` with `size` events at a time.
    async fn batches(&self, what: &str, size: usize, publishers: usize) -> f64 {
        let (bus, pool) = self.warm(what).await;
        let sent = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let tasks: Vec<_> = (0..publishers)
            .map(|p| {
                let (bus, pool, sent) = (bus.clone(), pool.clone(), sent.clone());
                tokio::spawn(async move {
                    let mut n = p * 1_000_003;
                    while start.elapsed() < RUN {
                        let batch: Vec<Event> = (n..n + size).map(|i| pool.get(i)).collect();
                        for r in bus.publish_batch(batch).await {
                            r.expect("publish");
                        }
                        sent.fetch_add(size as u64, Ordering::Relaxed);
                        n += size;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("publisher");
        }
        let rate = sent.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
        bus.shutdown().await.ok();
        rate
    }

    /// Publishes [`E2E_EVENTS`] events in batches of [`BATCH`] from [`BATCH_PUBLISHERS`] tasks
    /// while one handler consumes;
    /// the clock stops when the handler has handled every event and the group's committed
    /// offsets, read by a second bus, have reached the end of every partition.
    ///
    /// With `backlog`, the events are all published first and the clock runs from the
    /// subscription on: the consuming side alone.
    async fn end_to_end(&self, backlog: bool) -> f64 {
        let bus = self.bus().await;
        let observer = self.bus().await;
        let event_type = self.event_type(if backlog { "backlog" } else { "e2e" });
        let counter = Arc::new(Counter {
            name: format!("e2e{:08x}{backlog}", self.run),
            count: AtomicUsize::new(0),
        });
        let subscribe = || {
            bus.subscribe(
                SubscriptionSpec::new(counter.name.clone(), [event_type.clone()])
                    .start_from(StartFrom::Earliest),
                counter.clone(),
            )
        };
        if !backlog {
            subscribe().await.expect("subscribe");
        }
        let pool = Pool::new(&event_type);
        let mut events = (0..E2E_EVENTS).map(|i| pool.get(i)).peekable();
        let mut batches: Vec<Vec<Event>> = Vec::new();
        while events.peek().is_some() {
            batches.push(events.by_ref().take(BATCH).collect());
        }
        let mut start = Instant::now();
        // The publishers take the batches in turn from a shared queue.
        let batches = Arc::new(std::sync::Mutex::new(batches.into_iter()));
        let mut publishers: Vec<_> = (0..BATCH_PUBLISHERS)
            .map(|_| {
                let (bus, batches) = (bus.clone(), batches.clone());
                tokio::spawn(async move {
                    loop {
                        let next = batches.lock().expect("the batch queue").next();
                        let Some(batch) = next else { return };
                        for r in bus.publish_batch(batch).await {
                            r.expect("publish");
                        }
                    }
                })
            })
            .collect();
        if backlog {
            for p in publishers.drain(..) {
                p.await.expect("publisher");
            }
            start = Instant::now();
            subscribe().await.expect("subscribe");
        }
        let deadline = Instant::now() + Duration::from_secs(120);
        while counter.count.load(Ordering::Relaxed) < E2E_EVENTS {
            assert!(Instant::now() < deadline, "the handler did not finish");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        for p in publishers {
            p.await.expect("publisher");
        }
        loop {
            let stats = observer.stats().await.expect("stats");
            if stats
                .handlers
                .get(&counter.name)
                .is_some_and(|h| h.lag == 0)
            {
                break;
            }
            assert!(Instant::now() < deadline, "the commits did not finish");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let rate = E2E_EVENTS as f64 / start.elapsed().as_secs_f64();
        bus.shutdown().await.ok();
        observer.shutdown().await.ok();
        rate
    }

    /// A topic for `ProducerPerformance` to write to, created by the bus with the settings
    /// of the bus's own topics, `partitions` partitions.
    async fn raw_topic(&self, what: &str, partitions: u32) -> String {
        let mut kafka = self.kafka.clone();
        kafka.partitions = partitions;
        let bus = KafkaBus::connect(kafka, self.config.clone())
            .await
            .expect("the benchmark needs a Kafka broker");
        let (bus, _) = self.warm_on(bus, what).await;
        bus.shutdown().await.ok();
        format!(
            "{}.{}",
            self.kafka.topic_prefix,
            self.event_type(what).as_str()
        )
    }
}

/// The producer settings of `ProducerPerformance` at full speed: batches of up to
/// [`RAW_BATCH_BYTES`], a linger of 5 ms.
fn batching_props() -> Vec<String> {
    vec![
        "linger.ms=5".to_string(),
        format!("batch.size={RAW_BATCH_BYTES}"),
    ]
}

/// The producer settings of `ProducerPerformance` one record at a time, the Java producer's
/// counterpart of awaited single publishes: one request in flight, no linger, no batching
/// (with a topic of one partition, each request carries one record).
const ONE_AT_A_TIME_PROPS: [&str; 3] = [
    "max.in.flight.requests.per.connection=1",
    "linger.ms=0",
    "batch.size=0",
];

/// `ProducerPerformance` with `acks=all`, `records` records and the producer settings
/// `props`: records/s from its summary line, or why it failed.
fn producer_performance(
    classpath: &str,
    brokers: &str,
    topic: &str,
    compression: &str,
    records: u64,
    props: &[String],
) -> Result<f64, String> {
    let output = Command::new("java")
        .args(["-Xmx512m", "-cp", classpath])
        .arg("org.apache.kafka.tools.ProducerPerformance")
        .args(["--topic", topic])
        .args(["--num-records", &records.to_string()])
        .args(["--record-size", &ENVELOPE_BYTES.to_string()])
        .args(["--throughput", "-1"])
        .arg("--producer-props")
        .arg(format!("bootstrap.servers={brokers}"))
        .arg("acks=all")
        .arg(format!("compression.type={compression}"))
        .args(props)
        .output()
        .map_err(|e| format!("cannot run java: {e}"))?;
    // Summary: `N records sent, X records/sec (Y MB/sec), ...`; progress lines look alike
    // but say "records/sec" too, so the last such line is the summary.
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.contains(" records sent, "))
        .ok_or_else(|| {
            format!(
                "no summary line (exit {}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            )
        })?;
    println!("ProducerPerformance: {line}");
    let before = &line[..line.find(" records/sec").ok_or("no records/sec")?];
    before
        .split_whitespace()
        .last()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("cannot read the rate in {line:?}"))
}

/// The share of the machine's CPU time that was busy over `window`, from `/proc/stat`,
/// while this benchmark is idle: other work on the machine (the idle broker included).
fn busy_share(window: Duration) -> f64 {
    fn sample() -> Option<(u64, u64)> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let values: Vec<u64> = stat
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .filter_map(|v| v.parse().ok())
            .collect();
        let total: u64 = values.iter().sum();
        // idle and iowait
        let idle = values.get(3)? + values.get(4).copied().unwrap_or(0);
        Some((total, idle))
    }
    let Some((t0, i0)) = sample() else {
        return f64::NAN;
    };
    std::thread::sleep(window);
    let Some((t1, i1)) = sample() else {
        return f64::NAN;
    };
    let total = t1.saturating_sub(t0).max(1) as f64;
    1.0 - i1.saturating_sub(i0) as f64 / total
}

/// Set to `1` (by `cargo xtask bench kafka-cluster`): run on the three-node cluster of
/// `EVENTBUS_TEST_KAFKA_CLUSTER_BROKERS`, with topics of replication factor 3 and
/// `min.insync.replicas=2`.
const CLUSTER_VAR: &str = "EVENTBUS_BENCH_KAFKA_CLUSTER";

/// mimalloc, as a service built for throughput would use: with glibc's allocator the Kafka
/// end-to-end run was about half as fast (`docs/benchmarks.md`, "Where the time goes").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cluster = std::env::var(CLUSTER_VAR).is_ok_and(|v| v == "1");
    let brokers_var = if cluster {
        "EVENTBUS_TEST_KAFKA_CLUSTER_BROKERS"
    } else {
        "EVENTBUS_TEST_KAFKA_BROKERS"
    };
    let Ok(brokers) = std::env::var(brokers_var) else {
        eprintln!(
            "set {brokers_var} (and EVENTBUS_TEST_KAFKA_CLASSPATH), or run `cargo xtask bench kafka` (or `kafka-cluster`), which starts the brokers"
        );
        std::process::exit(2);
    };
    let classpath = std::env::var("EVENTBUS_TEST_KAFKA_CLASSPATH").ok();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let run = fastrand::u32(..);
    // The environment's settings (KAFKA_PARTITIONS, KAFKA_COMPRESSION, ...) apply, for
    // experiments; `cargo xtask bench` runs with none set.
    let config = Config::from_env().expect("a valid configuration");
    let mut kafka = KafkaConfig::from_env().expect("a valid Kafka configuration");
    kafka.bootstrap_servers = brokers.split(',').map(|s| s.trim().to_string()).collect();
    kafka.topic_prefix = format!("eventbus-bench-{run:08x}");
    if cluster {
        kafka.replication_factor = 3;
        kafka.min_insync_replicas = Some(2);
    }
    let replication = kafka.replication_factor;
    let compression = kafka.compression.as_str().to_string();
    let partitions = kafka.partitions;
    let bench = Bench { config, kafka, run };
    // For profiling one measurement: `EVENTBUS_BENCH_ONLY=e2e_one` (`backlog_one`, `single`, `concurrent`, `batches`;
    // `e2e_sampled`, `e2e_sampled_1`: with every trace, 1 % of traces sampled) runs it alone, without the warm-up or the
    // reference, and prints no RESULT lines; `e2e_traced` runs the three end to ends in processes of their own and prints theirs.
    if let Ok(only) = std::env::var(ONLY_VAR) {
        if only == "e2e_traced" {
            event_testkit::bench_tracing::traced_end_to_end(ONLY_VAR, 3);
            return;
        }
        let rate = runtime.block_on(async {
            match only.as_str() {
                "single" => bench.single().await,
                "concurrent" => bench.concurrent().await,
                "batches" => bench.batches("batches", BATCH, 1).await,
                "e2e_one" => bench.end_to_end(false).await,
                "backlog_one" => bench.end_to_end(true).await,
                "e2e_sampled" | "e2e_sampled_1" => {
                    event_testkit::bench_tracing::sampled_end_to_end(&only, bench.end_to_end(false))
                        .await
                }
                other => panic!("{ONLY_VAR}: unknown measurement `{other}`"),
            }
        });
        println!("{only}: {rate:.0} events/s");
        return;
    }
    let busy_before = busy_share(Duration::from_secs(2));
    let size = JsonCodec::default()
        .encoded_len(&event(&bench.event_type("size"), 0))
        .unwrap_or(0);
    println!(
        "KafkaBus benchmark on {brokers}, envelopes of {size} bytes, {partitions} partitions, {compression}"
    );

    let (per_batch_ms, per_small_ms) = runtime.block_on(async {
        // A broker just started runs its code interpreted at first: warm it (and this
        // process) up before measuring, as `ProducerPerformance` later finds it warm.
        let warm_up = bench.batches("warmup", BATCH, BATCH_PUBLISHERS).await;
        println!("warm-up (not reported): {warm_up:.0} events/s");
        let concurrent = bench.concurrent().await;
        println!("{PUBLISHERS} concurrent publishers: {concurrent:.0} events/s");
        let topic = bench.raw_topic("raw", partitions).await;
        let raw = match &classpath {
            Some(cp) => producer_performance(cp, &brokers, &topic, &compression, RAW_RECORDS, &batching_props()),
            None => Err("EVENTBUS_TEST_KAFKA_CLASSPATH is not set".to_string()),
        };
        match &raw {
            Ok(r) => println!("ProducerPerformance: {r:.0} records/s"),
            Err(e) => println!("ProducerPerformance did not run: {e}"),
        }
        // In rounds, each right after its reference, so both find the brokers equally warm;
        // the medians are reported. One round each was at the mercy of the moment: on the
        // cluster, whose JVMs were still compiling, the same build made 471 or 1,140 a second.
        let (mut raw_singles, mut singles) = (Vec::new(), Vec::new());
        for round in 1..=SINGLE_ROUNDS {
            let topic = bench.raw_topic(&format!("rawsingle{round}"), 1).await;
            let raw_single = match &classpath {
                Some(cp) => producer_performance(
                    cp,
                    &brokers,
                    &topic,
                    &compression,
                    RAW_SINGLE_RECORDS,
                    &ONE_AT_A_TIME_PROPS.map(String::from),
                ),
                None => Err("EVENTBUS_TEST_KAFKA_CLASSPATH is not set".to_string()),
            };
            let single = bench.single().await;
            println!(
                "single awaited publishes, round {round}: ProducerPerformance one at a time {raw_single:?}, the bus {single:.0} per second"
            );
            raw_singles.push(raw_single);
            singles.push(single);
        }
        let single = median(singles).unwrap_or(f64::NAN);
        let raw_single = raw_singles
            .into_iter()
            .collect::<Result<Vec<_>, _>>()
            .and_then(|rates| median(rates).ok_or_else(|| "no round".to_string()));
        let batches = bench.batches("batches", BATCH, 1).await;
        println!("batches of {BATCH}: {batches:.0} events/s");
        let small_batches = bench.batches("small", 100, 1).await;
        println!("batches of 100: {small_batches:.0} events/s");
        let concurrent_batches = bench.batches("concurrentbatches", BATCH, BATCH_PUBLISHERS).await;
        println!("{BATCH_PUBLISHERS} publishers of batches of {BATCH}: {concurrent_batches:.0} events/s");
        let e2e = bench.end_to_end(false).await;
        println!("end to end, 1 handler: {e2e:.0} events/s");
        let backlog = bench.end_to_end(true).await;
        println!("a backlog consumed, 1 handler: {backlog:.0} events/s");

        let per_batch_ms = BATCH as f64 / batches * 1000.0;
        let per_small_ms = 100.0 / small_batches * 1000.0;
        let share_of_raw_single = raw_single
            .as_ref()
            .map_or("-".to_string(), |r| format!(">={:.0}", r * 0.8));
        result(
            "bus",
            "single",
            single,
            "events/s",
            &share_of_raw_single,
            "Single publishes, each awaited (target: 80 % of `ProducerPerformance` one record at a time; medians of 3 rounds in turn with the reference)",
        );
        result(
            "bus",
            "concurrent",
            concurrent,
            "events/s",
            "-",
            "64 concurrent publishers, single publishes",
        );
        let half_raw = raw
            .as_ref()
            .map_or("-".to_string(), |r| format!(">={:.0}", r / 2.0));
        result(
            "bus",
            "batches",
            batches,
            "events/s",
            &half_raw,
            "`publish_batch` of 1,000, one publisher (target: half of `ProducerPerformance`)",
        );
        result(
            "bus",
            "small_batches",
            small_batches,
            "events/s",
            "-",
            "`publish_batch` of 100, one publisher",
        );
        result(
            "bus",
            "concurrent_batches",
            concurrent_batches,
            "events/s",
            "-",
            "`publish_batch` of 1,000, 8 concurrent publishers",
        );
        let share_of_raw = raw
            .as_ref()
            .map_or("-".to_string(), |r| format!(">={:.0}", r * 0.6));
        result(
            "bus",
            "e2e_one",
            e2e,
            "events/s",
            &share_of_raw,
            "End to end (publish, handle, commit), 1 handler, 8 publishers of batches of 1,000 (target: 60 % of `ProducerPerformance`)",
        );
        result(
            "bus",
            "backlog_one",
            backlog,
            "events/s",
            "-",
            "A backlog of 300,000 events consumed (handle, commit), 1 handler, nothing published meanwhile",
        );
        match &raw {
            Ok(r) => result(
                "reference",
                "producer_performance",
                *r,
                "events/s",
                "-",
                &format!(
                    "`ProducerPerformance`, 1,000,000 records of {ENVELOPE_BYTES} bytes, `acks=all`, `compression.type={compression}`, `linger.ms=5`, `batch.size={RAW_BATCH_BYTES}`"
                ),
            ),
            Err(e) => note(&format!("`ProducerPerformance` did not run: {e}")),
        }
        match &raw_single {
            Ok(r) => result(
                "reference",
                "producer_performance_single",
                *r,
                "events/s",
                "-",
                &format!(
                    "`ProducerPerformance` one record at a time, {RAW_SINGLE_RECORDS} records of {ENVELOPE_BYTES} bytes to a topic of one partition, `acks=all`, `compression.type={compression}`, `{}` (median of {SINGLE_ROUNDS} rounds)",
                    ONE_AT_A_TIME_PROPS.join("`, `")
                ),
            ),
            Err(e) => note(&format!("`ProducerPerformance` one record at a time did not run: {e}")),
        }
        (per_batch_ms, per_small_ms)
    });
    event_testkit::bench_tracing::traced_end_to_end(ONLY_VAR, 3);
    let busy_after = busy_share(Duration::from_secs(2));
    note(&format!(
        "CPU busy while the benchmark sat idle for 2 s: {:.0} % before the run, {:.0} % after (the broker's own background work included){}",
        busy_before * 100.0,
        busy_after * 100.0,
        if busy_before.max(busy_after) > 0.25 {
            ": other work was running on the machine, so the figures are noisy."
        } else {
            "."
        }
    ));
    let (servers, acks) = if cluster {
        (
            "A three-node KRaft cluster (`cargo xtask services up kafka --brokers 3`: three JVMs of 512 MiB heap, each broker and controller) on the same 2-core machine as the benchmark",
            "`acks=all` on both sides (the bus always produces with `acks=all`): a write is acknowledged once the two other replicas have it too (`min.insync.replicas=2`), so every produce crosses the cluster. The log is not fsynced per request, as Kafka's default.",
        )
    } else {
        (
            "Single-node KRaft broker (Kafka from `cargo xtask`, 512 MiB heap) on the same 2-core machine as the benchmark",
            "`acks=all` on both sides (the bus always produces with `acks=all`; with one broker that is its own write, the log is not fsynced per request, as Kafka's default).",
        )
    };
    note(&format!(
        "{servers}; topics of {partitions} partitions, replication factor {replication}; envelopes of {size} bytes; `Config::default()` (`KAFKA_COMPRESSION`={compression}, `EVENT_HANDLER_CONCURRENCY`=16, `EVENT_BATCH_SIZE`=100); Tokio multi-thread runtime with 2 workers; mimalloc as the global allocator."
    ));
    note(&format!(
        "{acks} Compression is the same codec on both sides, but `ProducerPerformance` sends random letters, which compress little, while our envelopes (a JSON header and a run of `x`) compress well."
    ));
    note(&format!(
        "Publishes: {} s each, from a pool of {POOL} prebuilt events cloned with a fresh id; a fresh topic per measurement, created before the clock; first a warm-up of {} s of batches from {BATCH_PUBLISHERS} tasks, not reported (the broker has just started and its JIT compiler has not yet run). Batches: one task, `publish_batch` of {BATCH} (grouped per partition, the partitions produced concurrently). `ProducerPerformance` writes to a topic the bus created (same partitions and settings), no keys (sticky partitioner), `linger.ms=5`, `batch.size={RAW_BATCH_BYTES}` (the bus sends at most 512 KiB per request).",
        RUN.as_secs(),
        RUN.as_secs()
    ));
    note(&format!(
        "End to end: {E2E_EVENTS} prebuilt events published in batches of {BATCH} by {BATCH_PUBLISHERS} tasks while one handler consumes; the clock stops when the handler has counted all of them and a second bus's stats show the group's committed offsets at the end of every partition (commits every 100 ms)."
    ));
    note(&format!(
        "Produce requests: a call of 1,000 took {per_batch_ms:.1} ms on average, a call of 100 {per_small_ms:.2} ms; the bus cuts a partition's records into requests of at most 512 KiB, sent one after another (the partitions concurrently)."
    ));
}
