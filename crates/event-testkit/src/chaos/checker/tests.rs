//! The checker against hand-made histories: it passes a clean one and names each kind of
//! violation.

use std::time::Duration;

use event_core::{DeadLetter, DeadLetterReason, Event, EventId, EventType};
use time::OffsetDateTime;

use super::{CheckInput, Verdict, check};
use crate::chaos::backend::Abilities;
use crate::chaos::behaviour::Profile;
use crate::chaos::history::{
    DeliveryRecord, Outcome, PublishOutcome, PublishRecord, Records, StartSpec, SubscriptionRecord,
};
use crate::chaos::quiesce::NotQuiet;
use crate::chaos::workload::{HandlerPlan, KeySpace, Plan, StartKind};

fn plan() -> Plan {
    Plan {
        seed: 1,
        duration: Duration::from_secs(10),
        batch_size: 10,
        types: vec![EventType::new("chaos.t0").unwrap()],
        handlers: vec![HandlerPlan {
            name: "h1".into(),
            types: vec![0],
            start: StartKind::Earliest,
            concurrency: 4,
            profile: Profile::default(),
            shared: false,
        }],
        publishers: 1,
        backlog_per_type: 100,
        events_per_second: 10,
        keys: KeySpace {
            keys: 10,
            hot: 1,
            hot_per_mille: 0,
            keyless_per_mille: 0,
        },
        consumer_processes: 0,
        operations: Vec::new(),
        faults: Vec::new(),
    }
}

fn abilities() -> Abilities {
    Abilities {
        faults: Vec::new(),
        consumer_processes: false,
        second_instance: false,
        order_survives_takeover: true,
        rebalance_redelivers: false,
        takeover_after: Duration::from_secs(1),
        slow_call: Duration::from_secs(1),
        events_per_second: 10,
        default_seconds: 10,
        quiescence_deadline: Duration::from_secs(10),
    }
}

/// A history of `n` events of key `k`, each handled once in order.
fn clean(n: u64) -> Records {
    let mut records = Records::default();
    records.subscriptions.push(SubscriptionRecord {
        handler: "h1".into(),
        consumer: "main/h1#0".into(),
        start: StartSpec::Earliest,
        called_ms: 0,
        returned_ms: 1,
        error: None,
        ended_ms: None,
    });
    for seq in 1..=n {
        let id = EventId::new();
        records.publishes.push(PublishRecord {
            event_id: id,
            event_type: "chaos.t0".into(),
            key: Some("k".into()),
            publisher: "p0".into(),
            seq,
            timestamp: OffsetDateTime::now_utc(),
            started_ms: 10,
            returned_ms: 11,
            outcome: PublishOutcome::Stored,
            batch: false,
            oversized: false,
        });
        records
            .deliveries
            .push(delivery(id, seq, 100 + seq as i64, Outcome::Handled));
    }
    records
}

fn delivery(id: EventId, seq: u64, at: i64, outcome: Outcome) -> DeliveryRecord {
    DeliveryRecord {
        handler: "h1".into(),
        consumer: "main/h1#0".into(),
        event_id: id,
        event_type: "chaos.t0".into(),
        key: Some("k".into()),
        publisher: Some("p0".into()),
        seq: Some(seq),
        attempt: 1,
        outcome,
        started_ms: at,
        finished_ms: at,
    }
}

fn run(records: &Records) -> Verdict {
    let plan = plan();
    let abilities = abilities();
    let quiet: Result<Duration, NotQuiet> = Ok(Duration::from_secs(1));
    check(&CheckInput {
        plan: &plan,
        abilities: &abilities,
        records,
        consumer_group: "g",
        quiet: &quiet,
        stall_timeout: Duration::from_secs(10),
        end_ms: 1000,
    })
}

fn failures_mention(verdict: &Verdict, text: &str) -> bool {
    verdict.failures.iter().any(|f| f.contains(text))
}

#[test]
fn a_clean_history_passes() {
    let verdict = run(&clean(5));
    assert!(verdict.failures.is_empty(), "{:#?}", verdict.failures);
    assert_eq!(verdict.tallies[0].handled, 5);
    assert_eq!(verdict.lost(), 0);
}

#[test]
fn a_lost_event_is_named() {
    let mut records = clean(5);
    let lost = records.deliveries.remove(2).event_id;
    let verdict = run(&records);
    assert_eq!(verdict.lost(), 1);
    assert!(
        failures_mention(&verdict, &lost.to_string()),
        "{:#?}",
        verdict.failures
    );
}

#[test]
fn duplicates_without_faults_fail() {
    let mut records = clean(5);
    let again = records.deliveries[1].clone();
    records.deliveries.push(DeliveryRecord {
        started_ms: 500,
        ..again
    });
    let verdict = run(&records);
    assert_eq!(verdict.tallies[0].duplicates, 1);
    assert!(
        failures_mention(&verdict, "duplicate"),
        "{:#?}",
        verdict.failures
    );
}

#[test]
fn order_inversions_fail() {
    let mut records = clean(5);
    records.deliveries[1].started_ms = 200;
    let verdict = run(&records);
    assert_eq!(verdict.tallies[0].inversions, 1);
    assert!(
        failures_mention(&verdict, "order"),
        "{:#?}",
        verdict.failures
    );
}

#[test]
fn an_ambiguous_publish_landing_late_is_no_inversion() {
    // The client gave up on the write (a timeout), and the server got it after later events.
    let mut records = clean(5);
    records.deliveries[1].started_ms = 200;
    let late = records.deliveries[1].event_id;
    for publish in &mut records.publishes {
        if publish.event_id == late {
            publish.outcome = PublishOutcome::Ambiguous("timed out".into());
        }
    }
    let verdict = run(&records);
    assert_eq!(verdict.tallies[0].inversions, 0, "{:#?}", verdict.failures);
}

#[test]
fn refused_events_must_not_be_handled() {
    let mut records = clean(5);
    records.publishes[0].outcome = PublishOutcome::Refused("too large".into());
    let verdict = run(&records);
    assert!(
        failures_mention(&verdict, "refused"),
        "{:#?}",
        verdict.failures
    );
}

#[test]
fn dead_letters_count_once_with_provenance() {
    let mut records = clean(3);
    let id = records.deliveries.remove(0).event_id;
    records
        .deliveries
        .push(delivery(id, 1, 50, Outcome::Permanent));
    let event = Event::builder(EventType::new("chaos.t0").unwrap(), "s")
        .id(id)
        .build()
        .unwrap();
    let now = OffsetDateTime::now_utc();
    let letter = DeadLetter {
        id: "1".into(),
        handler: "h1".into(),
        group: "g.h1".into(),
        reason: DeadLetterReason::PermanentFailure,
        event: Some(event),
        raw: None,
        attempts: 1,
        first_error: "x".into(),
        last_error: "x".into(),
        first_failed_at: now,
        last_failed_at: now,
        dead_lettered_at: now,
    };
    records
        .dead_letters
        .insert("h1".into(), vec![letter.clone()]);
    let verdict = run(&records);
    assert!(verdict.failures.is_empty(), "{:#?}", verdict.failures);
    assert_eq!(verdict.tallies[0].dead_lettered, 1);

    let mut twice = records.clone();
    twice
        .dead_letters
        .insert("h1".into(), vec![letter.clone(), letter.clone()]);
    assert!(failures_mention(&run(&twice), "more than once"));

    let mut foreign_group = records;
    foreign_group.dead_letters.insert(
        "h1".into(),
        vec![DeadLetter {
            group: "other.h1".into(),
            ..letter
        }],
    );
    assert!(failures_mention(&run(&foreign_group), "provenance"));
}
