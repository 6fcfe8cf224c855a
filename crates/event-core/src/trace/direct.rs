//! `process` spans made with the OpenTelemetry API directly, with the tracer an application
//! gives ([`set_process_tracer`]): the same name, kind, parent and attributes as the `tracing`
//! span that `tracing-opentelemetry` would convert, at about half its cost.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{PoisonError, RwLock};

use opentelemetry::global::BoxedTracer;
use opentelemetry::trace::{Link, SpanKind, TraceContextExt as _, Tracer as _};
use opentelemetry::{Context, KeyValue};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use super::{LogPosition, Relation, kafka_key, otel::remote_context};
use crate::Event;

/// The tracer of `process` spans, when the application gave one.
static TRACER: RwLock<Option<BoxedTracer>> = RwLock::new(None);
/// Whether [`TRACER`] holds one: read for every event handled, so that without a tracer (the
/// default) no lock is taken on that path.
static HAS_TRACER: AtomicBool = AtomicBool::new(false);

/// Makes each handling attempt's `process` span with `tracer`, through the OpenTelemetry API
/// directly, instead of as a `tracing` span for a `tracing-opentelemetry` layer to convert
/// (`None`: back to that). Give the tracer of the provider your `tracing-opentelemetry` layer
/// uses, so both kinds of span go to the same exporter:
///
/// ```
/// use opentelemetry::global::BoxedTracer;
/// use opentelemetry::trace::TracerProvider as _;
///
/// let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
/// event_core::trace::set_process_tracer(Some(BoxedTracer::new(Box::new(
///     provider.tracer("my-service"),
/// ))));
/// # event_core::trace::set_process_tracer(None);
/// ```
///
/// Worth it when every span is sampled, where the `process` span is most of the bus's own
/// tracing cost (see the [module](super) docs for what changes for log lines).
pub fn set_process_tracer(tracer: Option<BoxedTracer>) {
    let mut current = TRACER.write().unwrap_or_else(PoisonError::into_inner);
    HAS_TRACER.store(tracer.is_some(), Ordering::Release);
    *current = tracer;
}

/// The context of a `process` span started now with the tracer given, or `None` when none
/// was: the span is then a `tracing` span.
pub(super) fn start(
    system: &'static str,
    group: &str,
    handler: &str,
    (event, position): (&Event, Option<LogPosition>),
    relation: Relation,
) -> Option<Context> {
    if !HAS_TRACER.load(Ordering::Acquire) {
        return None;
    }
    let tracer = TRACER.read().unwrap_or_else(PoisonError::into_inner);
    let tracer = tracer.as_ref()?;
    let publisher = event
        .traceparent
        .as_deref()
        .and_then(|parent| remote_context(parent, event.tracestate.as_deref()));
    let mut builder = tracer
        .span_builder(format!("process {}", event.event_type))
        .with_kind(SpanKind::Consumer)
        .with_attributes(attributes(system, group, handler, (event, position)));
    // As for the `tracing` span: the publisher is the parent of a live delivery and a link of
    // a replay, whose parent is whatever span is current (none in a consumer's lane).
    let parent = match (relation, publisher) {
        (Relation::Child, Some(publisher)) => Context::new().with_remote_span_context(publisher),
        (Relation::Link, Some(publisher)) => {
            builder = builder.with_links(vec![Link::with_context(publisher)]);
            current()
        }
        (_, None) => current(),
    };
    let span = tracer.build_with_context(builder, &parent);
    Some(parent.with_span(span))
}

/// The attributes of the `process` span, as [`super::process`] names them for `tracing`.
fn attributes(
    system: &'static str,
    group: &str,
    handler: &str,
    (event, position): (&Event, Option<LogPosition>),
) -> Vec<KeyValue> {
    let mut attributes = Vec::with_capacity(12);
    attributes.extend([
        KeyValue::new("messaging.system", system),
        KeyValue::new("messaging.operation.type", "process"),
        KeyValue::new("messaging.operation.name", "process"),
        KeyValue::new(
            "messaging.destination.name",
            event.event_type.as_str().to_owned(),
        ),
        KeyValue::new("messaging.consumer.group.name", group.to_owned()),
        KeyValue::new("messaging.message.id", event.id.to_string()),
        KeyValue::new("eventbus.handler", handler.to_owned()),
    ]);
    if let Some(id) = &event.correlation_id {
        attributes.push(KeyValue::new(
            "messaging.message.conversation_id",
            id.clone(),
        ));
    }
    if let Some(key) = kafka_key(system, event) {
        attributes.push(KeyValue::new("messaging.kafka.message.key", key.to_owned()));
    }
    if let Some(position) = position {
        attributes.push(KeyValue::new(
            "messaging.destination.partition.id",
            position.partition.to_string(),
        ));
        attributes.push(KeyValue::new("messaging.kafka.offset", position.offset));
    }
    attributes
}

/// The current span's context: the `tracing` span's (through its `tracing-opentelemetry`
/// layer) when it has one, else OpenTelemetry's current context.
fn current() -> Context {
    let context = tracing::Span::current().context();
    if context.has_active_span() {
        context
    } else {
        Context::current()
    }
}

/// Records that the attempt whose span `context` holds failed, with its `error.type`.
pub(super) fn record_error(context: &Context, error_type: &str) {
    context
        .span()
        .set_attribute(KeyValue::new("error.type", error_type.to_owned()));
}

/// Ends the span `context` holds.
pub(super) fn end(context: &Context) {
    context.span().end();
}
