//! Topics with offsets that hold no event: a Java transactional producer's commits and aborts
//! (transaction markers, aborted records) and a compacted topic (gaps). Every committed event
//! is handled once, nothing aborted ever, and the group's commit reaches the end of every
//! partition. Against a real broker (`EVENTBUS_TEST_KAFKA_BROKERS`) with Kafka's Java client
//! (`EVENTBUS_TEST_KAFKA_CLASSPATH`).

mod support;

use support::Settings;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use anyhow::{Context as _, ensure};
use event_core::{Event, EventBus, EventId, EventType, ReplayQuery, StartFrom, SubscriptionSpec};
use futures::StreamExt as _;
use rskafka::client::ClientBuilder;
use rskafka::client::partition::{OffsetAt, UnknownTopicHandling};
use support::{committed_to_the_end, exactly, kafka_script, quiescent, recorder, send_event};
use time::OffsetDateTime;

/// Transactions the Java producer writes, and events in each.
const TRANSACTIONS: usize = 30;
const PER_TRANSACTION: usize = 40;

struct Servers {
    brokers: String,
    classpath: String,
}

fn servers() -> anyhow::Result<Option<Servers>> {
    let Some(brokers) = event_testkit::test_server("EVENTBUS_TEST_KAFKA_BROKERS", "kafka")? else {
        return Ok(None);
    };
    let Some(classpath) = event_testkit::test_server("EVENTBUS_TEST_KAFKA_CLASSPATH", "kafka")?
    else {
        return Ok(None);
    };
    Ok(Some(Servers { brokers, classpath }))
}

fn config(brokers: &str, partitions: u32) -> Settings {
    let mut config = Settings::default();
    config.kafka.bootstrap_servers = brokers.split(',').map(|s| s.trim().to_string()).collect();
    config.kafka.topic_prefix = event_testkit::unique("eventbus-txn");
    config.kafka.partitions = partitions;
    config
}

#[tokio::test]
async fn committed_transactions_are_handled_once_and_aborted_ones_never() -> anyhow::Result<()> {
    let Some(servers) = servers()? else {
        return Ok(());
    };
    let config = config(&servers.brokers, 2);
    let prefix = config.kafka.topic_prefix.clone();
    let group_prefix = config.bus.consumer_group.clone();
    let bus = config.connect().await?;
    let event_type = EventType::new(format!("test.txn{:08x}", fastrand::u32(..)))?;
    let topic = format!("{prefix}.{event_type}");
    let handler = format!("txn{:08x}", fastrand::u32(..));
    let (recorder, handled) = recorder(&handler);
    // Subscribed while the transactions are written: the fetches meet open transactions too.
    bus.subscribe(
        SubscriptionSpec::new(handler.clone(), [event_type.clone()])
            .start_from(StartFrom::Earliest),
        recorder,
    )
    .await?;

    let mut script = format!("PRODUCER\t{prefix}-producer\n");
    let mut committed = HashSet::new();
    let mut aborted = HashSet::new();
    for t in 0..TRANSACTIONS {
        // Every third aborted, and the last one too: the log ends with an abort marker.
        let abort = t % 3 == 1 || t == TRANSACTIONS - 1;
        script.push_str("BEGIN\n");
        for n in 0..PER_TRANSACTION {
            let event = Event::builder(event_type.clone(), "java")
                .partition_key(format!("key-{}", n % 11))
                .build()?;
            script.push_str(&send_event(&topic, (n % 2) as i32, &event)?);
            if abort { &mut aborted } else { &mut committed }.insert(event.id);
        }
        script.push_str(if abort { "ABORT\n" } else { "COMMIT\n" });
    }
    // The bus publishes into the same partitions meanwhile: plain batches between the
    // transactional ones.
    let publishing = async {
        let mut ids = Vec::new();
        for round in 0..10 {
            let events: Vec<Event> = (0..20)
                .map(|n| {
                    Event::builder(event_type.clone(), "bus")
                        .partition_key(format!("bus-{round}-{n}"))
                        .build()
                })
                .collect::<Result<_, _>>()?;
            for id in bus.publish_batch(events).await {
                ids.push(id?);
            }
        }
        anyhow::Ok(ids)
    };
    let (written, published) = tokio::join!(
        kafka_script(&servers.classpath, &servers.brokers, &script),
        publishing
    );
    written?;
    committed.extend(published?);

    quiescent(&bus, &handler, Duration::from_secs(60)).await?;
    let seen = handled.lock().unwrap().clone();
    ensure!(
        !seen.iter().any(|id| aborted.contains(id)),
        "{} events of aborted transactions were handled",
        seen.iter().filter(|id| aborted.contains(id)).count()
    );
    exactly(&seen, &committed)?;
    // The group's committed offsets are at the end of each partition, past the final abort
    // marker: Kafka's tool sees lag 0 too.
    committed_to_the_end(
        &servers.classpath,
        &servers.brokers,
        &format!("{group_prefix}.{handler}"),
        2,
    )
    .await?;
    // Replay reads across the markers and leaves the aborted records out.
    let mut replayed = HashSet::new();
    let mut stream = bus
        .replay(ReplayQuery::new(
            [event_type.clone()],
            OffsetDateTime::UNIX_EPOCH,
        ))
        .await?;
    while let Some(event) = stream.next().await {
        replayed.insert(event?.id);
    }
    ensure!(
        replayed == committed,
        "replay gave {} events, {} committed",
        replayed.len(),
        committed.len()
    );
    bus.shutdown().await?;
    Ok(())
}

/// Reads a partition from its earliest offset to its end with rskafka: the offsets of the
/// records still there (and their events), and the end.
async fn surviving(
    brokers: &str,
    topic: &str,
) -> anyhow::Result<(Vec<(EventId, String)>, i64, i64)> {
    let client = ClientBuilder::new(vec![brokers.to_string()])
        .build()
        .await?;
    let partition = client
        .partition_client(topic, 0, UnknownTopicHandling::Retry)
        .await?;
    let start = partition.get_offset(OffsetAt::Earliest).await?;
    let end = partition.get_offset(OffsetAt::Latest).await?;
    let codec = event_core::JsonCodec::default();
    let mut out = Vec::new();
    let mut position = start;
    while position < end {
        let fetched = partition.fetch(position, 1..4_000_000, 100).await?;
        for r in fetched.records {
            let value = r.record.value.context("a record without value")?;
            let event = codec.decode(&value)?;
            out.push((event.id, event.ordering_key().into_owned()));
        }
        ensure!(fetched.next_offset > position, "no progress at {position}");
        position = fetched.next_offset;
    }
    Ok((out, start, end))
}

#[tokio::test]
async fn a_compacted_topic_is_consumed_across_its_gaps() -> anyhow::Result<()> {
    let Some(servers) = servers()? else {
        return Ok(());
    };
    let config = config(&servers.brokers, 1);
    let prefix = config.kafka.topic_prefix.clone();
    let group_prefix = config.bus.consumer_group.clone();
    let bus = config.connect().await?;
    let event_type = EventType::new(format!("test.compacted{:08x}", fastrand::u32(..)))?;
    let topic = format!("{prefix}.{event_type}");
    let event = |n: usize| {
        Event::builder(event_type.clone(), "compaction")
            .partition_key(format!("key-{}", n % 20))
            .build()
    };
    bus.publish(event(0)?).await?;
    // The broker compacts only closed segments whose dirty part is big enough: close one
    // every 100 ms, and clean at any dirt.
    kafka_script(
        &servers.classpath,
        &servers.brokers,
        &[
            ("cleanup.policy", "compact"),
            ("segment.ms", "100"),
            ("min.cleanable.dirty.ratio", "0.001"),
            ("min.compaction.lag.ms", "0"),
            ("max.compaction.lag.ms", "1000"),
        ]
        .iter()
        .map(|(name, value)| format!("CONFIG\t{topic}\t{name}\t{value}\n"))
        .collect::<String>(),
    )
    .await?;
    // Rounds far enough apart in time that each starts a new segment (segment.ms), each
    // rewriting every key: the cleaner then removes all but the last value of each key
    // from the closed segments.
    let mut n = 1;
    for _ in 0..8 {
        let events: Vec<Event> = (0..150)
            .map(|_| {
                n += 1;
                event(n)
            })
            .collect::<Result<_, _>>()?;
        for result in bus.publish_batch(events).await {
            result?;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    // The cleaner runs every 15 s by default: wait until offsets are missing.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let (before, start, end) = loop {
        let (records, start, end) = surviving(&servers.brokers, &topic).await?;
        if (records.len() as i64) < (end - start) / 2 {
            break (records, start, end);
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "the broker did not compact {topic} in time ({} records in offsets {start}..{end})",
            records.len()
        );
        // Publishing again rolls the active segment, so there is always something to clean.
        bus.publish(event(0)?).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    eprintln!(
        "compacted: {} records left in offsets {start}..{end}",
        before.len()
    );

    let handler = format!("compacted{:08x}", fastrand::u32(..));
    let (recorder, handled) = recorder(&handler);
    bus.subscribe(
        SubscriptionSpec::new(handler.clone(), [event_type.clone()])
            .start_from(StartFrom::Earliest),
        recorder,
    )
    .await?;
    quiescent(&bus, &handler, Duration::from_secs(60)).await?;
    let seen = handled.lock().unwrap().clone();
    // The cleaner may remove more while the handler reads: what was handled is part of what
    // was there, each once, and the newest value of every key (never removed) is among it.
    let was_there: HashSet<EventId> = before.iter().map(|(id, _)| *id).collect();
    let newest: HashSet<EventId> = before
        .iter()
        .map(|(id, key)| (key, *id))
        .collect::<HashMap<_, _>>()
        .into_values()
        .collect();
    let unique: HashSet<EventId> = seen.iter().copied().collect();
    ensure!(
        unique.len() == seen.len(),
        "{} events handled more than once",
        seen.len() - unique.len()
    );
    ensure!(
        newest.is_subset(&unique),
        "the newest events of the keys were not all handled"
    );
    ensure!(
        unique.is_subset(&was_there),
        "handled events that were not in the topic"
    );
    committed_to_the_end(
        &servers.classpath,
        &servers.brokers,
        &format!("{group_prefix}.{handler}"),
        1,
    )
    .await?;
    bus.shutdown().await?;
    Ok(())
}
