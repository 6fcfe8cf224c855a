//! [`KafkaBus`]: the [`EventBus`] on Apache Kafka.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use event_core::backend::{BatchResults, Lifecycle, LocalHandlers, SharedFailure};
use event_core::telemetry;
use event_core::{
    BusStats, Capabilities, Config, DeadLetter, DeadLetterSelection, Error, Event, EventBus,
    EventHandler, EventId, EventStream, Health, JsonCodec, RedriveReport, ReplayQuery,
    Subscription, SubscriptionSpec, Unpublished,
};
use rskafka::record::Record;

use event_core::EnvSettings as _;

use crate::config::KafkaConfig;
use crate::consumer::Groups;
use crate::control::ControlClient;
use crate::core::Inner;
use crate::data::DataPlane;
use crate::partitioner::partition_for_key;
use crate::topics::Topics;
use crate::{admin, consumer, record, replay};

/// The event bus on Apache Kafka: a topic per event type, partitions chosen by the Java
/// client's murmur2 hash of the partition key, offsets committed to Kafka's offset store for
/// the group of each handler, dead-letter and redrive topics per group, replay by time.
///
/// ```no_run
/// use std::sync::Arc;
/// use event_core::{handler_fn, Config, Event, EventBus, EventType, HandlerError, SubscriptionSpec};
/// use event_kafka::{KafkaBus, KafkaConfig};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let kafka = KafkaConfig::builder().bootstrap_servers(["localhost:9092"]).build()?;
/// let config = Config::from_env()?; // EVENT_MAX_RETRIES, EVENT_BATCH_SIZE, ...
/// let bus = KafkaBus::connect(kafka, config).await?;
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
    pub(crate) inner: Arc<Inner>,
    /// The running consumer group of each handler subscribed here.
    groups: Arc<Groups>,
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
    /// Connects to the brokers of `kafka` (data path and control plane) and checks a broker
    /// answers, with its SASL credentials (`KAFKA_SASL_*`) and TLS settings (`KAFKA_TLS_*`) on
    /// both; `config` holds the settings every backend shares.
    ///
    /// # Errors
    /// [`Error::Config`] for a bad configuration, [`Error::Backend`] when no broker can be
    /// reached.
    pub async fn connect(kafka: KafkaConfig, config: Config) -> Result<Self, Error> {
        config.validate()?;
        kafka.validate()?;
        if kafka.tls.is_none()
            && kafka
                .sasl
                .as_ref()
                .is_some_and(|sasl| sasl.mechanism == crate::KafkaSaslMechanism::Plain)
        {
            tracing::warn!(
                "KAFKA_SASL_MECHANISM=PLAIN without TLS: the password crosses the network as is; set KAFKA_TLS_ENABLED=true, or use SCRAM-SHA-512 on a trusted network"
            );
        }
        // The control plane first: it reports a refused password at once, naming the
        // mechanism and the user, where rskafka would retry until its deadline.
        let control = ControlClient::connect(
            &kafka.bootstrap_servers,
            &kafka.security(),
            crate::control::DEFAULT_TIMEOUT,
        )
        .await?;
        let plane = Arc::new(DataPlane::connect(&kafka).await?);
        Ok(Self {
            inner: Arc::new(Inner {
                codec: JsonCodec::from_config(&config),
                topics: Topics::new(&kafka),
                plane,
                control,
                lifecycle: Arc::new(Lifecycle::new(config.shutdown_timeout)),
                handlers: LocalHandlers::new("kafka"),
                subscribing: tokio::sync::Mutex::new(()),
                accumulator: Default::default(),
                config,
                kafka,
            }),
            groups: Arc::default(),
        })
    }

    /// The shared settings in use.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The Kafka settings in use.
    pub fn kafka_config(&self) -> &KafkaConfig {
        &self.inner.kafka
    }
}

impl std::fmt::Debug for KafkaBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kafka = &self.inner.kafka;
        let fields: [(&str, &dyn std::fmt::Debug); 2] = [
            ("servers", &kafka.bootstrap_servers),
            ("topic_prefix", &kafka.topic_prefix),
        ];
        self.inner.lifecycle.fmt_bus(f, "KafkaBus", &fields)
    }
}

impl KafkaBus {
    /// `publish`, unrecorded.
    async fn produce_one(&self, event: Event) -> Result<EventId, Error> {
        self.inner.lifecycle.check_open("publishes")?;
        let record = record::encode(&self.inner.codec, &event)?;
        let topic = self.inner.topics.events(event.event_type.as_str());
        let partitions = self
            .inner
            .topics
            .event_topic(&self.inner.control, &topic)
            .await?;
        let partition = partition_for_key(record.key.as_deref().unwrap_or_default(), partitions);
        self.inner
            .accumulator
            .publish(&self.inner.plane, &topic, partition, record)
            .await?;
        Ok(event.id)
    }

    /// `publish_batch`, unrecorded.
    async fn produce_batch(&self, events: &[Event]) -> Vec<Result<EventId, Error>> {
        if let Err(refused) = self.inner.lifecycle.check_open_batch(events.len()) {
            return refused;
        }
        let (mut results, encoded) = BatchResults::prepare(events, |event| {
            let record = record::encode(&self.inner.codec, event)?;
            Ok((self.inner.topics.events(event.event_type.as_str()), record))
        });
        // The partition counts of the topics (created when new).
        let mut counts: HashMap<String, Result<i32, SharedFailure>> = HashMap::new();
        for (_, (topic, _)) in &encoded {
            if counts.contains_key(topic) {
                continue;
            }
            let count = self
                .inner
                .topics
                .event_topic(&self.inner.control, topic)
                .await
                .map_err(|e| SharedFailure::new("kafka", e));
            counts.insert(topic.clone(), count);
        }
        let mut groups: BTreeMap<(String, i32), Vec<(usize, Record)>> = BTreeMap::new();
        for (slot, (topic, r)) in encoded {
            match &counts[&topic] {
                Ok(n) => {
                    let partition = partition_for_key(r.key.as_deref().unwrap_or_default(), *n);
                    groups
                        .entry((topic, partition))
                        .or_default()
                        .push((slot, r));
                }
                Err(failure) => results.fail(slot, failure.to_error()),
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
                results.fail_all(slots, &SharedFailure::new("kafka", e));
            }
        }
        results.into_results()
    }
}

#[async_trait]
impl EventBus for KafkaBus {
    fn capabilities(&self) -> Capabilities {
        CAPABILITIES
    }

    async fn publish(&self, event: Event) -> Result<EventId, Error> {
        telemetry::publish_one("kafka", event, |e| self.produce_one(e)).await
    }

    async fn publish_batch(&self, events: Vec<Event>) -> Vec<Result<EventId, Error>> {
        telemetry::publish_batch(
            "kafka",
            events,
            |e| async move { self.produce_batch(&e).await },
            |e| e,
        )
        .await
    }

    async fn publish_batch_returning(
        &self,
        events: Vec<Event>,
    ) -> Vec<Result<EventId, Unpublished>> {
        let publish = |events: Vec<Event>| async move {
            let results = self.produce_batch(&events).await;
            (events, results)
        };
        telemetry::publish_batch_returning("kafka", events, publish).await
    }

    async fn subscribe(
        &self,
        spec: SubscriptionSpec,
        handler: Arc<dyn EventHandler>,
    ) -> Result<Subscription, Error> {
        self.inner.lifecycle.check_subscription(&spec)?;
        consumer::subscribe(&self.inner, &self.groups, spec, handler).await
    }

    async fn replay(&self, query: ReplayQuery) -> Result<EventStream, Error> {
        replay::replay(&self.inner, query).await
    }

    async fn stats(&self) -> Result<BusStats, Error> {
        admin::stats(&self.inner, &self.groups).await
    }

    async fn health(&self) -> Health {
        admin::health(&self.inner, &self.groups).await
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
        // Events not yet delivered stay in the topics for the next start: consumers stop
        // taking events at once, finish what they hold and commit. A second call waits too.
        self.inner.lifecycle.shutdown().await;
        Ok(())
    }
}
