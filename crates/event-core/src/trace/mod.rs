//! Distributed traces across the bus: the W3C Trace Context of the publishing span travels
//! with each event, and each handling attempt runs in a span that continues it, named and
//! attributed after the OpenTelemetry semantic conventions for messaging (version
//! [`SEMCONV_VERSION`]).
//!
//! - `publish` and `publish_batch` run in a producer span `publish {destination}` and, when the
//!   event has no trace context yet, write that span's into the envelope's
//!   [`traceparent`](crate::Event::traceparent) and [`tracestate`](crate::Event::tracestate)
//!   fields (the CloudEvents distributed-tracing extension's names). An event that has one
//!   (a redrive, `copy`, an event a foreign producer traced) keeps it, so its consumers
//!   continue the original trace. The backends also write it where their own tools look: Kafka
//!   record headers and Redis stream entry fields of the same names.
//! - Each handling attempt runs in a consumer span `process {destination}` whose parent is the
//!   publishing span; retries and redeliveries are new attempts, each a child of it; events a
//!   handler publishes are children of its attempt, so causation chains stay in one trace.
//!   [`replay_into`](crate::replay_into) links its spans to the publishing span instead (the
//!   replay is not caused by the publish).
//! - A dead letter is written in a span `dead_letter {destination}`.
//!
//! Span names, kinds and attributes are `tracing` fields that `tracing-opentelemetry` turns
//! into OpenTelemetry ones (`otel.name`, `otel.kind`, `messaging.*`, `error.type`). The trace
//! context itself needs OpenTelemetry: with this crate's `otel` feature, and a
//! `tracing-opentelemetry` layer in the subscriber, contexts are injected and continued;
//! without it the spans are plain `tracing` spans and trace contexts already in events pass
//! through unchanged.
//!
//! The `process` span is made for every event handled, so its cost counts: through
//! `tracing-opentelemetry` it costs about 2.5 µs of CPU, made with the OpenTelemetry API
//! directly about 1 µs (`cargo bench -p event-testkit --bench span_cost`). An application that
//! exports every span can give the bus its tracer (`set_process_tracer`, feature `otel`;
//! `eventbus` does): `process` spans are then made directly, with the same name, kind, parent
//! and attributes, and the handling runs with that span's context current, so the handler's
//! own `tracing` spans and what it publishes are still its children. They are no longer
//! `tracing` spans, so a `tracing` formatter's log lines inside a handler show no `process`
//! span around them.

use tracing::{Instrument as _, Span};

use crate::Event;

#[cfg(feature = "otel")]
mod direct;
#[cfg(feature = "otel")]
pub use direct::set_process_tracer;

/// The OpenTelemetry semantic conventions version the span names and attributes follow.
pub const SEMCONV_VERSION: &str = "1.37.0";
/// The envelope field, Kafka header and Redis entry field of the W3C `traceparent`.
pub const TRACEPARENT: &str = "traceparent";
/// The envelope field, Kafka header and Redis entry field of the W3C `tracestate`.
pub const TRACESTATE: &str = "tracestate";

/// Where a delivery's record lies in a partitioned log (a Kafka partition and offset), for its
/// `process` span's `messaging.destination.partition.id` and `messaging.kafka.offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogPosition {
    /// The partition.
    pub partition: i32,
    /// The record's offset in it.
    pub offset: i64,
}

/// How a processing span relates to the span that published its event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Relation {
    /// The publishing span is its parent (live delivery, retries, redeliveries).
    Child,
    /// The publishing span is linked, not its parent (replay).
    Link,
}

/// The producer span of one `publish` (`batch`: `None`) or `publish_batch` (`Some(size)`) on
/// `system`; `destination` is the event type (the one of the whole batch, or `None` when the
/// batch mixes types: the span is then named `publish`).
pub fn publish_span(system: &'static str, destination: Option<&str>, batch: Option<usize>) -> Span {
    if UNSAMPLED.try_with(|_| ()).is_ok() {
        // Published while handling an event of an unsampled trace: it stays in that trace,
        // unsampled, and a span would be the root of another.
        return Span::none();
    }
    tracing::info_span!(
        "publish",
        otel.name = %SpanName("publish", destination),
        otel.kind = "producer",
        messaging.system = system,
        "messaging.operation.type" = "send",
        messaging.operation.name = "publish",
        messaging.destination.name = destination,
        messaging.batch.message_count = batch,
        "error.type" = tracing::field::Empty,
    )
}

tokio::task_local! {
    /// While a handler handles an event of a trace that is not sampled: that event's context,
    /// which what the handler publishes carries on (so it stays unsampled, in the same trace).
    static UNSAMPLED: (String, Option<String>);
}

/// The event's `traceparent` when it is valid and says its trace is not sampled.
fn unsampled_parent(event: &Event) -> Option<&str> {
    event
        .traceparent
        .as_deref()
        .filter(|parent| is_valid_traceparent(parent) && !is_sampled(parent))
}

/// A span's name: `{operation} {destination}`, or the operation alone when there is no one
/// destination. Formatted only when a subscriber records the span (a disabled span costs no
/// allocation).
struct SpanName<'a>(&'static str, Option<&'a str>);

impl std::fmt::Display for SpanName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.1 {
            Some(destination) => write!(f, "{} {destination}", self.0),
            None => f.write_str(self.0),
        }
    }
}

/// Writes `span`'s trace context into `event` unless it has one (a redrive, a copy, a foreign
/// producer's). Inside the handling of an unsampled event ([`Processing::run`]) that event's
/// context is written instead. Without the `otel` feature, or when `span` is not traced, nothing
/// else is.
pub fn inject(span: &Span, event: &mut Event) {
    inject_all(span, std::slice::from_mut(event));
}

/// [`inject`] for each event of a batch published in `span`, the span's context read once.
pub fn inject_all(span: &Span, events: &mut [Event]) {
    let mut context = None;
    for event in events.iter_mut().filter(|e| e.traceparent.is_none()) {
        let Some((parent, state)) = context.get_or_insert_with(|| context_for(span)) else {
            return;
        };
        event.traceparent = Some(parent.clone());
        event.tracestate.clone_from(state);
    }
}

/// The trace context what is published in `span` carries: the unsampled event's being handled
/// ([`Processing::run`]), else `span`'s when it is traced, else the current OpenTelemetry
/// context's (a handling attempt's span made directly, see `set_process_tracer`); the last two
/// with the `otel` feature.
fn context_for(span: &Span) -> Option<(String, Option<String>)> {
    if let Ok(context) = UNSAMPLED.try_with(Clone::clone) {
        return Some(context);
    }
    #[cfg(feature = "otel")]
    return otel::context_of(span).or_else(otel::current_context);
    #[cfg(not(feature = "otel"))]
    {
        let _ = span;
        None
    }
}

/// One handling attempt's consumer span `process {destination}` (see [`process`]): a
/// `tracing` span, an OpenTelemetry span made directly (with a tracer given to
/// `set_process_tracer`, feature `otel`), or none when the publisher's trace is not sampled. Ends when
/// dropped.
#[must_use = "the span ends when this is dropped: run the handling in it"]
pub struct Processing {
    span: Span,
    /// The unsampled publisher's context when no span was made, carried on to what the
    /// handler publishes.
    unsampled: Option<(String, Option<String>)>,
    #[cfg(feature = "otel")]
    direct: Option<opentelemetry::Context>,
}

impl Processing {
    /// Runs `handling` in the span: what the handler publishes continues its trace (and, for
    /// an unsampled trace, stays in it).
    pub async fn run<F: std::future::Future>(&mut self, handling: F) -> F::Output {
        if let Some(context) = self.unsampled.take() {
            return UNSAMPLED.scope(context, handling).await;
        }
        #[cfg(feature = "otel")]
        if let Some(context) = &self.direct {
            return opentelemetry::trace::FutureExt::with_context(handling, context.clone()).await;
        }
        handling.instrument(self.span.clone()).await
    }

    /// Records that the attempt failed, with its `error.type`.
    pub fn record_error(&self, error_type: &str) {
        #[cfg(feature = "otel")]
        if let Some(context) = &self.direct {
            direct::record_error(context, error_type);
            return;
        }
        record_error(&self.span, error_type);
    }
}

#[cfg(feature = "otel")]
impl Drop for Processing {
    fn drop(&mut self) {
        if let Some(context) = &self.direct {
            direct::end(context);
        }
    }
}

impl std::fmt::Debug for Processing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Processing")
            .field("span", &self.span)
            .field("unsampled", &self.unsampled.is_some())
            .finish_non_exhaustive()
    }
}

/// The consumer span of one handling attempt of `event` by `handler` of `group` on `system`,
/// read at `position` in a partitioned log (Kafka), continuing (`relation`) the trace its
/// publisher started. When that trace is not sampled, no span is made (most events of a
/// sampled-down service take this path) and [`Processing::run`] carries the context on to
/// what the handler publishes.
pub fn process(
    system: &'static str,
    group: &str,
    handler: &str,
    (event, position): (&Event, Option<LogPosition>),
    relation: Relation,
) -> Processing {
    let mut processing = Processing {
        span: Span::none(),
        unsampled: None,
        #[cfg(feature = "otel")]
        direct: None,
    };
    if relation == Relation::Child
        && let Some(parent) = unsampled_parent(event)
    {
        processing.unsampled = Some((parent.to_owned(), event.tracestate.clone()));
        return processing;
    }
    #[cfg(feature = "otel")]
    if let Some(context) = direct::start(system, group, handler, (event, position), relation) {
        processing.direct = Some(context);
        return processing;
    }
    processing.span = tracing::info_span!(
        "process",
        otel.name = %SpanName("process", Some(event.event_type.as_str())),
        otel.kind = "consumer",
        messaging.system = system,
        "messaging.operation.type" = "process",
        messaging.operation.name = "process",
        messaging.destination.name = event.event_type.as_str(),
        messaging.consumer.group.name = group,
        messaging.message.id = %event.id,
        messaging.message.conversation_id = event.correlation_id.as_deref(),
        messaging.kafka.message.key = kafka_key(system, event),
        messaging.destination.partition.id = position.map(|p| tracing::field::display(p.partition)),
        messaging.kafka.offset = position.map(|p| p.offset),
        eventbus.handler = handler,
        "error.type" = tracing::field::Empty,
    );
    continue_trace(&processing.span, event, relation);
    processing
}

/// The span in which a dead letter of `event` is written by `handler` of `group`.
pub fn dead_letter_span(
    system: &'static str,
    group: &str,
    handler: &str,
    event: Option<&Event>,
) -> Span {
    let destination = event.map(|e| e.event_type.as_str());
    let span = tracing::info_span!(
        "dead_letter",
        otel.name = %SpanName("dead_letter", destination),
        otel.kind = "client",
        messaging.system = system,
        "messaging.operation.type" = "settle",
        messaging.operation.name = "dead_letter",
        messaging.destination.name = destination,
        messaging.consumer.group.name = group,
        messaging.message.id = event.map(|e| e.id.to_string()),
        eventbus.handler = handler,
    );
    if let Some(event) = event {
        continue_trace(&span, event, Relation::Child);
    }
    span
}

/// Records on `span` (made by this module) that its operation failed, with the error's kind.
pub fn record_error(span: &Span, error_type: &str) {
    span.record("error.type", error_type);
}

/// The `error.type` of a failed operation: the error's [`ErrorKind`](crate::ErrorKind), in
/// snake case.
pub fn error_type(error: &crate::Error) -> &'static str {
    use crate::ErrorKind as K;
    match error.kind() {
        K::InvalidInput => "invalid_input",
        K::Configuration => "configuration",
        K::Unsupported => "unsupported",
        K::Conflict => "conflict",
        K::NotFound => "not_found",
        K::ShutDown => "shut_down",
        K::Timeout => "timeout",
        K::Unavailable => "unavailable",
        K::Refused => "refused",
    }
}

fn kafka_key<'a>(system: &str, event: &'a Event) -> Option<&'a str> {
    (system == "kafka")
        .then_some(event.partition_key.as_deref())
        .flatten()
}

fn continue_trace(span: &Span, event: &Event, relation: Relation) {
    // A disabled span (no subscriber wants it) has no context to set: nothing is parsed.
    #[cfg(feature = "otel")]
    if !span.is_disabled() {
        otel::continue_from(span, event, relation);
    }
    #[cfg(not(feature = "otel"))]
    let _ = (span, event, relation);
}

/// Whether the `traceparent` (a valid one) says its trace is sampled (flag bit 0).
fn is_sampled(traceparent: &str) -> bool {
    traceparent
        .get(53..55)
        .and_then(|flags| u8::from_str_radix(flags, 16).ok())
        .is_some_and(|flags| flags & 1 == 1)
}

/// Whether `value` is a W3C `traceparent` this crate can continue: version `00`, a 32-digit
/// trace id and a 16-digit span id in lowercase hex, neither all zeros, and 2 digits of flags.
pub fn is_valid_traceparent(value: &str) -> bool {
    // Checked for every event handled that carries a context: by position, without
    // allocating. `00-{trace id: 32}-{span id: 16}-{flags: 2}`.
    let bytes = value.as_bytes();
    let hex = |digits: &[u8]| {
        digits
            .iter()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    let nonzero = |digits: &[u8]| digits.iter().any(|&b| b != b'0');
    bytes.len() == 55
        && bytes.starts_with(b"00-")
        && bytes[35] == b'-'
        && bytes[52] == b'-'
        && hex(&bytes[3..35])
        && nonzero(&bytes[3..35])
        && hex(&bytes[36..52])
        && nonzero(&bytes[36..52])
        && hex(&bytes[53..55])
}

#[cfg(feature = "otel")]
mod otel {
    use std::str::FromStr;

    use opentelemetry::Context;
    use opentelemetry::propagation::{Injector, TextMapPropagator};
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use tracing::Span;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    use super::{Relation, TRACEPARENT, TRACESTATE};
    use crate::Event;

    /// The two headers of a context, as the W3C propagator writes and reads them.
    #[derive(Default)]
    struct Headers {
        parent: Option<String>,
        state: Option<String>,
    }

    impl Injector for Headers {
        fn set(&mut self, key: &str, value: String) {
            match key {
                TRACEPARENT => self.parent = Some(value),
                TRACESTATE if !value.is_empty() => self.state = Some(value),
                _ => {}
            }
        }
    }

    /// `span`'s context as `traceparent` and `tracestate`, when it is traced.
    pub(super) fn context_of(span: &Span) -> Option<(String, Option<String>)> {
        headers_of(&span.context())
    }

    /// The current OpenTelemetry context's, when it has a span: a handling attempt's span made
    /// directly ([`super::set_process_tracer`]), which no `tracing` span carries.
    pub(super) fn current_context() -> Option<(String, Option<String>)> {
        headers_of(&Context::current())
    }

    fn headers_of(context: &Context) -> Option<(String, Option<String>)> {
        if !context.span().span_context().is_valid() {
            return None;
        }
        let mut headers = Headers::default();
        TraceContextPropagator::new().inject_context(context, &mut headers);
        Some((headers.parent?, headers.state))
    }

    /// Makes the publishing span of `event` the parent of `span`, or links it.
    pub(super) fn continue_from(span: &Span, event: &Event, relation: Relation) {
        let Some(parent) = event.traceparent.as_deref() else {
            return;
        };
        let Some(publisher) = remote_context(parent, event.tracestate.as_deref()) else {
            tracing::debug!(event = %event.id, "ignoring an invalid traceparent: {parent:?}");
            return;
        };
        match relation {
            Relation::Child => {
                let _ = span.set_parent(Context::new().with_remote_span_context(publisher));
            }
            Relation::Link => span.add_link(publisher),
        }
    }

    /// The remote span context a valid `traceparent` (and its `tracestate`) names, read as the
    /// W3C propagator reads it (only the sampled flag kept, an unreadable `tracestate`
    /// dropped), without its copies: this runs for every event handled.
    pub(super) fn remote_context(parent: &str, state: Option<&str>) -> Option<SpanContext> {
        if !super::is_valid_traceparent(parent) {
            return None;
        }
        // Valid: `00-{32 hex}-{16 hex}-{2 hex}`.
        let trace_id = TraceId::from_hex(&parent[3..35]).ok()?;
        let span_id = SpanId::from_hex(&parent[36..52]).ok()?;
        let flags = u8::from_str_radix(&parent[53..55], 16).ok()?;
        let state = state
            .and_then(|state| TraceState::from_str(state).ok())
            .unwrap_or_default();
        let context = SpanContext::new(
            trace_id,
            span_id,
            TraceFlags::new(flags) & TraceFlags::SAMPLED,
            true,
            state,
        );
        context.is_valid().then_some(context)
    }

    #[cfg(test)]
    mod tests {
        use opentelemetry::propagation::{Extractor, TextMapPropagator};
        use opentelemetry::trace::TraceContextExt;
        use opentelemetry_sdk::propagation::TraceContextPropagator;

        use super::{Headers, TRACEPARENT, TRACESTATE, remote_context};

        /// Read by the W3C propagator, which the test compares with.
        impl Extractor for Headers {
            fn get(&self, key: &str) -> Option<&str> {
                match key {
                    TRACEPARENT => self.parent.as_deref(),
                    TRACESTATE => self.state.as_deref(),
                    _ => None,
                }
            }

            fn keys(&self) -> Vec<&str> {
                vec![TRACEPARENT, TRACESTATE]
            }
        }

        #[test]
        fn remote_contexts_are_read_as_the_w3c_propagator_reads_them() {
            let parents = [
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff",
            ];
            for parent in parents {
                for state in [None, Some("vendor=value,other=1"), Some("not a state!")] {
                    let headers = Headers {
                        parent: Some(parent.to_owned()),
                        state: state.map(str::to_owned),
                    };
                    let expected = TraceContextPropagator::new().extract(&headers);
                    let expected = expected.span().span_context().clone();
                    assert_eq!(
                        remote_context(parent, state),
                        Some(expected),
                        "{parent} {state:?}"
                    );
                }
            }
            assert_eq!(remote_context("00-zz", None), None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{is_sampled, is_valid_traceparent};

    #[test]
    fn traceparents_are_checked_and_their_sampled_flag_read() {
        let sampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        assert!(is_valid_traceparent(sampled) && is_sampled(sampled));
        assert!(is_valid_traceparent(unsampled) && !is_sampled(unsampled));
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-zz",
            "00-4bf92f3577b34da6a3ce929d0e0e47360-0f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736+00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0\u{e9}",
        ] {
            assert!(!is_valid_traceparent(bad), "{bad:?}");
        }
    }
}
