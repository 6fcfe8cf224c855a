//! The duplicate bound of a handler: how many repeated successful calls the faults and
//! membership changes of the run allow. Without any, none: the bus promises at least once,
//! but a healthy run that redelivers acknowledged events has a defect.

use std::collections::HashSet;

use super::CheckInput;
use crate::chaos::workload::HandlerPlan;

/// Acknowledgements a dispatcher batches before sending them (`DispatchSettings::ack_batch`).
const ACK_BATCH: u64 = 256;

/// The most events one consumer of `handler` can hold unacknowledged: the dispatcher's
/// in-flight window (64 per lane, at least 1,024) plus one batch of acknowledgements not yet
/// sent. A disruption can make all of them be delivered again.
pub(crate) fn window(handler: &HandlerPlan) -> u64 {
    (handler.concurrency as u64 * 64).max(1024) + ACK_BATCH
}

/// Disruptions that may redeliver the handler's events: faults that touched it, and on
/// backends where a group's membership change redelivers (Kafka rebalances), every consumer
/// that joined or left its group and every resubscription.
pub(crate) fn disruptions(input: &CheckInput<'_>, handler: &HandlerPlan) -> u64 {
    let records = input.records;
    let faults = records
        .faults
        .iter()
        .filter(|f| f.detail.is_ok() && f.fault.may_redeliver())
        .filter(|f| f.handlers.contains(&handler.name))
        .count() as u64;
    let membership = if input.abilities.rebalance_redelivers {
        let own = records
            .subscriptions
            .iter()
            .filter(|s| s.handler == handler.name && s.error.is_none())
            .count() as u64;
        let shared = if handler.shared {
            records.membership_changes.len() as u64
        } else {
            0
        };
        own + shared
    } else {
        0
    };
    faults + membership
}

/// The handler's bound: each disruption may redeliver a window per consumer.
pub(crate) fn duplicate_bound(input: &CheckInput<'_>, handler: &HandlerPlan) -> u64 {
    let consumers = input
        .records
        .subscriptions
        .iter()
        .filter(|s| s.handler == handler.name && s.error.is_none())
        .map(|s| s.consumer.as_str())
        .collect::<HashSet<_>>()
        .len()
        .max(1) as u64;
    disruptions(input, handler) * consumers * window(handler)
}
