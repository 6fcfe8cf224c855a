//! `KafkaAdmin` against the shared test broker (`EVENTBUS_TEST_KAFKA_BROKERS`): the bus's
//! topics as the bus created them (partitions, leaders, replicas, `retention.ms`), no API the
//! bus needs missing, and a simple group's offsets committed, read back, moved and absent.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::ensure;
use event_core::{Error, Event, EventBus as _, EventType};
use event_kafka::{KafkaAdmin, KafkaConfig};
use event_testkit::{test_server, unique};
use support::Settings;

/// Events published per type: several batches, spread over every partition.
const PER_TYPE: usize = 600;
const PARTITIONS: i32 = 4;
/// A retention no broker default has: set at creation by the bus.
const RETENTION: Duration = Duration::from_secs(5_400);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_facts_topic_configs_and_a_simple_groups_offsets() -> anyhow::Result<()> {
    let Some(brokers) = test_server("EVENTBUS_TEST_KAFKA_BROKERS", "kafka")? else {
        return Ok(());
    };
    let prefix = unique("kafka-admin");
    let mut settings = Settings::on(&brokers);
    settings.kafka.topic_prefix = prefix.clone();
    settings.kafka.partitions = PARTITIONS as u32;
    settings.kafka.retention = RETENTION;
    settings.bus.enable_event_sourcing = false;
    let types = [EventType::OPPORTUNITY_CREATED, EventType::USER_REGISTERED];
    let topics: Vec<String> = types.iter().map(|t| format!("{prefix}.{t}")).collect();

    // The topics, created by the bus on its first publish.
    let bus = settings.connect().await?;
    for event_type in &types {
        let events = (0..PER_TYPE)
            .map(|i| {
                Event::builder(event_type.clone(), "admin_test")
                    .partition_key(format!("key-{i}"))
                    .field("n", i as u64)
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()?;
        for result in bus.publish_batch(events).await {
            result?;
        }
    }
    bus.shutdown().await?;

    let admin = KafkaAdmin::connect(&settings.kafka).await?;
    let cluster = admin.cluster().await?;
    ensure!(cluster.brokers >= 1, "{cluster:?}");
    for name in &topics {
        let Some(topic) = cluster.topic(name) else {
            anyhow::bail!("{name} is not in the cluster's topics");
        };
        ensure!(!topic.internal, "{topic:?}");
        let numbers: Vec<i32> = topic.partitions.iter().map(|p| p.partition).collect();
        ensure!(numbers == (0..PARTITIONS).collect::<Vec<_>>(), "{topic:?}");
        for p in &topic.partitions {
            ensure!(p.leader.is_some(), "no leader: {topic:?}");
            ensure!(p.replicas == 1 && p.in_sync == 1, "{topic:?}");
        }
    }
    ensure!(
        cluster.topic(&format!("{prefix}.no.such.topic")).is_none(),
        "a topic that was never created is listed"
    );
    let missing = admin.missing_apis().await?;
    ensure!(missing.is_empty(), "the test broker lacks {missing:?}");

    let configs = admin.topic_configs(&topics).await?;
    for name in &topics {
        let retention = configs.get(name).and_then(|c| c.get("retention.ms"));
        ensure!(
            retention.map(String::as_str) == Some("5400000"),
            "{name}: retention.ms {retention:?}"
        );
        let policy = configs.get(name).and_then(|c| c.get("cleanup.policy"));
        ensure!(policy.map(String::as_str) == Some("delete"), "{policy:?}");
    }
    match admin
        .topic_configs(&[format!("{prefix}.no.such.topic")])
        .await
    {
        Err(Error::Backend { message, .. }) => {
            ensure!(message.contains("no.such.topic"), "{message}");
        }
        other => anyhow::bail!("configs of a topic that does not exist: {other:?}"),
    }

    // A simple group: committed, read back whole and in part, then moved.
    let group = unique("kafka-admin-group");
    let all: Vec<(String, i32)> = topics
        .iter()
        .flat_map(|t| (0..PARTITIONS).map(move |p| (t.clone(), p)))
        .collect();
    let first: Vec<(String, i32, i64)> = all
        .iter()
        .enumerate()
        .map(|(i, (t, p))| (t.clone(), *p, 10 + i as i64 * 7))
        .collect();
    admin.commit_offsets(&group, &first).await?;
    let read = admin.committed_offsets(&group, &all).await?;
    ensure!(read == as_map(&first), "{read:?}");
    let some = &all[1..3];
    let read = admin.committed_offsets(&group, some).await?;
    ensure!(read.len() == 2 && read == as_map(&first[1..3]), "{read:?}");
    let moved: Vec<(String, i32, i64)> = first[..2]
        .iter()
        .map(|(t, p, o)| (t.clone(), *p, o + 100))
        .collect();
    admin.commit_offsets(&group, &moved).await?;
    let mut expected = as_map(&first);
    expected.extend(as_map(&moved));
    let read = admin.committed_offsets(&group, &all).await?;
    ensure!(read == expected, "{read:?}");

    // A group that committed part: only those partitions; one that never committed: none.
    let partial = unique("kafka-admin-partial");
    admin.commit_offsets(&partial, &first[5..6]).await?;
    let read = admin.committed_offsets(&partial, &all).await?;
    ensure!(read == as_map(&first[5..6]), "{read:?}");
    let read = admin
        .committed_offsets(&unique("kafka-admin-unknown"), &all)
        .await?;
    ensure!(read.is_empty(), "an unknown group has offsets: {read:?}");
    ensure!(admin.committed_offsets(&group, &[]).await?.is_empty());

    // Bad input: a clear error, no request.
    for result in [
        admin.committed_offsets(" ", &all).await.map(|_| ()),
        admin.commit_offsets("", &first).await,
    ] {
        ensure!(
            matches!(result, Err(Error::InvalidArgument(_))),
            "{result:?}"
        );
    }
    let mut unreachable = KafkaConfig::default();
    unreachable.bootstrap_servers = vec!["no port".into()];
    let refused = KafkaAdmin::connect(&unreachable).await;
    ensure!(matches!(refused, Err(Error::Config(_))), "{refused:?}");
    Ok(())
}

fn as_map(offsets: &[(String, i32, i64)]) -> BTreeMap<(String, i32), i64> {
    offsets
        .iter()
        .map(|(t, p, o)| ((t.clone(), *p), *o))
        .collect()
}
