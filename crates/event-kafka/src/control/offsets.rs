//! Offsets: ListOffsets at each partition's leader (earliest, latest, by timestamp), and a
//! consumer group's committed offsets at its coordinator (FindCoordinator, OffsetCommit,
//! OffsetFetch).

use std::collections::{BTreeMap, HashMap};

use event_core::Error;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::{
    BrokerId, FindCoordinatorRequest, GroupId, ListOffsetsRequest, OffsetCommitRequest,
    OffsetFetchRequest, OffsetFetchResponse,
};

use super::cluster::topic_name;
use super::connection::{Deadline, join_host_port};
use super::error::{ControlError, FailureKind, KafkaCode};
use super::{ControlClient, Node, text};

/// Which offset ListOffsets asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OffsetSpec {
    /// The first offset still in the log (the log start offset).
    Earliest,
    /// The offset the next record will get (the high watermark).
    Latest,
    /// The first offset whose record's timestamp is at or after this time, in milliseconds
    /// since the Unix epoch.
    Timestamp(i64),
}

impl OffsetSpec {
    /// The timestamp field of the request: Kafka's -2 and -1 name the ends of the log.
    fn wire(self) -> i64 {
        match self {
            OffsetSpec::Earliest => -2,
            OffsetSpec::Latest => -1,
            OffsetSpec::Timestamp(ms) => ms,
        }
    }
}

/// A committed offset of -1 means the group has none for the partition.
fn committed(offset: i64) -> Option<i64> {
    (offset >= 0).then_some(offset)
}

impl ControlClient {
    /// The offsets of `partitions` of `topic` (all of them when `partitions` is empty), asked
    /// of each partition's leader. `None` when no record is at or after the timestamp.
    ///
    /// # Errors
    /// A backend error when the topic or a partition does not exist, or a leader does not
    /// answer in time; a negative timestamp is an invalid argument.
    pub(crate) async fn list_offsets(
        &self,
        topic: &str,
        partitions: &[i32],
        at: OffsetSpec,
    ) -> Result<HashMap<i32, Option<i64>>, Error> {
        if let OffsetSpec::Timestamp(ms) = at
            && ms < 0
        {
            return Err(Error::InvalidArgument(format!(
                "a timestamp to list offsets at must be milliseconds since 1970, not {ms}"
            )));
        }
        let deadline = &self.deadline();
        Ok(self
            .retrying(deadline, move || async move {
                self.list_offsets_once(topic, partitions, at, deadline)
                    .await
            })
            .await?)
    }

    async fn list_offsets_once(
        &self,
        topic: &str,
        partitions: &[i32],
        at: OffsetSpec,
        deadline: &Deadline,
    ) -> Result<HashMap<i32, Option<i64>>, ControlError> {
        let context = format!("listing offsets of topic {topic}");
        let metadata = self
            .fetch_metadata(Some(&[topic.to_string()]), deadline)
            .await?;
        let Some(topic_metadata) = metadata.topic(topic) else {
            return Err(ControlError::protocol(format!(
                "{context}: the metadata response does not mention the topic"
            )));
        };
        if let Some(code) = topic_metadata.error {
            return Err(ControlError::kafka(code, &context, None));
        }
        let wanted: Vec<i32> = if partitions.is_empty() {
            topic_metadata
                .partitions
                .iter()
                .map(|p| p.partition)
                .collect()
        } else {
            partitions.to_vec()
        };
        let mut by_leader: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
        for &partition in &wanted {
            let Some(metadata) = topic_metadata.partition(partition) else {
                return Err(ControlError::refused(format!(
                    "{context}: it has no partition {partition} (it has {})",
                    topic_metadata.partition_count()
                )));
            };
            let Some(leader) = metadata.leader else {
                return Err(ControlError::kafka(
                    KafkaCode::LEADER_NOT_AVAILABLE,
                    &format!("{context}: partition {partition} has no leader"),
                    None,
                ));
            };
            by_leader.entry(leader).or_default().push(partition);
        }

        let mut offsets = HashMap::with_capacity(wanted.len());
        for (leader, partitions) in by_leader {
            let (_, response) = self
                .call(Node::Broker(leader), deadline, |version| {
                    let mut request = ListOffsetsRequest::default()
                        .with_replica_id(BrokerId(-1))
                        .with_topics(vec![
                            ListOffsetsTopic::default()
                                .with_name(topic_name(topic))
                                .with_partitions(
                                    partitions
                                        .iter()
                                        .map(|&p| {
                                            ListOffsetsPartition::default()
                                                .with_partition_index(p)
                                                .with_timestamp(at.wire())
                                        })
                                        .collect(),
                                ),
                        ]);
                    if version >= 10 {
                        request.timeout_ms =
                            i32::try_from(deadline.remaining().as_millis()).unwrap_or(i32::MAX);
                    }
                    request
                })
                .await?;
            for answered in response.topics {
                for partition in answered.partitions {
                    if let Some(code) = KafkaCode::from_code(partition.error_code) {
                        return Err(ControlError::kafka(
                            code,
                            &format!("{context}, partition {}", partition.partition_index),
                            None,
                        ));
                    }
                    offsets.insert(partition.partition_index, committed(partition.offset));
                }
            }
        }
        if let Some(missing) = wanted.iter().find(|p| !offsets.contains_key(p)) {
            return Err(ControlError::protocol(format!(
                "{context}: the leader did not answer for partition {missing}"
            )));
        }
        Ok(offsets)
    }

    /// The broker id of `group`'s coordinator, asked anew.
    ///
    /// # Errors
    /// A transient backend error when the coordinator is not available within the timeout
    /// (on a new cluster, until `__consumer_offsets` exists).
    pub(crate) async fn find_coordinator(&self, group: &str) -> Result<i32, Error> {
        let deadline = &self.deadline();
        Ok(self
            .retrying(deadline, move || async move {
                self.lookup_coordinator(group, deadline).await
            })
            .await?)
    }

    /// The coordinator of `group`: the one last found, or a new lookup.
    pub(super) async fn coordinator(
        &self,
        group: &str,
        deadline: &Deadline,
    ) -> Result<i32, ControlError> {
        let cached = self.routes().coordinators.get(group).copied();
        match cached {
            Some(id) => Ok(id),
            None => self.lookup_coordinator(group, deadline).await,
        }
    }

    async fn lookup_coordinator(
        &self,
        group: &str,
        deadline: &Deadline,
    ) -> Result<i32, ControlError> {
        let (version, response) = self
            .call(Node::Any, deadline, |version| {
                // Key type 0 (the default) is a consumer group.
                let mut request = FindCoordinatorRequest::default();
                if version >= 4 {
                    request.coordinator_keys = vec![text(group)];
                } else {
                    request.key = text(group);
                }
                request
            })
            .await?;
        let (code, message, node, host, port) = if version >= 4 {
            let Some(found) = response.coordinators.into_iter().next() else {
                return Err(ControlError::protocol(format!(
                    "finding the coordinator of group {group}: the answer names none"
                )));
            };
            (
                found.error_code,
                found.error_message,
                found.node_id,
                found.host,
                found.port,
            )
        } else {
            (
                response.error_code,
                response.error_message,
                response.node_id,
                response.host,
                response.port,
            )
        };
        if let Some(code) = KafkaCode::from_code(code) {
            return Err(ControlError::kafka(
                code,
                &format!("finding the coordinator of group {group}"),
                message.as_deref(),
            ));
        }
        let mut routes = self.routes();
        routes.brokers.insert(node.0, join_host_port(&host, port));
        routes.coordinators.insert(group.to_string(), node.0);
        Ok(node.0)
    }

    /// Commits `(topic, partition, offset)`s for `group`: the offset of the next record to
    /// consume, as Kafka consumers commit. A simple (standalone) consumer passes generation
    /// -1 and member id `""`; a group member its generation and member id.
    ///
    /// # Errors
    /// A backend error listing every partition Kafka refused (an unknown member or stale
    /// generation after a rebalance, an unknown topic), or when the coordinator does not
    /// answer in time.
    pub(crate) async fn commit_offsets(
        &self,
        group: &str,
        generation_id: i32,
        member_id: &str,
        offsets: &[(String, i32, i64)],
    ) -> Result<(), Error> {
        if offsets.is_empty() {
            return Ok(());
        }
        let mut by_topic: BTreeMap<&str, Vec<(i32, i64)>> = BTreeMap::new();
        for (topic, partition, offset) in offsets {
            by_topic
                .entry(topic.as_str())
                .or_default()
                .push((*partition, *offset));
        }
        let deadline = self.deadline();
        let context = format!("committing offsets of group {group}");
        Ok(self
            .coordinator_call(
                group,
                &deadline,
                |_| {
                    let mut request = OffsetCommitRequest::default()
                        .with_group_id(GroupId(text(group)))
                        .with_generation_id_or_member_epoch(generation_id)
                        .with_member_id(text(member_id));
                    request.topics = by_topic
                        .iter()
                        .map(|(topic, partitions)| {
                            OffsetCommitRequestTopic::default()
                                .with_name(topic_name(topic))
                                .with_partitions(
                                    partitions
                                        .iter()
                                        .map(|&(partition, offset)| {
                                            OffsetCommitRequestPartition::default()
                                                .with_partition_index(partition)
                                                .with_committed_offset(offset)
                                        })
                                        .collect(),
                                )
                        })
                        .collect();
                    request
                },
                |_, response| {
                    let failures: Vec<(String, i32, KafkaCode)> = response
                        .topics
                        .iter()
                        .flat_map(|topic| {
                            topic.partitions.iter().filter_map(|p| {
                                KafkaCode::from_code(p.error_code)
                                    .map(|code| (topic.name.0.to_string(), p.partition_index, code))
                            })
                        })
                        .collect();
                    partition_failures(&context, failures)
                },
            )
            .await?)
    }

    /// The committed offsets of `group` for `(topic, partitions)` (all of a topic's
    /// partitions when its list is empty); `None` where the group has committed nothing.
    ///
    /// # Errors
    /// A backend error when a topic does not exist (for an empty partition list), the
    /// coordinator refuses, or it does not answer in time.
    pub(crate) async fn fetch_offsets(
        &self,
        group: &str,
        topics: &[(String, Vec<i32>)],
    ) -> Result<HashMap<(String, i32), Option<i64>>, Error> {
        let deadline = self.deadline();
        let mut wanted: Vec<(String, Vec<i32>)> = Vec::with_capacity(topics.len());
        for (topic, partitions) in topics {
            let partitions = if partitions.is_empty() {
                let metadata = self
                    .fetch_metadata(Some(std::slice::from_ref(topic)), &deadline)
                    .await?;
                match metadata.topic(topic) {
                    Some(t) if t.error.is_none() => {
                        t.partitions.iter().map(|p| p.partition).collect()
                    }
                    found => {
                        let code = found.and_then(|t| t.error).unwrap_or(KafkaCode(3));
                        return Err(ControlError::kafka(
                            code,
                            &format!("fetching offsets of group {group} for topic {topic}"),
                            None,
                        )
                        .into());
                    }
                }
            } else {
                partitions.clone()
            };
            wanted.push((topic.clone(), partitions));
        }
        if wanted.is_empty() {
            return Ok(HashMap::new());
        }
        let context = format!("fetching offsets of group {group}");
        Ok(self
            .coordinator_call(
                group,
                &deadline,
                |version| {
                    let mut request = OffsetFetchRequest::default();
                    if version >= 8 {
                        request.groups = vec![
                            OffsetFetchRequestGroup::default()
                                .with_group_id(GroupId(text(group)))
                                .with_topics(Some(
                                    wanted
                                        .iter()
                                        .map(|(topic, partitions)| {
                                            OffsetFetchRequestTopics::default()
                                                .with_name(topic_name(topic))
                                                .with_partition_indexes(partitions.clone())
                                        })
                                        .collect(),
                                )),
                        ];
                    } else {
                        request.group_id = GroupId(text(group));
                        request.topics = Some(
                            wanted
                                .iter()
                                .map(|(topic, partitions)| {
                                    OffsetFetchRequestTopic::default()
                                        .with_name(topic_name(topic))
                                        .with_partition_indexes(partitions.clone())
                                })
                                .collect(),
                        );
                    }
                    request
                },
                |version, response| fetched_offsets(&context, group, version, response),
            )
            .await?)
    }
}

/// The offsets of an OffsetFetch response, which moved into a per-group list in v8.
fn fetched_offsets(
    context: &str,
    group: &str,
    version: i16,
    response: OffsetFetchResponse,
) -> Result<HashMap<(String, i32), Option<i64>>, ControlError> {
    let mut offsets = HashMap::new();
    let mut failures = Vec::new();
    if version >= 8 {
        let Some(answer) = response
            .groups
            .into_iter()
            .find(|g| g.group_id.0.as_str() == group)
        else {
            return Err(ControlError::protocol(format!(
                "{context}: the answer does not mention the group"
            )));
        };
        if let Some(code) = KafkaCode::from_code(answer.error_code) {
            return Err(ControlError::kafka(code, context, None));
        }
        for topic in answer.topics {
            let name = topic.name.0.to_string();
            for p in topic.partitions {
                match KafkaCode::from_code(p.error_code) {
                    Some(code) => failures.push((name.clone(), p.partition_index, code)),
                    None => {
                        offsets.insert(
                            (name.clone(), p.partition_index),
                            committed(p.committed_offset),
                        );
                    }
                }
            }
        }
    } else {
        if let Some(code) = KafkaCode::from_code(response.error_code) {
            return Err(ControlError::kafka(code, context, None));
        }
        for topic in response.topics {
            let name = topic.name.0.to_string();
            for p in topic.partitions {
                match KafkaCode::from_code(p.error_code) {
                    Some(code) => failures.push((name.clone(), p.partition_index, code)),
                    None => {
                        offsets.insert(
                            (name.clone(), p.partition_index),
                            committed(p.committed_offset),
                        );
                    }
                }
            }
        }
    }
    partition_failures(context, failures)?;
    Ok(offsets)
}

/// One error for every partition Kafka refused. Its kind follows a routing failure when there
/// is one (a coordinator error is reported per partition), else the first failure.
fn partition_failures(
    context: &str,
    failures: Vec<(String, i32, KafkaCode)>,
) -> Result<(), ControlError> {
    let Some(first) = failures.first() else {
        return Ok(());
    };
    let code = failures
        .iter()
        .map(|f| f.2)
        .find(|c| c.is_routing())
        .unwrap_or(first.2);
    let list: Vec<String> = failures
        .iter()
        .map(|(topic, partition, code)| format!("{topic}/{partition}: {code}"))
        .collect();
    Err(ControlError::new(
        FailureKind::Kafka(code),
        format!("{context}: {}", list.join(", ")),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ends_of_the_log_have_kafka_sentinels() {
        assert_eq!(OffsetSpec::Earliest.wire(), -2);
        assert_eq!(OffsetSpec::Latest.wire(), -1);
        assert_eq!(
            OffsetSpec::Timestamp(1_700_000_000_000).wire(),
            1_700_000_000_000
        );
        assert_eq!(committed(-1), None);
        assert_eq!(committed(0), Some(0));
    }

    #[test]
    fn partition_failures_name_every_partition_and_prefer_routing() {
        assert!(partition_failures("x", Vec::new()).is_ok());
        let e = partition_failures(
            "committing offsets of group g",
            vec![
                ("t".into(), 0, KafkaCode(22)),
                ("t".into(), 1, KafkaCode(16)),
            ],
        )
        .unwrap_err();
        assert_eq!(
            e.message,
            "committing offsets of group g: t/0: ILLEGAL_GENERATION (22), t/1: NOT_COORDINATOR (16)"
        );
        assert!(e.is_routing());
    }
}
