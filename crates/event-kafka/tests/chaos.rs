//! The chaos harness (`event_testkit::chaos`) against Kafka: a single-node KRaft broker of
//! this test alone (from the jars of `EVENTBUS_TEST_KAFKA_CLASSPATH`), with consumer
//! processes of the shared handler (this binary run again, see [`chaos_child`]). Faults:
//! consumer processes killed and stopped past the session timeout, and the broker killed
//! with SIGKILL and restarted. Foreign records from another producer (rskafka directly): null
//! keys, empty header values, binary values, another content type, tombstones.
//!
//! Each foreign write ends with two transactions of Kafka's Java client
//! (`tests/java/KafkaScript.java`): a committed one, whose records must be dead-lettered, and an
//! aborted one, whose records no handler may see; their markers leave offsets without a record.
//! Compacted topics (offset gaps of another kind) are covered by `tests/transactions.rs`: an
//! event topic cannot be compacted under a run that counts every event.
//!
//! `EVENTBUS_CHAOS_SEED` and `EVENTBUS_CHAOS_SECONDS` replay or lengthen a run
//! (`cargo xtask soak kafka`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};

mod support;
use async_trait::async_trait;
use event_core::{Config, EnvSettings as _, EventBus, EventType};
use event_kafka::{KafkaBus, KafkaConfig};
use event_testkit::chaos::{Abilities, ChaosBackend, Fault, ForeignEntry};
use rskafka::client::ClientBuilder;
use rskafka::client::partition::{Compression, UnknownTopicHandling};
use rskafka::record::Record;
use support::brokers::KafkaNodes;
use tokio::sync::Mutex;

/// The group session timeout: a stopped consumer loses its partitions after this.
const SESSION: Duration = Duration::from_secs(3);

/// The Kafka target: the private broker.
struct Kafka {
    broker: Mutex<KafkaNodes>,
    classpath: String,
    config: Config,
    kafka: KafkaConfig,
}

impl Kafka {
    async fn start(classpath: String) -> anyhow::Result<Self> {
        let broker = KafkaNodes::start(&classpath, 1).await?;
        let mut config = Config::default();
        config.consumer_group = event_testkit::unique("chaos");
        let kafka = KafkaConfig::builder()
            .bootstrap_servers(broker.bootstrap_servers())
            .topic_prefix(event_testkit::unique("chaos"))
            .session_timeout(SESSION)
            .heartbeat_interval(Duration::from_millis(500))
            .rebalance_timeout(Duration::from_secs(10))
            .build()?;
        Ok(Self {
            broker: Mutex::new(broker),
            classpath,
            config,
            kafka,
        })
    }
}

fn record(key: Option<&[u8]>, value: Option<&[u8]>, headers: &[(&str, &[u8])]) -> Record {
    Record {
        key: key.map(<[u8]>::to_vec),
        value: value.map(<[u8]>::to_vec),
        headers: headers
            .iter()
            .map(|(k, v)| ((*k).to_string(), v.to_vec()))
            .collect::<BTreeMap<_, _>>(),
        timestamp: rskafka::chrono::DateTime::from_timestamp_millis(
            (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64,
        )
        .unwrap_or_default(),
    }
}

#[async_trait]
impl ChaosBackend for Kafka {
    fn name(&self) -> &'static str {
        "kafka"
    }

    fn test_target(&self) -> (&'static str, &'static str) {
        ("event-kafka", "chaos")
    }

    fn base_config(&self) -> Config {
        self.config.clone()
    }

    async fn connect(&self, config: Config) -> anyhow::Result<Arc<dyn EventBus>> {
        Ok(Arc::new(
            KafkaBus::connect(self.kafka.clone(), config).await?,
        ))
    }

    fn child_variables(&self) -> BTreeMap<String, String> {
        self.kafka.to_vars()
    }

    fn abilities(&self) -> Abilities {
        Abilities {
            faults: vec![
                Fault::KillConsumerProcess,
                Fault::PauseConsumerProcess,
                Fault::PanicLoopOnce,
                Fault::ServerRestart,
            ],
            consumer_processes: true,
            second_instance: true,
            order_survives_takeover: true,
            rebalance_redelivers: true,
            takeover_after: SESSION,
            slow_call: SESSION + Duration::from_secs(1),
            events_per_second: 400,
            default_seconds: 90,
            quiescence_deadline: Duration::from_secs(150),
        }
    }

    async fn inject(&self, fault: Fault, seed: u64) -> anyhow::Result<String> {
        match fault {
            Fault::ServerRestart => {
                let mut broker = self.broker.lock().await;
                broker.kill(1);
                let down = Duration::from_millis(500 + seed % 2_500);
                tokio::time::sleep(down).await;
                broker.restart(1).await?;
                Ok(format!("broker killed (SIGKILL), restarted after {down:?}"))
            }
            other => bail!("the kafka target cannot inject {other:?}"),
        }
    }

    async fn write_foreign(
        &self,
        event_type: &EventType,
        marker: &str,
    ) -> anyhow::Result<Vec<ForeignEntry>> {
        let topic = format!("{}.{event_type}", self.kafka.topic_prefix);
        let address = self.broker.lock().await.address(1);
        let classpath = self.classpath.clone();
        let client = ClientBuilder::new(vec![address.clone()]).build().await?;
        let m = |i: usize| format!("{marker}v{i}e");
        let shapes: Vec<(&str, Record)> = vec![
            (
                "null key, a value that is not JSON",
                record(None, Some(format!("not json {}", m(0)).as_bytes()), &[]),
            ),
            (
                "a tombstone (null value)",
                record(Some(m(1).as_bytes()), None, &[]),
            ),
            (
                "a binary, non-UTF-8 value",
                record(
                    None,
                    Some(&[b"\xff\xfe\x00", m(2).as_bytes(), b"\x80"].concat()),
                    &[],
                ),
            ),
            (
                "another content type and an empty header value",
                record(
                    Some(b"k"),
                    Some(b"{}"),
                    &[("content_type", b"application/octet-stream"), (&m(3), b"")],
                ),
            ),
            (
                "JSON that is not an envelope",
                record(
                    None,
                    Some(format!("{{\"id\":\"{}\"}}", m(4)).as_bytes()),
                    &[],
                ),
            ),
            (
                "a tombstone with a null key",
                record(None, None, &[("origin", m(5).as_bytes())]),
            ),
        ];
        let mut written = Vec::new();
        for (i, (shape, record)) in shapes.into_iter().enumerate() {
            let partition = (i as i32) % self.kafka.partitions as i32;
            let producer = client
                .partition_client(topic.clone(), partition, UnknownTopicHandling::Retry)
                .await?;
            tokio::time::timeout(
                Duration::from_secs(10),
                producer.produce(vec![record], Compression::NoCompression),
            )
            .await
            .context("producing a foreign record timed out")??;
            written.push(ForeignEntry::new(m(i), shape));
        }
        // Another application's transactions (Kafka's Java client): a committed one, whose
        // records every handler dead-letters, then an aborted one, which no handler may see;
        // each leaves a marker record, an offset with no record for the bus.
        let partitions = self.kafka.partitions as i32;
        let send = |i: usize| {
            format!(
                "SEND\t{topic}\t{}\t-\t{{\"txn\":\"{}\"}}\n",
                i as i32 % partitions,
                m(i)
            )
        };
        let script = format!(
            "PRODUCER\t{}-{marker}\nBEGIN\n{}{}COMMIT\nBEGIN\n{}{}ABORT\n",
            self.kafka.topic_prefix,
            send(6),
            send(7),
            send(8),
            send(9)
        );
        support::kafka_script(&classpath, &address, &script).await?;
        for i in 6..8 {
            written.push(ForeignEntry::new(m(i), "a committed transaction's record"));
        }
        for i in 8..10 {
            written.push(ForeignEntry::aborted(
                m(i),
                "an aborted transaction's record",
            ));
        }
        Ok(written)
    }
}

/// A consumer process of the chaos run: does nothing unless `EVENTBUS_CHAOS_CHILD` is set.
#[test]
fn chaos_child() {
    event_testkit::chaos::child_main(|config, variables| async move {
        let kafka = KafkaConfig::from_vars(variables)?;
        Ok(Arc::new(KafkaBus::connect(kafka, config).await?) as Arc<dyn EventBus>)
    });
}

/// The chaos run against a private broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos() -> anyhow::Result<()> {
    if std::env::var_os(event_testkit::chaos::CHILD_VAR).is_some() {
        return Ok(());
    }
    let Some(classpath) = event_testkit::test_server("EVENTBUS_TEST_KAFKA_CLASSPATH", "kafka")?
    else {
        return Ok(());
    };
    let kafka = Arc::new(Kafka::start(classpath).await?);
    let summary = event_testkit::chaos::run(kafka).await?;
    ensure!(summary.lost == 0, "{} events lost", summary.lost);
    Ok(())
}
