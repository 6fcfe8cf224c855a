//! Distributed traces (`event_core::trace`): one trace from the publishing request through
//! every handling attempt, the events handlers publish, a dead letter and its redrive, and a
//! replay that links rather than continues.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use anyhow::{Context as _, ensure};
use event_core::{
    DeadLetterSelection, Event, EventHandler, EventId, HandlerError, ReplayQuery, SubscriptionSpec,
    handler_fn, replay_into,
};
use opentelemetry::trace::{SpanId, SpanKind, TraceContextExt as _, TraceId};
use opentelemetry_sdk::trace::SpanData;
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::fixture::Fixture;
use crate::support::{
    DEADLINE, Recorder, fresh_handler, fresh_type, n_of, numbered, subscribe, wait_for_dead_letters,
};
use crate::trace_probe::{DIRECT_SCOPE, TraceProbe};

/// Events published: more than a consumer reads at once (`EVENT_BATCH_SIZE` 100).
const EVENTS: u64 = 150;
/// Of them, published in batches of this many (the rest one by one).
const BATCHED: u64 = 120;
/// Every this many events fails once, transiently, and is retried.
const RETRY_EVERY: u64 = 7;
/// This event fails for good once, is dead-lettered, and is handled after a redrive.
const DEAD: u64 = 3;

fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.as_str().into_owned())
}

/// Spans named `name` whose `eventbus.handler` is `handler` (any, when `None`).
fn named<'a>(spans: &'a [SpanData], name: &str, handler: Option<&str>) -> Vec<&'a SpanData> {
    spans
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| handler.is_none_or(|h| attribute(s, "eventbus.handler").as_deref() == Some(h)))
        .collect()
}

fn ids(spans: &[&SpanData]) -> HashSet<SpanId> {
    spans.iter().map(|s| s.span_context.span_id()).collect()
}

/// The two trials of this module, one at a time: one gives the bus a tracer for its `process`
/// spans, which the other must not meet.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// One trace runs from the publishing request through each handling attempt (retries, a redrive), across two bus instances where the backend is shared, and on through the events handlers publish; replay links to it.
pub(crate) async fn traces_cross_buses(fx: &Fixture) -> anyhow::Result<()> {
    let _alone = ONE_AT_A_TIME.lock().await;
    traces(fx, TraceProbe::installed()?, None).await
}

/// The same trace with `process` spans made with the OpenTelemetry API directly (`trace::set_process_tracer`).
pub(crate) async fn traces_cross_buses_direct(fx: &Fixture) -> anyhow::Result<()> {
    let _alone = ONE_AT_A_TIME.lock().await;
    let probe = TraceProbe::installed()?;
    event_core::trace::set_process_tracer(Some(probe.tracer()));
    let result = traces(fx, probe, Some(DIRECT_SCOPE)).await;
    event_core::trace::set_process_tracer(None);
    result
}

/// The trial, `direct`: the instrumentation scope the `process` spans must have been made in
/// when they are made directly.
async fn traces(fx: &Fixture, probe: &TraceProbe, direct: Option<&str>) -> anyhow::Result<()> {
    let consumer = fx.bus().await?;
    // On a shared backend the publisher is another bus instance, as another service would be.
    let publisher = if fx.capabilities.shared_groups {
        fx.bus().await?
    } else {
        consumer.clone()
    };
    let (ordered, followed) = (fresh_type("ordered"), fresh_type("followed"));
    let (first, second) = (fresh_handler(), fresh_handler());

    // The first handler: fails some events once (retried, or dead-lettered), otherwise
    // publishes a follow-up from inside its attempt.
    let attempts: Arc<Mutex<HashMap<EventId, u32>>> = Arc::default();
    let received: Arc<Mutex<Vec<Event>>> = Arc::default();
    let handler = {
        let (bus, followed, attempts, received) = (
            consumer.clone(),
            followed.clone(),
            attempts.clone(),
            received.clone(),
        );
        handler_fn(first.clone(), move |event: Arc<Event>| {
            let (bus, followed, attempts, received) = (
                bus.clone(),
                followed.clone(),
                attempts.clone(),
                received.clone(),
            );
            async move {
                let attempt = {
                    let mut attempts = attempts.lock().unwrap_or_else(|p| p.into_inner());
                    let n = attempts.entry(event.id).or_default();
                    *n += 1;
                    *n
                };
                received
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((*event).clone());
                let n = n_of(&event);
                if attempt == 1 && n == DEAD {
                    return Err(HandlerError::permanent("dead-lettered once on purpose"));
                }
                if attempt == 1 && n.is_multiple_of(RETRY_EVERY) {
                    return Err(HandlerError::transient("retried once on purpose"));
                }
                let follow_up = Event::builder(followed, "trial")
                    .field("n", n)
                    .causation_id(event.id.to_string())
                    .build()
                    .map_err(HandlerError::permanent)?;
                bus.publish(follow_up)
                    .await
                    .map_err(HandlerError::transient)?;
                Ok(())
            }
        })
    };
    let spec = SubscriptionSpec::new(first.clone(), [ordered.clone()]);
    let _first = consumer.subscribe(spec, handler).await?;
    let follower = Recorder::new(&second);
    let _second = subscribe(&*consumer, &follower, [followed.clone()]).await?;

    // The request: a root span, in which everything is published.
    let root = tracing::info_span!("trial_request", otel.name = %format!("request {first}"));
    let trace_id = root.context().span().span_context().trace_id();
    ensure!(
        trace_id != TraceId::INVALID,
        "the trial's root span is not traced"
    );
    let events: Vec<Event> = (0..EVENTS).map(|n| numbered(&ordered, n)).collect();
    let from = events[0].timestamp;
    async {
        for chunk in events[..BATCHED as usize].chunks(60) {
            for result in publisher.publish_batch(chunk.to_vec()).await {
                result?;
            }
        }
        for event in &events[BATCHED as usize..] {
            publisher.publish(event.clone()).await?;
        }
        anyhow::Ok(())
    }
    .instrument(root.clone())
    .await?;
    let root_id = root.context().span().span_context().span_id();
    drop(root);

    wait_for_dead_letters(&*consumer, &first, 1).await?;
    let report = consumer
        .redrive_dead_letters(&first, DeadLetterSelection::All)
        .await?;
    ensure!(report.redriven == 1, "redrive: {report:?}");
    follower.wait_for_count(EVENTS as usize).await?;

    // Every attempt of the first handler and of the follower has ended and been exported.
    let process_ordered = format!("process {ordered}");
    let process_followed = format!("process {followed}");
    let expected_first = EVENTS + EVENTS.div_ceil(RETRY_EVERY) + 1;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let spans = loop {
        let spans = probe.spans()?;
        let (firsts, seconds) = (
            named(&spans, &process_ordered, Some(&first)).len() as u64,
            named(&spans, &process_followed, Some(&second)).len() as u64,
        );
        if firsts >= expected_first && seconds >= EVENTS {
            break spans;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "gave up after {DEADLINE:?} waiting for the processing spans: {firsts} of {first} \
             ({expected_first} expected), {seconds} of {second} ({EVENTS} expected)"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };

    // The request's publishes: producer spans, children of the request. (A redrive publishes
    // in a trace of its own; the event it hands back keeps its context.)
    let publishes: Vec<_> = named(&spans, &format!("publish {ordered}"), None)
        .into_iter()
        .filter(|s| s.span_context.trace_id() == trace_id)
        .collect();
    ensure!(
        publishes.len() as u64 == BATCHED.div_ceil(60) + (EVENTS - BATCHED),
        "{} publish spans of {ordered}",
        publishes.len()
    );
    for span in &publishes {
        ensure!(
            span.span_kind == SpanKind::Producer
                && span.span_context.trace_id() == trace_id
                && span.parent_span_id == root_id
                && attribute(span, "messaging.system").as_deref() == Some(fx.capabilities.backend),
            "a publish span outside the request's trace: {span:?}"
        );
    }
    let publish_ids = ids(&publishes);

    // Each attempt of the first handler (retries and the redrive included) is a consumer span
    // whose parent is its event's publish span, with the messaging attributes.
    let firsts = named(&spans, &process_ordered, Some(&first));
    for span in &firsts {
        ensure!(
            span.span_kind == SpanKind::Consumer
                && span.span_context.trace_id() == trace_id
                && publish_ids.contains(&span.parent_span_id),
            "an attempt of {first} does not continue its publish span: {span:?}"
        );
        ensure!(
            direct.is_none_or(|scope| span.instrumentation_scope.name() == scope),
            "a process span not made directly: {span:?}"
        );
        for key in [
            "messaging.system",
            "messaging.message.id",
            "messaging.consumer.group.name",
            "messaging.destination.name",
            "messaging.operation.type",
            "messaging.operation.name",
            "eventbus.handler",
        ] {
            ensure!(attribute(span, key).is_some(), "{key} missing: {span:?}");
        }
        // Where the record lies, on the one partitioned log.
        let partitioned = fx.capabilities.backend == "kafka";
        for key in [
            "messaging.destination.partition.id",
            "messaging.kafka.offset",
        ] {
            ensure!(
                attribute(span, key).is_some() == partitioned,
                "{key} on a {} span: {span:?}",
                fx.capabilities.backend
            );
        }
    }
    let failed: Vec<_> = firsts
        .iter()
        .filter_map(|s| attribute(s, "error.type"))
        .collect();
    ensure!(
        failed.iter().filter(|t| *t == "transient").count() as u64 >= EVENTS.div_ceil(RETRY_EVERY)
            && failed.iter().any(|t| t == "permanent"),
        "the failed attempts' error.type: {failed:?}"
    );
    let dead_letters = named(&spans, &format!("dead_letter {ordered}"), Some(&first));
    ensure!(
        dead_letters
            .iter()
            .any(|s| s.span_context.trace_id() == trace_id),
        "no dead_letter span in the request's trace"
    );

    // What the first handler published from inside its attempts continues the trace, and the
    // follower's attempts are children of those publishes.
    let follow_ups = named(&spans, &format!("publish {followed}"), None);
    let first_ids = ids(&firsts);
    ensure!(
        follow_ups
            .iter()
            .all(|s| s.span_context.trace_id() == trace_id && first_ids.contains(&s.parent_span_id)),
        "a follow-up's publish span is not a child of the attempt that published it"
    );
    let follow_up_ids = ids(&follow_ups);
    for span in named(&spans, &process_followed, Some(&second)) {
        ensure!(
            span.span_context.trace_id() == trace_id
                && follow_up_ids.contains(&span.parent_span_id),
            "an attempt of {second} does not continue its publish span: {span:?}"
        );
    }

    // The envelope carries the context: every event the first handler got names the trace.
    for event in received.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        let parent = event
            .traceparent
            .as_deref()
            .with_context(|| format!("event {} has no traceparent", event.id))?;
        ensure!(
            parent.contains(&trace_id.to_string()),
            "event {} carries another trace: {parent}",
            event.id
        );
    }

    // An event of a trace that is not sampled gets no span, and what its handler publishes
    // stays in that trace, unsampled.
    let unsampled = format!("{:032x}", fastrand::u128(1..));
    let mut event = numbered(&ordered, 1000);
    event.traceparent = Some(format!("00-{unsampled}-{:016x}-00", fastrand::u64(1..)));
    publisher.publish(event).await?;
    follower.wait_for_count(EVENTS as usize + 1).await?;
    let follow_up = follower
        .handled()
        .into_iter()
        .find(|e| n_of(e) == 1000)
        .context("the follow-up of the unsampled event")?;
    let parent = follow_up.traceparent.clone().unwrap_or_default();
    ensure!(
        parent.starts_with(&format!("00-{unsampled}-")) && parent.ends_with("-00"),
        "the follow-up of an unsampled event carries {parent:?}"
    );
    let strays: Vec<_> = probe
        .spans()?
        .into_iter()
        .filter(|s| s.span_context.trace_id().to_string() == unsampled)
        .collect();
    ensure!(strays.is_empty(), "spans of an unsampled trace: {strays:?}");

    // A replay is not caused by the publish: its spans link the publish spans, not continue them.
    if fx.capabilities.replay_by_time {
        let replayer = Recorder::new(&fresh_handler());
        let handler: &dyn EventHandler = &*replayer;
        let report = replay_into(
            &*consumer,
            ReplayQuery::new([ordered.clone()], from),
            handler,
        )
        .await?;
        ensure!(report.replayed == EVENTS + 1, "replay: {report:?}");
        let spans = probe.spans()?;
        let replays = named(&spans, &process_ordered, Some(replayer.name()));
        ensure!(
            replays.len() as u64 == EVENTS + 1,
            "{} replay spans",
            replays.len()
        );
        // (The unsampled event's replay links its unsampled publisher, checked apart.)
        let of_unsampled = |s: &&SpanData| {
            s.links
                .iter()
                .any(|l| l.span_context.trace_id().to_string() == unsampled)
        };
        ensure!(
            replays.iter().filter(|s| of_unsampled(s)).count() == 1,
            "the unsampled event's replay span does not link its publisher"
        );
        for span in replays.iter().filter(|s| !of_unsampled(s)) {
            ensure!(
                span.span_context.trace_id() != trace_id
                    && span
                        .links
                        .iter()
                        .any(|l| publish_ids.contains(&l.span_context.span_id())),
                "a replay span continues the trace or does not link it: {span:?}"
            );
        }
    }
    publisher.shutdown().await?;
    consumer.shutdown().await?;
    Ok(())
}
