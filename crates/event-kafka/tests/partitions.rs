//! Partitions added to a topic while the bus runs (`kafka-topics --alter --partitions`), as an
//! operator scaling a topic does: within `KAFKA_METADATA_MAX_AGE_MS` the group's leader
//! rebalances so that a member owns each new partition, records another producer writes
//! straight to the new partitions are handled, and the bus's own publishes spread over them.

mod support;

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context as _, ensure};
use event_core::{Event, EventBus, EventId, EventType, SubscriptionSpec};
use event_kafka::KafkaBus;
use support::{Settings, all_handled, kafka_script, kafka_tool, recorder, send_event, topics_tool};

const BEFORE: i32 = 2;
const AFTER: i32 = 6;

/// The end offset of each partition of `topic` (`GetOffsetShell`: `topic:partition:offset`).
async fn end_offsets(classpath: &str, brokers: &str, topic: &str) -> anyhow::Result<Vec<i64>> {
    let (stdout, _) = kafka_tool(
        classpath,
        "org.apache.kafka.tools.GetOffsetShell",
        brokers,
        &["--topic", topic],
    )
    .await?;
    let mut offsets = Vec::new();
    for line in stdout.lines().filter(|l| !l.trim().is_empty()) {
        let mut fields = line.rsplitn(3, ':');
        let offset = fields.next().and_then(|o| o.parse().ok());
        let partition = fields.next().and_then(|p| p.parse::<usize>().ok());
        let (Some(offset), Some(partition)) = (offset, partition) else {
            anyhow::bail!("unexpected GetOffsetShell line {line:?}");
        };
        if offsets.len() <= partition {
            offsets.resize(partition + 1, 0);
        }
        offsets[partition] = offset;
    }
    Ok(offsets)
}

fn events(event_type: &EventType, n: usize, round: &str) -> anyhow::Result<Vec<Event>> {
    (0..n)
        .map(|i| {
            Ok(Event::builder(event_type.clone(), "partitions_test")
                .partition_key(format!("{round}-{i}"))
                .build()?)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_added_at_run_time_are_published_to_and_consumed() -> anyhow::Result<()> {
    let Some(brokers) = event_testkit::test_server("EVENTBUS_TEST_KAFKA_BROKERS", "kafka")? else {
        return Ok(());
    };
    let Some(classpath) = event_testkit::test_server("EVENTBUS_TEST_KAFKA_CLASSPATH", "kafka")?
    else {
        return Ok(());
    };
    let mut settings = Settings::on(&brokers);
    settings.kafka.topic_prefix = event_testkit::unique("grow");
    settings.kafka.partitions = BEFORE as u32;
    settings.kafka.metadata_max_age = Duration::from_secs(1);
    settings.kafka.session_timeout = Duration::from_secs(6);
    settings.kafka.heartbeat_interval = Duration::from_millis(500);
    let event_type = EventType::new("test.grown")?;
    let topic = format!("{}.{event_type}", settings.kafka.topic_prefix);

    // Two members of one group, as two processes would be.
    let mut members: Vec<KafkaBus> = Vec::new();
    let mut seen = Vec::new();
    for _ in 0..2 {
        let bus = settings.connect().await?;
        let (handler, handled) = recorder("grower");
        // `StartFrom::Latest` (the default): that is for a new group; a partition added to a
        // topic the group consumes is still read from its beginning.
        bus.subscribe(
            SubscriptionSpec::new("grower", [event_type.clone()]),
            handler,
        )
        .await?;
        members.push(bus);
        seen.push(handled);
    }
    let members_seen: Vec<&Mutex<Vec<EventId>>> = seen.iter().map(|s| &**s).collect();
    let first = events(&event_type, 200, "first")?;
    let mut expected: HashSet<EventId> = first.iter().map(|e| e.id).collect();
    for result in members[0].publish_batch(first).await {
        result?;
    }
    all_handled(&members_seen, &expected, Duration::from_secs(60)).await?;

    topics_tool(
        &classpath,
        &brokers,
        &[
            "--alter",
            "--topic",
            &topic,
            "--partitions",
            &AFTER.to_string(),
        ],
    )
    .await?;

    // Another producer writes to each new partition at once.
    let foreign = events(&event_type, 40, "foreign")?;
    let mut script = String::from("PRODUCER\t-\n");
    for (i, event) in foreign.iter().enumerate() {
        script += &send_event(&topic, BEFORE + (i as i32 % (AFTER - BEFORE)), event)?;
    }
    script += "FLUSH\n";
    kafka_script(&classpath, &brokers, &script).await?;
    expected.extend(foreign.iter().map(|e| e.id));
    all_handled(&members_seen, &expected, Duration::from_secs(90))
        .await
        .context("records written to the new partitions")?;

    // The bus's own publishes reach the new partitions too: the first member counted two
    // partitions when it published before, more than `KAFKA_METADATA_MAX_AGE_MS` ago.
    let before = end_offsets(&classpath, &brokers, &topic).await?;
    ensure!(before.len() == AFTER as usize, "offsets {before:?}");
    let last = events(&event_type, 600, "last")?;
    expected.extend(last.iter().map(|e| e.id));
    for result in members[0].publish_batch(last).await {
        result?;
    }
    let after = end_offsets(&classpath, &brokers, &topic).await?;
    let grown: Vec<i64> = (BEFORE as usize..AFTER as usize)
        .map(|p| after[p] - before[p])
        .collect();
    ensure!(
        grown.iter().all(|n| *n > 0),
        "600 keyed publishes left a new partition empty: {grown:?} more records in partitions {BEFORE} to {}",
        AFTER - 1
    );
    if let Err(e) = all_handled(&members_seen, &expected, Duration::from_secs(60)).await {
        let group = format!("{}.grower", settings.bus.consumer_group);
        let offsets = support::tool_offsets(&classpath, &brokers, &group).await;
        anyhow::bail!("{e}; the group's positions: {offsets:?}");
    }
    let per_member: Vec<usize> = seen.iter().map(|s| s.lock().unwrap().len()).collect();
    eprintln!(
        "{} events handled after the topic grew from {BEFORE} to {AFTER} partitions (by member: {per_member:?}; the bus's publishes added {grown:?} to the new partitions)",
        expected.len()
    );
    for bus in members {
        bus.shutdown().await?;
    }
    Ok(())
}
