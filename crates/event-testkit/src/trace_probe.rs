//! A tracing subscriber for the trials: installed once per test process, it sends every span
//! through `tracing-opentelemetry` to an in-memory OpenTelemetry exporter, from which a trial
//! reads the spans it made (trials run concurrently and each picks its own by its handler and
//! event type names).

use std::sync::OnceLock;

use anyhow::bail;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing_subscriber::layer::SubscriberExt as _;

/// The instrumentation scope of the spans made with [`TraceProbe::tracer`] (the others are
/// `event-testkit`'s).
pub(crate) const DIRECT_SCOPE: &str = "event-testkit-direct";

/// The process's span collector.
pub(crate) struct TraceProbe {
    exporter: InMemorySpanExporter,
    provider: SdkTracerProvider,
}

static PROBE: OnceLock<Result<TraceProbe, String>> = OnceLock::new();

impl TraceProbe {
    /// The probe, installed as the process's global subscriber on first use.
    ///
    /// # Errors
    /// When another global subscriber was installed first: the trial cannot see the spans.
    pub(crate) fn installed() -> anyhow::Result<&'static TraceProbe> {
        let probe = PROBE.get_or_init(|| {
            let exporter = InMemorySpanExporter::default();
            let provider = SdkTracerProvider::builder()
                .with_simple_exporter(exporter.clone())
                .build();
            let layer =
                tracing_opentelemetry::layer().with_tracer(provider.tracer("event-testkit"));
            let subscriber = tracing_subscriber::registry().with(layer);
            tracing::subscriber::set_global_default(subscriber)
                .map(|()| TraceProbe { exporter, provider })
                .map_err(|e| {
                    format!("another tracing subscriber is installed in this test process: {e}")
                })
        });
        match probe {
            Ok(probe) => Ok(probe),
            Err(e) => bail!("{e}"),
        }
    }

    /// A tracer of the probe's provider, for `event_core::trace::set_process_tracer`; its
    /// spans' instrumentation scope is [`DIRECT_SCOPE`].
    pub(crate) fn tracer(&self) -> opentelemetry::global::BoxedTracer {
        opentelemetry::global::BoxedTracer::new(Box::new(self.provider.tracer(DIRECT_SCOPE)))
    }

    /// Every span ended so far.
    pub(crate) fn spans(&self) -> anyhow::Result<Vec<SpanData>> {
        self.provider.force_flush()?;
        Ok(self.exporter.get_finished_spans()?)
    }
}
