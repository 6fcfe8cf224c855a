//! Payload encryption (`EVENT_ENCRYPTION_KEYS`): transparent to handlers, replay and dead
//! letters; an event whose key a consumer lacks is dead-lettered, never lost, and redriven
//! once the key is added.

use std::collections::HashMap;

use anyhow::{Context as _, ensure};
use event_core::encryption::{EncryptionKeys, KEY_ID_FIELD};
use event_core::{
    Config, DeadLetterReason, DeadLetterSelection, Event, EventId, EventType, ReplayQuery,
};
use serde_json::json;

use crate::fixture::Fixture;
use crate::support::{
    Recorder, Step, exactly_once, fresh_handler, fresh_type, publish_batches, replay_all,
    subscribe, wait_for_dead_letters,
};

/// Two keys, as `EVENT_ENCRYPTION_KEYS` writes them (throwaway test keys).
const KEY_A: &str = "a:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const KEY_B: &str = "b:HxwdHBsaGRgXFhUUExIREA8ODQwLCgkIBwYFBAMCAQA=";

/// Events per type: more than a consumer reads at once (`EVENT_BATCH_SIZE` 100).
const PER_TYPE: u64 = 250;

/// `config` encrypting with the first of `keys` and decrypting with all of them.
fn encrypting(config: &mut Config, keys: &str) {
    config.encryption_keys =
        Some(EncryptionKeys::parse(keys).unwrap_or_else(|e| panic!("test keys: {e}")));
    config.encrypt_payloads = true;
}

/// An event whose payload holds what encryption is for: personal data, nested and unicode.
fn personal(event_type: &EventType, n: u64) -> Event {
    Event::builder(event_type.clone(), "user_service")
        .payload(json!({
            "n": n,
            "email": format!("user{n}@example.com"),
            "address": {"street": "Rue de l'Église 7", "city": "Zürich", "lines": [n, "🔑"]},
        }))
        .partition_key(format!("user-{}", n % 16))
        .correlation_id(format!("req-{n}"))
        .metadata("tenant", "acme")
        .build()
        .unwrap_or_else(|e| panic!("a personal event is valid: {e}"))
}

/// Checks that `got` holds each of `published` exactly as it was published.
fn same_events(got: &[Event], published: &[Event], what: &str) -> anyhow::Result<()> {
    let by_id: HashMap<EventId, &Event> = published.iter().map(|e| (e.id, e)).collect();
    ensure!(
        got.len() == published.len(),
        "{what}: {} events, expected {}",
        got.len(),
        published.len()
    );
    for event in got {
        let original = by_id
            .get(&event.id)
            .with_context(|| format!("{what}: event {} was never published", event.id))?;
        ensure!(
            event == *original,
            "{what}: event {} differs from what was published:\n got {event:?}\n published {original:?}",
            event.id
        );
    }
    Ok(())
}

/// With encryption on, a handler of two types with backlogs bigger than a batch gets every event once and unchanged, as do replay and a dead letter.
pub(crate) async fn encrypted_events_are_transparent(fx: &Fixture) -> anyhow::Result<()> {
    let bus = fx.bus_with(|c| encrypting(c, KEY_A)).await?;
    let types = [fresh_type("registered"), fresh_type("updated")];
    let recorder = Recorder::scripted(&fresh_handler(), |e, _| {
        if e.payload.contains_key("fail") {
            Step::Permanent
        } else {
            Step::Succeed
        }
    });
    let events: Vec<Event> = (0..PER_TYPE)
        .flat_map(|n| types.iter().map(move |t| personal(t, n)))
        .collect();
    let from = events[0].timestamp;
    // Published before the subscription, a backlog; then read from the earliest event.
    let ids = publish_batches(&*bus, &events, 100).await?;
    let spec = event_core::SubscriptionSpec::new(recorder.name(), types.clone())
        .start_from(event_core::StartFrom::Earliest);
    let handler: std::sync::Arc<dyn event_core::EventHandler> = recorder.clone();
    let _subscription = bus.subscribe(spec, handler).await?;
    exactly_once(&*bus, &[&recorder], &ids, "encrypted backlog").await?;
    same_events(&recorder.handled(), &events, "the handler")?;

    if fx.capabilities.replay_by_time {
        let replayed = replay_all(&*bus, ReplayQuery::new(types.clone(), from)).await?;
        same_events(&replayed, &events, "replay")?;
    }

    let failing = Event::builder(types[0].clone(), "user_service")
        .field("fail", true)
        .field("email", "dead@example.com")
        .build()?;
    bus.publish(failing.clone()).await?;
    let letters = wait_for_dead_letters(&*bus, recorder.name(), 1).await?;
    let letter = &letters[0];
    ensure!(
        letter.reason == DeadLetterReason::PermanentFailure
            && letter.event.as_ref() == Some(&failing),
        "the dead letter does not hold the plaintext event: {letter:?}"
    );
    bus.shutdown().await?;
    Ok(())
}

/// An event whose key a consumer lacks is dead-lettered as `undecryptable` with its routing fields readable, and handled unchanged after a redrive once the key is added.
pub(crate) async fn unknown_key_dead_lettered_then_redriven(fx: &Fixture) -> anyhow::Result<()> {
    let consumer_group = format!("g{:08x}", fastrand::u32(..));
    let group = |c: &mut Config| c.consumer_group.clone_from(&consumer_group);
    let publisher = fx
        .bus_with(|c| {
            group(c);
            encrypting(c, KEY_B);
        })
        .await?;
    let reader = fx
        .bus_with(|c| {
            group(c);
            encrypting(c, KEY_A);
        })
        .await?;
    let event_type = fresh_type("registered");
    let recorder = Recorder::new(&fresh_handler());
    let subscription = subscribe(&*reader, &recorder, [event_type.clone()]).await?;
    let events: Vec<Event> = (0..150).map(|n| personal(&event_type, n)).collect();
    let ids = publish_batches(&*publisher, &events, 100).await?;

    let letters = wait_for_dead_letters(&*reader, recorder.name(), events.len()).await?;
    ensure!(
        recorder.handled_count() == 0,
        "a handler without the key got {} events",
        recorder.handled_count()
    );
    let by_id: HashMap<EventId, &Event> = events.iter().map(|e| (e.id, e)).collect();
    for letter in &letters {
        ensure!(
            letter.reason == DeadLetterReason::Undecryptable && letter.raw.is_none(),
            "a dead letter of an event with an unknown key: {letter:?}"
        );
        let sealed = letter.event.as_ref().context("the letter has no event")?;
        let original = by_id
            .get(&sealed.id)
            .with_context(|| format!("dead letter of unknown event {}", sealed.id))?;
        ensure!(
            sealed.event_type == original.event_type
                && sealed.partition_key == original.partition_key
                && sealed.correlation_id == original.correlation_id
                && sealed.metadata.get(KEY_ID_FIELD) == Some(&json!("b")),
            "the sealed event's routing fields or key id are not readable: {sealed:?}"
        );
        ensure!(
            !serde_json::to_string(&sealed.payload)?.contains("@example.com"),
            "the dead letter shows the plaintext payload: {sealed:?}"
        );
        ensure!(
            letter.last_error.contains("\"b\""),
            "the reason does not name the missing key: {}",
            letter.last_error
        );
    }
    subscription.unsubscribe().await?;
    reader.shutdown().await?;

    let fixed = fx
        .bus_with(|c| {
            group(c);
            encrypting(c, &format!("{KEY_A},{KEY_B}"));
        })
        .await?;
    let _subscription = subscribe(&*fixed, &recorder, [event_type.clone()]).await?;
    let report = fixed
        .redrive_dead_letters(recorder.name(), DeadLetterSelection::All)
        .await?;
    ensure!(
        report.redriven == events.len() as u64 && report.skipped.is_empty(),
        "redrive after adding the key: {report:?}"
    );
    exactly_once(&*fixed, &[&recorder], &ids, "redriven with the key").await?;
    same_events(&recorder.handled(), &events, "the redriven handler")?;
    publisher.shutdown().await?;
    fixed.shutdown().await?;
    Ok(())
}
