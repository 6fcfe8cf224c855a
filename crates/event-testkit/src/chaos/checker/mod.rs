//! The history checker: reads a run's [`Records`] and says what went wrong.
//!
//! For each handler it works out which events the handler is owed (published with success,
//! of its types, after where its group starts) and accounts for each: handled, or in the
//! handler's dead letters exactly once with its provenance, or dead-lettered and purged by the
//! run. Anything else is lost. It also counts duplicates against a bound, checks per-key
//! order of first deliveries within each consumer, that refused publishes were never handled,
//! that redriven dead letters came back, that foreign entries were dead-lettered, and that no
//! consumer loop died unnoticed.

mod accounts;
mod bounds;
mod foreign;
mod liveness;
mod order;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use event_core::EventId;

use super::backend::{Abilities, Fault};
use super::history::{PublishOutcome, PublishRecord, Records};
use super::quiesce::NotQuiet;
use super::workload::Plan;

pub(crate) use accounts::HandlerTally;

/// What the checker is given.
pub(crate) struct CheckInput<'a> {
    pub(crate) plan: &'a Plan,
    pub(crate) abilities: &'a Abilities,
    pub(crate) records: &'a Records,
    /// `EVENT_CONSUMER_GROUP`: dead letters name `{group}.{handler}`.
    pub(crate) consumer_group: &'a str,
    /// How long the wait for quiescence took, or why it gave up.
    pub(crate) quiet: &'a Result<Duration, NotQuiet>,
    pub(crate) stall_timeout: Duration,
    /// When the wait for quiescence ended (Unix milliseconds).
    pub(crate) end_ms: i64,
}

/// The checker's findings.
#[derive(Debug, Default)]
pub(crate) struct Verdict {
    pub(crate) tallies: Vec<HandlerTally>,
    /// Each violation, in words; empty when the run passed.
    pub(crate) failures: Vec<String>,
    pub(crate) stored: usize,
    pub(crate) refused: usize,
    pub(crate) ambiguous: usize,
    pub(crate) foreign: usize,
    pub(crate) faults: BTreeMap<Fault, (usize, usize)>,
}

impl Verdict {
    /// Events lost: owed and neither handled, dead-lettered nor purged, plus foreign entries
    /// that no dead letter accounts for.
    pub(crate) fn lost(&self) -> usize {
        self.tallies
            .iter()
            .map(|t| t.missing.len() + t.foreign_missing)
            .sum()
    }
}

/// Publishes by event id.
pub(crate) type Published<'a> = HashMap<EventId, &'a PublishRecord>;

/// Checks everything.
pub(crate) fn check(input: &CheckInput<'_>) -> Verdict {
    let records = input.records;
    let mut verdict = Verdict::default();
    let mut published: Published<'_> = HashMap::with_capacity(records.publishes.len());
    for p in &records.publishes {
        match &p.outcome {
            PublishOutcome::Stored => verdict.stored += 1,
            PublishOutcome::Refused(_) => verdict.refused += 1,
            PublishOutcome::Ambiguous(_) => verdict.ambiguous += 1,
        }
        if p.oversized && p.outcome == PublishOutcome::Stored {
            verdict.failures.push(format!(
                "publish: event {} is larger than EVENT_MAX_PAYLOAD_BYTES and was stored instead of refused",
                p.event_id
            ));
        }
        published.insert(p.event_id, p);
    }
    verdict.foreign = records.foreign.len();
    for f in &records.faults {
        let entry = verdict.faults.entry(f.fault).or_default();
        entry.0 += 1;
        if f.detail.is_err() {
            entry.1 += 1;
        }
    }
    if let Err(not_quiet) = input.quiet {
        verdict.failures.push(format!(
            "quiescence: the bus still had work {:?} after the run: {}{}",
            not_quiet.waited,
            not_quiet.busy.join("; "),
            not_quiet
                .last_error
                .as_ref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        ));
    }
    for handler in &input.plan.handlers {
        let mut tally = accounts::account(input, handler, &published, &mut verdict.failures);
        foreign::account(input, handler, &mut tally, &mut verdict.failures);
        order::check(
            input,
            handler,
            &published,
            &mut tally,
            &mut verdict.failures,
        );
        verdict.tallies.push(tally);
    }
    liveness::check(input, &verdict.tallies, &mut verdict.failures);
    verdict
}
