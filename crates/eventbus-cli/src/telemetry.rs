//! What the command reports about itself: log lines on stderr, filtered by `RUST_LOG` or
//! `-v`, and, with the `otel` feature (on by default) and an OTLP endpoint configured, the
//! bus's spans exported to an OpenTelemetry collector.
//!
//! Traces are exported when `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set, over OTLP/HTTP (`OTEL_EXPORTER_OTLP_PROTOCOL`:
//! `http/protobuf`, the default, or `http/json`). The other standard variables apply:
//! `OTEL_SERVICE_NAME` (default `eventbus`), `OTEL_TRACES_SAMPLER` and
//! `OTEL_TRACES_SAMPLER_ARG`, `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT`.
//! The exporter speaks plain HTTP: send to a collector or agent on the same host or network,
//! which forwards over TLS.

use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

/// What was installed; [`shutdown`](Self::shutdown) flushes the spans not yet exported.
pub(crate) struct Telemetry {
    #[cfg(feature = "otel")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Telemetry {
    /// Exports what is left and stops the exporter (before the process exits).
    pub(crate) fn shutdown(self) {
        #[cfg(feature = "otel")]
        if let Some(provider) = self.provider
            && let Err(e) = provider.shutdown()
        {
            eprintln!("warning: exporting the last spans failed: {e}");
        }
    }
}

/// Installs the logging (level from `RUST_LOG`, else `-v`: warnings, `-v` info, `-vv` debug;
/// errors only when `quiet`) and, when configured, the trace export.
pub(crate) fn init(verbose: u8, quiet: bool) -> Telemetry {
    let default = match verbose {
        0 if quiet => "error",
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(filter);
    #[cfg(feature = "otel")]
    {
        let (traces, provider) = match otlp::layer() {
            Ok(Some((layer, provider))) => (Some(layer), Some(provider)),
            Ok(None) => (None, None),
            Err(e) => {
                eprintln!("warning: traces are not exported: {e}");
                (None, None)
            }
        };
        tracing_subscriber::registry()
            .with(traces)
            .with(logs)
            .init();
        Telemetry { provider }
    }
    #[cfg(not(feature = "otel"))]
    {
        tracing_subscriber::registry().with(logs).init();
        Telemetry {}
    }
}

#[cfg(feature = "otel")]
mod otlp {
    use opentelemetry::global::BoxedTracer;
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::SpanExporter;
    use opentelemetry_sdk::Resource;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::{Layer, Registry};

    /// The variables that turn the export on.
    const ENDPOINTS: [&str; 2] = [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ];

    type Boxed = Box<dyn Layer<Registry> + Send + Sync>;

    /// The OpenTelemetry layer and its provider, when an endpoint is set. It takes `info`
    /// spans whatever the log filter says (the bus's spans are `info`).
    pub(super) fn layer() -> anyhow::Result<Option<(Boxed, SdkTracerProvider)>> {
        let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
        if !ENDPOINTS.iter().any(|name| set(name)) {
            return Ok(None);
        }
        let exporter = SpanExporter::builder().with_http().build()?;
        let mut resource = Resource::builder();
        if !set("OTEL_SERVICE_NAME") {
            resource = resource.with_service_name("eventbus");
        }
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build();
        let tracer = provider.tracer("eventbus");
        // Handling attempts' `process` spans made with the OpenTelemetry API directly, at
        // less than half the cost of a `tracing` span converted by the layer below.
        event_core::trace::set_process_tracer(Some(BoxedTracer::new(Box::new(tracer.clone()))));
        let spans = Targets::new().with_default(LevelFilter::INFO);
        // No busy and idle times (two clock reads on every poll of every span), no thread,
        // source location or target attributes (six more per span), and no OpenTelemetry
        // context made current on every poll (parents come from the `tracing` span tree): the
        // bus's spans carry what the messaging conventions ask for, at a fraction of the cost.
        let layer = tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_tracked_inactivity(false)
            .with_threads(false)
            .with_location(false)
            .with_target(false)
            .with_context_activation(false)
            .with_filter(spans)
            .boxed();
        Ok(Some((layer, provider)))
    }
}
