//! The bus's own metrics (`event_core::telemetry`) agree with what happened: publishes by type
//! and outcome, deliveries, acknowledgements, failures and dead letters per handler.

use anyhow::{Context as _, ensure};
use event_core::Event;
use event_core::telemetry::{self, ACKNOWLEDGED, DEAD_LETTERED, DELIVERED, FAILED, PUBLISHED};
use serde_json::json;

use crate::fixture::Fixture;
use crate::metrics_probe::Probe;
use crate::support::{
    DEADLINE, Recorder, Step, exactly_once, fresh_handler, fresh_type, n_of, numbered, subscribe,
    wait_for, wait_for_dead_letters,
};

/// Events per type: more than a consumer reads at once (`EVENT_BATCH_SIZE` 100).
const PER_TYPE: u64 = 250;
/// Of them, published one by one (the rest in batches of 100).
const SINGLES: u64 = 50;
/// Every this many events fails for good and is dead-lettered.
const FAIL_EVERY: u64 = 10;

/// The bus's metrics count each type's publishes by outcome, and per handler the deliveries, acknowledgements, failures and dead letters of a workload of two types with backlogs bigger than a batch.
pub(crate) async fn metrics_agree_with_history(fx: &Fixture) -> anyhow::Result<()> {
    let probe = Probe::installed()?;
    let bus = fx.bus_with(|c| c.max_event_bytes = 16 * 1024).await?;
    let types = [fresh_type("registered"), fresh_type("updated")];
    let recorder = Recorder::scripted(&fresh_handler(), |e, _| {
        if n_of(e).is_multiple_of(FAIL_EVERY) {
            Step::Permanent
        } else {
            Step::Succeed
        }
    });
    let handler = recorder.name().to_string();
    let _subscription = subscribe(&*bus, &recorder, types.clone()).await?;

    let events: Vec<Event> = (0..PER_TYPE)
        .flat_map(|n| types.iter().map(move |t| numbered(t, n)))
        .collect();
    let (batched, singles) = events.split_at(((PER_TYPE - SINGLES) * 2) as usize);
    let mut ids = Vec::new();
    for chunk in batched.chunks(100) {
        for result in bus.publish_batch(chunk.to_vec()).await {
            ids.push(result?);
        }
    }
    for event in singles {
        ids.push(bus.publish(event.clone()).await?);
    }
    // One event the bus refuses: its outcome is `invalid`, and nothing is delivered.
    let oversized = Event::builder(types[0].clone(), "trial")
        .field("blob", "x".repeat(32 * 1024))
        .build()?;
    ensure!(
        bus.publish(oversized).await.is_err(),
        "an event over EVENT_MAX_PAYLOAD_BYTES was published"
    );

    let failing = PER_TYPE.div_ceil(FAIL_EVERY) * 2;
    let succeeding: Vec<_> = events
        .iter()
        .filter(|e| !n_of(e).is_multiple_of(FAIL_EVERY))
        .map(|e| e.id)
        .collect();
    exactly_once(&*bus, &[&recorder], &succeeding, "the workload").await?;
    wait_for_dead_letters(&*bus, &handler, failing as usize).await?;

    for t in &types {
        let of_type = |outcome| {
            probe.counter(
                PUBLISHED,
                &[("event_type", t.as_str()), ("outcome", outcome)],
            )
        };
        ensure!(
            of_type("ok") == PER_TYPE && of_type("failed") == 0,
            "{t}: {} published and {} failed counted, {PER_TYPE} published",
            of_type("ok"),
            of_type("failed")
        );
    }
    let invalid = probe.counter(
        PUBLISHED,
        &[("event_type", types[0].as_str()), ("outcome", "invalid")],
    );
    ensure!(
        invalid == 1,
        "{invalid} invalid publishes counted, 1 refused"
    );
    let backends = probe.label_values(PUBLISHED, &[("event_type", types[0].as_str())], "backend");
    ensure!(
        backends.len() == 1 && ["memory", "redis", "kafka"].contains(&backends[0].as_str()),
        "the backend label: {backends:?}"
    );
    let backend = backends[0].as_str();
    let batches = probe.recorded(telemetry::PUBLISH_BATCH_SIZE, &[("backend", backend)]);
    let durations = probe.recorded(
        telemetry::PUBLISH_DURATION,
        &[("backend", backend), ("operation", "publish")],
    );
    ensure!(
        batches >= 4 && durations > SINGLES,
        "{batches} batch sizes and {durations} publish durations recorded"
    );

    // The consumer counters, exported now, agree with the handler's own calls (duplicates
    // included, should the backend have redelivered any).
    let labels = [("handler", handler.as_str()), ("backend", backend)];
    let what = format!("{handler}'s counters to agree with its calls");
    wait_for(DEADLINE, &what, || async {
        telemetry::export();
        let (ok, calls) = (recorder.handled_count() as u64, recorder.calls() as u64);
        Ok(probe.counter(ACKNOWLEDGED, &labels) == ok
            && probe.counter(FAILED, &labels) == calls - ok
            && probe.counter(DELIVERED, &labels) == calls
            && probe.counter(DEAD_LETTERED, &labels) == failing)
    })
    .await
    .with_context(|| {
        json!({
            "calls": recorder.calls(),
            "handled": recorder.handled_count(),
            "delivered": probe.counter(DELIVERED, &labels),
            "acknowledged": probe.counter(ACKNOWLEDGED, &labels),
            "failed": probe.counter(FAILED, &labels),
            "dead_lettered": probe.counter(DEAD_LETTERED, &labels),
            "expected dead letters": failing,
        })
        .to_string()
    })?;
    ensure!(
        recorder.calls() as u64 >= ids.len() as u64,
        "{} calls for {} events",
        recorder.calls(),
        ids.len()
    );
    bus.shutdown().await?;
    Ok(())
}
