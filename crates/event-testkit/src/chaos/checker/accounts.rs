//! Accounting for every event a handler is owed, its dead letters, and its duplicates.

use std::collections::{HashMap, HashSet};

use event_core::{DeadLetter, DeadLetterReason, EventId};

use super::{CheckInput, Published};
use crate::chaos::history::{DeliveryRecord, Outcome, PublishOutcome, PublishRecord, StartSpec};
use crate::chaos::workload::HandlerPlan;

/// Ids listed per handler and problem in a report.
pub(crate) const LISTED: usize = 20;

/// What the checker found for one handler.
#[derive(Debug, Default)]
pub(crate) struct HandlerTally {
    pub(crate) name: String,
    pub(crate) owed: usize,
    pub(crate) handled: usize,
    pub(crate) dead_lettered: usize,
    pub(crate) purged: usize,
    /// Owed events accounted for by nothing.
    pub(crate) missing: Vec<EventId>,
    /// Successful calls beyond the first, per event, summed.
    pub(crate) duplicates: u64,
    pub(crate) duplicate_bound: u64,
    pub(crate) calls: usize,
    /// Events both handled and dead-lettered (a consumer handled it, its acknowledgement was
    /// lost, and the redelivery failed).
    pub(crate) handled_and_dead: usize,
    pub(crate) order_checked: bool,
    pub(crate) inversions: usize,
    pub(crate) foreign_owed: usize,
    pub(crate) foreign_dead_lettered: usize,
    pub(crate) foreign_missing: usize,
}

/// How a handler stands towards one published event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Claim {
    /// It must be handled or dead-lettered.
    Owed,
    /// It may be delivered or not (before a `Time` start, an ambiguous publish, published
    /// while the first subscribe call ran).
    Allowed,
    /// It must never reach the handler (refused by publish, or published before a `Latest`
    /// group existed).
    Forbidden(&'static str),
}

fn claim(p: &PublishRecord, first: Option<(StartSpec, i64, i64)>) -> Claim {
    match &p.outcome {
        PublishOutcome::Refused(_) => return Claim::Forbidden("its publish was refused"),
        PublishOutcome::Ambiguous(_) => return Claim::Allowed,
        PublishOutcome::Stored => {}
    }
    let Some((start, called_ms, returned_ms)) = first else {
        // The handler never subscribed: the run failed earlier and says so.
        return Claim::Allowed;
    };
    match start {
        StartSpec::Earliest => Claim::Owed,
        StartSpec::Latest if p.started_ms > returned_ms => Claim::Owed,
        StartSpec::Latest if p.returned_ms < called_ms => {
            Claim::Forbidden("it was published before the handler's `Latest` group existed")
        }
        StartSpec::Latest => Claim::Allowed,
        StartSpec::Time(t) if p.timestamp.unix_timestamp_nanos() >= t => Claim::Owed,
        StartSpec::Time(_) => Claim::Allowed,
    }
}

/// Accounts for the handler's events; pushes violations to `failures`.
pub(crate) fn account(
    input: &CheckInput<'_>,
    handler: &HandlerPlan,
    published: &Published<'_>,
    failures: &mut Vec<String>,
) -> HandlerTally {
    let records = input.records;
    let name = handler.name.as_str();
    let types: HashSet<&str> = handler
        .types
        .iter()
        .map(|i| input.plan.types[*i].as_str())
        .collect();
    let mut tally = HandlerTally {
        name: name.to_string(),
        ..HandlerTally::default()
    };
    // The first successful subscribe created the group: its start decides what is owed.
    let first = records
        .subscriptions
        .iter()
        .filter(|s| s.handler == name && s.error.is_none())
        .min_by_key(|s| s.called_ms)
        .map(|s| (s.start, s.called_ms, s.returned_ms));
    let mut calls: HashMap<EventId, Vec<&DeliveryRecord>> = HashMap::new();
    for d in records.deliveries.iter().filter(|d| d.handler == name) {
        calls.entry(d.event_id).or_default().push(d);
    }
    tally.calls = calls.values().map(Vec::len).sum();
    let letters: &[DeadLetter] = records.dead_letters.get(name).map_or(&[], Vec::as_slice);
    let mut in_letters: HashMap<EventId, usize> = HashMap::new();
    let group = format!("{}.{name}", input.consumer_group);
    let mut provenance = Vec::new();
    for letter in letters {
        if let Some(problem) = provenance_problem(letter, name, &group, &calls) {
            provenance.push(problem);
        }
        if let Some(event) = &letter.event {
            *in_letters.entry(event.id).or_default() += 1;
            if !published.contains_key(&event.id) {
                provenance.push(format!(
                    "dead letter {} holds event {} that the run never published",
                    letter.id, event.id
                ));
            }
        }
    }
    report(
        failures,
        name,
        "dead letters with bad provenance",
        &provenance,
    );
    let purged: HashSet<EventId> = records
        .purges
        .iter()
        .filter(|p| p.handler == name)
        .flat_map(|p| p.event_ids.iter().copied())
        .collect();

    let mut forbidden = Vec::new();
    let mut twice_dead = Vec::new();
    for p in published
        .values()
        .filter(|p| types.contains(p.event_type.as_str()))
    {
        let successes = calls.get(&p.event_id).map_or(0, |c| {
            c.iter().filter(|d| d.outcome == Outcome::Handled).count()
        });
        let dead = in_letters.get(&p.event_id).copied().unwrap_or(0);
        if dead > 1 {
            let copies: Vec<String> = letters
                .iter()
                .filter(|l| l.event.as_ref().is_some_and(|e| e.id == p.event_id))
                .map(|l| {
                    format!(
                        "{} {:?} after {} attempts at {}",
                        l.id,
                        l.reason,
                        l.attempts,
                        l.dead_lettered_at.unix_timestamp_nanos() / 1_000_000
                    )
                })
                .collect();
            twice_dead.push(format!(
                "{} is in the dead letters {dead} times: {}",
                p.event_id,
                copies.join("; ")
            ));
        }
        if successes > 1 {
            tally.duplicates += successes as u64 - 1;
        }
        if successes > 0 && dead > 0 {
            tally.handled_and_dead += 1;
        }
        match claim(p, first) {
            Claim::Forbidden(why) => {
                if let Some(c) = calls.get(&p.event_id) {
                    forbidden.push(format!(
                        "{} was delivered {} times although {why}",
                        p.event_id,
                        c.len()
                    ));
                }
            }
            Claim::Allowed => {}
            Claim::Owed => {
                tally.owed += 1;
                if successes > 0 {
                    tally.handled += 1;
                } else if dead == 1 {
                    tally.dead_lettered += 1;
                } else if dead == 0 && purged.contains(&p.event_id) {
                    tally.purged += 1;
                } else if dead == 0 {
                    tally.missing.push(p.event_id);
                }
            }
        }
    }
    report(
        failures,
        name,
        "events dead-lettered more than once",
        &twice_dead,
    );
    tally.duplicate_bound = super::bounds::duplicate_bound(input, handler);
    if tally.duplicates > tally.duplicate_bound {
        failures.push(format!(
            "{name}: {} duplicate successful calls, over the bound of {} for the faults of this run",
            tally.duplicates, tally.duplicate_bound
        ));
    }
    report(
        failures,
        name,
        "events delivered that must not be",
        &forbidden,
    );
    redrives_came_back(input, name, &calls, failures);
    if !tally.missing.is_empty() {
        let listed: Vec<String> = tally
            .missing
            .iter()
            .take(LISTED)
            .map(|id| describe_missing(id, published, &calls))
            .collect();
        failures.push(format!(
            "{name}: {} of {} owed events were lost (neither handled, dead-lettered nor purged); the first {}:\n      {}",
            tally.missing.len(),
            tally.owed,
            listed.len(),
            listed.join("\n      ")
        ));
    }
    tally
}

/// What is wrong with a dead letter's provenance, if anything.
fn provenance_problem(
    letter: &DeadLetter,
    handler: &str,
    group: &str,
    calls: &HashMap<EventId, Vec<&DeliveryRecord>>,
) -> Option<String> {
    let id = &letter.id;
    if letter.handler != handler || letter.group != group {
        return Some(format!(
            "dead letter {id} names handler {:?} and group {:?}, expected {handler:?} and {group:?}",
            letter.handler, letter.group
        ));
    }
    if letter.attempts == 0 || letter.first_error.is_empty() || letter.last_error.is_empty() {
        return Some(format!(
            "dead letter {id} lacks attempts or errors ({} attempts, first {:?}, last {:?})",
            letter.attempts, letter.first_error, letter.last_error
        ));
    }
    if letter.last_failed_at < letter.first_failed_at
        || letter.dead_lettered_at < letter.first_failed_at
    {
        return Some(format!("dead letter {id} has its times out of order"));
    }
    match (&letter.event, letter.reason) {
        (None, DeadLetterReason::InvalidEnvelope) => None,
        (None, reason) => Some(format!(
            "dead letter {id} has no event but reason {reason:?}"
        )),
        (Some(e), DeadLetterReason::InvalidEnvelope) => Some(format!(
            "dead letter {id} of event {} says its envelope is invalid",
            e.id
        )),
        (Some(e), DeadLetterReason::PermanentFailure) => {
            let failed = calls
                .get(&e.id)
                .is_some_and(|c| c.iter().any(|d| d.outcome == Outcome::Permanent));
            (!failed).then(|| {
                format!(
                    "dead letter {id} of event {} says `permanent_failure`, but the handler never failed it permanently",
                    e.id
                )
            })
        }
        (Some(_), _) => None,
    }
}

/// Every event a redrive selected is delivered to the handler again after the redrive.
fn redrives_came_back(
    input: &CheckInput<'_>,
    handler: &str,
    calls: &HashMap<EventId, Vec<&DeliveryRecord>>,
    failures: &mut Vec<String>,
) {
    let mut silent = Vec::new();
    for redrive in input
        .records
        .redrives
        .iter()
        .filter(|r| r.handler == handler)
    {
        if redrive.result.is_err() {
            continue;
        }
        for id in &redrive.event_ids {
            let again = calls
                .get(id)
                .is_some_and(|c| c.iter().any(|d| d.started_ms >= redrive.at_ms));
            if !again {
                silent.push(format!("{id} (redriven at {})", redrive.at_ms));
            }
        }
    }
    report(
        failures,
        handler,
        "redriven dead letters never delivered again",
        &silent,
    );
}

fn describe_missing(
    id: &EventId,
    published: &Published<'_>,
    calls: &HashMap<EventId, Vec<&DeliveryRecord>>,
) -> String {
    let Some(p) = published.get(id) else {
        return id.to_string();
    };
    let seen: Vec<String> = calls
        .get(id)
        .map(|c| {
            c.iter()
                .map(|d| format!("{:?} in {}", d.outcome, d.consumer))
                .collect()
        })
        .unwrap_or_default();
    format!(
        "{id} {} key {:?} {}#{} published at {} ({}); calls: {}",
        p.event_type,
        p.key,
        p.publisher,
        p.seq,
        p.started_ms,
        if p.batch { "batch" } else { "single" },
        if seen.is_empty() {
            "none".to_string()
        } else {
            seen.join(", ")
        }
    )
}

/// Adds one failure listing up to [`LISTED`] of `items`, when there are any.
pub(crate) fn report(failures: &mut Vec<String>, handler: &str, what: &str, items: &[String]) {
    if items.is_empty() {
        return;
    }
    let listed: Vec<&str> = items.iter().take(LISTED).map(String::as_str).collect();
    failures.push(format!(
        "{handler}: {} {what}; the first {}:\n      {}",
        items.len(),
        listed.len(),
        listed.join("\n      ")
    ));
}
