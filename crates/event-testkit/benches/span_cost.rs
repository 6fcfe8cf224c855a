//! What one handling attempt's `process` span costs, in CPU time per span (every thread of
//! the process, the SDK's export thread included), three ways on the same events:
//!
//! - `none`: [`event_core::trace::process`] with no subscriber installed (the span is a
//!   disabled callsite);
//! - `tracing`: the same through `tracing-opentelemetry` into the SDK's batch processor
//!   (`event_testkit::bench_tracing`), every span sampled;
//! - `direct`: the same with the pipeline's tracer given to
//!   [`event_core::trace::set_process_tracer`], as `eventbus` runs it: the span made with the
//!   OpenTelemetry API straight into the same processor.
//!
//! Each span is started, the (empty) handling run in it, and ended, as a consumer's lane does.

use std::time::Duration;

use event_core::trace::{self, LogPosition, Relation};
use event_core::{Event, EventType};
use event_testkit::bench_tracing::BenchTracing;
use opentelemetry::global::BoxedTracer;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Spans per measurement, and rounds of the three measurements (alternating).
const SPANS: usize = 200_000;
const ROUNDS: usize = 3;
/// Spans made between two flushes of the batch processor (its queue holds 2,048).
const CHUNK: usize = 1_000;

fn main() {
    let event_type = EventType::new("opportunity.created").expect("a valid type");
    let events: Vec<Event> = (0..SPANS)
        .map(|i| {
            let mut event = Event::builder(event_type.clone(), "bench")
                .partition_key(format!("key-{}", i % 64))
                .field("n", i as u64)
                .build()
                .expect("a valid event");
            event.traceparent = Some(format!("00-{:032x}-{:016x}-01", i + 1, i + 1));
            event
        })
        .collect();
    let mut rows: [Vec<Duration>; 3] = Default::default();
    for _ in 0..ROUNDS {
        rows[0].push(cpu_per_span(|| {
            for chunk in events.chunks(CHUNK) {
                handle_all(chunk);
            }
        }));
    }
    // The subscriber, once installed, stays: the rounds with it come after.
    let pipeline = BenchTracing::install(1.0);
    for _ in 0..ROUNDS {
        trace::set_process_tracer(None);
        let exported = pipeline.exported();
        // In chunks, each flushed: made faster than the export thread takes them, spans would
        // be dropped when the processor's queue (2,048) is full.
        rows[1].push(cpu_per_span(|| {
            for chunk in events.chunks(CHUNK) {
                handle_all(chunk);
                pipeline.exported();
            }
        }));
        let through = pipeline.exported() - exported;
        trace::set_process_tracer(Some(BoxedTracer::new(Box::new(pipeline.tracer()))));
        rows[2].push(cpu_per_span(|| {
            for chunk in events.chunks(CHUNK) {
                handle_all(chunk);
                pipeline.exported();
            }
        }));
        let direct = pipeline.exported() - exported - through;
        assert!(
            through == SPANS as u64 && direct == SPANS as u64,
            "spans were dropped ({through} and {direct} exported of {SPANS} each): the figures would flatter"
        );
    }
    for (name, mut row) in ["none", "tracing", "direct"].into_iter().zip(rows) {
        row.sort();
        println!(
            "{name}: {:.2} µs of CPU per span (median of {ROUNDS}; all: {})",
            micros(row[ROUNDS / 2]),
            row.iter()
                .map(|d| format!("{:.2}", micros(*d)))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// The process's CPU time (user and system, every thread) that `work` took, per span.
fn cpu_per_span(work: impl FnOnce()) -> Duration {
    let before = process_cpu();
    work();
    (process_cpu() - before) / SPANS as u32
}

/// The bus's `process` span for each event, the (empty) handling run in it, as a lane does.
fn handle_all(events: &[Event]) {
    for (offset, event) in events.iter().enumerate() {
        let position = LogPosition {
            partition: (offset % 12) as i32,
            offset: offset as i64,
        };
        let mut processing = trace::process(
            "kafka",
            "bench-group",
            "bench-handler",
            (event, Some(position)),
            Relation::Child,
        );
        futures::executor::block_on(processing.run(async {}));
    }
}

/// User and system CPU time of this process so far (`/proc/self/stat`, in clock ticks).
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // The fields after the command name (which may hold spaces) in parentheses.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("a stat line")
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    // Linux reports in USER_HZ, 100 per second on every architecture it runs on.
    Duration::from_millis(ticks * 10)
}
