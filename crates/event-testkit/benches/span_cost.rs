//! What one handling attempt's `process` span costs, in CPU time per span (every thread of
//! the process, the SDK's export thread included), three ways on the same events:
//!
//! - `none`: the bus's code with no subscriber installed (the span is a disabled callsite);
//! - `tracing`: [`event_core::trace::process_span`] through `tracing-opentelemetry` into the
//!   SDK's batch processor, as `eventbus` runs it (`event_testkit::bench_tracing`), every span
//!   sampled;
//! - `direct`: a span of the same name, kind, parent and attributes made with the
//!   OpenTelemetry SDK's API straight into the same processor.
//!
//! It answers whether building the span without `tracing` would make full sampling cheap
//! enough (docs/benchmarks.md, "What tracing costs").

use std::time::Duration;

use event_core::trace::{self, LogPosition, Relation};
use event_core::{Event, EventType};
use event_testkit::bench_tracing::BenchTracing;
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, TraceContextExt as _, TraceFlags, TraceId, TraceState,
    Tracer as _,
};
use opentelemetry::{Context, KeyValue};

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
                through_tracing(chunk);
            }
        }));
    }
    // The subscriber, once installed, stays: the rounds with it come after.
    let pipeline = BenchTracing::install(1.0);
    let tracer = pipeline.tracer();
    for _ in 0..ROUNDS {
        let exported = pipeline.exported();
        // In chunks, each flushed: made faster than the export thread takes them, spans would
        // be dropped when the processor's queue (2,048) is full.
        rows[1].push(cpu_per_span(|| {
            for chunk in events.chunks(CHUNK) {
                through_tracing(chunk);
                pipeline.exported();
            }
        }));
        let through = pipeline.exported() - exported;
        rows[2].push(cpu_per_span(|| {
            for chunk in events.chunks(CHUNK) {
                direct(&tracer, chunk);
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

/// The bus's span for each event, entered and closed as a lane does around the handler.
fn through_tracing(events: &[Event]) {
    for (offset, event) in events.iter().enumerate() {
        let position = LogPosition {
            partition: (offset % 12) as i32,
            offset: offset as i64,
        };
        let span = trace::process_span(
            "kafka",
            "bench-group",
            "bench-handler",
            (event, Some(position)),
            Relation::Child,
        );
        drop(span.enter());
    }
}

/// The same span through the SDK's API: the same name, kind, parent and attributes.
fn direct(tracer: &opentelemetry_sdk::trace::SdkTracer, events: &[Event]) {
    for (offset, event) in events.iter().enumerate() {
        let parent = event.traceparent.as_deref().expect("every event is traced");
        let publisher = SpanContext::new(
            TraceId::from_hex(&parent[3..35]).expect("a trace id"),
            SpanId::from_hex(&parent[36..52]).expect("a span id"),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        let parent = Context::new().with_remote_span_context(publisher);
        let mut attributes = vec![
            KeyValue::new("messaging.system", "kafka"),
            KeyValue::new("messaging.operation.type", "process"),
            KeyValue::new("messaging.operation.name", "process"),
            KeyValue::new(
                "messaging.destination.name",
                event.event_type.as_str().to_owned(),
            ),
            KeyValue::new("messaging.consumer.group.name", "bench-group"),
            KeyValue::new("messaging.message.id", event.id.to_string()),
            KeyValue::new(
                "messaging.destination.partition.id",
                (offset % 12).to_string(),
            ),
            KeyValue::new("messaging.kafka.offset", offset as i64),
            KeyValue::new("eventbus.handler", "bench-handler"),
        ];
        if let Some(key) = &event.partition_key {
            attributes.push(KeyValue::new("messaging.kafka.message.key", key.clone()));
        }
        let span = tracer
            .span_builder(format!("process {}", event.event_type))
            .with_kind(SpanKind::Consumer)
            .with_attributes(attributes)
            .start_with_context(tracer, &parent);
        drop(span);
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
