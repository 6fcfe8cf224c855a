//! [`KafkaBus`]: the [`EventBus`] on Apache Kafka.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use event_core::dispatch::{ConsumerHost, ConsumerSet, HandlerCounters};
use event_core::{
    BusStats, Capabilities, Config, DeadLetter, DeadLetterSelection, Error, Event, EventBus,
    EventHandler, EventId, EventStream, Health, JsonCodec, RedriveReport, ReplayQuery,
    Subscription, SubscriptionSpec,
};
use rskafka::record::Record;

use crate::consumer::Group;
use crate::control::{ControlClient, Security};
use crate::data::DataPlane;
use crate::partitioner::partition_for_key;
use crate::topics::Topics;
use crate::{admin, consumer, record, replay};

/// A produce request carries records of about this many bytes at most. Brokers refuse batches
/// over `message.max.bytes` (1 MiB by default), but the real limit is lower: rskafka 0.6 sets no
/// `TCP_NODELAY` and writes a request's length and body in two writes, so a request larger than
/// one segment (about 64 KiB on loopback) waits for the broker's delayed ACK, about 40 ms.
/// Requests under 48 KiB never do: batches of 1,000 went from 21,000 to 224,000 events/s.
const PRODUCE_CHUNK_BYTES: usize = 48 * 1024;

/// The event bus on Apache Kafka: a topic per event type, partitions chosen by the Java
/// client's murmur2 hash of the partition key, offsets committed to Kafka's offset store for
/// the group of each handler, dead-letter and redrive topics per group, replay by time.
///
/// ```no_run
/// use std::sync::Arc;
/// use event_core::{handler_fn, Config, Event, EventBus, EventType, HandlerError, SubscriptionSpec};
/// use event_kafka::KafkaBus;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let mut config = Config::from_env()?; // KAFKA_BOOTSTRAP_SERVERS, KAFKA_TOPIC_PREFIX, ...
/// config.kafka_bootstrap_servers = vec!["localhost:9092".into()];
/// let bus = KafkaBus::connect(config).await?;
/// bus.subscribe(
///     SubscriptionSpec::new("audit", [EventType::USER_REGISTERED]),
///     handler_fn("audit", |event| async move {
///         println!("{} {}", event.event_type, event.id);
///         Ok::<(), HandlerError>(())
///     }),
/// )
/// .await?;
/// bus.publish(Event::builder(EventType::USER_REGISTERED, "user_service").build()?).await?;
/// bus.shutdown().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct KafkaBus {
    inner: Arc<Inner>,
}

/// A handler subscribed through this bus instance.
#[derive(Clone)]
pub(crate) struct LocalHandler {
    pub(crate) group: String,
    pub(crate) event_types: Vec<String>,
    pub(crate) counters: Arc<HandlerCounters>,
    pub(crate) members: Vec<u64>,
}

pub(crate) struct Inner {
    pub(crate) config: Config,
    pub(crate) codec: JsonCodec,
    pub(crate) plane: Arc<DataPlane>,
    pub(crate) control: ControlClient,
    pub(crate) topics: Topics,
    pub(crate) closed: AtomicBool,
    pub(crate) consumers: ConsumerSet,
    handlers: Mutex<HashMap<String, LocalHandler>>,
    /// The running group of each handler subscribed here.
    pub(crate) groups: Mutex<HashMap<String, Arc<Group>>>,
    /// One subscribe at a time: joining or starting a group is not split by another.
    pub(crate) subscribing: tokio::sync::Mutex<()>,
}

impl Inner {
    pub(crate) fn handlers(&self) -> MutexGuard<'_, HashMap<String, LocalHandler>> {
        self.handlers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn groups(&self) -> MutexGuard<'_, HashMap<String, Arc<Group>>> {
        self.groups
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn group(&self, handler: &str) -> String {
        format!("{}.{handler}", self.config.consumer_group)
    }

    pub(crate) fn check_open(&self, operation: &'static str) -> Result<(), Error> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::ShutDown { operation });
        }
        Ok(())
    }

    /// Registers a local member of a handler.
    pub(crate) fn add_member(
        &self,
        handler: &str,
        group: &str,
        event_types: &[String],
        member: u64,
    ) -> Arc<HandlerCounters> {
        let mut handlers = self.handlers();
        let local = handlers
            .entry(handler.to_string())
            .or_insert_with(|| LocalHandler {
                group: group.to_string(),
                event_types: event_types.to_vec(),
                counters: Arc::new(HandlerCounters::default()),
                members: Vec::new(),
            });
        local.event_types = event_types.to_vec();
        local.members.push(member);
        local.counters.reset_stall_clock();
        local.counters.clone()
    }

    /// Forgets a local member once it has stopped.
    pub(crate) fn remove_member(&self, handler: &str, member: u64) {
        if let Some(local) = self.handlers().get_mut(handler) {
            local.members.retain(|m| *m != member);
        }
    }

    /// Appends records to one partition, in chunks a broker accepts; the offset of each.
    pub(crate) async fn produce(
        &self,
        topic: &str,
        partition: i32,
        records: Vec<Record>,
    ) -> Result<Vec<i64>, Error> {
        let mut offsets = Vec::with_capacity(records.len());
        let mut chunk = Vec::new();
        let mut bytes = 0;
        for r in records {
            let size = r.approximate_size();
            if !chunk.is_empty() && bytes + size > PRODUCE_CHUNK_BYTES {
                offsets.extend(
                    self.plane
                        .produce(topic, partition, std::mem::take(&mut chunk))
                        .await?,
                );
                bytes = 0;
            }
            bytes += size;
            chunk.push(r);
        }
        if !chunk.is_empty() {
            offsets.extend(self.plane.produce(topic, partition, chunk).await?);
        }
        Ok(offsets)
    }
}

impl ConsumerHost for Inner {
    fn consumers(&self) -> &ConsumerSet {
        &self.consumers
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn shutdown_timeout(&self) -> std::time::Duration {
        self.config.shutdown_timeout
    }
}

/// What the Kafka backend offers; `docs/kafka.md` says why event sourcing and retention
/// trials do not apply.
const CAPABILITIES: Capabilities = Capabilities {
    backend: "kafka",
    persistent: true,
    shared_groups: true,
    per_key_order: true,
    replay_by_time: true,
    event_sourcing: false,
    retention: false,
};

impl KafkaBus {
    /// Connects to `config.kafka_bootstrap_servers` (data path and control plane) and checks
    /// a broker answers, with the SASL credentials (`KAFKA_SASL_*`) and TLS settings
    /// (`KAFKA_TLS_*`) of `config` on both.
    ///
    /// # Errors
    /// [`Error::Config`] for a bad configuration, [`Error::Backend`] when no broker can be
    /// reached.
    pub async fn connect(config: Config) -> Result<Self, Error> {
        config.validate()?;
        // The control plane first: it reports a refused password at once, naming the
        // mechanism and the user, where rskafka would retry until its deadline.
        let security = Security::from_config(&config)?;
        let control = ControlClient::connect(
            &config.kafka_bootstrap_servers,
            &security,
            crate::control::DEFAULT_TIMEOUT,
        )
        .await?;
        let plane = Arc::new(DataPlane::connect(&config).await?);
        Ok(Self {
            inner: Arc::new(Inner {
                codec: JsonCodec::new(config.max_event_bytes),
                topics: Topics::new(&config),
                plane,
                control,
                closed: AtomicBool::new(false),
                consumers: ConsumerSet::default(),
                handlers: Mutex::new(HashMap::new()),
                groups: Mutex::new(HashMap::new()),
                subscribing: tokio::sync::Mutex::new(()),
                config,
            }),
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }
}

impl std::fmt::Debug for KafkaBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaBus")
            .field("servers", &self.inner.config.kafka_bootstrap_servers)
            .field("topic_prefix", &self.inner.config.kafka_topic_prefix)
            .field("closed", &self.inner.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl EventBus for KafkaBus {
    fn capabilities(&self) -> Capabilities {
        CAPABILITIES
    }

    async fn publish(&self, event: Event) -> Result<EventId, Error> {
        self.inner.check_open("publishes")?;
        let record = record::encode(&self.inner.codec, &event)?;
        let topic = self.inner.topics.events(event.event_type.as_str());
        let partitions = self
            .inner
            .topics
            .event_topic(&self.inner.control, &topic)
            .await?;
        let partition = partition_for_key(record.key.as_deref().unwrap_or_default(), partitions);
        self.inner
            .plane
            .produce(&topic, partition, vec![record])
            .await?;
        Ok(event.id)
    }

    async fn publish_batch(&self, events: Vec<Event>) -> Vec<Result<EventId, Error>> {
        if self.inner.check_open("publishes").is_err() {
            return events
                .iter()
                .map(|_| {
                    Err(Error::ShutDown {
                        operation: "publishes",
                    })
                })
                .collect();
        }
        let mut results: Vec<Result<EventId, Error>> = Vec::with_capacity(events.len());
        let mut encoded: Vec<(usize, String, Record)> = Vec::new();
        for event in &events {
            match record::encode(&self.inner.codec, event) {
                Ok(r) => {
                    encoded.push((
                        results.len(),
                        self.inner.topics.events(event.event_type.as_str()),
                        r,
                    ));
                    results.push(Ok(event.id));
                }
                Err(e) => results.push(Err(e)),
            }
        }
        // The partition counts of the topics (created when new).
        let mut counts: HashMap<String, Result<i32, (String, bool)>> = HashMap::new();
        for (_, topic, _) in &encoded {
            if counts.contains_key(topic) {
                continue;
            }
            let count = self
                .inner
                .topics
                .event_topic(&self.inner.control, topic)
                .await
                .map_err(|e| (e.to_string(), e.is_transient()));
            counts.insert(topic.clone(), count);
        }
        let mut groups: BTreeMap<(String, i32), Vec<(usize, Record)>> = BTreeMap::new();
        for (slot, topic, r) in encoded {
            match &counts[&topic] {
                Ok(n) => {
                    let partition = partition_for_key(r.key.as_deref().unwrap_or_default(), *n);
                    groups
                        .entry((topic, partition))
                        .or_default()
                        .push((slot, r));
                }
                Err((message, transient)) => {
                    results[slot] = Err(Error::backend("kafka", message.clone(), *transient));
                }
            }
        }
        let sends = groups.into_iter().map(|((topic, partition), items)| {
            let inner = &self.inner;
            async move {
                let (slots, records): (Vec<usize>, Vec<Record>) = items.into_iter().unzip();
                let outcome = inner.produce(&topic, partition, records).await;
                (slots, outcome)
            }
        });
        for (slots, outcome) in futures::future::join_all(sends).await {
            if let Err(e) = outcome {
                let message = e.to_string();
                let transient = e.is_transient();
                for slot in slots {
                    results[slot] = Err(Error::backend("kafka", message.clone(), transient));
                }
            }
        }
        results
    }

    async fn subscribe(
        &self,
        spec: SubscriptionSpec,
        handler: Arc<dyn EventHandler>,
    ) -> Result<Subscription, Error> {
        spec.validate()?;
        self.inner.check_open("subscriptions")?;
        consumer::subscribe(&self.inner, spec, handler).await
    }

    async fn replay(&self, query: ReplayQuery) -> Result<EventStream, Error> {
        replay::replay(&self.inner, query).await
    }

    async fn stats(&self) -> Result<BusStats, Error> {
        admin::stats(&self.inner).await
    }

    async fn health(&self) -> Health {
        admin::health(&self.inner).await
    }

    async fn dead_letters(&self, handler: &str, limit: usize) -> Result<Vec<DeadLetter>, Error> {
        admin::dead_letters(&self.inner, handler, limit).await
    }

    async fn redrive_dead_letters(
        &self,
        handler: &str,
        selection: DeadLetterSelection,
    ) -> Result<RedriveReport, Error> {
        admin::redrive(&self.inner, handler, &selection).await
    }

    async fn purge_dead_letters(
        &self,
        handler: &str,
        selection: DeadLetterSelection,
    ) -> Result<u64, Error> {
        admin::purge(&self.inner, handler, &selection).await
    }

    async fn shutdown(&self) -> Result<(), Error> {
        self.inner.closed.store(true, Ordering::Release);
        // Events not yet delivered stay in the topics for the next start: consumers stop
        // taking events at once, finish what they hold and commit. A second call waits too.
        let until = tokio::time::Instant::now() + self.inner.config.shutdown_timeout;
        self.inner
            .consumers
            .stop_all(self.inner.shutdown_mode(until))
            .await;
        Ok(())
    }
}
