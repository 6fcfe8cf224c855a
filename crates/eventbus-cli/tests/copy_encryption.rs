//! `eventbus copy` with payload encryption: events stored encrypted on Redis under one key are
//! copied to Kafka re-encrypted under the copy's active key (a key rotation, or the way to
//! encrypt a history), with nothing lost and every payload unchanged.

mod common;

use anyhow::ensure;
use common::{code, run, stderr, stdout};
use event_core::encryption::{KEY_ID_FIELD, is_sealed};
use event_core::{Event, EventBus, EventType, ReplayQuery};
use event_manager::Settings;
use event_testkit::test_server;
use futures::TryStreamExt as _;
use serde_json::{Value, json};

const KEY_A: &str = "a:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const KEY_B: &str = "b:HxwdHBsaGRgXFhUUExIREA8ODQwLCgkIBwYFBAMCAQA=";
const EVENTS: u64 = 150;

#[test]
fn copy_re_encrypts_with_the_active_key() -> anyhow::Result<()> {
    let (Some(url), Some(brokers)) = (
        test_server("EVENTBUS_TEST_REDIS_URL", "redis")?,
        test_server("EVENTBUS_TEST_KAFKA_BROKERS", "kafka")?,
    ) else {
        return Ok(());
    };
    let prefix = event_testkit::unique("cli-copy-encrypted");
    let event_type = EventType::new(format!("card.{}", prefix.replace('-', "_")))?;
    let vars = |keys: &str| {
        vec![
            ("EVENT_BUS_TYPE", "redis".to_string()),
            ("REDIS_URL", url.clone()),
            ("REDIS_KEY_PREFIX", prefix.clone()),
            ("KAFKA_BOOTSTRAP_SERVERS", brokers.clone()),
            ("KAFKA_TOPIC_PREFIX", prefix.clone()),
            ("ENABLE_EVENT_ENCRYPTION", "true".to_string()),
            ("EVENT_ENCRYPTION_KEYS", keys.to_string()),
        ]
    };
    let runtime = tokio::runtime::Runtime::new()?;
    let published: Vec<Event> = (0..EVENTS)
        .map(|n| {
            Event::builder(event_type.clone(), "copy-test")
                .payload(json!({"n": n, "card": format!("4111-{n}")}))
                .partition_key(format!("k-{}", n % 3))
                .build()
        })
        .collect::<Result<_, _>>()?;
    let source = Settings::from_vars(vars(KEY_A))?;
    runtime.block_on(async {
        let bus = event_redis::RedisBus::connect(source.redis.clone(), source.bus.clone()).await?;
        for r in bus.publish_batch(published.clone()).await {
            r?;
        }
        bus.shutdown().await?;
        anyhow::Ok(())
    })?;

    // The copy reads with both keys and writes with `b`, now first.
    let rotated = vars(&format!("{KEY_B},{KEY_A}"));
    let rotated: Vec<(&str, &str)> = rotated.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let to = format!("kafka://{brokers}");
    let out = run(
        &rotated,
        &[
            "--json", "copy", "--from", &url, "--to", &to, "--since", "1h",
        ],
    )?;
    ensure!(code(&out) == 0, "copy: {} {}", stdout(&out), stderr(&out));
    let report: Value = serde_json::from_str(&stdout(&out))?;
    ensure!(
        report["copied"] == EVENTS && report["failed"] == 0,
        "copy reported {report}"
    );
    ensure!(
        !stderr(&out).contains("AAECAwQF") && !stderr(&out).contains("HxwdHBsa"),
        "the copy printed a key"
    );

    // Kafka holds them under `b`: a reader with only `b` opens every one unchanged, a reader
    // with only `a` opens none (they come back sealed, never dropped).
    let replay = |keys: &str| {
        let target = Settings::from_vars(vars(keys))?;
        let mut config = target.bus.clone();
        config.enable_event_sourcing = false;
        runtime.block_on(async {
            let bus = event_kafka::KafkaBus::connect(target.kafka.clone(), config).await?;
            let from = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
            let events: Vec<Event> = bus
                .replay(ReplayQuery::new([event_type.clone()], from))
                .await?
                .try_collect()
                .await?;
            bus.shutdown().await?;
            anyhow::Ok(events)
        })
    };
    let mut opened = replay(KEY_B)?;
    opened.sort_by_key(|e| e.id);
    let mut expected = published.clone();
    expected.sort_by_key(|e| e.id);
    ensure!(
        opened == expected,
        "the copied events differ from the published ones"
    );
    let sealed = replay(KEY_A)?;
    ensure!(
        sealed.len() == published.len()
            && sealed
                .iter()
                .all(|e| is_sealed(e) && e.metadata[KEY_ID_FIELD] == "b"),
        "the copy did not re-encrypt every event with `b`"
    );
    Ok(())
}
