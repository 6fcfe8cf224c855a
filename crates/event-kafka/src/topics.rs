//! Topic names and topic creation: `{prefix}.{event_type}` for events, `{prefix}.dlq.{group}`
//! for dead letters, `{prefix}.redrive.{group}` for redriven events; created on demand with
//! their partitions, replication factor and configs, and their partition counts cached for
//! `KAFKA_METADATA_MAX_AGE_MS` (partitions may be added to a topic at run time).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use event_core::{Error, EventType};

use crate::config::KafkaConfig;
use crate::control::{ControlClient, TopicCreation, TopicSpec};

/// How long the brokers may take to create topics.
const CREATE_TIMEOUT: Duration = Duration::from_secs(10);

/// A topic's partition count and when it was read.
#[derive(Clone, Copy, Debug)]
struct Known {
    partitions: i32,
    read_at: Instant,
}

/// The names of the bus's topics and the partition counts of those it has seen.
pub(crate) struct Topics {
    prefix: String,
    partitions: i32,
    replication: i16,
    retention_ms: String,
    /// `min.insync.replicas`, when the configuration sets it.
    min_insync_replicas: Option<String>,
    known: Mutex<HashMap<String, Known>>,
    /// How long a partition count is trusted before it is read again.
    max_age: Duration,
    /// Topics that existed with other settings than the bus would give them, and how.
    misconfigured: Mutex<BTreeMap<String, String>>,
}

impl Topics {
    pub(crate) fn new(config: &KafkaConfig) -> Self {
        Self {
            prefix: config.topic_prefix.clone(),
            partitions: i32::try_from(config.partitions).unwrap_or(i32::MAX),
            replication: i16::try_from(config.replication_factor).unwrap_or(i16::MAX),
            retention_ms: config.retention.as_millis().to_string(),
            min_insync_replicas: config.min_insync_replicas.map(|n| n.to_string()),
            known: Mutex::new(HashMap::new()),
            max_age: config.metadata_max_age,
            misconfigured: Mutex::new(BTreeMap::new()),
        }
    }

    fn known(&self) -> std::sync::MutexGuard<'_, HashMap<String, Known>> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes the partition count of a topic, read from the metadata just now.
    fn remember(&self, topic: &str, partitions: i32) {
        self.known().insert(
            topic.to_string(),
            Known {
                partitions,
                read_at: Instant::now(),
            },
        );
    }

    /// The topic of an event type.
    pub(crate) fn events(&self, event_type: &str) -> String {
        format!("{}.{event_type}", self.prefix)
    }

    /// The dead-letter topic of a group.
    pub(crate) fn dead_letters(&self, group: &str) -> String {
        format!("{}.dlq.{group}", self.prefix)
    }

    /// The redrive topic of a group.
    pub(crate) fn redrive(&self, group: &str) -> String {
        format!("{}.redrive.{group}", self.prefix)
    }

    /// The event type of one of the bus's event topics; `None` for other topics.
    pub(crate) fn event_type_of(&self, topic: &str) -> Option<EventType> {
        let rest = topic.strip_prefix(&self.prefix)?.strip_prefix('.')?;
        if rest.starts_with("dlq.") || rest.starts_with("redrive.") {
            return None;
        }
        EventType::new(rest).ok()
    }

    /// What is wrong with topics that existed with other settings, for health.
    pub(crate) fn misconfigured(&self) -> Vec<String> {
        self.misconfigured
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(topic, why)| format!("topic {topic} exists with other settings: {why}"))
            .collect()
    }

    /// The cached partition count of a topic, unless it is older than
    /// `KAFKA_METADATA_MAX_AGE_MS`.
    pub(crate) fn cached(&self, topic: &str) -> Option<i32> {
        self.known()
            .get(topic)
            .filter(|k| k.read_at.elapsed() < self.max_age)
            .map(|k| k.partitions)
    }

    /// Whether the topic was seen, however long ago: it exists (the bus never deletes its
    /// topics), so an old count is read again rather than the topic created.
    fn seen(&self, topic: &str) -> bool {
        self.known().contains_key(topic)
    }

    /// The configs of the topics the bus creates.
    fn configs(&self) -> Vec<(String, String)> {
        let mut configs = vec![
            ("retention.ms".into(), self.retention_ms.clone()),
            ("cleanup.policy".into(), "delete".into()),
        ];
        if let Some(n) = &self.min_insync_replicas {
            configs.push(("min.insync.replicas".into(), n.clone()));
        }
        configs
    }

    /// The partition count of an event topic, creating it when needed.
    pub(crate) async fn event_topic(
        &self,
        control: &ControlClient,
        topic: &str,
    ) -> Result<i32, Error> {
        if let Some(n) = self.cached(topic) {
            return Ok(n);
        }
        if self.seen(topic)
            && let Some(n) = self.read(control, topic).await?
        {
            return Ok(n);
        }
        let counts = self
            .ensure(control, &[(topic.to_string(), self.partitions)])
            .await?;
        Ok(counts[0])
    }

    /// Creates the topics that do not exist (name, partitions) and returns the partition
    /// count of each, in order.
    pub(crate) async fn ensure(
        &self,
        control: &ControlClient,
        topics: &[(String, i32)],
    ) -> Result<Vec<i32>, Error> {
        let missing: Vec<TopicSpec> = topics
            .iter()
            .filter(|(name, _)| self.cached(name).is_none())
            .map(|(name, partitions)| TopicSpec {
                name: name.clone(),
                partitions: *partitions,
                replication_factor: self.replication,
                configs: self.configs(),
            })
            .collect();
        if !missing.is_empty() {
            let outcomes = control.create_topics(&missing, CREATE_TIMEOUT).await?;
            for (name, outcome) in &outcomes {
                if let TopicCreation::Failed(why) = outcome {
                    return Err(Error::backend(
                        "kafka",
                        format!("creating topic {name}: {why}"),
                        false,
                    ));
                }
            }
            let existed: Vec<String> = outcomes
                .iter()
                .filter(|(_, o)| *o == TopicCreation::AlreadyExists)
                .map(|(name, _)| name.clone())
                .collect();
            let names: Vec<String> = missing.iter().map(|t| t.name.clone()).collect();
            self.read_many(control, &names).await?;
            self.check_existing(control, &missing, &existed).await;
        }
        topics
            .iter()
            .map(|(name, _)| {
                self.cached(name).ok_or_else(|| {
                    Error::backend(
                        "kafka",
                        format!("topic {name} has no partitions in the metadata after creating it"),
                        true,
                    )
                })
            })
            .collect()
    }

    /// Compares topics that existed before with the settings the bus would give them; what
    /// differs is reported by health (the topics are used as they are).
    async fn check_existing(
        &self,
        control: &ControlClient,
        specs: &[TopicSpec],
        existed: &[String],
    ) {
        if existed.is_empty() {
            return;
        }
        let configs = match control.describe_topic_configs(existed).await {
            Ok(configs) => configs,
            Err(e) => {
                tracing::debug!("cannot read the configs of existing topics: {e}");
                HashMap::new()
            }
        };
        let mut found = Vec::new();
        for spec in specs.iter().filter(|s| existed.contains(&s.name)) {
            let mut differences = Vec::new();
            if let Some(n) = self.cached(&spec.name)
                && n != spec.partitions
            {
                differences.push(format!("{n} partitions, not {}", spec.partitions));
            }
            if let Some(actual) = configs.get(&spec.name) {
                for (key, wanted) in &spec.configs {
                    if let Some(value) = actual.get(key)
                        && value != wanted
                    {
                        differences.push(format!("{key}={value}, not {wanted}"));
                    }
                }
            }
            if !differences.is_empty() {
                tracing::warn!(topic = %spec.name, "topic exists with other settings: {}", differences.join(", "));
                found.push((spec.name.clone(), differences.join(", ")));
            }
        }
        self.misconfigured
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(found);
    }

    /// The partition count of an existing topic, from the cache or the metadata; `None` when
    /// it does not exist. Never creates it.
    pub(crate) async fn existing(
        &self,
        control: &ControlClient,
        topic: &str,
    ) -> Result<Option<i32>, Error> {
        if let Some(n) = self.cached(topic) {
            return Ok(Some(n));
        }
        self.read(control, topic).await
    }

    /// The partition count of a topic from fresh metadata (`None`: it does not exist), noted
    /// in the cache.
    pub(crate) async fn read(
        &self,
        control: &ControlClient,
        topic: &str,
    ) -> Result<Option<i32>, Error> {
        Ok(self
            .read_many(control, &[topic.to_string()])
            .await?
            .remove(topic))
    }

    /// The partition counts of `topics` from one fresh metadata request (a topic that does
    /// not exist is left out), noted in the cache.
    pub(crate) async fn read_many(
        &self,
        control: &ControlClient,
        topics: &[String],
    ) -> Result<BTreeMap<String, i32>, Error> {
        let metadata = control.metadata(Some(topics)).await?;
        let mut counts = BTreeMap::new();
        for name in topics {
            if let Some(t) = metadata.topic(name)
                && t.error.is_none()
                && t.partition_count() > 0
            {
                let n = i32::try_from(t.partition_count()).unwrap_or(i32::MAX);
                self.remember(name, n);
                counts.insert(name.clone(), n);
            }
        }
        Ok(counts)
    }

    /// Every event topic of the bus with its partition count, from the cluster's metadata.
    pub(crate) async fn all_event_topics(
        &self,
        control: &ControlClient,
    ) -> Result<Vec<(EventType, String, i32)>, Error> {
        let metadata = control.metadata(None).await?;
        let mut out = Vec::new();
        for t in &metadata.topics {
            if t.error.is_some() || t.partition_count() == 0 {
                continue;
            }
            if let Some(event_type) = self.event_type_of(&t.name) {
                let n = i32::try_from(t.partition_count()).unwrap_or(i32::MAX);
                self.remember(&t.name, n);
                out.push((event_type, t.name.clone(), n));
            }
        }
        out.sort_by(|a, b| a.1.cmp(&b.1));
        Ok(out)
    }
}
