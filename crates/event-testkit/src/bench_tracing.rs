//! An OpenTelemetry pipeline as a service would run one, for the benchmarks' "tracing on"
//! runs: every span through `tracing-opentelemetry`, root spans sampled at a ratio that can
//! change between runs (children follow their parent's decision, as `ParentBased` does),
//! sampled spans batched by the SDK's batch processor and handed to an exporter that counts
//! them (the network is left out: it is the collector's cost, not the bus's).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use opentelemetry::trace::{Link, SpanKind, TraceContextExt as _, TraceId, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    Sampler, SamplingDecision, SamplingResult, SdkTracerProvider, ShouldSample, SpanData,
    SpanExporter,
};
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt as _;

/// The pipeline, installed once per process as the global subscriber.
#[derive(Debug)]
pub struct BenchTracing {
    ratio: Arc<AtomicU64>,
    exported: Arc<AtomicU64>,
    provider: SdkTracerProvider,
}

#[derive(Clone, Debug)]
struct Ratio(Arc<AtomicU64>);

impl ShouldSample for Ratio {
    fn should_sample(
        &self,
        parent: Option<&Context>,
        trace_id: TraceId,
        name: &str,
        kind: &SpanKind,
        attributes: &[KeyValue],
        links: &[Link],
    ) -> SamplingResult {
        if let Some(parent) = parent.filter(|p| p.has_active_span()) {
            let sampled = parent.span().span_context().is_sampled();
            return SamplingResult {
                decision: if sampled {
                    SamplingDecision::RecordAndSample
                } else {
                    SamplingDecision::Drop
                },
                attributes: Vec::new(),
                trace_state: parent.span().span_context().trace_state().clone(),
            };
        }
        let ratio = f64::from_bits(self.0.load(Ordering::Relaxed));
        Sampler::TraceIdRatioBased(ratio)
            .should_sample(parent, trace_id, name, kind, attributes, links)
    }
}

#[derive(Debug)]
struct Counting(Arc<AtomicU64>);

impl SpanExporter for Counting {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.0.fetch_add(batch.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

static INSTALLED: OnceLock<BenchTracing> = OnceLock::new();

impl BenchTracing {
    /// Installs the pipeline with `ratio` (once per process; later calls set the ratio).
    ///
    /// # Panics
    /// When another global subscriber was installed first.
    pub fn install(ratio: f64) -> &'static BenchTracing {
        let tracing = INSTALLED.get_or_init(|| {
            let ratio = Arc::new(AtomicU64::new(ratio.to_bits()));
            let exported = Arc::new(AtomicU64::new(0));
            let provider = SdkTracerProvider::builder()
                .with_sampler(Ratio(ratio.clone()))
                .with_batch_exporter(Counting(exported.clone()))
                .build();
            // As `eventbus` configures it: `info` and above (the bus's spans; not the clients'
            // debug events), no busy/idle timing on every poll of every span, no thread, source
            // location or target attributes, no context made current on every poll.
            let layer = tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("eventbus-bench"))
                .with_tracked_inactivity(false)
                .with_threads(false)
                .with_location(false)
                .with_target(false)
                .with_context_activation(false)
                .with_filter(LevelFilter::INFO);
            tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
                .unwrap_or_else(|e| panic!("the benchmark's subscriber: {e}"));
            // As `eventbus` does: `process` spans made with the OpenTelemetry API directly.
            event_core::trace::set_process_tracer(Some(opentelemetry::global::BoxedTracer::new(
                Box::new(provider.tracer("eventbus-bench")),
            )));
            BenchTracing {
                ratio,
                exported,
                provider,
            }
        });
        tracing.set_ratio(ratio);
        tracing
    }

    /// Samples this share of root spans from now on.
    pub fn set_ratio(&self, ratio: f64) {
        self.ratio.store(ratio.to_bits(), Ordering::Relaxed);
    }

    /// A tracer of the pipeline's provider, for spans made with the OpenTelemetry API directly
    /// (the `span_cost` benchmark compares them with the bus's spans through `tracing`).
    pub fn tracer(&self) -> opentelemetry_sdk::trace::SdkTracer {
        self.provider.tracer("eventbus-bench-direct")
    }

    /// Spans exported so far, after flushing the batch processor.
    pub fn exported(&self) -> u64 {
        let _ = self.provider.force_flush();
        self.exported.load(Ordering::Relaxed)
    }
}

/// The measurements [`traced_end_to_end`] makes, each by a process of its own: the benchmark
/// run with its `only` variable set to one of these and printing `{name}: {rate} events/s`.
pub const MEASUREMENTS: [&str; 3] = ["e2e_one", "e2e_sampled", "e2e_sampled_1"];

/// In a process measuring `e2e_sampled` or `e2e_sampled_1` (see [`MEASUREMENTS`]): installs
/// the pipeline sampling every trace or 1 % of them, runs `e2e` and prints how many spans were
/// exported. Returns `e2e`'s rate.
pub async fn sampled_end_to_end(measurement: &str, e2e: impl Future<Output = f64>) -> f64 {
    let ratio = if measurement == MEASUREMENTS[1] {
        1.0
    } else {
        0.01
    };
    let tracing = BenchTracing::install(ratio);
    let rate = e2e.await;
    println!("spans exported: {}", tracing.exported());
    rate
}

/// Measures the end to end without a subscriber, with every trace sampled and with 1 % of
/// traces sampled, `rounds` times each, in turn, each in a fresh process: this benchmark run
/// again with `only_var` set to each of [`MEASUREMENTS`]. Prints the `RESULT` lines (format in
/// `xtask/src/bench.rs`) with the medians, the traced ones against the untraced one.
///
/// Fresh processes, because a global subscriber cannot be removed once installed, and runs
/// made one after the other in one process are not alike: the later ones met a broker and a
/// heap the earlier ones had filled, and so looked slower for reasons tracing had no part in.
///
/// # Panics
/// When a measuring process fails or prints no rate.
pub fn traced_end_to_end(only_var: &str, rounds: usize) {
    let mut rates: [Vec<f64>; 3] = Default::default();
    for _ in 0..rounds {
        for (measurement, rates) in MEASUREMENTS.iter().zip(&mut rates) {
            rates.push(measure_in_process(only_var, measurement));
        }
    }
    let [untraced, full, sampled] =
        rates.map(|rates| crate::bench::median(rates).expect("at least one round"));
    println!(
        "end to end, 1 handler, medians of {rounds} processes each: untraced {untraced:.0}, all sampled {full:.0}, 1 % sampled {sampled:.0} events/s"
    );
    let share = |v: f64| format!("{:.0} % of untraced", v / untraced * 100.0);
    println!(
        "RESULT\tbus\te2e_traced\t{full:.1}\tevents/s\t>={:.0}\tEnd to end, 1 handler, with OpenTelemetry: every span sampled and exported ({}; target: at most 15 % below untraced; medians of {rounds} processes each)",
        untraced * 0.85,
        share(full)
    );
    println!(
        "RESULT\tbus\te2e_traced_sampled\t{sampled:.1}\tevents/s\t-\tEnd to end, 1 handler, with OpenTelemetry: 1 % of traces sampled ({})",
        share(sampled)
    );
}

/// Runs this benchmark again measuring `measurement` alone and returns the rate it printed.
fn measure_in_process(only_var: &str, measurement: &str) -> f64 {
    let program = std::env::current_exe().expect("the benchmark's own path");
    let output = std::process::Command::new(program)
        .args(std::env::args_os().skip(1))
        .env(only_var, measurement)
        .stderr(std::process::Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("running the benchmark for {measurement}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "measuring {measurement} failed ({}): {stdout}",
        output.status
    );
    let prefix = format!("{measurement}: ");
    let rate = stdout
        .lines()
        .find_map(|line| line.strip_prefix(&prefix)?.strip_suffix(" events/s"))
        .and_then(|rate| rate.parse().ok())
        .unwrap_or_else(|| panic!("measuring {measurement} printed no rate: {stdout}"));
    let spans = stdout
        .lines()
        .find_map(|line| line.strip_prefix("spans exported: "))
        .map_or(String::new(), |spans| format!(" ({spans} spans exported)"));
    println!("end to end, 1 handler, {measurement}: {rate:.0} events/s{spans}");
    rate
}
