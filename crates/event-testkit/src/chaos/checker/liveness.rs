//! Liveness and truthful health: no subscription stops by itself without the bus restarting
//! it (or saying it is unhealthy), health does not call a consumer dead for long while its
//! subscription runs, and health does not call a handler healthy while it is stuck with
//! events it owes.

use std::collections::BTreeMap;

use event_core::HealthStatus;

use super::CheckInput;
use super::accounts::HandlerTally;
use crate::chaos::history::{ActivityRecord, HealthRecord};

/// How long a consumer may look dead before it counts: a loop the bus restarts comes back
/// well within this.
const GRACE_MS: i64 = 5_000;

/// The bus a consumer runs on: `main/h1#3` on `main`; a consumer process is its own bus.
fn bus_of(consumer: &str) -> &str {
    if consumer.starts_with("proc/") {
        consumer
    } else {
        consumer.split('/').next().unwrap_or(consumer)
    }
}

/// Whether every health report of `bus` between the two times said unhealthy.
fn unhealthy_throughout(health: &[HealthRecord], bus: &str, from: i64, to: i64) -> bool {
    let mut reports = health
        .iter()
        .filter(|h| h.bus == bus && h.at_ms >= from && h.at_ms <= to)
        .peekable();
    reports.peek().is_some() && reports.all(|h| h.health.status == HealthStatus::Unhealthy)
}

/// The runs of consecutive samples for which `dead` holds, as (first, last) times, per key.
fn dead_streaks<'a>(
    samples: impl Iterator<Item = (&'a str, i64, bool)>,
) -> BTreeMap<String, Vec<(i64, i64)>> {
    let mut streaks: BTreeMap<String, Vec<(i64, i64)>> = BTreeMap::new();
    let mut open: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for (key, at, dead) in samples {
        if dead {
            let entry = open.entry(key.to_string()).or_insert((at, at));
            entry.1 = at;
        } else if let Some(streak) = open.remove(key) {
            streaks.entry(key.to_string()).or_default().push(streak);
        }
    }
    for (key, streak) in open {
        streaks.entry(key).or_default().push(streak);
    }
    streaks
}

/// Checks the activity samples and health reports.
pub(crate) fn check(input: &CheckInput<'_>, tallies: &[HandlerTally], failures: &mut Vec<String>) {
    let records = input.records;
    let ended = |consumer: &str| {
        records
            .subscriptions
            .iter()
            .find(|s| s.consumer == consumer)
            .and_then(|s| s.ended_ms)
            .unwrap_or(i64::MAX)
    };

    // Subscriptions that stopped without being unsubscribed.
    let mut activity: Vec<&ActivityRecord> = records.activity.iter().collect();
    activity.sort_by_key(|a| a.at_ms);
    let streaks = dead_streaks(
        activity
            .iter()
            .filter(|a| a.at_ms < ended(&a.consumer))
            .map(|a| (a.consumer.as_str(), a.at_ms, !a.active)),
    );
    for (consumer, runs) in streaks {
        for (from, to) in runs {
            if to - from >= GRACE_MS
                && !unhealthy_throughout(&records.health, bus_of(&consumer), from, to)
            {
                failures.push(format!(
                    "liveness: the subscription {consumer} stopped by itself at {from} and was not restarted (still inactive {} ms later), while health did not say unhealthy",
                    to - from
                ));
            }
        }
    }

    // Health calling a consumer dead while its subscription runs: only reports taken while
    // the run had the handler subscribed on that bus, for longer than the grace (joining a
    // group takes a while on Kafka), count; while the run itself had unsubscribed it (a
    // resubscription's time away), not alive is the truth.
    let subscribed = |handler: &str, bus: &str, at: i64| {
        records.subscriptions.iter().any(|s| {
            s.handler == handler
                && bus_of(&s.consumer) == bus
                && s.error.is_none()
                && s.returned_ms + GRACE_MS <= at
                && s.ended_ms.is_none_or(|end| at < end)
        })
    };
    let mut health: Vec<&HealthRecord> = records.health.iter().collect();
    health.sort_by_key(|h| h.at_ms);
    let mut samples = Vec::new();
    for report in &health {
        for c in &report.health.consumers {
            samples.push((
                format!("{} on {}", c.handler, report.bus),
                report.at_ms,
                !c.alive
                    && report.health.status != HealthStatus::Unhealthy
                    && subscribed(&c.handler, &report.bus, report.at_ms),
            ));
        }
    }
    let streaks = dead_streaks(samples.iter().map(|(k, at, d)| (k.as_str(), *at, *d)));
    for (consumer, runs) in streaks {
        for (from, to) in runs {
            if to - from >= GRACE_MS {
                failures.push(format!(
                    "liveness: health reported {consumer} not alive from {from} for {} ms without saying the bus is unhealthy: a consumer loop died and was not restarted",
                    to - from
                ));
            }
        }
    }

    // Health calling a stuck handler healthy.
    if input.quiet.is_ok() {
        return;
    }
    let stall = input.stall_timeout.as_millis() as i64;
    for tally in tallies.iter().filter(|t| !t.missing.is_empty()) {
        // Stuck since its last call, or since it subscribed when it never made one.
        let subscribed = records
            .subscriptions
            .iter()
            .filter(|s| s.handler == tally.name)
            .map(|s| s.returned_ms)
            .min()
            .unwrap_or(0);
        let last_call = records
            .deliveries
            .iter()
            .filter(|d| d.handler == tally.name)
            .map(|d| d.finished_ms)
            .max()
            .unwrap_or(0)
            .max(subscribed);
        if input.end_ms - last_call <= stall + GRACE_MS {
            continue;
        }
        let lying = health.iter().rev().find(|report| {
            report.at_ms > last_call + stall + GRACE_MS
                && report.health.status == HealthStatus::Healthy
                && report
                    .health
                    .consumers
                    .iter()
                    .any(|c| c.handler == tally.name && c.alive && !c.stalled)
        });
        if let Some(report) = lying {
            failures.push(format!(
                "health: {} reported healthy at {} (alive, not stalled) although {} had made no call for {} ms and {} owed events were missing",
                report.bus,
                report.at_ms,
                tally.name,
                report.at_ms - last_call,
                tally.missing.len()
            ));
        }
    }
}
