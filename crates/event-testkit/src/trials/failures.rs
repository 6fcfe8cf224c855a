//! Handler failures: transient errors are retried, panics are survived, `on_error` is told.

use anyhow::ensure;
use event_core::{DeadLetterReason, EventId};

use crate::fixture::Fixture;
use crate::support::{
    Recorder, Step, exactly_once, fresh_handler, fresh_type, keyed, numbered, publish_all,
    subscribe, wait_for_dead_letters,
};

/// A transient failure is retried and then acknowledged: no dead letter, N+1 calls, no redelivery.
pub(crate) async fn transient_failure_retried_then_acked(fx: &Fixture) -> anyhow::Result<()> {
    const FAILURES: u32 = 2;
    let bus = fx.bus_with(|c| c.max_retries = 3).await?;
    let event_type = fresh_type("created");
    let event = keyed(&event_type, "k", 0);
    let failing = event.id;
    let recorder = Recorder::scripted(&fresh_handler(), move |e, attempt| {
        if e.id == failing && attempt <= FAILURES {
            Step::Transient
        } else {
            Step::Succeed
        }
    });
    subscribe(&*bus, &recorder, [event_type.clone()]).await?;
    bus.publish(event).await?;
    recorder.wait_for_event(&failing).await?;
    // Same key: the marker runs after the event is acknowledged.
    let marker = bus.publish(keyed(&event_type, "k", 1)).await?;
    recorder.wait_for_event(&marker).await?;
    let calls = recorder.calls_for(&failing);
    ensure!(
        calls == FAILURES + 1,
        "the handler saw the event {calls} times, expected {}",
        FAILURES + 1
    );
    exactly_once(&*bus, &[&recorder], &[failing, marker], "handler").await?;
    let letters = bus.dead_letters(recorder.name(), 100).await?;
    ensure!(
        letters.is_empty(),
        "a retried and acknowledged event was dead-lettered: {letters:?}"
    );
    bus.shutdown().await?;
    Ok(())
}

/// A panicking handler does not stop its subscription: the panic is retried, later events are handled.
pub(crate) async fn panicking_handler_keeps_subscription(fx: &Fixture) -> anyhow::Result<()> {
    let bus = fx.bus_with(|c| c.max_retries = 1).await?;
    let event_type = fresh_type("created");
    let once = numbered(&event_type, 0);
    let always = numbered(&event_type, 1);
    let (once_id, always_id) = (once.id, always.id);
    let recorder = Recorder::scripted(&fresh_handler(), move |e, attempt| {
        if (e.id == once_id && attempt == 1) || e.id == always_id {
            Step::Panic
        } else {
            Step::Succeed
        }
    });
    subscribe(&*bus, &recorder, [event_type.clone()]).await?;
    publish_all(&*bus, [once, always]).await?;
    recorder.wait_for_event(&once_id).await?;
    let letters = wait_for_dead_letters(&*bus, recorder.name(), 1).await?;
    ensure!(
        letters.len() == 1,
        "{} dead letters, expected 1",
        letters.len()
    );
    let letter = &letters[0];
    ensure!(
        letter.event.as_ref().map(|e| e.id) == Some(always_id),
        "the dead letter holds the wrong event"
    );
    ensure!(
        letter.reason == DeadLetterReason::RetriesExhausted && letter.attempts == 2,
        "a panic on every attempt was dead-lettered as {:?} after {} attempts, expected RetriesExhausted after 2",
        letter.reason,
        letter.attempts
    );
    ensure!(
        letter.last_error.contains("panic"),
        "the dead letter's error does not mention the panic: {}",
        letter.last_error
    );
    let later = publish_all(&*bus, (2..12).map(|n| numbered(&event_type, n))).await?;
    recorder.wait_for_count(1 + later.len()).await?;
    let expected: Vec<EventId> = [once_id].into_iter().chain(later).collect();
    exactly_once(&*bus, &[&recorder], &expected, "handler after panics").await?;
    ensure!(
        recorder.calls_for(&once_id) == 2 && recorder.calls_for(&always_id) == 2,
        "the panicking events were tried {} and {} times, expected 2 each",
        recorder.calls_for(&once_id),
        recorder.calls_for(&always_id)
    );
    bus.shutdown().await?;
    Ok(())
}

/// `on_error` is called after each failed attempt with the attempt number and the error's kind.
pub(crate) async fn on_error_gets_attempt_numbers(fx: &Fixture) -> anyhow::Result<()> {
    let bus = fx.bus_with(|c| c.max_retries = 5).await?;
    let event_type = fresh_type("created");
    let recorder = Recorder::scripted(&fresh_handler(), |_, attempt| {
        if attempt < 3 {
            Step::Transient
        } else {
            Step::Permanent
        }
    });
    subscribe(&*bus, &recorder, [event_type.clone()]).await?;
    let id = bus.publish(numbered(&event_type, 0)).await?;
    let letters = wait_for_dead_letters(&*bus, recorder.name(), 1).await?;
    let errors = recorder.errors();
    let seen: Vec<(EventId, u32, bool)> = errors
        .iter()
        .map(|e| (e.id, e.attempt, e.transient))
        .collect();
    let expected = vec![(id, 1, true), (id, 2, true), (id, 3, false)];
    ensure!(
        seen == expected,
        "on_error was called with (event, attempt, transient) {seen:?}, expected {expected:?}"
    );
    ensure!(
        errors
            .iter()
            .all(|e| e.message.contains(&format!("attempt {}", e.attempt))),
        "on_error did not get each attempt's own error: {errors:?}"
    );
    ensure!(
        letters.len() == 1
            && letters[0].attempts == 3
            && letters[0].reason == DeadLetterReason::PermanentFailure,
        "expected one dead letter after 3 attempts for a permanent failure, got {letters:?}"
    );
    bus.shutdown().await?;
    Ok(())
}
