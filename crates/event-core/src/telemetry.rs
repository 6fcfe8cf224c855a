//! The bus's own metrics, recorded through the [`metrics`] facade by every backend whether or
//! not `eventbus serve` runs: install any recorder (`metrics-exporter-prometheus`, an
//! OpenTelemetry bridge, ...) and they reach it. Names, labels and their OpenTelemetry
//! counterparts are listed in `docs/operations.md`.
//!
//! Two kinds:
//!
//! - **Publishing** is recorded as it happens, once per call ([`record_publish`]): events by
//!   type and outcome, the call's duration, the batch's size. The backends publish through
//!   [`publish_one`], [`publish_batch`] and [`publish_batch_returning`], which also run the
//!   call in its producer span and write the span's trace context into the events ([`trace`]).
//! - **Consuming** is counted per event in each handler's [`HandlerCounters`] (plain atomics:
//!   nothing on the delivery path looks up a metric), and exported to the recorder by a
//!   background thread every [`EXPORT_INTERVAL`], or at once by [`export`] (the manager's
//!   `/metrics` calls it before rendering). A recorder installed after the bus started still
//!   gets them.
//!
//! Every label comes from a closed set: the backend's name, the handler's name (the bus's
//! own registrations), the event type of a published event (the publisher's own types), and
//! an outcome. Nothing read from a stream or a request becomes a label.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, Once, Weak};
use std::time::{Duration, Instant};

use metrics::{Label, SharedString};

use crate::dispatch::{CounterSnapshot, HandlerCounters};
use tracing::Instrument as _;

use crate::{Error, ErrorKind, Event, EventId, EventType, Unpublished, trace};

/// Events given to `publish` or `publish_batch`, by `backend`, `event_type` and `outcome`
/// (`ok`; `invalid`: the event was refused, fix it; `failed`: the bus could not store it).
pub const PUBLISHED: &str = "eventbus_events_published_total";
/// Seconds one `publish` or `publish_batch` call took, by `backend` and `operation`
/// (`publish`, `publish_batch`).
pub const PUBLISH_DURATION: &str = "eventbus_publish_duration_seconds";
/// Events in one `publish_batch` call, by `backend`.
pub const PUBLISH_BATCH_SIZE: &str = "eventbus_publish_batch_size";
/// Deliveries handed to a handler, by `backend` and `handler` (each redelivery again).
pub const DELIVERED: &str = "eventbus_consumer_delivered_total";
/// Deliveries of events an earlier delivery did not finish (after a crash, a lost
/// connection, a rebalance), by `backend` and `handler`.
pub const REDELIVERED: &str = "eventbus_consumer_redelivered_total";
/// Events taken over from another consumer of the group that held them too long (Redis
/// `XAUTOCLAIM`), by `backend` and `handler`.
pub const CLAIMED: &str = "eventbus_consumer_claimed_total";
/// Events the handler finished, acknowledged to the backend, by `backend` and `handler`.
pub const ACKNOWLEDGED: &str = "eventbus_consumer_acknowledged_total";
/// Failed attempts, by `backend` and `handler`.
pub const FAILED: &str = "eventbus_consumer_failed_total";
/// Failed attempts that are retried, by `backend` and `handler`.
pub const RETRIED: &str = "eventbus_consumer_retried_total";
/// Events moved to the handler's dead letters, by `backend` and `handler`.
pub const DEAD_LETTERED: &str = "eventbus_consumer_dead_lettered_total";
/// Events retention removed before the handler got them, by `backend` and `handler`.
pub const EXPIRED: &str = "eventbus_handler_expired_total";
/// Consumer loops that panicked or ended unasked and were restarted, by `backend` and
/// `handler`.
pub const LOOP_FAILURES: &str = "eventbus_consumer_loop_failures_total";

/// How often the background thread exports the consumers' counters.
pub const EXPORT_INTERVAL: Duration = Duration::from_secs(1);

/// A handler's counters as registered for export.
struct Registered {
    backend: &'static str,
    handler: Arc<str>,
    counters: Weak<HandlerCounters>,
}

static REGISTRY: Mutex<Vec<Registered>> = Mutex::new(Vec::new());
static EXPORTER: Once = Once::new();

fn registry() -> MutexGuard<'static, Vec<Registered>> {
    REGISTRY
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Exports `counters` as the metrics of `handler` on `backend` from now on, for as long as
/// they live, and starts the export thread if it is not running.
pub fn register(backend: &'static str, handler: &str, counters: &Arc<HandlerCounters>) {
    {
        let mut registry = registry();
        registry.retain(|r| r.counters.strong_count() > 0);
        registry.push(Registered {
            backend,
            handler: Arc::from(handler),
            counters: Arc::downgrade(counters),
        });
    }
    EXPORTER.call_once(|| {
        let spawned = std::thread::Builder::new()
            .name("eventbus-metrics".into())
            .spawn(|| {
                loop {
                    std::thread::sleep(EXPORT_INTERVAL);
                    // A recorder that panics must not end the exports for good.
                    if std::panic::catch_unwind(export).is_err() {
                        tracing::error!("exporting the consumer metrics panicked; trying again");
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(
                "the metrics export thread did not start ({e}); consumer metrics are exported only when export() is called"
            );
        }
    });
}

/// Exports every registered handler's counters to the installed recorder now. Counters of
/// one handler registered by several buses of one backend in this process are summed.
pub fn export() {
    let mut totals: Vec<(&'static str, Arc<str>, CounterSnapshot)> = Vec::new();
    for r in registry().iter() {
        let Some(counters) = r.counters.upgrade() else {
            continue;
        };
        let s = counters.snapshot();
        match totals
            .iter_mut()
            .find(|(b, h, _)| *b == r.backend && **h == *r.handler)
        {
            Some((_, _, total)) => total.add(&s),
            None => totals.push((r.backend, r.handler.clone(), s)),
        }
    }
    for (backend, handler, s) in totals {
        let labels = [
            Label::new("backend", backend),
            Label::new("handler", SharedString::from(handler)),
        ];
        for (name, value) in [
            (DELIVERED, s.delivered),
            (REDELIVERED, s.redelivered),
            (CLAIMED, s.claimed),
            (ACKNOWLEDGED, s.processed),
            (FAILED, s.failed),
            (RETRIED, s.retried),
            (DEAD_LETTERED, s.dead_lettered),
            (EXPIRED, s.expired),
            (LOOP_FAILURES, s.loop_failures),
        ] {
            metrics::counter!(name, labels.iter()).absolute(value);
        }
    }
}

/// Which publishing call is recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PublishCall {
    /// `publish`: one event.
    One,
    /// `publish_batch`: its size is recorded too.
    Batch,
}

/// The `outcome` label of a publish result: `ok`, `invalid` (the event was refused: an
/// [`ErrorKind::InvalidInput`]) or `failed`.
pub fn outcome(result: Result<(), &Error>) -> &'static str {
    match result {
        Ok(()) => "ok",
        Err(e) if e.kind() == ErrorKind::InvalidInput => "invalid",
        Err(_) => "failed",
    }
}

/// Runs one `publish` of `backend` in its producer span (see [`trace`]), with the span's
/// trace context written into the event, and records it.
pub async fn publish_one<F, Fut>(
    backend: &'static str,
    mut event: Event,
    publish: F,
) -> Result<EventId, Error>
where
    F: FnOnce(Event) -> Fut,
    Fut: Future<Output = Result<EventId, Error>>,
{
    let span = trace::publish_span(backend, Some(event.event_type.as_str()), None);
    trace::inject(&span, &mut event);
    let event_type = event.event_type.clone();
    let started = Instant::now();
    let result = publish(event).instrument(span.clone()).await;
    if let Err(e) = &result {
        trace::record_error(&span, trace::error_type(e));
    }
    let outcome = outcome(result.as_ref().map(|_| ()));
    record_publish(backend, PublishCall::One, started, [(&event_type, outcome)]);
    result
}

/// Runs one `publish_batch` of `backend` in its producer span (see [`trace`]), with the
/// span's trace context written into each event that has none, and records it; `error` finds
/// the [`Error`] in a failed result.
pub async fn publish_batch<E, F, Fut>(
    backend: &'static str,
    mut events: Vec<Event>,
    publish: F,
    error: fn(&E) -> &Error,
) -> Vec<Result<EventId, E>>
where
    F: FnOnce(Vec<Event>) -> Fut,
    Fut: Future<Output = Vec<Result<EventId, E>>>,
{
    // Each event's type as an index into the batch's distinct types: one copy per type, not
    // per event (a custom type's name is an allocation).
    let mut distinct: Vec<EventType> = Vec::new();
    let kinds: Vec<usize> = {
        let mut index: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        events
            .iter()
            .map(|e| {
                *index.entry(e.event_type.as_str()).or_insert_with(|| {
                    distinct.push(e.event_type.clone());
                    distinct.len() - 1
                })
            })
            .collect()
    };
    let destination = match distinct.as_slice() {
        [only] => Some(only.as_str()),
        _ => None,
    };
    let span = trace::publish_span(backend, destination, Some(events.len()));
    trace::inject_all(&span, &mut events);
    let started = Instant::now();
    let results = publish(events).instrument(span.clone()).await;
    if let Some(first) = results.iter().find_map(|r| r.as_ref().err()) {
        trace::record_error(&span, trace::error_type(error(first)));
    }
    let outcomes = kinds.iter().zip(&results).map(|(&kind, result)| {
        let result = result.as_ref().map(|_| ()).map_err(error);
        (&distinct[kind], outcome(result))
    });
    record_publish(backend, PublishCall::Batch, started, outcomes);
    results
}

/// Runs one `publish_batch_returning` of `backend` as [`publish_batch`] runs a batch, for a
/// backend that publishes the events by reference: `publish` hands the events back with
/// their results, and the ones not published go back whole to the caller, with no copies
/// made ([`hand_back`](crate::backend::hand_back)).
pub async fn publish_batch_returning<F, Fut>(
    backend: &'static str,
    events: Vec<Event>,
    publish: F,
) -> Vec<Result<EventId, Unpublished>>
where
    F: FnOnce(Vec<Event>) -> Fut,
    Fut: Future<Output = (Vec<Event>, Vec<Result<EventId, Error>>)>,
{
    let publish = async |events| {
        let (events, results) = publish(events).await;
        crate::backend::hand_back(events, results)
    };
    publish_batch(backend, events, publish, |u: &Unpublished| &u.error).await
}

/// Records one publishing call of `backend` that started at `started`: each event's type and
/// outcome (counted per distinct pair, not per event), the call's duration and, for a batch,
/// its size.
pub fn record_publish<'a>(
    backend: &'static str,
    call: PublishCall,
    started: Instant,
    outcomes: impl IntoIterator<Item = (&'a EventType, &'static str)>,
) {
    let elapsed = started.elapsed().as_secs_f64();
    let mut counts: Vec<(&EventType, &'static str, u64)> = Vec::new();
    let mut events = 0u64;
    for (event_type, outcome) in outcomes {
        events += 1;
        match counts
            .iter_mut()
            .find(|(t, o, _)| *o == outcome && *t == event_type)
        {
            Some((_, _, n)) => *n += 1,
            None => counts.push((event_type, outcome, 1)),
        }
    }
    for (event_type, outcome, n) in counts {
        metrics::counter!(
            PUBLISHED,
            "backend" => backend,
            "event_type" => type_label(event_type),
            "outcome" => outcome,
        )
        .increment(n);
    }
    let operation = match call {
        PublishCall::One => "publish",
        PublishCall::Batch => {
            metrics::histogram!(PUBLISH_BATCH_SIZE, "backend" => backend).record(events as f64);
            "publish_batch"
        }
    };
    metrics::histogram!(PUBLISH_DURATION, "backend" => backend, "operation" => operation)
        .record(elapsed);
}

/// An event type as a label, without copying the standard types' names.
fn type_label(event_type: &EventType) -> SharedString {
    match event_type.as_static() {
        Some(name) => SharedString::const_str(name),
        None => SharedString::from_owned(event_type.as_str().to_owned()),
    }
}
