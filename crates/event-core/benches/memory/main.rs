//! Benchmark of [`MemoryBus`]: publish-to-handler throughput to one and to four handlers,
//! delivery latency at a steady rate, and a plain `tokio::sync::mpsc` channel as the raw
//! reference, all in one run on a 2-worker multi-thread runtime.
//!
//! Run it with `cargo xtask bench memory`, which also writes `docs/benchmarks.md` from the
//! `RESULT` lines printed here (format in `xtask/src/bench.rs`). For experiments, these
//! variables change the set-up (the output says when one is set): `BENCH_EVENTS` (events per
//! throughput run), `BENCH_CHUNK` (events per `publish_batch`), `BENCH_CONCURRENCY` (the
//! subscriptions' concurrency), `BENCH_BATCH_SIZE` (`EVENT_BATCH_SIZE`, events per consumer
//! read).

mod latency;
mod throughput;

use std::sync::Arc;
use std::time::Duration;

use event_core::{Config, Event, EventType, MemoryBus, SubscriptionSpec};

use latency::{LatencyPath, LatencySummary, latency};
use throughput::{bus_throughput, channel_throughput};

/// Throughput runs of each measurement; the best and the median are reported.
const RUNS: usize = 5;
const WORKER_THREADS: usize = 2;
const EVENT_TYPE: EventType = EventType::SIGNAL_DETECTED;

const ONE_HANDLER_TARGET: f64 = 1_000_000.0;
const FOUR_HANDLERS_TARGET: f64 = 300_000.0;
const P99_TARGET_US: f64 = 200.0;

const LATENCY_RATE: u64 = 50_000;
const LATENCY_DURATION: Duration = Duration::from_secs(2);
/// The latency publisher sends the events due every this often: bursts of 10 at 50,000/s.
const LATENCY_TICK: Duration = Duration::from_micros(200);

/// The set-up, from the defaults and the `BENCH_*` variables.
struct Setup {
    events: usize,
    chunk: usize,
    concurrency: Option<usize>,
    config: Config,
    notes: Vec<String>,
}

impl Setup {
    fn from_env() -> Self {
        let mut notes = Vec::new();
        let mut knob = |name: &str, default: Option<usize>| -> Option<usize> {
            match std::env::var(name).ok().and_then(|v| v.parse().ok()) {
                Some(v) => {
                    notes.push(format!("{name}={v} (experiment: not the standard set-up)"));
                    Some(v)
                }
                None => default,
            }
        };
        let events = knob("BENCH_EVENTS", Some(1_000_000)).unwrap_or(1_000_000);
        let chunk = knob("BENCH_CHUNK", Some(1_000)).unwrap_or(1_000).max(1);
        let concurrency = knob("BENCH_CONCURRENCY", None);
        let mut config = Config::default();
        if let Some(batch) = knob("BENCH_BATCH_SIZE", None) {
            config.batch_size = batch;
        }
        Setup {
            events,
            chunk,
            concurrency,
            config,
            notes,
        }
    }

    fn bus(&self) -> MemoryBus {
        MemoryBus::new(self.config.clone()).expect("the benchmark's configuration is valid")
    }

    fn spec(&self, handler: &str) -> SubscriptionSpec {
        let spec = SubscriptionSpec::new(handler, [EVENT_TYPE]);
        match self.concurrency {
            Some(n) => spec.concurrency(n),
            None => spec,
        }
    }
}

fn build_events(n: usize, chunk: usize) -> Vec<Vec<Event>> {
    let mut chunks = Vec::with_capacity(n.div_ceil(chunk));
    let mut left = n;
    while left > 0 {
        let size = left.min(chunk);
        chunks.push(
            (0..size)
                .map(|_| {
                    Event::builder(EVENT_TYPE, "bench")
                        .build()
                        .expect("a valid event")
                })
                .collect(),
        );
        left -= size;
    }
    chunks
}

/// Best and median events per second of several run times.
fn best_and_median(events: usize, times: &[Duration]) -> (f64, f64) {
    let mut rates: Vec<f64> = times
        .iter()
        .map(|t| events as f64 / t.as_secs_f64())
        .collect();
    rates.sort_by(f64::total_cmp);
    (rates[rates.len() - 1], rates[rates.len() / 2])
}

fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn result(group: &str, id: &str, value: f64, unit: &str, target: &str, label: &str) {
    println!("RESULT\t{group}\t{id}\t{value:.1}\t{unit}\t{target}\t{label}");
}

/// mimalloc, as a service built for throughput would use: with glibc's allocator the Kafka
/// end-to-end run was about half as fast (`docs/benchmarks.md`, "Where the time goes").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let setup = Arc::new(Setup::from_env());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKER_THREADS)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let n = setup.events;
    println!(
        "MemoryBus benchmark: {n} events per throughput run in batches of {} (built before the clock starts), {RUNS} runs each, tokio multi-thread runtime with {WORKER_THREADS} workers",
        setup.chunk
    );

    let throughput = |handlers: usize| -> Vec<Duration> {
        (0..RUNS)
            .map(|run| {
                let setup = setup.clone();
                let measured = runtime.block_on(async {
                    // A spawned task runs on a worker, like an application's publisher.
                    tokio::spawn(async move { bus_throughput(&setup, handlers).await })
                        .await
                        .expect("benchmark task")
                });
                println!(
                    "  {handlers} handler(s), run {}: {:>12.0} events/s  ({:.3} s; the publish calls took {:.3} s, {} of {} deliveries done by then)",
                    run + 1,
                    n as f64 / measured.total.as_secs_f64(),
                    measured.total.as_secs_f64(),
                    measured.publishing.as_secs_f64(),
                    thousands(measured.handled_while_publishing as usize),
                    thousands(n * handlers),
                );
                measured.total
            })
            .collect()
    };
    let one = throughput(1);
    let four = throughput(4);

    let raw: Vec<Duration> = (0..RUNS)
        .map(|run| {
            let setup = setup.clone();
            let took = runtime.block_on(async {
                tokio::spawn(async move { channel_throughput(&setup).await })
                    .await
                    .expect("benchmark task")
            });
            println!(
                "  raw mpsc channel, run {}: {:>12.0} events/s  ({:.3} s)",
                run + 1,
                n as f64 / took.as_secs_f64(),
                took.as_secs_f64()
            );
            took
        })
        .collect();

    println!(
        "  latency: single events at {LATENCY_RATE} events/s for {} s, through the bus and through a raw channel, {RUNS} runs each ...",
        LATENCY_DURATION.as_secs()
    );
    let mut bus_runs = Vec::with_capacity(RUNS);
    let mut raw_runs = Vec::with_capacity(RUNS);
    for run in 1..=RUNS {
        // Bus and channel runs alternate, so both see the same conditions on the machine.
        let measured = latency(&runtime, &setup, &LatencyPath::Bus);
        println!("  latency, bus, run {run}:         {}", measured.summary());
        bus_runs.push(measured);
        let measured = latency(&runtime, &setup, &LatencyPath::Channel);
        println!("  latency, raw channel, run {run}: {}", measured.summary());
        raw_runs.push(measured);
    }
    let bus_latency = LatencySummary::of(&bus_runs);
    let raw_latency = LatencySummary::of(&raw_runs);

    let (one_best, one_median) = best_and_median(n, &one);
    let (four_best, four_median) = best_and_median(n, &four);
    let (raw_best, raw_median) = best_and_median(n, &raw);
    println!();
    result(
        "bus",
        "one_handler_median",
        one_median,
        "events/s",
        &format!(">={ONE_HANDLER_TARGET}"),
        &format!("Publish to 1 handler, median of {RUNS}"),
    );
    result(
        "bus",
        "one_handler_best",
        one_best,
        "events/s",
        "-",
        &format!("Publish to 1 handler, best of {RUNS}"),
    );
    result(
        "bus",
        "four_handlers_median",
        four_median,
        "events/s",
        &format!(">={FOUR_HANDLERS_TARGET}"),
        &format!("Publish to 4 handlers (each sees every event), median of {RUNS}"),
    );
    result(
        "bus",
        "four_handlers_best",
        four_best,
        "events/s",
        "-",
        &format!("Publish to 4 handlers, best of {RUNS}"),
    );
    result(
        "reference",
        "mpsc_median",
        raw_median,
        "events/s",
        "-",
        &format!("`tokio::sync::mpsc` unbounded channel to 1 task, median of {RUNS}"),
    );
    result(
        "reference",
        "mpsc_best",
        raw_best,
        "events/s",
        "-",
        &format!("`tokio::sync::mpsc` unbounded channel to 1 task, best of {RUNS}"),
    );
    result(
        "reference",
        "bus_share_of_raw",
        one_median / raw_median * 100.0,
        "%",
        "-",
        "Bus (1 handler) throughput as a share of the raw channel's, medians",
    );

    for (group, prefix, what, latencies) in [
        ("bus", "latency", "publish to handled", &bus_latency),
        (
            "reference",
            "mpsc_latency",
            "`tokio::sync::mpsc` send to received",
            &raw_latency,
        ),
    ] {
        let target = |t: String| if group == "bus" { t } else { "-".to_string() };
        let runs = format!("{RUNS} runs at {}/s", thousands(latencies.rate as usize));
        for (id, value, target, label) in [
            (
                "p50",
                latencies.p50,
                "-".to_string(),
                format!("p50, median of {runs}"),
            ),
            (
                "p99",
                latencies.p99,
                target(format!("<{P99_TARGET_US}")),
                format!("p99, median of {runs}"),
            ),
            (
                "p999",
                latencies.p999,
                "-".to_string(),
                format!("p99.9, median of {runs}"),
            ),
            (
                "p99_worst",
                latencies.worst_p99,
                "-".to_string(),
                format!("p99, worst of {runs}"),
            ),
            (
                "max",
                latencies.max,
                "-".to_string(),
                format!("max over {runs}"),
            ),
        ] {
            result(
                group,
                &format!("{prefix}_{id}"),
                value,
                "µs",
                &target,
                &format!("Latency {what}: {label}"),
            );
        }
    }
    result(
        "bus",
        "latency_p99_ratio",
        bus_latency.p99 / raw_latency.p99,
        "x",
        "<=1.5",
        &format!(
            "Latency p99 as a multiple of the raw channel's p99 (medians of {RUNS} runs each, alternating)"
        ),
    );
    let mut notes = vec![
        format!(
            "Tokio multi-thread runtime, {WORKER_THREADS} worker threads; `MemoryBus` with `Config::default()` (`EVENT_HANDLER_CONCURRENCY`=16, `EVENT_BATCH_SIZE`=100) unless noted; mimalloc as the global allocator."
        ),
        format!(
            "Throughput: {} events of one type, no partition key, empty payload, built before the clock starts; published by a task with `publish_batch` in batches of {}; the clock stops when every handler has counted all of them (handlers implement `EventHandler` and count with an atomic). {RUNS} runs, a fresh bus each.",
            thousands(n),
            thousands(setup.chunk)
        ),
        format!(
            "Latency: {RUNS} runs of single `publish` calls at {} events/s for {} s each, from a thread of its own that sends the events due every {} µs (bursts of {}); each event carries its publish time in `payload.sent_ns`, the handler records handled minus published. The raw reference sends the same events the same way through an unbounded `tokio::sync::mpsc` channel to a task that calls the same handler.",
            thousands(LATENCY_RATE as usize),
            LATENCY_DURATION.as_secs(),
            LATENCY_TICK.as_micros(),
            LATENCY_RATE as u128 * LATENCY_TICK.as_micros() / 1_000_000
        ),
    ];
    if raw_latency.p99 >= P99_TARGET_US {
        notes.push(format!(
            "The raw channel's own p99 ({:.0} µs) is over the {P99_TARGET_US:.0} µs target as well: in this run the latency tail comes from the machine (waking idle threads and CPUs), not from the bus.",
            raw_latency.p99
        ));
    }
    notes.extend(setup.notes.iter().cloned());
    for note in notes {
        println!("RESULT\tnote\t{note}");
    }
}
