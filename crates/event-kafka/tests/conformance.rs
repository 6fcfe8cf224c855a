//! The conformance suite against a real Kafka broker (`EVENTBUS_TEST_KAFKA_BROKERS`): one test
//! per trial (`cargo test -p event-kafka --test conformance per_key_order` runs one).

use std::sync::Arc;

use event_core::{Config, EventBus};
use event_kafka::{KafkaBus, KafkaConfig};
use event_testkit::{Fixture, factory_fn, test_server};

/// A fresh `KafkaBus` per bus a trial asks for, all on the test broker under a topic prefix of
/// this test process (trials also use fresh event types and handler names).
async fn kafka() -> anyhow::Result<Option<Fixture>> {
    let Some(brokers) = test_server("EVENTBUS_TEST_KAFKA_BROKERS", "kafka")? else {
        return Ok(None);
    };
    let kafka = KafkaConfig::builder()
        .bootstrap_servers(brokers.split(',').map(str::trim))
        .topic_prefix(format!(
            "eventbus-conformance-{}-{:08x}",
            std::process::id(),
            fastrand::u32(..)
        ))
        .partitions(3)
        .build()?;
    let factory = factory_fn(move |config: Config| {
        let kafka = kafka.clone();
        async move { Ok(Arc::new(KafkaBus::connect(kafka, config).await?) as Arc<dyn EventBus>) }
    });
    Ok(Some(Fixture::probe(factory, Config::default()).await?))
}

fn main() -> std::process::ExitCode {
    event_testkit::run_conformance(kafka)
}
