//! [`KafkaAdmin`]: the cluster's facts and a simple group's offsets, for tools (`eventbus
//! doctor`, `eventbus bridge`), on the bus's own control-plane client, so with its TLS and
//! SASL settings, timeouts and retries.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use event_core::{EnvSettings as _, Error};

use crate::config::KafkaConfig;
use crate::control::{ControlClient, DEFAULT_TIMEOUT};

/// Administration of a Kafka cluster through the bus's control-plane client: the brokers and
/// topics, the APIs the bus needs that brokers lack, topic configs, and the committed offsets
/// of a simple consumer group (one without members, as a Java consumer with `assign()` and
/// `commitSync()` keeps: `kafka-consumer-groups.sh --describe` shows them like any group's).
///
/// Every call is bounded by the control client's timeout (10 s) and retried there when a
/// leader or coordinator moved. Cheap to clone; clones share connections.
///
/// ```no_run
/// use event_kafka::{KafkaAdmin, KafkaConfig};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let kafka = KafkaConfig::builder().bootstrap_servers(["localhost:9092"]).build()?;
/// let admin = KafkaAdmin::connect(&kafka).await?;
/// let cluster = admin.cluster().await?;
/// println!("{} broker(s), {} topic(s)", cluster.brokers, cluster.topics.len());
/// for missing in admin.missing_apis().await? {
///     println!("the bus cannot run here: {missing}");
/// }
/// let topic = "ai-opportunity.opportunity.created".to_string();
/// admin.commit_offsets("my-tool", &[(topic.clone(), 0, 42)]).await?;
/// let committed = admin.committed_offsets("my-tool", &[(topic.clone(), 0)]).await?;
/// assert_eq!(committed.get(&(topic, 0)), Some(&42));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct KafkaAdmin {
    control: ControlClient,
}

/// The cluster as one Metadata request describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct KafkaCluster {
    /// The cluster's id (`None` from brokers older than Kafka 0.10.1).
    pub cluster_id: Option<String>,
    /// How many brokers are alive in the cluster.
    pub brokers: usize,
    /// Every topic, internal ones (`__consumer_offsets`) included, by name.
    pub topics: Vec<KafkaTopic>,
}

impl KafkaCluster {
    /// The topic named `name`, when the cluster has it.
    pub fn topic(&self, name: &str) -> Option<&KafkaTopic> {
        self.topics.iter().find(|t| t.name == name)
    }
}

/// One topic of a [`KafkaCluster`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct KafkaTopic {
    /// The topic's name.
    pub name: String,
    /// Kafka's own topics (`__consumer_offsets`, `__transaction_state`).
    pub internal: bool,
    /// Its partitions, by number.
    pub partitions: Vec<KafkaPartition>,
}

/// One partition of a [`KafkaTopic`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct KafkaPartition {
    /// The partition's number.
    pub partition: i32,
    /// The broker id of its leader; `None` when it has none (nothing can be written or read
    /// there until one of its replicas' brokers is back).
    pub leader: Option<i32>,
    /// How many replicas it has (its replication factor).
    pub replicas: usize,
    /// How many of them are in sync with the leader.
    pub in_sync: usize,
}

/// An API the bus sends that a broker does not speak at a version the bus can use: the bus
/// cannot run on that broker.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct MissingApi {
    /// The broker's id.
    pub broker: i32,
    /// The API's name in Kafka's protocol guide (`Produce`, `JoinGroup`, ...).
    pub api: &'static str,
    /// The oldest and newest versions the bus sends it at. `Metadata` and `ListOffsets` come
    /// twice when missing: the data path and the control plane speak different ranges.
    pub bus_versions: (i16, i16),
    /// The versions the broker offers; `None` when it does not offer the API at all.
    pub broker_versions: Option<(i16, i16)>,
}

impl fmt::Display for MissingApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (least, most) = self.bus_versions;
        match self.broker_versions {
            Some((min, max)) => write!(
                f,
                "{} (broker {} v{min}..=v{max}, the bus v{least}..=v{most})",
                self.api, self.broker
            ),
            None => write!(f, "{} (not offered by broker {})", self.api, self.broker),
        }
    }
}

impl KafkaAdmin {
    /// Connects to the brokers of `kafka` as [`KafkaBus::connect`](crate::KafkaBus::connect)
    /// connects its control plane: the bootstrap servers, `KAFKA_SASL_*` and `KAFKA_TLS_*`.
    /// The topic and group settings are not used.
    ///
    /// # Errors
    /// [`Error::Config`] for a bad configuration; [`Error::Backend`] when no broker can be
    /// reached (transient), or one refuses the credentials or is not trusted (permanent).
    pub async fn connect(kafka: &KafkaConfig) -> Result<Self, Error> {
        kafka.validate()?;
        let control =
            ControlClient::connect(&kafka.bootstrap_servers, &kafka.security(), DEFAULT_TIMEOUT)
                .await?;
        Ok(Self { control })
    }

    /// The brokers and every topic with its partitions, leaders and replicas.
    ///
    /// # Errors
    /// A backend error when no broker answers in time.
    pub async fn cluster(&self) -> Result<KafkaCluster, Error> {
        let metadata = self.control.metadata(None).await?;
        Ok(KafkaCluster {
            cluster_id: metadata.cluster_id,
            brokers: metadata.brokers.len(),
            topics: metadata
                .topics
                .into_iter()
                .map(|t| KafkaTopic {
                    name: t.name,
                    internal: t.internal,
                    partitions: t
                        .partitions
                        .into_iter()
                        .map(|p| KafkaPartition {
                            partition: p.partition,
                            leader: p.leader,
                            replicas: p.replicas.len(),
                            in_sync: p.in_sync_replicas.len(),
                        })
                        .collect(),
                })
                .collect(),
        })
    }

    /// The APIs the bus sends (producing, fetching, offsets, topics, consumer groups) that a
    /// broker of the cluster does not offer at a version the bus speaks, broker by broker;
    /// empty when every broker can serve the bus. Each broker is asked on a connection of its
    /// own (ApiVersions).
    ///
    /// # Errors
    /// A backend error when a broker cannot be reached in time.
    pub async fn missing_apis(&self) -> Result<Vec<MissingApi>, Error> {
        let mut brokers: Vec<i32> = self
            .control
            .metadata(Some(&[]))
            .await?
            .brokers
            .iter()
            .map(|b| b.id)
            .collect();
        brokers.sort_unstable();
        let mut missing = Vec::new();
        for broker in brokers {
            let versions = self.control.broker_versions(broker).await?;
            missing.extend(versions.lacking().into_iter().map(|lacking| MissingApi {
                broker,
                api: lacking.name,
                bus_versions: lacking.client,
                broker_versions: lacking.broker,
            }));
        }
        Ok(missing)
    }

    /// Every config of each of `topics` (its own and the defaults it inherits, such as
    /// `retention.ms` and `cleanup.policy`), by name; sensitive values are left out.
    ///
    /// # Errors
    /// A backend error naming the topic when one does not exist, or when no broker answers.
    pub async fn topic_configs(
        &self,
        topics: &[String],
    ) -> Result<HashMap<String, HashMap<String, String>>, Error> {
        self.control.describe_topic_configs(topics).await
    }

    /// The offsets `group` committed for `partitions` (`(topic, partition)`): each the next
    /// offset to read. A partition the group has no offset for is left out, so a group that
    /// never committed gives an empty map.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty group name; a backend error when the group's
    /// coordinator refuses or does not answer in time.
    pub async fn committed_offsets(
        &self,
        group: &str,
        partitions: &[(String, i32)],
    ) -> Result<BTreeMap<(String, i32), i64>, Error> {
        check_group(group)?;
        let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for (topic, partition) in partitions {
            by_topic.entry(topic).or_default().push(*partition);
        }
        // An empty partition list would ask for all of a topic's partitions.
        let request: Vec<(String, Vec<i32>)> = by_topic
            .into_iter()
            .map(|(topic, partitions)| (topic.to_string(), partitions))
            .collect();
        if request.is_empty() {
            return Ok(BTreeMap::new());
        }
        Ok(self
            .control
            .fetch_offsets(group, &request)
            .await?
            .into_iter()
            .filter_map(|(at, offset)| Some((at, offset?)))
            .collect())
    }

    /// Commits `offsets` (`(topic, partition, offset)`, each offset the next one to read) for
    /// `group` as a simple consumer does: generation -1, no member id.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty group name; a backend error listing every
    /// partition Kafka refused. A group with live members refuses with `UNKNOWN_MEMBER_ID` or
    /// `ILLEGAL_GENERATION`: such a group's offsets belong to its members.
    pub async fn commit_offsets(
        &self,
        group: &str,
        offsets: &[(String, i32, i64)],
    ) -> Result<(), Error> {
        check_group(group)?;
        self.control.commit_offsets(group, -1, "", offsets).await
    }
}

impl fmt::Debug for KafkaAdmin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaAdmin")
            .field("timeout", &self.control.timeout())
            .finish_non_exhaustive()
    }
}

fn check_group(group: &str) -> Result<(), Error> {
    if group.trim().is_empty() {
        return Err(Error::InvalidArgument(
            "a consumer group name must not be empty".into(),
        ));
    }
    Ok(())
}
