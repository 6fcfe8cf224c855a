//! Doctor on Kafka: topics with another partition count, retention or replication factor
//! than the settings, a prefix with no topics, a healthy setup, and a group with lag and no
//! member.

use std::time::{Duration, Instant};

use anyhow::ensure;
use event_core::{EventBus as _, EventType, StartFrom, SubscriptionSpec, handler_fn};
use event_manager::Settings;
use event_testkit::{test_server, unique};
use serde_json::Value;

use super::{WAIT, doctor, events, expect, found, publish, wait_stats};

#[test]
fn kafka_topics_partitions_replication_and_prefix() -> anyhow::Result<()> {
    let Some(brokers) = test_server("EVENTBUS_TEST_KAFKA_BROKERS", "kafka")? else {
        return Ok(());
    };
    let prefix = unique("doctor");
    let base = vec![
        ("EVENT_BUS_TYPE", "kafka"),
        ("KAFKA_BOOTSTRAP_SERVERS", brokers.as_str()),
        ("KAFKA_TOPIC_PREFIX", prefix.as_str()),
        ("EVENT_CONSUMER_GROUP", prefix.as_str()),
        ("ENABLE_EVENT_SOURCING", "false"),
    ];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut vars = base.clone();
        vars.extend_from_slice(extra);
        vars
    };
    // Nothing published with this prefix yet.
    let (code, findings) = doctor(&with(&[]))?;
    ensure!(code == 6, "exit {code}: {findings:#?}");
    expect(
        &findings,
        "topics",
        "warn",
        &format!("no topic starts with \"{prefix}.\""),
    )?;
    expect(&findings, "server.version", "ok", "")?;
    expect(&findings, "server.clock", "skip", "not available on Kafka")?;
    // Topics made with one partition.
    let one = with(&[("KAFKA_PARTITIONS", "1")]);
    let settings = Settings::from_vars(one.clone())?;
    let types = [EventType::OPPORTUNITY_CREATED, EventType::USER_REGISTERED];
    tokio::runtime::Runtime::new()?.block_on(async {
        let bus =
            event_kafka::KafkaBus::connect(settings.kafka.clone(), settings.bus.clone()).await?;
        publish(&bus, events(&types, 300)?).await?;
        bus.shutdown().await?;
        anyhow::Ok(())
    })?;
    let (code, findings) = doctor(&one)?;
    let not_ok: Vec<&Value> = findings
        .iter()
        .filter(|f| f["status"] != "ok" && f["status"] != "skip")
        .collect();
    ensure!(code == 0 && not_ok.is_empty(), "exit {code}: {not_ok:#?}");
    expect(&findings, "topic.retention", "ok", "")?;
    // Configured for three: the topics that have one are named.
    let (code, findings) = doctor(&with(&[("KAFKA_PARTITIONS", "3")]))?;
    ensure!(code == 6, "exit {code}: {findings:#?}");
    let f = expect(
        &findings,
        "topic.partitions",
        "warn",
        &format!("{prefix}.opportunity.created (1)"),
    )?;
    ensure!(
        f["message"]
            .as_str()
            .unwrap_or_default()
            .contains(&format!("{prefix}.user.registered (1)")),
        "{f}"
    );
    // Another retention than the topics'.
    let (_, findings) = doctor(&with(&[
        ("KAFKA_PARTITIONS", "1"),
        ("KAFKA_RETENTION_MS", "3600000"),
    ]))?;
    expect(
        &findings,
        "topic.retention",
        "warn",
        "not KAFKA_RETENTION_MS=3600000",
    )?;
    // More replicas than brokers.
    let (code, findings) = doctor(&with(&[
        ("KAFKA_PARTITIONS", "1"),
        ("KAFKA_REPLICATION_FACTOR", "3"),
    ]))?;
    ensure!(code == 7, "exit {code}: {findings:#?}");
    expect(
        &findings,
        "server.brokers",
        "fail",
        "KAFKA_REPLICATION_FACTOR=3 but the cluster has 1 broker",
    )?;
    expect(
        &findings,
        "topic.replication",
        "warn",
        "fewer replicas than KAFKA_REPLICATION_FACTOR=3",
    )?;
    Ok(())
}

#[test]
fn a_kafka_group_with_lag_and_no_member() -> anyhow::Result<()> {
    let Some(brokers) = test_server("EVENTBUS_TEST_KAFKA_BROKERS", "kafka")? else {
        return Ok(());
    };
    let prefix = unique("doctor-group");
    let vars = vec![
        ("EVENT_BUS_TYPE", "kafka"),
        ("KAFKA_BOOTSTRAP_SERVERS", brokers.as_str()),
        ("KAFKA_TOPIC_PREFIX", prefix.as_str()),
        ("EVENT_CONSUMER_GROUP", prefix.as_str()),
        ("KAFKA_PARTITIONS", "2"),
        ("ENABLE_EVENT_SOURCING", "false"),
        ("EVENT_SHUTDOWN_TIMEOUT_MS", "5000"),
    ];
    let settings = Settings::from_vars(vars.clone())?;
    let types = [EventType::OPPORTUNITY_CREATED];
    const HANDLED: usize = 600;
    const BEHIND: usize = 900;
    tokio::runtime::Runtime::new()?.block_on(async {
        let connect =
            || event_kafka::KafkaBus::connect(settings.kafka.clone(), settings.bus.clone());
        // `reader` handles the first events, commits and leaves its group.
        let bus = connect().await?;
        bus.subscribe(
            SubscriptionSpec::new("reader", types.to_vec()).start_from(StartFrom::Earliest),
            handler_fn("reader", |_| async { Ok(()) }),
        )
        .await?;
        publish(&bus, events(&types, HANDLED)?).await?;
        wait_stats(&bus, "reader", |h| {
            h.processed == HANDLED as u64 && h.lag == 0 && h.pending == 0
        })
        .await?;
        bus.shutdown().await?;
        // What is published next is its lag.
        let bus = connect().await?;
        publish(&bus, events(&types, BEHIND)?).await?;
        bus.shutdown().await?;
        anyhow::Ok(())
    })?;
    let group = format!("{prefix}.reader");
    let start = Instant::now();
    let findings = loop {
        let (code, findings) = doctor(&vars)?;
        // The coordinator may list the departed member until its leave is processed.
        if !found(&findings, "group.members", "warn").is_empty() {
            ensure!(code == 6, "exit {code}: {findings:#?}");
            break findings;
        }
        ensure!(
            start.elapsed() < WAIT,
            "the group kept a member: {findings:#?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    expect(
        &findings,
        "group.members",
        "warn",
        &format!("group {group} (handler reader) has no member"),
    )?;
    expect(
        &findings,
        "group.lag",
        "warn",
        &format!("group {group} (handler reader) is {BEHIND} events behind"),
    )?;
    expect(&findings, "group.dead_letters", "ok", "handler reader")?;
    Ok(())
}
