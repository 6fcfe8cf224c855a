//! Cluster metadata and topic administration: Metadata, CreateTopics (with configs, which
//! `rskafka` cannot send), DescribeConfigs and DeleteTopics.

use std::collections::HashMap;
use std::time::Duration;

use event_core::Error;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    CreateTopicsRequest, DeleteTopicsRequest, DescribeConfigsRequest, MetadataRequest, TopicName,
};

use super::connection::{Deadline, join_host_port};
use super::error::{ControlError, FailureKind, KafkaCode};
use super::versions::ApiRequest;
use super::{ControlClient, FIRST_PAUSE, LONGEST_PAUSE, Node, text};

/// DescribeConfigs' resource type of a topic.
const TOPIC_RESOURCE: i8 = 2;

/// The cluster as one Metadata response describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ClusterMetadata {
    /// The cluster's id.
    pub(crate) cluster_id: Option<String>,
    /// The broker the cluster names as controller (in KRaft, any broker, which forwards).
    pub(crate) controller_id: Option<i32>,
    /// The live brokers, by id.
    pub(crate) brokers: Vec<BrokerMetadata>,
    /// The topics asked for (or all), by name.
    pub(crate) topics: Vec<TopicMetadata>,
}

impl ClusterMetadata {
    /// One topic's metadata.
    pub(crate) fn topic(&self, name: &str) -> Option<&TopicMetadata> {
        self.topics.iter().find(|t| t.name == name)
    }
}

/// One broker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct BrokerMetadata {
    pub(crate) id: i32,
    pub(crate) host: String,
    pub(crate) port: i32,
    pub(crate) rack: Option<String>,
}

/// One topic. A topic that does not exist comes back with `error`
/// `UNKNOWN_TOPIC_OR_PARTITION` and no partitions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TopicMetadata {
    pub(crate) name: String,
    pub(crate) error: Option<KafkaCode>,
    /// Kafka's own topics (`__consumer_offsets`).
    pub(crate) internal: bool,
    /// By partition index.
    pub(crate) partitions: Vec<PartitionMetadata>,
}

impl TopicMetadata {
    pub(crate) fn partition_count(&self) -> usize {
        self.partitions.len()
    }

    pub(crate) fn partition(&self, index: i32) -> Option<&PartitionMetadata> {
        self.partitions.iter().find(|p| p.partition == index)
    }
}

/// One partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PartitionMetadata {
    pub(crate) partition: i32,
    /// The leader's broker id; `None` during a leader election.
    pub(crate) leader: Option<i32>,
    pub(crate) replicas: Vec<i32>,
    pub(crate) in_sync_replicas: Vec<i32>,
    pub(crate) error: Option<KafkaCode>,
}

/// A topic to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TopicSpec {
    pub(crate) name: String,
    pub(crate) partitions: i32,
    pub(crate) replication_factor: i16,
    /// Topic configs such as `retention.ms` and `cleanup.policy`.
    pub(crate) configs: Vec<(String, String)>,
}

/// What became of one topic of a CreateTopics call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum TopicCreation {
    /// Created with the given settings.
    Created,
    /// It existed already, perhaps with other settings: see
    /// [`ControlClient::describe_topic_configs`] and the metadata.
    AlreadyExists,
    /// Refused, with Kafka's error name and message (an invalid name, too few brokers for
    /// the replication factor, a bad config value, ...).
    Failed(String),
}

impl ControlClient {
    /// The cluster's brokers and the given topics (`None`: all topics; `Some(&[])`: none).
    /// Never creates topics.
    ///
    /// # Errors
    /// A backend error when no broker answers in time.
    pub(crate) async fn metadata(
        &self,
        topics: Option<&[String]>,
    ) -> Result<ClusterMetadata, Error> {
        let deadline = self.deadline();
        Ok(self.fetch_metadata(topics, &deadline).await?)
    }

    /// Metadata, also refreshing the broker addresses and the controller this client routes
    /// by.
    pub(super) async fn fetch_metadata(
        &self,
        topics: Option<&[String]>,
        deadline: &Deadline,
    ) -> Result<ClusterMetadata, ControlError> {
        let (version, response) = self
            .call(Node::Any, deadline, |version| {
                let mut request = MetadataRequest::default();
                request.topics = topics.map(|names| {
                    names
                        .iter()
                        .map(|name| {
                            MetadataRequestTopic::default().with_name(Some(topic_name(name)))
                        })
                        .collect()
                });
                // Versions before 4 always create topics on request when the broker allows it.
                if version >= 4 {
                    request.allow_auto_topic_creation = false;
                }
                request
            })
            .await?;
        if version >= 13
            && let Some(code) = KafkaCode::from_code(response.error_code)
        {
            return Err(ControlError::kafka(
                code,
                "asking for the cluster's metadata",
                None,
            ));
        }

        let brokers: Vec<BrokerMetadata> = response
            .brokers
            .into_iter()
            .map(|b| BrokerMetadata {
                id: b.node_id.0,
                host: b.host.to_string(),
                port: b.port,
                rack: b.rack.map(|r| r.to_string()),
            })
            .collect();
        let controller_id = (response.controller_id.0 >= 0).then_some(response.controller_id.0);
        {
            let mut routes = self.routes();
            for broker in &brokers {
                routes
                    .brokers
                    .insert(broker.id, join_host_port(&broker.host, broker.port));
            }
            if controller_id.is_some() {
                routes.controller = controller_id;
            }
        }
        let mut topics: Vec<TopicMetadata> = response
            .topics
            .into_iter()
            .map(|t| {
                let mut partitions: Vec<PartitionMetadata> = t
                    .partitions
                    .into_iter()
                    .map(|p| PartitionMetadata {
                        partition: p.partition_index,
                        leader: (p.leader_id.0 >= 0).then_some(p.leader_id.0),
                        replicas: p.replica_nodes.into_iter().map(|b| b.0).collect(),
                        in_sync_replicas: p.isr_nodes.into_iter().map(|b| b.0).collect(),
                        error: KafkaCode::from_code(p.error_code),
                    })
                    .collect();
                partitions.sort_by_key(|p| p.partition);
                TopicMetadata {
                    name: t.name.map(|n| n.0.to_string()).unwrap_or_default(),
                    error: KafkaCode::from_code(t.error_code),
                    internal: t.is_internal,
                    partitions,
                }
            })
            .collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(ClusterMetadata {
            cluster_id: response.cluster_id.map(|id| id.to_string()),
            controller_id,
            brokers,
            topics,
        })
    }

    /// Creates topics with their partitions, replication factor and configs. A topic that
    /// exists is [`TopicCreation::AlreadyExists`], not an error; a refused one is
    /// [`TopicCreation::Failed`] with Kafka's reason. The results follow `topics`' order.
    ///
    /// Returns once every partition of the created (or existing) topics has a leader in the
    /// metadata, so they can be used at once, or when the deadline passes.
    ///
    /// `timeout` is how long the brokers may take to create them; the call itself may take
    /// a little longer (at least the client's timeout).
    ///
    /// # Errors
    /// A backend error when no broker answers in time.
    pub(crate) async fn create_topics(
        &self,
        topics: &[TopicSpec],
        timeout: Duration,
    ) -> Result<Vec<(String, TopicCreation)>, Error> {
        let deadline = Deadline::after(self.timeout().max(timeout + Duration::from_secs(2)));
        let timeout_ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        let mut outcomes: HashMap<String, TopicCreation> = HashMap::new();
        let mut pending: Vec<&TopicSpec> = topics.iter().collect();
        let mut pause = FIRST_PAUSE;
        while !pending.is_empty() {
            let (_, response) = self
                .controller_call(&deadline, |_| {
                    let mut request = CreateTopicsRequest::default();
                    request.timeout_ms = timeout_ms;
                    request.topics = pending.iter().map(|spec| creatable(spec)).collect();
                    request
                })
                .await?;
            let mut wrong_broker = Vec::new();
            for result in response.topics {
                let name = result.name.0.to_string();
                let outcome = match KafkaCode::from_code(result.error_code) {
                    None => TopicCreation::Created,
                    Some(KafkaCode::TOPIC_ALREADY_EXISTS) => TopicCreation::AlreadyExists,
                    Some(code) if code.is_routing() && deadline.remaining() > pause => {
                        wrong_broker.push(name);
                        continue;
                    }
                    Some(code) => TopicCreation::Failed(match result.error_message.as_deref() {
                        Some(message) if !message.is_empty() => format!("{code}: {message}"),
                        _ => code.to_string(),
                    }),
                };
                outcomes.insert(name, outcome);
            }
            pending.retain(|spec| wrong_broker.contains(&spec.name));
            if !pending.is_empty() {
                // The controller moved: learn where it is now, then ask again.
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(LONGEST_PAUSE);
                self.fetch_metadata(Some(&[]), &deadline).await?;
            }
        }
        let ready: Vec<String> = outcomes
            .iter()
            .filter(|(_, outcome)| !matches!(outcome, TopicCreation::Failed(_)))
            .map(|(name, _)| name.clone())
            .collect();
        self.wait_for_leaders(&ready, &deadline).await;
        Ok(topics
            .iter()
            .map(|spec| {
                let outcome = outcomes.remove(&spec.name).unwrap_or_else(|| {
                    TopicCreation::Failed("the broker did not answer for this topic".into())
                });
                (spec.name.clone(), outcome)
            })
            .collect())
    }

    /// Sends a request that the controller takes (CreateTopics, DeleteTopics): to the broker
    /// the metadata names as controller, or to any broker when it names none or that one
    /// cannot be reached. Pre-KRaft clusters take these only at the controller; KRaft brokers
    /// forward them, and name a random live broker as the controller, which may be one that
    /// has just died and is not fenced yet.
    async fn controller_call<R: ApiRequest>(
        &self,
        deadline: &Deadline,
        build: impl Fn(i16) -> R,
    ) -> Result<(i16, R::Response), ControlError> {
        let controller = self.routes().controller;
        if let Some(id) = controller {
            match self.call(Node::Broker(id), deadline, &build).await {
                Err(e) if e.kind == FailureKind::Io => {
                    tracing::debug!(error = %e, "the Kafka controller is unreachable; asking another broker");
                }
                answered => return answered,
            }
        }
        self.call(Node::Any, deadline, build).await
    }

    /// Waits, until the deadline at most, for every partition of `topics` to have a leader in
    /// the metadata: CreateTopics answers once the controller has the topic, and brokers learn
    /// of it a moment later, so a topic used at once would look unknown.
    async fn wait_for_leaders(&self, topics: &[String], deadline: &Deadline) {
        let mut pause = FIRST_PAUSE;
        while !topics.is_empty() {
            let ready = match self.fetch_metadata(Some(topics), deadline).await {
                Ok(metadata) => topics.iter().all(|name| {
                    metadata.topic(name).is_some_and(|t| {
                        t.error.is_none()
                            && !t.partitions.is_empty()
                            && t.partitions.iter().all(|p| p.leader.is_some())
                    })
                }),
                Err(e) => {
                    tracing::debug!(error = %e, "waiting for new topics' leaders");
                    false
                }
            };
            if ready || deadline.remaining() <= pause {
                return;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(LONGEST_PAUSE);
        }
    }

    /// Every config of each topic whose value is not null (sensitive values are), by name:
    /// the defaults included, so `retention.ms` and `cleanup.policy` are always there.
    ///
    /// # Errors
    /// A backend error naming the topic when one does not exist (transient: a topic just
    /// created may not be known to every broker yet), or when no broker answers.
    pub(crate) async fn describe_topic_configs(
        &self,
        topics: &[String],
    ) -> Result<HashMap<String, HashMap<String, String>>, Error> {
        if topics.is_empty() {
            return Ok(HashMap::new());
        }
        let deadline = self.deadline();
        let (_, response) = self
            .call(Node::Any, &deadline, |_| {
                let mut request = DescribeConfigsRequest::default();
                request.resources = topics
                    .iter()
                    .map(|name| {
                        DescribeConfigsResource::default()
                            .with_resource_type(TOPIC_RESOURCE)
                            .with_resource_name(text(name))
                            .with_configuration_keys(None)
                    })
                    .collect();
                request
            })
            .await?;
        let mut configs = HashMap::new();
        for result in response.results {
            let topic = result.resource_name.to_string();
            if let Some(code) = KafkaCode::from_code(result.error_code) {
                return Err(ControlError::kafka(
                    code,
                    &format!("describing the configs of topic {topic}"),
                    result.error_message.as_deref(),
                )
                .into());
            }
            let values = result
                .configs
                .into_iter()
                .filter_map(|c| Some((c.name.to_string(), c.value?.to_string())))
                .collect();
            configs.insert(topic, values);
        }
        Ok(configs)
    }

    /// Deletes topics; a topic that does not exist is not an error. For tests and
    /// administration: the bus never deletes its topics.
    ///
    /// # Errors
    /// A backend error naming the first topic Kafka refused to delete, or when no broker
    /// answers.
    pub(crate) async fn delete_topics(&self, topics: &[String]) -> Result<(), Error> {
        if topics.is_empty() {
            return Ok(());
        }
        let deadline = self.deadline();
        let timeout_ms = i32::try_from(self.timeout().as_millis()).unwrap_or(i32::MAX);
        let (_, response) = self
            .controller_call(&deadline, |version| {
                let mut request = DeleteTopicsRequest::default();
                request.timeout_ms = timeout_ms;
                if version >= 6 {
                    request.topics = topics
                        .iter()
                        .map(|name| DeleteTopicState::default().with_name(Some(topic_name(name))))
                        .collect();
                } else {
                    request.topic_names = topics.iter().map(|name| topic_name(name)).collect();
                }
                request
            })
            .await?;
        for result in response.responses {
            match KafkaCode::from_code(result.error_code) {
                None | Some(KafkaCode(3)) => {}
                Some(code) => {
                    let name = result.name.map(|n| n.0.to_string()).unwrap_or_default();
                    return Err(ControlError::kafka(
                        code,
                        &format!("deleting topic {name}"),
                        result.error_message.as_deref(),
                    )
                    .into());
                }
            }
        }
        Ok(())
    }
}

pub(super) fn topic_name(name: &str) -> TopicName {
    TopicName(text(name))
}

fn creatable(spec: &TopicSpec) -> CreatableTopic {
    CreatableTopic::default()
        .with_name(topic_name(&spec.name))
        .with_num_partitions(spec.partitions)
        .with_replication_factor(spec.replication_factor)
        .with_configs(
            spec.configs
                .iter()
                .map(|(name, value)| {
                    CreatableTopicConfig::default()
                        .with_name(text(name))
                        .with_value(Some(text(value)))
                })
                .collect(),
        )
}
