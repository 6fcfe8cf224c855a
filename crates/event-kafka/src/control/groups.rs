//! Consumer groups as Kafka's tools see them: ListGroups at every broker, DescribeGroups at
//! each group's coordinator. The group protocol itself (JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup) is built on `ControlClient::coordinator_call` the same way.

use bytes::Bytes;
use event_core::Error;
use kafka_protocol::messages::{DescribeGroupsRequest, GroupId, ListGroupsRequest};

use super::error::{ControlError, KafkaCode};
use super::{ControlClient, Node, text};

/// GROUP_ID_NOT_FOUND: how DescribeGroups v6 answers for a group that does not exist.
const GROUP_ID_NOT_FOUND: i16 = 69;

/// A group as ListGroups names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct GroupListing {
    pub(crate) group_id: String,
    /// `consumer` for groups of Kafka consumers (ours too); empty for groups that only
    /// commit offsets.
    pub(crate) protocol_type: String,
    /// `Stable`, `Empty`, ...; `None` from brokers older than ListGroups v4.
    pub(crate) state: Option<String>,
}

/// A group as DescribeGroups describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct GroupDescription {
    pub(crate) group_id: String,
    /// `Stable`, `PreparingRebalance`, `CompletingRebalance`, `Empty` or `Dead` (unknown
    /// group).
    pub(crate) state: String,
    pub(crate) protocol_type: String,
    /// The assignor chosen (`range`, `roundrobin`, ...), when the group is stable.
    pub(crate) protocol: String,
    pub(crate) members: Vec<GroupMember>,
}

/// One member of a group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct GroupMember {
    pub(crate) member_id: String,
    /// The static membership id (`group.instance.id`), if any.
    pub(crate) group_instance_id: Option<String>,
    pub(crate) client_id: String,
    pub(crate) client_host: String,
    /// The member's subscription, in its protocol's encoding (for `consumer`:
    /// `ConsumerProtocolSubscription`).
    pub(crate) metadata: Bytes,
    /// Its assignment, in its protocol's encoding (`ConsumerProtocolAssignment`).
    pub(crate) assignment: Bytes,
}

impl ControlClient {
    /// Every group any broker coordinates.
    ///
    /// # Errors
    /// A backend error when a broker refuses or does not answer in time.
    pub(crate) async fn list_groups(&self) -> Result<Vec<GroupListing>, Error> {
        let deadline = &self.deadline();
        let groups = self
            .retrying(deadline, move || async move {
                let metadata = self.fetch_metadata(Some(&[]), deadline).await?;
                let mut groups = Vec::new();
                for broker in &metadata.brokers {
                    let (version, response) = self
                        .call(Node::Broker(broker.id), deadline, |_| {
                            ListGroupsRequest::default()
                        })
                        .await?;
                    if let Some(code) = KafkaCode::from_code(response.error_code) {
                        return Err(ControlError::kafka(
                            code,
                            &format!("listing the groups of broker {}", broker.id),
                            None,
                        ));
                    }
                    groups.extend(response.groups.into_iter().map(|g| GroupListing {
                        group_id: g.group_id.0.to_string(),
                        protocol_type: g.protocol_type.to_string(),
                        state: (version >= 4).then(|| g.group_state.to_string()),
                    }));
                }
                Ok(groups)
            })
            .await?;
        let mut groups = groups;
        groups.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        groups.dedup_by(|a, b| a.group_id == b.group_id);
        Ok(groups)
    }

    /// The state, protocol and members of each group, asked of its coordinator. A group that
    /// does not exist is described as `Dead` with no members.
    ///
    /// # Errors
    /// A backend error when a coordinator refuses or does not answer in time.
    pub(crate) async fn describe_groups(
        &self,
        groups: &[String],
    ) -> Result<Vec<GroupDescription>, Error> {
        let deadline = self.deadline();
        let mut descriptions = Vec::with_capacity(groups.len());
        for group in groups {
            let context = format!("describing group {group}");
            let description = self
                .coordinator_call(
                    group,
                    &deadline,
                    |_| DescribeGroupsRequest::default().with_groups(vec![GroupId(text(group))]),
                    |_, response| {
                        let Some(described) = response.groups.into_iter().next() else {
                            return Err(ControlError::protocol(format!(
                                "{context}: the answer does not mention the group"
                            )));
                        };
                        // Before DescribeGroups v6 an unknown group is described as dead;
                        // from v6 it is GROUP_ID_NOT_FOUND. Callers see the former always.
                        if described.error_code == GROUP_ID_NOT_FOUND {
                            return Ok(GroupDescription {
                                group_id: group.clone(),
                                state: "Dead".into(),
                                protocol_type: String::new(),
                                protocol: String::new(),
                                members: Vec::new(),
                            });
                        }
                        if let Some(code) = KafkaCode::from_code(described.error_code) {
                            return Err(ControlError::kafka(
                                code,
                                &context,
                                described.error_message.as_deref(),
                            ));
                        }
                        Ok(GroupDescription {
                            group_id: described.group_id.0.to_string(),
                            state: described.group_state.to_string(),
                            protocol_type: described.protocol_type.to_string(),
                            protocol: described.protocol_data.to_string(),
                            members: described
                                .members
                                .into_iter()
                                .map(|m| GroupMember {
                                    member_id: m.member_id.to_string(),
                                    group_instance_id: m.group_instance_id.map(|id| id.to_string()),
                                    client_id: m.client_id.to_string(),
                                    client_host: m.client_host.to_string(),
                                    metadata: m.member_metadata,
                                    assignment: m.member_assignment,
                                })
                                .collect(),
                        })
                    },
                )
                .await?;
            descriptions.push(description);
        }
        Ok(descriptions)
    }
}
