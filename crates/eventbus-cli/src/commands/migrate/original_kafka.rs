//! Reading the original system's Kafka topics as its `KafkaEventBus` wrote them: one topic per
//! type, `{prefix}.{type with dots as dashes}` (`ai-opportunity.EventType-OPPORTUNITY_CREATED`
//! for an enum type, `ai-opportunity.opportunity-created` for a string type), each record's key
//! the partition key or the event id, its value `json.dumps(event.to_dict())`, no headers.
//! Read only: nothing is written to the original's topics.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context as _;
use rskafka::BackoffConfig;
use rskafka::client::partition::{OffsetAt, PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder};
use rskafka::record::{Record, UndecodableRecords};

/// How long one call may take.
const TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes asked for per fetch.
const FETCH_BYTES: i32 = 4 * 1024 * 1024;

/// The original's default `KAFKA_TOPIC_PREFIX`.
pub(crate) const DEFAULT_PREFIX: &str = "ai-opportunity";

/// One partition of one of the original's topics.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Partition {
    pub(crate) topic: String,
    pub(crate) partition: i32,
}

/// What one fetch returned.
pub(crate) struct Fetched {
    /// Records with their offsets, in offset order.
    pub(crate) records: Vec<(i64, Record)>,
    /// Data that could not be decoded into records.
    pub(crate) undecodable: Vec<UndecodableRecords>,
    /// Where to fetch next.
    pub(crate) next: i64,
}

/// The type a topic of the original names, as the original spelled it (`EventType.X` or a
/// dotted value), when `topic` is one of its topics under `prefix`: `{prefix}.` and a rest
/// without dots (this bus's own topics keep the dots, `{prefix}.opportunity.created`, so a
/// bus sharing the prefix is not read as the original).
pub(crate) fn topic_type(prefix: &str, topic: &str) -> Option<String> {
    let rest = topic.strip_prefix(prefix)?.strip_prefix('.')?;
    if rest.is_empty() || rest.contains('.') {
        return None;
    }
    Some(match rest.strip_prefix("EventType-") {
        Some(member) => format!("EventType.{member}"),
        None => rest.replace('-', "."),
    })
}

/// A connection to the original's Kafka cluster.
pub(crate) struct OriginalKafka {
    client: Client,
    brokers: String,
    partitions: HashMap<Partition, PartitionClient>,
}

impl OriginalKafka {
    /// Connects to `brokers` (comma-separated `host:port`, as `KAFKA_BOOTSTRAP_SERVERS`).
    pub(crate) async fn connect(brokers: &str) -> anyhow::Result<Self> {
        let servers: Vec<String> = brokers
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        anyhow::ensure!(
            !servers.is_empty(),
            "--kafka-brokers is empty: give the original's KAFKA_BOOTSTRAP_SERVERS (host:port,...)"
        );
        let builder = ClientBuilder::new(servers)
            .client_id("eventbus-migrate")
            .backoff_config(BackoffConfig {
                init_backoff: Duration::from_millis(50),
                max_backoff: Duration::from_secs(1),
                base: 3.0,
                deadline: Some(TIMEOUT / 2),
            });
        let client = match tokio::time::timeout(TIMEOUT, builder.build()).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => anyhow::bail!(
                "cannot connect to the original's Kafka at {brokers}: {e} (is the broker running and --kafka-brokers right?)"
            ),
            Err(_) => anyhow::bail!(
                "cannot connect to the original's Kafka at {brokers} within {TIMEOUT:?}: is the broker running and --kafka-brokers right?"
            ),
        };
        Ok(Self {
            client,
            brokers: brokers.to_string(),
            partitions: HashMap::new(),
        })
    }

    /// The original's topics under `prefix`, sorted by name, with their partitions.
    pub(crate) async fn topics(&self, prefix: &str) -> anyhow::Result<Vec<(String, Vec<i32>)>> {
        let listed = tokio::time::timeout(TIMEOUT, self.client.list_topics())
            .await
            .map_err(|_| anyhow::anyhow!("listing the topics of {} timed out", self.brokers))?
            .with_context(|| format!("listing the topics of {}", self.brokers))?;
        let mut topics: Vec<(String, Vec<i32>)> = listed
            .into_iter()
            .filter(|t| topic_type(prefix, &t.name).is_some())
            .map(|t| {
                let mut partitions = t.partitions.into_iter().collect::<Vec<_>>();
                partitions.sort_unstable();
                (t.name, partitions)
            })
            .collect();
        topics.sort();
        Ok(topics)
    }

    async fn partition(&mut self, at: &Partition) -> anyhow::Result<&PartitionClient> {
        if !self.partitions.contains_key(at) {
            let client = tokio::time::timeout(
                TIMEOUT,
                self.client.partition_client(
                    at.topic.clone(),
                    at.partition,
                    UnknownTopicHandling::Error,
                ),
            )
            .await
            .map_err(|_| anyhow::anyhow!("reaching {}/{} timed out", at.topic, at.partition))?
            .with_context(|| format!("reaching {}/{}", at.topic, at.partition))?;
            self.partitions.insert(at.clone(), client);
        }
        Ok(&self.partitions[at])
    }

    /// The first offset still kept and the high watermark of a partition.
    pub(crate) async fn bounds(&mut self, at: &Partition) -> anyhow::Result<(i64, i64)> {
        let result = async {
            let client = self.partition(at).await?;
            let earliest = client.get_offset(OffsetAt::Earliest).await?;
            let latest = client.get_offset(OffsetAt::Latest).await?;
            anyhow::Ok((earliest, latest))
        };
        let bounds = tokio::time::timeout(TIMEOUT, result).await;
        let bounds = match bounds {
            Ok(Ok(bounds)) => Ok(bounds),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(anyhow::anyhow!("timed out")),
        };
        if bounds.is_err() {
            self.partitions.remove(at);
        }
        bounds.with_context(|| format!("the offsets of {}/{}", at.topic, at.partition))
    }

    /// Records of a partition from `offset` on, waiting up to `max_wait` for some to arrive.
    /// An offset retention has removed moves to the earliest one kept.
    pub(crate) async fn fetch(
        &mut self,
        at: &Partition,
        offset: i64,
        max_wait: Duration,
    ) -> anyhow::Result<Fetched> {
        let wait_ms = i32::try_from(max_wait.as_millis()).unwrap_or(i32::MAX);
        let result = async {
            let client = self.partition(at).await?;
            match client.fetch(offset, 1..FETCH_BYTES, wait_ms).await {
                Ok(fetched) => anyhow::Ok(Fetched {
                    records: fetched
                        .records
                        .into_iter()
                        .filter(|r| r.offset >= offset)
                        .map(|r| (r.offset, r.record))
                        .collect(),
                    undecodable: fetched.undecodable,
                    next: fetched.next_offset.max(offset),
                }),
                Err(rskafka::client::error::Error::ServerError {
                    protocol_error: rskafka::client::error::ProtocolError::OffsetOutOfRange,
                    ..
                }) => {
                    let earliest = client.get_offset(OffsetAt::Earliest).await?;
                    let latest = client.get_offset(OffsetAt::Latest).await?;
                    // Trimmed by retention: on from the oldest record kept. Past the end (the
                    // topic was made again): from its start too.
                    tracing::warn!(topic = %at.topic, partition = at.partition, offset, earliest, latest, "offset out of range; reading on from the earliest kept");
                    anyhow::Ok(Fetched {
                        records: Vec::new(),
                        undecodable: Vec::new(),
                        next: earliest,
                    })
                }
                Err(e) => Err(e.into()),
            }
        };
        let fetched = tokio::time::timeout(TIMEOUT + max_wait, result).await;
        let fetched = match fetched {
            Ok(Ok(fetched)) => Ok(fetched),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(anyhow::anyhow!("timed out")),
        };
        if fetched.is_err() {
            // A fresh connection next time: the leader may have moved.
            self.partitions.remove(at);
        }
        fetched.with_context(|| {
            format!(
                "fetching {}/{} at offset {offset} from {}",
                at.topic, at.partition, self.brokers
            )
        })
    }
}

/// The key a report line gives a record: `topic/partition@offset`.
pub(crate) fn record_key(at: &Partition, offset: i64) -> String {
    format!("{}/{}@{offset}", at.topic, at.partition)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_naming_forms_name_their_type() {
        let p = "ai-opportunity";
        assert_eq!(
            topic_type(p, "ai-opportunity.EventType-OPPORTUNITY_CREATED").as_deref(),
            Some("EventType.OPPORTUNITY_CREATED")
        );
        assert_eq!(
            topic_type(p, "ai-opportunity.opportunity-created").as_deref(),
            Some("opportunity.created")
        );
        assert_eq!(
            topic_type(p, "ai-opportunity.user-profile_updated").as_deref(),
            Some("user.profile_updated")
        );
        // This bus's own topics, and others.
        assert_eq!(topic_type(p, "ai-opportunity.opportunity.created"), None);
        assert_eq!(topic_type(p, "ai-opportunity.dlq.handler"), None);
        assert_eq!(topic_type(p, "ai-opportunityX.a-b"), None);
        assert_eq!(topic_type(p, "other.a-b"), None);
        assert_eq!(topic_type(p, "ai-opportunity."), None);
    }
}
