//! Kafka's classic group protocol at the group coordinator: JoinGroup, SyncGroup, Heartbeat
//! and LeaveGroup with protocol type `consumer`, as the Java consumer speaks it. The member
//! ids, generations and assignments are the caller's; this module only asks and answers.
//!
//! The errors that tell a member to rejoin or stop (REBALANCE_IN_PROGRESS,
//! ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID, FENCED_INSTANCE_ID) come back as variants of
//! [`MembershipError`], so a member's state machine can match on them.
//!
//! Calls of one client share one connection per coordinator and send one request at a time:
//! a JoinGroup the coordinator holds until the rebalance completes keeps that client's other
//! calls to the same broker waiting. Members that must heartbeat or commit meanwhile need
//! their own client.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use event_core::Error;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    GroupId, HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest, SyncGroupRequest,
};
use kafka_protocol::protocol::StrBytes;

use super::connection::Deadline;
use super::error::{ControlError, KafkaCode};
use super::{ControlClient, text};

/// The protocol type of Kafka consumers: the Java client's, and ours.
pub(crate) const CONSUMER_PROTOCOL_TYPE: &str = "consumer";

/// How much longer than the rebalance timeout a JoinGroup may take: the coordinator holds
/// the answer until every member rejoined or the rebalance timeout passed. The Java client
/// waits the same 5 seconds more.
const JOIN_GRACE: Duration = Duration::from_secs(5);

/// How many times a JoinGroup answered MEMBER_ID_REQUIRED is sent again with the member id
/// the coordinator gave (once is what the protocol needs).
const MEMBER_ID_RETRIES: usize = 2;

const ILLEGAL_GENERATION: KafkaCode = KafkaCode(22);
const INCONSISTENT_GROUP_PROTOCOL: KafkaCode = KafkaCode(23);
const UNKNOWN_MEMBER_ID: KafkaCode = KafkaCode(25);
const REBALANCE_IN_PROGRESS: KafkaCode = KafkaCode(27);
const MEMBER_ID_REQUIRED: KafkaCode = KafkaCode(79);
const FENCED_INSTANCE_ID: KafkaCode = KafkaCode(82);

/// What the coordinator answered a JoinGroup: the new generation and, for the leader, every
/// member's subscription.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct JoinOutcome {
    pub(crate) generation_id: i32,
    /// The protocol (assignor) the group chose among those every member offered.
    pub(crate) protocol_name: String,
    /// The leader's member id: the member that computes the assignment.
    pub(crate) leader: String,
    /// This member's id, to send with every later request of this generation.
    pub(crate) member_id: String,
    /// The members and their subscriptions; empty unless this member is the leader.
    pub(crate) members: Vec<JoinedMember>,
    /// A static leader rejoining without changes is told not to compute a new assignment
    /// (JoinGroup v9): it syncs with none and keeps its own.
    pub(crate) skip_assignment: bool,
}

impl JoinOutcome {
    /// Whether this member leads the generation and must compute the assignment.
    pub(crate) fn is_leader(&self) -> bool {
        self.leader == self.member_id
    }
}

/// One member of the group as the leader's JoinGroup answer lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct JoinedMember {
    pub(crate) member_id: String,
    /// Its static membership id (`group.instance.id`), if any.
    pub(crate) group_instance_id: Option<String>,
    /// Its metadata for the chosen protocol (for `consumer`: a subscription).
    pub(crate) metadata: Bytes,
}

/// Why a group call failed: the answers a member acts on, or any other failure.
#[derive(Debug)]
pub(crate) enum MembershipError {
    /// REBALANCE_IN_PROGRESS: the group is rebalancing; rejoin with the same member id.
    RebalanceInProgress,
    /// ILLEGAL_GENERATION: the generation is over; rejoin with the same member id.
    IllegalGeneration,
    /// UNKNOWN_MEMBER_ID: the coordinator forgot the member (session expired); rejoin with
    /// an empty member id.
    UnknownMemberId,
    /// FENCED_INSTANCE_ID: another process joined with the same `group.instance.id`; this
    /// one must stop.
    FencedInstanceId,
    /// Anything else: a backend error (transient or not) or a protocol problem.
    Other(Error),
}

impl MembershipError {
    /// Whether the member should join again (after a rebalance, a new generation, or
    /// expiry); `false` for a fenced member and other failures.
    pub(crate) fn needs_rejoin(&self) -> bool {
        matches!(
            self,
            MembershipError::RebalanceInProgress
                | MembershipError::IllegalGeneration
                | MembershipError::UnknownMemberId
        )
    }

    fn from_control(e: ControlError) -> Self {
        match e.code() {
            Some(REBALANCE_IN_PROGRESS) => MembershipError::RebalanceInProgress,
            Some(ILLEGAL_GENERATION) => MembershipError::IllegalGeneration,
            Some(UNKNOWN_MEMBER_ID) => MembershipError::UnknownMemberId,
            Some(FENCED_INSTANCE_ID) => MembershipError::FencedInstanceId,
            _ => MembershipError::Other(e.into()),
        }
    }
}

impl fmt::Display for MembershipError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MembershipError::RebalanceInProgress => {
                f.write_str("the Kafka group is rebalancing: REBALANCE_IN_PROGRESS (27)")
            }
            MembershipError::IllegalGeneration => {
                f.write_str("the Kafka group has a newer generation: ILLEGAL_GENERATION (22)")
            }
            MembershipError::UnknownMemberId => {
                f.write_str("the Kafka group coordinator does not know this member: UNKNOWN_MEMBER_ID (25)")
            }
            MembershipError::FencedInstanceId => f.write_str(
                "another member joined the Kafka group with the same group.instance.id: FENCED_INSTANCE_ID (82)",
            ),
            MembershipError::Other(e) => fmt::Display::fmt(e, f),
        }
    }
}

impl std::error::Error for MembershipError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            MembershipError::Other(e) => Some(e),
            _ => None,
        }
    }
}

impl From<MembershipError> for Error {
    fn from(e: MembershipError) -> Self {
        match e {
            MembershipError::Other(e) => e,
            // The member's state machine handles these; one that reaches a caller is a
            // failure the same call will not fix, but a rejoin may.
            other => Error::Backend {
                backend: "kafka",
                transient: other.needs_rejoin(),
                message: other.to_string(),
                source: None,
            },
        }
    }
}

/// What one JoinGroup attempt gave.
enum Joined {
    Outcome(JoinOutcome),
    /// MEMBER_ID_REQUIRED with the id to join with.
    MemberIdRequired(String),
}

fn optional(value: Option<&str>) -> Option<StrBytes> {
    value.map(text)
}

fn millis(duration: Duration) -> i32 {
    i32::try_from(duration.as_millis()).unwrap_or(i32::MAX)
}

/// The error of a response's code, or `Ok`.
fn check(code: i16, context: &str) -> Result<(), ControlError> {
    match KafkaCode::from_code(code) {
        Some(code) => Err(ControlError::kafka(code, context, None)),
        None => Ok(()),
    }
}

impl ControlClient {
    /// Joins `group` (JoinGroup, protocol type `consumer`) offering `protocols` (assignor
    /// name, subscription metadata) in order of preference, and waits for the generation to
    /// form. A new member passes an empty `member_id`; the coordinator's MEMBER_ID_REQUIRED
    /// is answered by joining again with the id it gave, as the Java client does.
    ///
    /// The call may take up to `rebalance_timeout` (plus 5 seconds), or the client's timeout
    /// when longer.
    ///
    /// # Errors
    /// [`MembershipError::UnknownMemberId`] for a stale member id,
    /// [`MembershipError::FencedInstanceId`] when another member has this instance id;
    /// other failures (no common protocol, an unreachable coordinator) as
    /// [`MembershipError::Other`].
    #[allow(clippy::too_many_arguments, reason = "the fields of Kafka's JoinGroup")]
    pub(crate) async fn join_group(
        &self,
        group: &str,
        member_id: &str,
        group_instance_id: Option<&str>,
        session_timeout: Duration,
        rebalance_timeout: Duration,
        protocols: &[(&str, Bytes)],
    ) -> Result<JoinOutcome, MembershipError> {
        let deadline = Deadline::after(self.timeout().max(rebalance_timeout + JOIN_GRACE));
        let context = format!("joining Kafka group {group}");
        let mut member_id = member_id.to_string();
        let mut retries = 0;
        loop {
            let joined = self
                .coordinator_call(
                    group,
                    &deadline,
                    |_| {
                        JoinGroupRequest::default()
                            .with_group_id(GroupId(text(group)))
                            .with_session_timeout_ms(millis(session_timeout))
                            .with_rebalance_timeout_ms(millis(rebalance_timeout))
                            .with_member_id(text(&member_id))
                            .with_group_instance_id(optional(group_instance_id))
                            .with_protocol_type(StrBytes::from_static_str(CONSUMER_PROTOCOL_TYPE))
                            .with_protocols(
                                protocols
                                    .iter()
                                    .map(|(name, metadata)| {
                                        JoinGroupRequestProtocol::default()
                                            .with_name(text(name))
                                            .with_metadata(metadata.clone())
                                    })
                                    .collect(),
                            )
                    },
                    |_, response| {
                        if KafkaCode::from_code(response.error_code) == Some(MEMBER_ID_REQUIRED) {
                            return Ok(Joined::MemberIdRequired(response.member_id.to_string()));
                        }
                        check(response.error_code, &context)?;
                        // From v7 the coordinator names the group's protocol type; the Java
                        // client refuses an answer for another one.
                        if let Some(kind) = response.protocol_type.as_deref()
                            && kind != CONSUMER_PROTOCOL_TYPE
                        {
                            return Err(ControlError::kafka(
                                INCONSISTENT_GROUP_PROTOCOL,
                                &format!("{context}: the group's protocol type is {kind:?}"),
                                None,
                            ));
                        }
                        Ok(Joined::Outcome(JoinOutcome {
                            generation_id: response.generation_id,
                            protocol_name: response
                                .protocol_name
                                .map(|name| name.to_string())
                                .unwrap_or_default(),
                            leader: response.leader.to_string(),
                            member_id: response.member_id.to_string(),
                            members: response
                                .members
                                .into_iter()
                                .map(|m| JoinedMember {
                                    member_id: m.member_id.to_string(),
                                    group_instance_id: m.group_instance_id.map(|id| id.to_string()),
                                    metadata: m.metadata,
                                })
                                .collect(),
                            skip_assignment: response.skip_assignment,
                        }))
                    },
                )
                .await
                .map_err(MembershipError::from_control)?;
            match joined {
                Joined::Outcome(outcome) => return Ok(outcome),
                Joined::MemberIdRequired(given)
                    if retries < MEMBER_ID_RETRIES && !given.is_empty() =>
                {
                    retries += 1;
                    member_id = given;
                }
                Joined::MemberIdRequired(_) => {
                    return Err(MembershipError::Other(
                        ControlError::kafka(
                            MEMBER_ID_REQUIRED,
                            &format!("{context}: the coordinator kept asking for a member id"),
                            None,
                        )
                        .into(),
                    ));
                }
            }
        }
    }

    /// Ends the join of generation `generation_id` (SyncGroup): the leader passes every
    /// member's assignment in the protocol's encoding, the others none. Returns this
    /// member's assignment (empty when it has none).
    ///
    /// # Errors
    /// [`MembershipError::RebalanceInProgress`], [`MembershipError::IllegalGeneration`] or
    /// [`MembershipError::UnknownMemberId`] when the member must rejoin,
    /// [`MembershipError::FencedInstanceId`]; other failures as [`MembershipError::Other`].
    #[allow(clippy::too_many_arguments, reason = "the fields of Kafka's SyncGroup")]
    pub(crate) async fn sync_group(
        &self,
        group: &str,
        generation_id: i32,
        member_id: &str,
        group_instance_id: Option<&str>,
        protocol_type: &str,
        protocol_name: &str,
        assignments: &[(String, Bytes)],
    ) -> Result<Bytes, MembershipError> {
        let deadline = self.deadline();
        let context = format!("syncing Kafka group {group} (generation {generation_id})");
        self.coordinator_call(
            group,
            &deadline,
            |_| {
                SyncGroupRequest::default()
                    .with_group_id(GroupId(text(group)))
                    .with_generation_id(generation_id)
                    .with_member_id(text(member_id))
                    .with_group_instance_id(optional(group_instance_id))
                    .with_protocol_type(Some(text(protocol_type)))
                    .with_protocol_name(Some(text(protocol_name)))
                    .with_assignments(
                        assignments
                            .iter()
                            .map(|(member, assignment)| {
                                SyncGroupRequestAssignment::default()
                                    .with_member_id(text(member))
                                    .with_assignment(assignment.clone())
                            })
                            .collect(),
                    )
            },
            |_, response| {
                check(response.error_code, &context)?;
                // From v5 the answer repeats the type and protocol; the Java client refuses
                // one that differs from what it joined with.
                let differs = |answered: Option<&str>, ours: &str| {
                    answered.is_some_and(|answered| answered != ours)
                };
                if differs(response.protocol_type.as_deref(), protocol_type)
                    || differs(response.protocol_name.as_deref(), protocol_name)
                {
                    return Err(ControlError::kafka(
                        INCONSISTENT_GROUP_PROTOCOL,
                        &format!(
                            "{context}: the coordinator answered for protocol {:?}/{:?}, not {protocol_type:?}/{protocol_name:?}",
                            response.protocol_type.as_deref().unwrap_or_default(),
                            response.protocol_name.as_deref().unwrap_or_default(),
                        ),
                        None,
                    ));
                }
                Ok(response.assignment)
            },
        )
        .await
        .map_err(MembershipError::from_control)
    }

    /// Tells the coordinator this member of generation `generation_id` is alive
    /// (Heartbeat).
    ///
    /// # Errors
    /// [`MembershipError::RebalanceInProgress`] when the group rebalances (the member must
    /// rejoin), [`MembershipError::IllegalGeneration`], [`MembershipError::UnknownMemberId`],
    /// [`MembershipError::FencedInstanceId`]; other failures as [`MembershipError::Other`].
    pub(crate) async fn heartbeat(
        &self,
        group: &str,
        generation_id: i32,
        member_id: &str,
        group_instance_id: Option<&str>,
    ) -> Result<(), MembershipError> {
        let deadline = self.deadline();
        let context = format!("heartbeat to Kafka group {group} (generation {generation_id})");
        self.coordinator_call(
            group,
            &deadline,
            |_| {
                HeartbeatRequest::default()
                    .with_group_id(GroupId(text(group)))
                    .with_generation_id(generation_id)
                    .with_member_id(text(member_id))
                    .with_group_instance_id(optional(group_instance_id))
            },
            |_, response| check(response.error_code, &context),
        )
        .await
        .map_err(MembershipError::from_control)
    }

    /// Leaves `group` (LeaveGroup): the coordinator rebalances the others at once instead of
    /// waiting for this member's session to expire.
    ///
    /// # Errors
    /// [`MembershipError::UnknownMemberId`] when the coordinator no longer knows the member,
    /// [`MembershipError::FencedInstanceId`]; other failures as [`MembershipError::Other`].
    pub(crate) async fn leave_group(
        &self,
        group: &str,
        member_id: &str,
        group_instance_id: Option<&str>,
    ) -> Result<(), MembershipError> {
        let deadline = self.deadline();
        let context = format!("leaving Kafka group {group}");
        self.coordinator_call(
            group,
            &deadline,
            |version| {
                let request = LeaveGroupRequest::default().with_group_id(GroupId(text(group)));
                if version >= 3 {
                    request.with_members(vec![
                        MemberIdentity::default()
                            .with_member_id(text(member_id))
                            .with_group_instance_id(optional(group_instance_id)),
                    ])
                } else {
                    request.with_member_id(text(member_id))
                }
            },
            |version, response| {
                check(response.error_code, &context)?;
                if version >= 3 {
                    for member in &response.members {
                        check(member.error_code, &context)?;
                    }
                }
                Ok(())
            },
        )
        .await
        .map_err(MembershipError::from_control)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejoin_codes_are_matchable() {
        let of =
            |code| MembershipError::from_control(ControlError::kafka(KafkaCode(code), "x", None));
        assert!(matches!(of(27), MembershipError::RebalanceInProgress));
        assert!(matches!(of(22), MembershipError::IllegalGeneration));
        assert!(matches!(of(25), MembershipError::UnknownMemberId));
        assert!(matches!(of(82), MembershipError::FencedInstanceId));
        assert!(matches!(of(16), MembershipError::Other(_)));
        assert!(of(27).needs_rejoin() && of(22).needs_rejoin() && of(25).needs_rejoin());
        assert!(!of(82).needs_rejoin());
        let error = Error::from(of(82));
        assert!(error.to_string().contains("FENCED_INSTANCE_ID"), "{error}");
        assert!(!error.is_transient());
    }
}
