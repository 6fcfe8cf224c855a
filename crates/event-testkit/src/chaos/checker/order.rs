//! Per-key order: within one consumer, the first calls of a handler for the events of one
//! type, one partition key and one publisher come in the order the publisher published them
//! (its sequence numbers rise). Order across types is not promised, nor across the consumers
//! of a shared group, which split the keys between them; where a consumer that takes over
//! another's unacknowledged events may run them after newer ones (Redis), shared handlers are
//! not checked.

use std::collections::{HashMap, HashSet};

use event_core::EventId;

use super::CheckInput;
use super::accounts::{HandlerTally, report};
use crate::chaos::history::DeliveryRecord;
use crate::chaos::workload::HandlerPlan;

/// Checks the order of the handler's first calls.
pub(crate) fn check(
    input: &CheckInput<'_>,
    handler: &HandlerPlan,
    tally: &mut HandlerTally,
    failures: &mut Vec<String>,
) {
    if handler.shared && !input.abilities.order_survives_takeover {
        return;
    }
    tally.order_checked = true;
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
        if !seen.insert(d.event_id) {
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
