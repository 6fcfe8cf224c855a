//! Per-key order: within one consumer, the first calls of a handler for the events of one
//! type, one partition key and one publisher come in the order the publisher published them
//! (its sequence numbers rise). Order across types is not promised, nor across the consumers
//! of a shared group, which split the keys between them. Where a consumer that takes over
//! another's unacknowledged events may run them after newer ones (Redis), shared handlers are
//! not checked, nor the consumers that subscribed after another consumer of their handler
//! died. Nor are events whose publish failed ambiguously (a timeout, a lost connection): the
//! client gave up on that write, and the server may still receive it later (a stalled
//! connection's buffered command), after events the publisher sent since.

use std::collections::{HashMap, HashSet};

use event_core::EventId;

use super::accounts::{HandlerTally, report};
use super::{CheckInput, Published};
use crate::chaos::history::{DeliveryRecord, PublishOutcome, Records};
use crate::chaos::workload::HandlerPlan;

/// Checks the order of the handler's first calls.
pub(crate) fn check(
    input: &CheckInput<'_>,
    handler: &HandlerPlan,
    published: &Published<'_>,
    tally: &mut HandlerTally,
    failures: &mut Vec<String>,
) {
    if handler.shared && !input.abilities.order_survives_takeover {
        return;
    }
    tally.order_checked = true;
    let successors = successors_of_the_dead(input, handler);
    let mut calls: Vec<&DeliveryRecord> = input
        .records
        .deliveries
        .iter()
        .filter(|d| d.handler == handler.name)
        .collect();
    calls.sort_by_key(|d| (d.started_ms, d.finished_ms));
    let mut seen: HashSet<EventId> = HashSet::new();
    // (consumer, type, key, publisher) -> the last first call's sequence number and event.
    let mut last: HashMap<(&str, &str, &str, &str), (u64, EventId)> = HashMap::new();
    let mut inversions = Vec::new();
    for d in calls {
        if !seen.insert(d.event_id) || successors.contains(d.consumer.as_str()) {
            continue;
        }
        let ambiguous = published
            .get(&d.event_id)
            .is_some_and(|p| matches!(p.outcome, PublishOutcome::Ambiguous(_)));
        if ambiguous {
            continue;
        }
        let (Some(key), Some(publisher), Some(seq)) = (&d.key, &d.publisher, d.seq) else {
            continue;
        };
        let slot = (
            d.consumer.as_str(),
            d.event_type.as_str(),
            key.as_str(),
            publisher.as_str(),
        );
        match last.get(&slot) {
            Some((before, before_id)) if *before > seq => inversions.push(format!(
                "{} in {}: key {key:?} of {publisher}: #{seq} ({}) came after #{before} ({before_id})",
                d.event_type, d.consumer, d.event_id
            )),
            _ => {
                last.insert(slot, (seq, d.event_id));
            }
        }
    }
    tally.inversions = inversions.len();
    report(
        failures,
        &handler.name,
        "per-key order inversions among first calls",
        &inversions,
    );
}

/// Where taking over a dead consumer's entries may reorder a key (Redis), the consumers of
/// the handler that subscribed after another of its consumers stopped by itself: they take
/// over what it held, and their order is not checked.
fn successors_of_the_dead<'a>(input: &CheckInput<'a>, handler: &HandlerPlan) -> HashSet<&'a str> {
    if input.abilities.order_survives_takeover {
        return HashSet::new();
    }
    let records: &Records = input.records;
    let ended = |consumer: &str| {
        records
            .subscriptions
            .iter()
            .find(|s| s.consumer == consumer)
            .and_then(|s| s.ended_ms)
            .unwrap_or(i64::MAX)
    };
    let first_death = records
        .activity
        .iter()
        .filter(|a| a.handler == handler.name && !a.active && a.at_ms < ended(&a.consumer))
        .map(|a| a.at_ms)
        .min();
    let Some(death) = first_death else {
        return HashSet::new();
    };
    records
        .subscriptions
        .iter()
        .filter(|s| s.handler == handler.name && s.called_ms >= death)
        .map(|s| s.consumer.as_str())
        .collect()
}
