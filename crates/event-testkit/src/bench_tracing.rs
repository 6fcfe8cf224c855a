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

    /// Spans exported so far, after flushing the batch processor.
    pub fn exported(&self) -> u64 {
        let _ = self.provider.force_flush();
        self.exported.load(Ordering::Relaxed)
    }
}

/// Runs the end-to-end measurement `e2e` twice more with the pipeline installed, every root
/// span sampled and then 1 in 100, and prints their `RESULT` lines (format in
/// `xtask/src/bench.rs`) against `untraced`, the same measurement without a subscriber made
/// earlier in the run. Install nothing before the untraced measurements: the subscriber stays
/// for the rest of the process.
pub async fn traced_end_to_end<F, Fut>(untraced: f64, mut e2e: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = f64>,
{
    let tracing = BenchTracing::install(1.0);
    let before = tracing.exported();
    let full = e2e().await;
    let spans = tracing.exported() - before;
    println!(
        "end to end, 1 handler, traced (all sampled, {spans} spans exported): {full:.0} events/s"
    );
    tracing.set_ratio(0.01);
    let before = tracing.exported();
    let sampled = e2e().await;
    let spans = tracing.exported() - before;
    println!(
        "end to end, 1 handler, traced (1 % sampled, {spans} spans exported): {sampled:.0} events/s"
    );
    let share = |v: f64| format!("{:.0} % of untraced", v / untraced * 100.0);
    println!(
        "RESULT\tbus\te2e_traced\t{full:.1}\tevents/s\t>={:.0}\tEnd to end, 1 handler, with OpenTelemetry: every span sampled and exported ({}; target: at most 15 % below untraced)",
        untraced * 0.85,
        share(full)
    );
    println!(
        "RESULT\tbus\te2e_traced_sampled\t{sampled:.1}\tevents/s\t-\tEnd to end, 1 handler, with OpenTelemetry: 1 % of traces sampled ({})",
        share(sampled)
    );
}
