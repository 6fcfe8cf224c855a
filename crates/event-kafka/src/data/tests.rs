//! The data path against a real Apache Kafka broker (`EVENTBUS_TEST_KAFKA_BROKERS`), with
//! Kafka's own console producer and consumer (`EVENTBUS_TEST_KAFKA_CLASSPATH`) as the foreign
//! clients.
//!
//! These tests live in the crate rather than in `tests/` because [`DataPlane`] is crate-private
//! and takes rskafka types: a public test-support module would put rskafka in the crate's
//! public API, which the architecture forbids. Outside an integration run
//! (`EVENTBUS_REQUIRE_INTEGRATION` unset) a missing broker is reported and the tests pass.

use std::future::Future;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail, ensure};
use event_core::{Event, EventType, JsonCodec};

use crate::config::{Compression, KafkaConfig};
use rskafka::record::RecordAndOffset;
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio::io::AsyncWriteExt;

use super::{DataPlane, Fetched, OffsetAt, Reader};
use crate::record;

/// No test may take longer than this, JVM start-ups included.
const TEST_LIMIT: Duration = Duration::from_secs(90);

/// A variable the tests need, or a failure that says how to get it. Outside an integration
/// run a missing one is reported and the test passes.
fn test_env(variable: &str) -> anyhow::Result<Option<String>> {
    match std::env::var(variable) {
        Ok(value) if !value.is_empty() => Ok(Some(value)),
        _ if std::env::var("EVENTBUS_REQUIRE_INTEGRATION").is_ok_and(|v| v == "1") => bail!(
            "{variable} is not set: run `cargo xtask test`, or start a broker with \
             `eval \"$(cargo xtask services up kafka)\"` and run the tests again"
        ),
        _ => {
            eprintln!(
                "SKIPPED: no Kafka broker ({variable} is not set; run `cargo xtask test`, which starts one, \
                 or `eval \"$(cargo xtask services up kafka)\"`)"
            );
            Ok(None)
        }
    }
}

fn config(brokers: &str, compression: Compression) -> KafkaConfig {
    KafkaConfig {
        bootstrap_servers: brokers.split(',').map(str::to_owned).collect(),
        compression,
        ..KafkaConfig::default()
    }
}

/// Runs `body` with a data plane and a fresh topic of `partitions` partitions, within
/// [`TEST_LIMIT`], and deletes the topic afterwards.
async fn with_topic<F, Fut>(partitions: i32, body: F) -> anyhow::Result<()>
where
    F: FnOnce(Arc<DataPlane>, String, String) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let Some(brokers) = test_env("EVENTBUS_TEST_KAFKA_BROKERS")? else {
        return Ok(());
    };
    let run = async {
        let plane = Arc::new(DataPlane::connect(&config(&brokers, Compression::Lz4)).await?);
        let topic = format!("eventbus-test.data.{:016x}", fastrand::u64(..));
        plane.create_topic_simple(&topic, partitions, 1).await?;
        let outcome = body(Arc::clone(&plane), topic.clone(), brokers.clone()).await;
        let cleanup = plane.delete_topic(&topic).await;
        outcome?;
        cleanup?;
        anyhow::Ok(())
    };
    tokio::time::timeout(TEST_LIMIT, run)
        .await
        .map_err(|_| anyhow!("the test did not finish within {TEST_LIMIT:?}"))?
}

/// Fetches from `from` until `count` records arrived (each fetch waits at most a second).
async fn fetch_n(
    plane: &DataPlane,
    topic: &str,
    partition: i32,
    from: i64,
    count: usize,
) -> anyhow::Result<Vec<RecordAndOffset>> {
    let mut all = Vec::new();
    let mut next = from;
    while all.len() < count {
        match plane
            .fetch(topic, partition, next, 1024 * 1024, Duration::from_secs(1))
            .await?
        {
            Fetched::Records { records, .. } => {
                if let Some(last) = records.last() {
                    next = last.offset + 1;
                }
                all.extend(records);
            }
            Fetched::OffsetOutOfRange => bail!("offset {next} of {topic}/{partition} out of range"),
        }
    }
    ensure!(
        all.len() == count,
        "expected {count} records, got {}",
        all.len()
    );
    Ok(all)
}

fn event(key: Option<&str>, n: u32) -> Event {
    let mut builder = Event::builder(EventType::OPPORTUNITY_CREATED, "opportunity_service")
        .payload(json!({"opportunity_id": format!("opp-{n}"), "score": 4.5, "n": n}));
    if let Some(key) = key {
        builder = builder
            .partition_key(key)
            .correlation_id(format!("req-{n}"));
    }
    builder.build().expect("a valid event")
}

/// A batch keeps its keys, headers, timestamps and envelopes through the broker, on the
/// partition it was sent to.
#[tokio::test]
async fn a_batch_comes_back_as_it_was_produced() -> anyhow::Result<()> {
    with_topic(2, |plane, topic, _| async move {
        assert_eq!(plane.partitions(&topic).await?, Some(2));
        assert_eq!(plane.partitions(&format!("{topic}.absent")).await?, None);

        let mut events = vec![
            event(Some("opp-1"), 1),
            event(Some("opp-2"), 2),
            event(None, 3),
        ];
        events.push(
            Event::builder(EventType::USER_REGISTERED, "users")
                .schema_version(3)
                .timestamp(OffsetDateTime::now_utc() - time::Duration::hours(1))
                .build()?,
        );
        let codec = JsonCodec::default();
        let records = events
            .iter()
            .map(|e| record::encode(&codec, e))
            .collect::<Result<Vec<_>, _>>()?;
        assert_eq!(
            plane.produce(&topic, 1, Vec::new()).await?,
            Vec::<i64>::new()
        );
        assert_eq!(
            plane.produce(&topic, 1, records.clone()).await?,
            vec![0, 1, 2, 3]
        );

        let fetched = fetch_n(&plane, &topic, 1, 0, 4).await?;
        for (i, ((got, sent), event)) in fetched.iter().zip(&records).zip(&events).enumerate() {
            assert_eq!(got.offset, i as i64);
            assert_eq!(&got.record, sent, "record {i} changed on the way");
            assert_eq!(&record::decode(&codec, &got.record)?, event);
        }
        assert_eq!(plane.offset_at(&topic, 0, OffsetAt::Latest).await?, 0);
        Ok(())
    })
    .await
}

/// Every `KAFKA_COMPRESSION` is accepted by the broker and read back.
#[tokio::test]
async fn every_compression_round_trips() -> anyhow::Result<()> {
    with_topic(1, |_, topic, brokers| async move {
        let codec = JsonCodec::default();
        let mut sent = Vec::new();
        for compression in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let plane = DataPlane::connect(&config(&brokers, compression)).await?;
            let events: Vec<_> = (0..3).map(|n| event(Some("k"), n)).collect();
            let records = events
                .iter()
                .map(|e| record::encode(&codec, e))
                .collect::<Result<Vec<_>, _>>()?;
            plane.produce(&topic, 0, records).await?;
            sent.extend(events);
        }
        let plane = DataPlane::connect(&config(&brokers, Compression::None)).await?;
        let fetched = fetch_n(&plane, &topic, 0, 0, sent.len()).await?;
        for (got, event) in fetched.iter().zip(&sent) {
            assert_eq!(&record::decode(&codec, &got.record)?, event);
        }
        Ok(())
    })
    .await
}

/// Earliest, latest and by-time offsets, on an empty partition and on a filled one.
#[tokio::test]
async fn offsets_by_position_and_time() -> anyhow::Result<()> {
    with_topic(1, |plane, topic, _| async move {
        let now = record::unix_millis(OffsetDateTime::now_utc());
        for at in [
            OffsetAt::Earliest,
            OffsetAt::Latest,
            OffsetAt::Timestamp(now),
        ] {
            assert_eq!(
                plane.offset_at(&topic, 0, at).await?,
                0,
                "{at:?} when empty"
            );
        }

        // Within the broker's accepted window (an hour back) and its retention.
        let t0 = OffsetDateTime::now_utc() - time::Duration::hours(1);
        let codec = JsonCodec::default();
        let records = (0..3)
            .map(|n| {
                let at = t0 + time::Duration::seconds(n);
                let event = Event::builder(EventType::SIGNAL_DETECTED, "s")
                    .timestamp(at)
                    .build()?;
                record::encode(&codec, &event)
            })
            .collect::<Result<Vec<_>, _>>()?;
        plane.produce(&topic, 0, records).await?;

        let ms = record::unix_millis(t0);
        for (at, expected) in [
            (OffsetAt::Earliest, 0),
            (OffsetAt::Latest, 3),
            (OffsetAt::Timestamp(ms - 86_400_000), 0),
            (OffsetAt::Timestamp(ms), 0),
            (OffsetAt::Timestamp(ms + 1), 1),
            (OffsetAt::Timestamp(ms + 1000), 1),
            (OffsetAt::Timestamp(ms + 1500), 2),
            (OffsetAt::Timestamp(ms + 2000), 2),
            (OffsetAt::Timestamp(ms + 2001), 3),
            (OffsetAt::Timestamp(now + 60_000), 3),
        ] {
            assert_eq!(plane.offset_at(&topic, 0, at).await?, expected, "{at:?}");
        }
        let err = plane
            .offset_at(&topic, 0, OffsetAt::Timestamp(i64::MAX))
            .await
            .unwrap_err();
        assert!(
            matches!(err, event_core::Error::InvalidArgument(_)),
            "{err}"
        );
        Ok(())
    })
    .await
}

/// A fetch at the high watermark waits up to `max_wait` and returns nothing; one in flight
/// when a record arrives returns that record.
#[tokio::test]
async fn a_fetch_at_the_end_waits_then_returns_empty() -> anyhow::Result<()> {
    with_topic(1, |plane, topic, _| async move {
        let codec = JsonCodec::default();
        plane
            .produce(&topic, 0, vec![record::encode(&codec, &event(None, 1))?])
            .await?;

        let max_wait = Duration::from_millis(600);
        let started = Instant::now();
        let Fetched::Records {
            records,
            high_watermark,
            ..
        } = plane.fetch(&topic, 0, 1, 1024 * 1024, max_wait).await?
        else {
            bail!("offset 1 (the high watermark) must be readable");
        };
        assert!(records.is_empty() && high_watermark == 1, "{records:?}");
        // The broker held the request rather than answering at once.
        assert!(started.elapsed() >= max_wait / 2, "{:?}", started.elapsed());

        // A long poll and a produce at once: the produce is not held back behind the poll (they
        // use different connections), and the poll returns the new record.
        let second = event(Some("k"), 2);
        let (fetched, produced) = tokio::join!(
            plane.fetch(&topic, 0, 1, 1024 * 1024, Duration::from_secs(20)),
            plane.produce(&topic, 0, vec![record::encode(&codec, &second)?]),
        );
        assert_eq!(produced?, vec![1]);
        let Fetched::Records { records, .. } = fetched? else {
            bail!("offset 1 must be readable");
        };
        assert_eq!(records.len(), 1);
        assert_eq!(record::decode(&codec, &records[0].record)?, second);
        Ok(())
    })
    .await
}

/// Readers have connections of their own: one reader's long poll does not hold back another's
/// fetch of the same partition (a broker answers one connection's requests in order).
#[tokio::test]
async fn a_long_poll_holds_back_no_other_reader() -> anyhow::Result<()> {
    with_topic(1, |plane, topic, _| async move {
        let codec = JsonCodec::default();
        let first = event(None, 1);
        plane
            .produce(&topic, 0, vec![record::encode(&codec, &first)?])
            .await?;
        let (waiting, other) = (plane.reader(), plane.reader());
        // Connect the waiting reader first, so that its long poll goes out at its first poll.
        fetch_with(&waiting, &topic, 0, Duration::ZERO).await?;

        let long_poll = waiting.fetch(&topic, 0, 1, 1024 * 1024, Duration::from_secs(30));
        tokio::pin!(long_poll);
        tokio::select! {
            biased;
            outcome = &mut long_poll => bail!("the long poll ended before the other reader's fetch: {outcome:?}"),
            records = fetch_with(&other, &topic, 0, Duration::from_secs(30)) => {
                assert_eq!(record::decode(&codec, &records?[0].record)?, first);
            }
        }

        // The poll still waits, and returns the next record when it arrives.
        let second = event(None, 2);
        other
            .plane()
            .produce(&topic, 0, vec![record::encode(&codec, &second)?])
            .await?;
        let Fetched::Records { records, .. } = long_poll.await? else {
            bail!("offset 1 must be readable");
        };
        assert_eq!(record::decode(&codec, &records[0].record)?, second);
        Ok(())
    })
    .await
}

/// A dropped partition client is built again on the next call; dropping one that another call
/// already replaced keeps the replacement.
#[tokio::test]
async fn dropped_partition_clients_are_rebuilt() -> anyhow::Result<()> {
    with_topic(1, |plane, topic, _| async move {
        let codec = JsonCodec::default();
        let produce = || async {
            plane
                .produce(&topic, 0, vec![record::encode(&codec, &event(None, 0))?])
                .await
        };
        produce().await?;
        assert_eq!(plane.writers.len(), 1);
        let first = plane.writers.get(&plane.client, &topic, 0).await?;
        plane.writers.forget(&topic, 0, Some(&first));
        assert_eq!(plane.writers.len(), 0);

        assert_eq!(produce().await?, vec![1]);
        let second = plane.writers.get(&plane.client, &topic, 0).await?;
        assert!(!Arc::ptr_eq(&first, &second));
        plane.writers.forget(&topic, 0, Some(&first));
        assert_eq!(
            plane.writers.len(),
            1,
            "a stale drop removed the new client"
        );
        assert_eq!(produce().await?, vec![2]);
        Ok(())
    })
    .await
}

/// One fetch from offset 0 through a reader.
async fn fetch_with(
    reader: &Reader,
    topic: &str,
    partition: i32,
    max_wait: Duration,
) -> anyhow::Result<Vec<RecordAndOffset>> {
    match reader
        .fetch(topic, partition, 0, 1024 * 1024, max_wait)
        .await?
    {
        Fetched::Records { records, .. } if !records.is_empty() => Ok(records),
        other => bail!("expected records at offset 0, got {other:?}"),
    }
}

/// An offset outside the partition is reported as such, and reading resumes from the earliest.
#[tokio::test]
async fn an_offset_out_of_range_is_reported_and_earliest_recovers() -> anyhow::Result<()> {
    with_topic(1, |plane, topic, _| async move {
        let codec = JsonCodec::default();
        let records = (0..2)
            .map(|n| record::encode(&codec, &event(None, n)))
            .collect::<Result<Vec<_>, _>>()?;
        plane.produce(&topic, 0, records).await?;

        for offset in [10, -5] {
            let fetched = plane
                .fetch(&topic, 0, offset, 1024, Duration::from_millis(100))
                .await?;
            assert!(
                matches!(fetched, Fetched::OffsetOutOfRange),
                "{offset}: {fetched:?}"
            );
        }
        let earliest = plane.offset_at(&topic, 0, OffsetAt::Earliest).await?;
        assert_eq!(fetch_n(&plane, &topic, 0, earliest, 2).await?.len(), 2);
        Ok(())
    })
    .await
}

/// Kafka's tools: `java -cp $EVENTBUS_TEST_KAFKA_CLASSPATH <class> --bootstrap-server ...`.
struct KafkaTools {
    java: PathBuf,
    classpath: String,
}

impl KafkaTools {
    fn from_env() -> anyhow::Result<Option<Self>> {
        let Some(classpath) = test_env("EVENTBUS_TEST_KAFKA_CLASSPATH")? else {
            return Ok(None);
        };
        let java = match std::env::var_os("JAVA_HOME").filter(|h| !h.is_empty()) {
            Some(home) => PathBuf::from(home).join("bin").join("java"),
            None => PathBuf::from("java"),
        };
        Ok(Some(Self { java, classpath }))
    }

    /// Runs a tool to completion with `stdin`, returning its standard output.
    async fn run(&self, class: &str, args: &[&str], stdin: &[u8]) -> anyhow::Result<String> {
        let mut child = tokio::process::Command::new(&self.java)
            .arg("-cp")
            .arg(&self.classpath)
            .arg(class)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {} (set JAVA_HOME?)", self.java.display()))?;
        let mut input = child.stdin.take().context("no stdin")?;
        input.write_all(stdin).await?;
        drop(input);
        let output = child.wait_with_output().await?;
        ensure!(
            output.status.success(),
            "{class} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(String::from_utf8(output.stdout)?)
    }
}

/// Records from Kafka's console producer are not envelopes: decoding says why.
#[tokio::test]
async fn a_console_producer_record_is_a_clear_decode_error() -> anyhow::Result<()> {
    let Some(tools) = KafkaTools::from_env()? else {
        return Ok(());
    };
    with_topic(1, |plane, topic, brokers| async move {
        tools
            .run(
                "org.apache.kafka.tools.ConsoleProducer",
                &["--bootstrap-server", &brokers, "--topic", &topic],
                b"not json at all\n{\"event_type\":\"billing.paid\"}\n",
            )
            .await?;
        let fetched = fetch_n(&plane, &topic, 0, 0, 2).await?;
        let codec = JsonCodec::default();
        for (got, reason) in fetched
            .iter()
            .zip(["not a valid event envelope", "missing field"])
        {
            let err = record::decode(&codec, &got.record).unwrap_err();
            assert!(
                matches!(err, event_core::Error::InvalidEvent { .. })
                    && err.to_string().contains(reason),
                "{err} should say {reason}"
            );
        }
        assert_eq!(
            record::raw_text(&fetched[0].record),
            "key=null headers=[] value=not json at all"
        );
        Ok(())
    })
    .await
}

/// Kafka's console consumer prints our records as readable JSON, with their keys and headers.
#[tokio::test]
async fn the_console_consumer_prints_our_records() -> anyhow::Result<()> {
    let Some(tools) = KafkaTools::from_env()? else {
        return Ok(());
    };
    with_topic(1, |plane, topic, brokers| async move {
        let codec = JsonCodec::default();
        let events = [event(Some("opp-7"), 7), event(None, 8)];
        let records = events
            .iter()
            .map(|e| record::encode(&codec, e))
            .collect::<Result<Vec<_>, _>>()?;
        plane.produce(&topic, 0, records).await?;

        let out = tools
            .run(
                "org.apache.kafka.tools.consumer.ConsoleConsumer",
                &[
                    "--bootstrap-server",
                    &brokers,
                    "--topic",
                    &topic,
                    "--from-beginning",
                    "--max-messages",
                    "2",
                    "--timeout-ms",
                    "30000",
                    "--formatter-property",
                    "print.key=true",
                    "--formatter-property",
                    "print.headers=true",
                ],
                b"",
            )
            .await?;
        // One line per record: headers (`name:value,...`), key, value, tab-separated.
        let lines: Vec<_> = out.lines().filter(|l| l.split('\t').count() == 3).collect();
        assert_eq!(lines.len(), 2, "console consumer printed:\n{out}");
        for (line, event) in lines.iter().zip(&events) {
            let mut fields = line.split('\t');
            let (headers, key, value) = (
                fields.next().unwrap_or_default(),
                fields.next().unwrap_or_default(),
                fields.next().unwrap_or_default(),
            );
            assert_eq!(key, event.ordering_key());
            let mut expected = vec![
                "content_type:application/json".to_owned(),
                format!("event_id:{}", event.id),
                "event_type:opportunity.created".to_owned(),
                "schema_version:1".to_owned(),
            ];
            if let Some(correlation) = &event.correlation_id {
                expected.insert(1, format!("correlation_id:{correlation}"));
            }
            assert_eq!(headers, expected.join(","));
            let json: Value = serde_json::from_str(value)
                .with_context(|| format!("the value is not JSON: {value}"))?;
            assert_eq!(json, serde_json::to_value(event)?);
            assert_eq!(json["event_type"], "opportunity.created");
        }
        Ok(())
    })
    .await
}
