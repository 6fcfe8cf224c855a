//! A handler's membership in its Kafka consumer group, through the group coordinator: the
//! classic protocol's state machine, as the Java consumer runs it.
//!
//! ```text
//!            ┌──────────── rejoin (REBALANCE_IN_PROGRESS, ILLEGAL_GENERATION,
//!            ▼              UNKNOWN_MEMBER_ID with a fresh member id)
//!   ┌─────► JoinGroup ──► SyncGroup ──► take the assignment ──► heartbeat ──┐
//!   │       (leader assigns: range / roundrobin)  (committed offsets,        │
//!   │                                             fetch tasks start)         │
//!   │                                                                        ▼
//!   └──────── revoke: stop fetching, finish in-flight events (bounded by the rebalance
//!             timeout), commit, forget the partitions ◄── a rejoin answer, or a stop
//!
//!   stop: revoke (bounded by the shutdown timeout), then LeaveGroup (not for a static member)
//!   FENCED_INSTANCE_ID: revoke, and stop for good (another process has this instance id)
//! ```
//!
//! The leader also watches the partition counts of the group's topics: when a topic gains
//! partitions (read again every `KAFKA_METADATA_MAX_AGE_MS`), it rejoins, which makes the
//! coordinator rebalance and the leader assign the new partitions too, as the Java consumer
//! does.
//!
//! Heartbeats go on while the member revokes, as the Java client's heartbeat thread does, so a
//! slow handler never costs the member its session; a handler that outlasts the rebalance
//! timeout costs only its own event, which the partition's next owner handles again.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use event_core::Error;
use event_core::dispatch::Supervisor;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::assignor::{self, Assignment, AssignorMember, Subscription};
use crate::config::KafkaAssignmentStrategy;
use crate::control::{CONSUMER_PROTOCOL_TYPE, ControlClient, JoinOutcome, MembershipError};

use super::Group;

/// The longest pause between attempts when the coordinator cannot be reached.
const LONGEST_PAUSE: Duration = Duration::from_secs(5);

/// How the group task was told to stop: the deadline for finishing in-flight events.
pub(crate) type StopAt = Option<Instant>;

/// The member's standing in the group, for commits and stats.
#[derive(Clone, Debug, Default)]
pub(crate) struct Standing {
    /// The generation the member belongs to (`-1`: none at the moment).
    pub(crate) generation: i32,
    /// The member id the coordinator gave (empty before the first join).
    pub(crate) member_id: String,
    /// Why the member stopped for good (fenced by another process), if it did.
    pub(crate) fenced: Option<String>,
    /// Why the member keeps failing to join its group or to take its partitions, from the
    /// [`TROUBLE_AFTER`]th failure in a row until it takes them: health reports it.
    pub(crate) trouble: Option<String>,
}

/// Failures in a row (to join, or to take the assignment) before health hears of them: one
/// or two are the ordinary noise of a rebalance or a leader election.
const TROUBLE_AFTER: u32 = 3;

/// Why the member left the heartbeat loop.
enum Wake {
    Stop(Instant),
    Rejoin(MembershipError),
    Fenced,
    /// The leader saw a topic of the group gain partitions since it assigned them.
    PartitionsChanged,
}

/// The partition count of each topic, as the leader assigned them.
type Counts = BTreeMap<String, i32>;

/// The protocols a member offers, the configured assignor first.
fn protocols(strategy: KafkaAssignmentStrategy, topics: &[String]) -> Vec<(&'static str, Bytes)> {
    let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
    let metadata = Subscription::to_topics(&topics).encode();
    let (first, second) = match strategy {
        KafkaAssignmentStrategy::RoundRobin => (assignor::ROUND_ROBIN, assignor::RANGE),
        _ => (assignor::RANGE, assignor::ROUND_ROBIN),
    };
    vec![(first, metadata.clone()), (second, metadata)]
}

/// Runs the membership of `group` under a supervisor: a membership task that panics or ends
/// unasked is restarted (with backoff, logged, and counted where health reads it). Its fetch
/// tasks died with it and their partitions' positions are forgotten; the new task rejoins
/// with the same member id, and the partitions it is given start from their committed
/// offsets (what was not finished is delivered again).
pub(crate) async fn supervised(
    group: Arc<Group>,
    coordinator: ControlClient,
    mut stop: watch::Receiver<StopAt>,
) {
    let mut supervisor = Supervisor::new(group.handler.clone(), group.counters.clone());
    loop {
        let outcome = supervisor
            .run(run(group.clone(), coordinator.clone(), stop.clone()))
            .await;
        if stop.borrow().is_some() || group.standing().fenced.is_some() {
            return;
        }
        let why = match outcome {
            Ok(()) => "ended without being asked to stop".to_string(),
            Err(why) => why,
        };
        let pause = supervisor.failed("the Kafka group membership task", &why);
        group.forget_generation();
        tokio::select! {
            biased;
            _ = stop.changed() => {}
            () = tokio::time::sleep(pause) => {}
        }
    }
}

/// Runs the membership of `group` until `stop` carries a deadline (or the member is fenced):
/// join, sync, take the assignment, heartbeat, and give partitions up cleanly on every
/// rebalance and at the end.
async fn run(group: Arc<Group>, coordinator: ControlClient, mut stop: watch::Receiver<StopAt>) {
    let config = &group.inner.kafka;
    let instance = config.group_instance_id.clone();
    let protocols = protocols(config.assignment_strategy, group.topics());
    // A restarted task rejoins under the id the coordinator gave the one before.
    let mut member_id = group.standing().member_id;
    let mut failures = 0u32;
    let mut take_failures = 0u32;
    let until = loop {
        event_core::fault::checkpoint(&group.fault_names.membership);
        if let Some(until) = *stop.borrow_and_update() {
            break until;
        }
        let joined = tokio::select! {
            biased;
            _ = stop.changed() => continue,
            joined = join(&group, &coordinator, &member_id, instance.as_deref(), &protocols) => joined,
        };
        let (outcome, assigned, counts) = match joined {
            Ok(joined) => {
                failures = 0;
                joined
            }
            Err(MembershipError::UnknownMemberId) => {
                member_id.clear();
                continue;
            }
            Err(MembershipError::FencedInstanceId) => {
                group.fence(instance.as_deref());
                return;
            }
            Err(e) if e.needs_rejoin() => continue,
            Err(e) => {
                failures += 1;
                if failures == 1 || failures.is_multiple_of(20) {
                    tracing::warn!(group = %group.name, failures, "joining the Kafka consumer group failed, retrying: {e}");
                }
                if failures >= TROUBLE_AFTER {
                    group.set_trouble(Some(format!(
                        "cannot join Kafka consumer group {} ({failures} failures in a row, retrying; last: {e})",
                        group.name
                    )));
                }
                pause(&mut stop, failures).await;
                continue;
            }
        };
        member_id = outcome.member_id.clone();
        group.set_standing(outcome.generation_id, &member_id);
        metrics::counter!(super::REBALANCES_METRIC, "handler" => group.handler.clone())
            .increment(1);
        tracing::debug!(group = %group.name, generation = outcome.generation_id, member = %member_id, leader = outcome.is_leader(), ?assigned, "joined the Kafka consumer group");
        let owned = match group
            .take(&assigned, outcome.generation_id, &member_id)
            .await
        {
            Ok(owned) => {
                take_failures = 0;
                group.set_trouble(None);
                owned
            }
            Err(e) => {
                // Rejoining a stable group gives the same assignment back: pause longer each
                // time, so a failure that lasts does not spin.
                take_failures += 1;
                if take_failures == 1 || take_failures.is_multiple_of(20) {
                    tracing::warn!(group = %group.name, failures = take_failures, "taking the assigned partitions failed; rejoining: {e}");
                }
                if take_failures >= TROUBLE_AFTER {
                    group.set_trouble(Some(format!(
                        "a member of Kafka consumer group {} cannot take its assigned partitions ({take_failures} failures in a row, rejoining; last: {e})",
                        group.name
                    )));
                }
                pause(&mut stop, take_failures).await;
                continue;
            }
        };
        let wake = heartbeat(
            &group,
            outcome.generation_id,
            &member_id,
            instance.as_deref(),
            counts.as_ref(),
            &mut stop,
        )
        .await;
        let deadline = match &wake {
            Wake::Stop(until) => *until,
            _ => Instant::now() + config.rebalance_timeout.mul_f32(0.75),
        };
        // Keep the session alive while the in-flight events finish.
        let keep_alive = async {
            loop {
                tokio::time::sleep(config.heartbeat_interval).await;
                let _ = group
                    .inner
                    .control
                    .heartbeat(
                        &group.name,
                        outcome.generation_id,
                        &member_id,
                        instance.as_deref(),
                    )
                    .await;
            }
        };
        tokio::select! {
            () = group.revoke(owned, deadline) => {}
            () = keep_alive => {}
        }
        group.set_standing(-1, &member_id);
        match wake {
            Wake::Stop(until) => break until,
            Wake::Fenced => {
                group.fence(instance.as_deref());
                return;
            }
            Wake::Rejoin(MembershipError::UnknownMemberId) => member_id.clear(),
            Wake::Rejoin(reason) => {
                tracing::debug!(group = %group.name, "rejoining the Kafka consumer group: {reason}");
            }
            Wake::PartitionsChanged => {
                tracing::info!(group = %group.name, "a topic of the group has new partitions; rejoining so that they are assigned");
            }
        }
    };
    // A static member does not leave: restarted within the session timeout, it gets its
    // partitions back without a rebalance.
    if instance.is_none() && !member_id.is_empty() {
        let left = tokio::time::timeout_at(
            until.max(Instant::now() + Duration::from_secs(1)),
            group
                .inner
                .control
                .leave_group(&group.name, &member_id, None),
        )
        .await;
        if let Ok(Err(e)) = left {
            tracing::debug!(group = %group.name, "leaving the Kafka consumer group: {e}");
        }
    }
}

/// JoinGroup then SyncGroup: the new generation and this member's partitions by topic.
async fn join(
    group: &Group,
    coordinator: &ControlClient,
    member_id: &str,
    instance: Option<&str>,
    protocols: &[(&str, Bytes)],
) -> Result<(JoinOutcome, BTreeMap<String, Vec<i32>>, Option<Counts>), MembershipError> {
    let config = &group.inner.kafka;
    let outcome = coordinator
        .join_group(
            &group.name,
            member_id,
            instance,
            config.session_timeout,
            config.rebalance_timeout,
            protocols,
        )
        .await?;
    let (assignments, counts) = if outcome.is_leader() && !outcome.skip_assignment {
        let (assignments, counts) = assign(group, &outcome)
            .await
            .map_err(MembershipError::Other)?;
        (assignments, Some(counts))
    } else {
        (Vec::new(), None)
    };
    let assigned = coordinator
        .sync_group(
            &group.name,
            outcome.generation_id,
            &outcome.member_id,
            instance,
            CONSUMER_PROTOCOL_TYPE,
            &outcome.protocol_name,
            &assignments,
        )
        .await?;
    let assigned = Assignment::decode(&assigned).map_err(|e| {
        MembershipError::Other(Error::backend(
            "kafka",
            format!("the assignment of group {} cannot be read: {e}", group.name),
            false,
        ))
    })?;
    Ok((outcome, assigned.partitions, counts))
}

/// The leader's work: every member's partitions, by the protocol the group chose, and the
/// partition counts they were drawn from.
async fn assign(
    group: &Group,
    outcome: &JoinOutcome,
) -> Result<(Vec<(String, Bytes)>, Counts), Error> {
    let mut members = Vec::with_capacity(outcome.members.len());
    for m in &outcome.members {
        let topics = match Subscription::decode(&m.metadata) {
            Ok(subscription) => subscription.topics,
            Err(e) => {
                // A member we cannot read gets nothing, as the Java leader would fail it.
                tracing::warn!(group = %group.name, member = %m.member_id, "unreadable subscription: {e}");
                Vec::new()
            }
        };
        members.push(AssignorMember {
            member_id: m.member_id.clone(),
            group_instance_id: m.group_instance_id.clone(),
            topics,
        });
    }
    let mut topics: Vec<String> = members.iter().flat_map(|m| m.topics.clone()).collect();
    topics.sort();
    topics.dedup();
    // Fresh, in one request: a count older than the cache's age would hide new partitions.
    let counts = group
        .inner
        .topics
        .read_many(&group.inner.control, &topics)
        .await?;
    let assignment = assignor::assign(&outcome.protocol_name, &members, &counts).ok_or_else(|| {
        Error::backend(
            "kafka",
            format!(
                "group {} chose the assignor {:?}, which this client does not have (it has range and roundrobin)",
                group.name, outcome.protocol_name
            ),
            false,
        )
    })?;
    let assignments = assignment
        .into_iter()
        .map(|(member, partitions)| {
            let bytes = Assignment {
                partitions,
                user_data: None,
            }
            .encode();
            (member, bytes)
        })
        .collect();
    Ok((assignments, counts))
}

/// Whether a topic the leader assigned has more partitions now (read again at most every
/// `KAFKA_METADATA_MAX_AGE_MS`). A topic that cannot be read now is not a change.
async fn partitions_grew(group: &Group, assigned: &Counts) -> bool {
    let topics: Vec<String> = assigned.keys().cloned().collect();
    match group
        .inner
        .topics
        .read_many(&group.inner.control, &topics)
        .await
    {
        Ok(now) => now
            .iter()
            .any(|(topic, n)| assigned.get(topic).is_some_and(|before| n > before)),
        Err(e) => {
            tracing::debug!(group = %group.name, "reading the partition counts: {e}");
            false
        }
    }
}

/// Heartbeats every interval until a stop, a rejoin answer, or fencing. A coordinator that
/// cannot be reached for a whole session timeout means the session is gone: rejoin. The
/// leader (`assigned`: the counts it assigned from) also rejoins when a topic gains
/// partitions.
async fn heartbeat(
    group: &Group,
    generation: i32,
    member_id: &str,
    instance: Option<&str>,
    assigned: Option<&Counts>,
    stop: &mut watch::Receiver<StopAt>,
) -> Wake {
    let config = &group.inner.kafka;
    let mut last_answer = Instant::now();
    let mut next_check = Instant::now() + config.metadata_max_age;
    loop {
        event_core::fault::checkpoint(&group.fault_names.membership);
        if let Some(until) = *stop.borrow_and_update() {
            return Wake::Stop(until);
        }
        tokio::select! {
            biased;
            _ = stop.changed() => continue,
            () = tokio::time::sleep(config.heartbeat_interval) => {}
        }
        if let Some(assigned) = assigned
            && Instant::now() >= next_check
        {
            next_check = Instant::now() + config.metadata_max_age;
            if partitions_grew(group, assigned).await {
                return Wake::PartitionsChanged;
            }
        }
        match group
            .inner
            .control
            .heartbeat(&group.name, generation, member_id, instance)
            .await
        {
            Ok(()) => last_answer = Instant::now(),
            Err(MembershipError::FencedInstanceId) => return Wake::Fenced,
            Err(e) if e.needs_rejoin() => return Wake::Rejoin(e),
            Err(e) => {
                tracing::debug!(group = %group.name, "heartbeat failed: {e}");
                if last_answer.elapsed() >= config.session_timeout {
                    tracing::warn!(group = %group.name, "no heartbeat answered for the whole session timeout; rejoining: {e}");
                    return Wake::Rejoin(MembershipError::UnknownMemberId);
                }
            }
        }
    }
}

async fn pause(stop: &mut watch::Receiver<StopAt>, failures: u32) {
    let pause = (Duration::from_millis(100) * failures.min(50)).min(LONGEST_PAUSE);
    tokio::select! {
        _ = stop.changed() => {}
        () = tokio::time::sleep(pause) => {}
    }
}
