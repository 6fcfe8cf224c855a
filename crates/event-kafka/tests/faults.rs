//! A consumer process killed with SIGKILL and a new one started: every event is handled, and
//! events are handled twice only in the tail the killed process had not committed (read from
//! Kafka after the kill, so the check holds however slow the machine). Against a
//! real broker (`EVENTBUS_TEST_KAFKA_BROKERS`); the consumer process is this test binary run
//! again with `EVENTBUS_KAFKA_FAULT_CHILD` set.

mod support;

use support::Settings;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::ensure;
use event_core::{
    Config, Event, EventBus, EventId, EventType, HandlerError, StartFrom, SubscriptionSpec,
    handler_fn,
};
use rskafka::client::ClientBuilder;
use rskafka::client::partition::{OffsetAt, UnknownTopicHandling};

const CHILD: &str = "EVENTBUS_KAFKA_FAULT_CHILD";
const EVENTS: usize = 400;

fn config(brokers: &str, prefix: &str) -> Settings {
    let mut config = Settings::default();
    config.kafka.bootstrap_servers = brokers.split(',').map(|s| s.trim().to_string()).collect();
    config.kafka.topic_prefix = prefix.to_string();
    // The killed member holds its partitions until its session ends: keep that short.
    config.kafka.session_timeout = Duration::from_secs(6);
    config.kafka.heartbeat_interval = Duration::from_millis(500);
    config.kafka.rebalance_timeout = Duration::from_secs(10);
    config
}

fn spec(handler: &str, event_type: &EventType) -> SubscriptionSpec {
    SubscriptionSpec::new(handler.to_string(), [event_type.clone()])
        .start_from(StartFrom::Earliest)
        .concurrency(1)
}

/// The consumer process: handles events slowly, writing each id to a file, until killed.
#[tokio::test]
async fn consumer_child() -> anyhow::Result<()> {
    let Ok(settings) = std::env::var(CHILD) else {
        return Ok(());
    };
    let parts: Vec<&str> = settings.split('|').collect();
    let [brokers, prefix, event_type, handler, file] = parts[..] else {
        anyhow::bail!("bad {CHILD}: {settings}");
    };
    let bus = config(brokers, prefix).connect().await?;
    let event_type = EventType::new(event_type)?;
    bus.subscribe(
        spec(handler, &event_type),
        support::id_writer(
            handler,
            std::path::Path::new(file),
            Duration::from_millis(5),
        )?,
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(120)).await;
    Ok(())
}

/// The events below the group's committed offsets in every partition of `topic` (Kafka's
/// tool reads the lag, rskafka the end offsets and the records).
async fn below_committed(
    brokers: &str,
    topic: &str,
    group: &str,
) -> anyhow::Result<HashSet<EventId>> {
    let Some(classpath) = event_testkit::test_server("EVENTBUS_TEST_KAFKA_CLASSPATH", "kafka")?
    else {
        anyhow::bail!("EVENTBUS_TEST_KAFKA_CLASSPATH is needed to read the committed offsets");
    };
    let client = ClientBuilder::new(vec![brokers.to_string()])
        .build()
        .await?;
    let codec = event_core::JsonCodec::default();
    let mut below = HashSet::new();
    for row in support::tool_offsets(&classpath, brokers, group).await? {
        if row.topic != topic {
            continue;
        }
        let partition = client
            .partition_client(topic, row.partition, UnknownTopicHandling::Retry)
            .await?;
        let end = partition.get_offset(OffsetAt::Latest).await?;
        let committed = end - row.lag.unwrap_or(end);
        let mut position = 0;
        while position < committed {
            let fetched = partition.fetch(position, 1..4_000_000, 100).await?;
            for r in fetched.records.iter().filter(|r| r.offset < committed) {
                let value = r.record.value.as_deref().unwrap_or_default();
                below.insert(codec.decode(value)?.id);
            }
            ensure!(fetched.next_offset > position, "no progress at {position}");
            position = fetched.next_offset;
        }
    }
    Ok(below)
}

#[tokio::test]
async fn a_killed_consumer_resumes_from_its_committed_offsets() -> anyhow::Result<()> {
    if std::env::var(CHILD).is_ok() {
        return Ok(());
    }
    let Some(brokers) = event_testkit::test_server("EVENTBUS_TEST_KAFKA_BROKERS", "kafka")? else {
        return Ok(());
    };
    let tag = format!("{:08x}", fastrand::u32(..));
    let prefix = format!("eventbus-faults-{tag}");
    let event_type = EventType::new(format!("test.created{tag}"))?;
    let handler = format!("killed{tag}");
    let file = std::env::temp_dir().join(format!("eventbus-kafka-fault-{tag}.txt"));
    let bus = config(&brokers, &prefix).connect().await?;
    let events = support::keyed_events(&event_type, "faults", EVENTS, 7)?;
    let ids: Vec<EventId> = bus
        .publish_batch(events)
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;

    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args(["consumer_child", "--exact", "--nocapture"])
        .env(
            CHILD,
            format!(
                "{brokers}|{prefix}|{event_type}|{handler}|{}",
                file.display()
            ),
        )
        .stdout(std::process::Stdio::null())
        .spawn()?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while support::read_ids(&file).len() < EVENTS / 3 {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "the consumer process handled {} events in 90 s",
            support::read_ids(&file).len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.kill()?; // SIGKILL
    child.wait()?;
    let first: HashSet<EventId> = support::read_ids(&file).into_iter().collect();
    let committed = below_committed(
        &brokers,
        &format!("{prefix}.{event_type}"),
        &format!("{}.{handler}", Config::default().consumer_group),
    )
    .await?;
    ensure!(
        first.len() < EVENTS,
        "the consumer finished before it was killed"
    );

    let second = Arc::new(Mutex::new(Vec::new()));
    let record = second.clone();
    bus.subscribe(
        spec(&handler, &event_type),
        handler_fn(handler.clone(), move |event: Arc<Event>| {
            let record = record.clone();
            async move {
                record.lock().unwrap().push(event.id);
                Ok::<(), HandlerError>(())
            }
        }),
    )
    .await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let seen: HashSet<EventId> = second.lock().unwrap().iter().copied().collect();
        if ids.iter().all(|id| first.contains(id) || seen.contains(id)) {
            break;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "after the restart, {} events were never handled",
            ids.iter()
                .filter(|id| !first.contains(id) && !seen.contains(id))
                .count()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let second: Vec<EventId> = second.lock().unwrap().clone();
    let twice = second.iter().filter(|id| first.contains(id)).count();
    eprintln!(
        "killed after {} events ({} of them committed); the restarted consumer handled {}, {twice} of them again",
        first.len(),
        committed.len(),
        second.len()
    );
    // What the protocol promises, however slow the machine: everything below the killed
    // process's committed offsets was handled by it and is never delivered again; only its
    // uncommitted tail is handled twice.
    ensure!(
        committed.iter().all(|id| first.contains(id)),
        "events below the committed offsets were never handled by the killed process"
    );
    let again: Vec<&EventId> = second.iter().filter(|id| committed.contains(id)).collect();
    ensure!(
        again.is_empty(),
        "{} events below the committed offsets were delivered again after the restart",
        again.len()
    );
    bus.shutdown().await?;
    let _ = std::fs::remove_file(&file);
    Ok(())
}
