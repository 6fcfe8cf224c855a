//! Dead letters: what lands there with which provenance, and redrive and purge.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::ensure;
use event_core::{DeadLetter, DeadLetterReason, DeadLetterSelection, Error, Event};

use crate::fixture::Fixture;
use crate::support::{
    Recorder, Step, exactly_once, fresh_handler, fresh_type, keyed, n_of, numbered, publish_all,
    publish_marker, subscribe, wait_for_dead_letters,
};

/// Checks a dead letter's provenance.
fn check_provenance(
    letter: &DeadLetter,
    handler: &str,
    group: &str,
    event: &Event,
    reason: DeadLetterReason,
    attempts: u32,
) -> anyhow::Result<()> {
    ensure!(
        letter.handler == handler,
        "dead letter names handler {}",
        letter.handler
    );
    ensure!(
        letter.group == group,
        "dead letter names group {}, expected {group}",
        letter.group
    );
    ensure!(
        letter.reason == reason,
        "dead letter reason {:?}, expected {reason:?}",
        letter.reason
    );
    ensure!(
        letter.attempts == attempts,
        "dead letter counts {} attempts, expected {attempts}",
        letter.attempts
    );
    ensure!(
        letter.event.as_ref() == Some(event),
        "the dead letter does not hold the event as published: {:?}",
        letter.event
    );
    ensure!(
        letter.raw.is_none(),
        "a valid event's dead letter has raw bytes"
    );
    ensure!(!letter.id.is_empty(), "the dead letter has no id");
    ensure!(
        letter.first_failed_at <= letter.last_failed_at
            && letter.last_failed_at <= letter.dead_lettered_at,
        "the dead letter's times are out of order: first {}, last {}, dead-lettered {}",
        letter.first_failed_at,
        letter.last_failed_at,
        letter.dead_lettered_at
    );
    Ok(())
}

/// A permanent failure goes straight to the dead-letter queue with its provenance, after one attempt.
pub(crate) async fn permanent_failure_dead_lettered(fx: &Fixture) -> anyhow::Result<()> {
    let consumer_group = format!("g{:08x}", fastrand::u32(..));
    let group_name = consumer_group.clone();
    let bus = fx
        .bus_with(|c| {
            c.max_retries = 3;
            c.consumer_group = group_name;
        })
        .await?;
    let event_type = fresh_type("created");
    let recorder = Recorder::scripted(&fresh_handler(), |e, _| {
        if n_of(e) == 0 {
            Step::Permanent
        } else {
            Step::Succeed
        }
    });
    let subscription = subscribe(&*bus, &recorder, [event_type.clone()]).await?;
    let group = format!("{consumer_group}.{}", recorder.name());
    ensure!(
        subscription.group() == group,
        "the subscription's group is {}, expected {group}",
        subscription.group()
    );
    let event = keyed(&event_type, "k", 0);
    bus.publish(event.clone()).await?;
    let letters = wait_for_dead_letters(&*bus, recorder.name(), 1).await?;
    ensure!(
        letters.len() == 1,
        "{} dead letters, expected 1",
        letters.len()
    );
    let letter = &letters[0];
    check_provenance(
        letter,
        recorder.name(),
        &group,
        &event,
        DeadLetterReason::PermanentFailure,
        1,
    )?;
    ensure!(
        letter.first_error == letter.last_error && letter.first_error.contains("permanent"),
        "one permanent failure recorded as first error {:?} and last error {:?}",
        letter.first_error,
        letter.last_error
    );
    let marker = bus.publish(keyed(&event_type, "k", 1)).await?;
    recorder.wait_for_event(&marker).await?;
    ensure!(
        recorder.calls_for(&event.id) == 1,
        "a permanent failure was tried {} times",
        recorder.calls_for(&event.id)
    );
    bus.shutdown().await?;
    Ok(())
}

/// An event that fails on every attempt is dead-lettered after `max_retries + 1` attempts with its first and last errors.
pub(crate) async fn exhausted_retries_dead_lettered(fx: &Fixture) -> anyhow::Result<()> {
    const MAX_RETRIES: u32 = 2;
    let bus = fx.bus_with(|c| c.max_retries = MAX_RETRIES).await?;
    let config = fx.config_with(|c| c.max_retries = MAX_RETRIES);
    let event_type = fresh_type("created");
    let recorder = Recorder::scripted(&fresh_handler(), |_, _| Step::Transient);
    subscribe(&*bus, &recorder, [event_type.clone()]).await?;
    let event = numbered(&event_type, 0);
    bus.publish(event.clone()).await?;
    let letters = wait_for_dead_letters(&*bus, recorder.name(), 1).await?;
    ensure!(
        letters.len() == 1,
        "{} dead letters, expected 1",
        letters.len()
    );
    let letter = &letters[0];
    let group = format!("{}.{}", config.consumer_group, recorder.name());
    check_provenance(
        letter,
        recorder.name(),
        &group,
        &event,
        DeadLetterReason::RetriesExhausted,
        MAX_RETRIES + 1,
    )?;
    ensure!(
        letter.first_error.contains("attempt 1")
            && letter
                .last_error
                .contains(&format!("attempt {}", MAX_RETRIES + 1)),
        "the first and last errors are {:?} and {:?}",
        letter.first_error,
        letter.last_error
    );
    ensure!(
        recorder.calls_for(&event.id) == MAX_RETRIES + 1,
        "the handler saw the event {} times, expected {}",
        recorder.calls_for(&event.id),
        MAX_RETRIES + 1
    );
    bus.shutdown().await?;
    Ok(())
}

/// Redrive hands dead letters back to their handler only, and removes them from the queue.
pub(crate) async fn redrive_reaches_only_that_handler(fx: &Fixture) -> anyhow::Result<()> {
    let bus = fx.bus().await?;
    let event_type = fresh_type("created");
    let failing = Arc::new(AtomicBool::new(true));
    let flag = failing.clone();
    let picky = Recorder::scripted(&fresh_handler(), move |_, _| {
        if flag.load(Ordering::SeqCst) {
            Step::Permanent
        } else {
            Step::Succeed
        }
    });
    let other = Recorder::fresh();
    subscribe(&*bus, &picky, [event_type.clone()]).await?;
    subscribe(&*bus, &other, [event_type.clone()]).await?;
    let event = numbered(&event_type, 0);
    bus.publish(event.clone()).await?;
    other.wait_for_event(&event.id).await?;
    let letters = wait_for_dead_letters(&*bus, picky.name(), 1).await?;
    ensure!(
        letters.len() == 1,
        "{} dead letters, expected 1",
        letters.len()
    );

    failing.store(false, Ordering::SeqCst);
    let report = bus
        .redrive_dead_letters(picky.name(), DeadLetterSelection::All)
        .await?;
    ensure!(
        report.redriven == 1 && report.skipped.is_empty(),
        "redrive reported {report:?}, expected one redriven"
    );
    picky.wait_for_event(&event.id).await?;
    ensure!(
        picky.calls_for(&event.id) == 2,
        "the handler saw the event {} times, expected 2",
        picky.calls_for(&event.id)
    );
    let left = bus.dead_letters(picky.name(), 100).await?;
    ensure!(
        left.is_empty(),
        "redriven dead letters are still queued: {left:?}"
    );

    let marker = publish_marker(&*bus, &event_type).await?;
    other.wait_for_event(&marker).await?;
    picky.wait_for_event(&marker).await?;
    exactly_once(&*bus, &[&other], &[event.id, marker], "the other handler").await?;
    exactly_once(
        &*bus,
        &[&picky],
        &[event.id, marker],
        "the redriven handler",
    )
    .await?;
    bus.shutdown().await?;
    Ok(())
}

/// Redrive by id hands back only the selected dead letters and leaves the rest queued.
pub(crate) async fn redrive_selected_ids_only(fx: &Fixture) -> anyhow::Result<()> {
    let bus = fx.bus().await?;
    let event_type = fresh_type("created");
    let failing = Arc::new(AtomicBool::new(true));
    let flag = failing.clone();
    let recorder = Recorder::scripted(&fresh_handler(), move |_, _| {
        if flag.load(Ordering::SeqCst) {
            Step::Permanent
        } else {
            Step::Succeed
        }
    });
    subscribe(&*bus, &recorder, [event_type.clone()]).await?;
    let ids = publish_all(&*bus, (0..3).map(|n| numbered(&event_type, n))).await?;
    let letters = wait_for_dead_letters(&*bus, recorder.name(), 3).await?;
    ensure!(
        letters.len() == 3,
        "{} dead letters, expected 3",
        letters.len()
    );
    // Any limit is a limit: the largest lists them all (Redis refuses a COUNT past i64::MAX).
    let all = bus.dead_letters(recorder.name(), usize::MAX).await?;
    let one = bus.dead_letters(recorder.name(), 1).await?;
    ensure!(
        all.len() == 3 && one.len() == 1,
        "limits usize::MAX and 1 listed {} and {} dead letters, expected 3 and 1",
        all.len(),
        one.len()
    );
    failing.store(false, Ordering::SeqCst);

    let chosen = &letters[1];
    let chosen_event = chosen.event.as_ref().map(|e| e.id);
    let report = bus
        .redrive_dead_letters(
            recorder.name(),
            DeadLetterSelection::Ids(vec![chosen.id.clone()]),
        )
        .await?;
    ensure!(
        report.redriven == 1,
        "redrive reported {report:?}, expected one redriven"
    );
    let Some(chosen_event) = chosen_event else {
        anyhow::bail!("a dead letter holds no event");
    };
    recorder.wait_for_event(&chosen_event).await?;
    let marker = publish_marker(&*bus, &event_type).await?;
    recorder.wait_for_event(&marker).await?;
    exactly_once(&*bus, &[&recorder], &[chosen_event, marker], "handler").await?;
    let left: Vec<String> = bus
        .dead_letters(recorder.name(), 100)
        .await?
        .into_iter()
        .map(|d| d.id)
        .collect();
    let expected = vec![letters[0].id.clone(), letters[2].id.clone()];
    ensure!(
        left == expected,
        "after redriving {}, the queue holds {left:?}, expected {expected:?}",
        chosen.id
    );
    ensure!(
        ids.contains(&chosen_event),
        "the redriven event is not one of ours"
    );
    bus.shutdown().await?;
    Ok(())
}

/// Purge deletes the selected dead letters, then all of them, and they are never delivered again.
pub(crate) async fn purge_removes_dead_letters(fx: &Fixture) -> anyhow::Result<()> {
    let bus = fx.bus().await?;
    let event_type = fresh_type("created");
    let recorder = Recorder::scripted(&fresh_handler(), |e, _| {
        if e.payload.contains_key("marker") {
            Step::Succeed
        } else {
            Step::Permanent
        }
    });
    subscribe(&*bus, &recorder, [event_type.clone()]).await?;
    let ids = publish_all(&*bus, (0..3).map(|n| numbered(&event_type, n))).await?;
    let letters = wait_for_dead_letters(&*bus, recorder.name(), 3).await?;
    ensure!(
        letters.len() == 3,
        "{} dead letters, expected 3",
        letters.len()
    );

    let purged = bus
        .purge_dead_letters(
            recorder.name(),
            DeadLetterSelection::Ids(vec![letters[0].id.clone()]),
        )
        .await?;
    ensure!(purged == 1, "purging one id deleted {purged}");
    let left: Vec<String> = bus
        .dead_letters(recorder.name(), 100)
        .await?
        .into_iter()
        .map(|d| d.id)
        .collect();
    ensure!(
        left == [letters[1].id.clone(), letters[2].id.clone()],
        "after purging {}, the queue holds {left:?}",
        letters[0].id
    );
    let purged = bus
        .purge_dead_letters(recorder.name(), DeadLetterSelection::All)
        .await?;
    ensure!(purged == 2, "purging the rest deleted {purged}, expected 2");
    let left = bus.dead_letters(recorder.name(), 100).await?;
    ensure!(left.is_empty(), "the queue still holds {left:?}");
    let stats = bus.stats().await?;
    let depth = stats
        .handlers
        .get(recorder.name())
        .map_or(u64::MAX, |h| h.dead_letter_depth);
    ensure!(
        depth == 0,
        "stats show a dead-letter depth of {depth} after purge"
    );

    let report = bus
        .redrive_dead_letters(recorder.name(), DeadLetterSelection::All)
        .await?;
    ensure!(
        report.redriven == 0,
        "redrive after purge reported {report:?}"
    );
    let marker = publish_marker(&*bus, &event_type).await?;
    recorder.wait_for_event(&marker).await?;
    for id in &ids {
        ensure!(
            recorder.calls_for(id) == 1,
            "a purged event was delivered again ({} calls)",
            recorder.calls_for(id)
        );
    }
    bus.shutdown().await?;
    Ok(())
}

/// Dead-letter calls for a handler the bus has never seen fail with `UnknownHandler`.
pub(crate) async fn unknown_handler_refused(fx: &Fixture) -> anyhow::Result<()> {
    let bus = fx.bus().await?;
    let name = fresh_handler();
    let listed = bus.dead_letters(&name, 10).await;
    ensure!(
        matches!(&listed, Err(Error::UnknownHandler { name: n }) if *n == name),
        "listing gave {listed:?}"
    );
    let redriven = bus
        .redrive_dead_letters(&name, DeadLetterSelection::All)
        .await;
    ensure!(
        matches!(redriven, Err(Error::UnknownHandler { .. })),
        "redrive gave {redriven:?}"
    );
    let purged = bus
        .purge_dead_letters(&name, DeadLetterSelection::All)
        .await;
    ensure!(
        matches!(purged, Err(Error::UnknownHandler { .. })),
        "purge gave {purged:?}"
    );
    bus.shutdown().await?;
    Ok(())
}
