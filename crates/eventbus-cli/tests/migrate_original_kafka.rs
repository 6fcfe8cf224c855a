//! The original Python system's Kafka topics, imported and bridged as a team would: records
//! written with a real Kafka client exactly as its `KafkaEventBus.publish_event` wrote them
//! (`migrate_original_kafka/original.rs`: both topic naming forms, key, JSON value, gzip, no
//! headers, several partitions), then `eventbus migrate from-original --kafka-brokers` imports
//! them into a Redis bus and the result is compared event by event; a second run stores
//! nothing twice, a dry run writes nothing. `eventbus bridge from-original` carries records
//! published while it runs, killed and restarted part-way, and loses none.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use event_core::{Event, EventBus, ReplayQuery};
use event_manager::Settings;
use event_testkit::test_server;
use futures::TryStreamExt as _;
use serde_json::{Value as Json, json};
use time::OffsetDateTime;

mod common;

use common::{code, eventbus, run, stderr, stdout};

/// The original's records, written as its Python code wrote them.
#[path = "migrate_original_kafka/original.rs"]
mod original;

use original::Made;

/// Decodable records of the import test: several hundred in each topic, more than one fetch.
const EVENTS: usize = 3_200;

/// The servers, or `None` (skipped) outside an integration run.
fn servers() -> anyhow::Result<Option<(String, String)>> {
    Ok(
        match (
            test_server("EVENTBUS_TEST_REDIS_URL", "redis")?,
            test_server("EVENTBUS_TEST_KAFKA_BROKERS", "kafka")?,
        ) {
            (Some(redis), Some(kafka)) => Some((redis, kafka)),
            _ => None,
        },
    )
}

/// The fields of an imported event that the import must keep or map.
fn comparable(event: &Event) -> Json {
    json!({
        "id": event.id.to_string(),
        "event_type": event.event_type.as_str(),
        "payload": event.payload,
        "timestamp": event_core::timestamp::format(event.timestamp),
        "source": event.source,
        "correlation_id": event.correlation_id,
        "causation_id": event.causation_id,
        "metadata": event.metadata,
        "aggregate_id": event.aggregate_id,
        "aggregate_type": event.aggregate_type,
        "aggregate_version": event.aggregate_version,
        "partition_key": event.partition_key,
    })
}

/// Every event the target Redis bus holds, copies included.
async fn target_events(settings: &Settings) -> anyhow::Result<Vec<Event>> {
    let bus = event_redis::RedisBus::connect(settings.redis.clone(), settings.bus.clone()).await?;
    let events: Vec<Event> = bus
        .replay(ReplayQuery::new([], OffsetDateTime::UNIX_EPOCH))
        .await?
        .try_collect()
        .await?;
    bus.shutdown().await?;
    Ok(events)
}

/// Removes the target's keys.
async fn remove_target(url: &str, prefix: &str) -> anyhow::Result<()> {
    use fred::prelude::{Builder, ClientLike};
    use fred::types::Value;
    use fred::types::config::Config;
    let client = Builder::from_config(Config::from_url(url)?).build()?;
    client.init().await?;
    let mut cursor = "0".to_string();
    loop {
        let args: Vec<Value> = vec![
            cursor.clone().into(),
            "MATCH".into(),
            format!("{prefix}:*").into(),
            "COUNT".into(),
            1000.into(),
        ];
        let reply: Value = client.custom(fred::cmd!("SCAN"), args).await?;
        let mut parts = reply.into_array().into_iter();
        cursor = parts
            .next()
            .and_then(|v| v.as_string())
            .unwrap_or_else(|| "0".into());
        for key in parts.next().map(Value::into_array).unwrap_or_default() {
            let _: Value = client.custom(fred::cmd!("DEL"), vec![key]).await?;
        }
        if cursor == "0" {
            break;
        }
    }
    client.quit().await?;
    Ok(())
}

/// Runs a check that may panic, so that the caller can clean up before it fails as the check
/// did (`resume_unwind`).
fn unwinding(
    check: impl FnOnce() -> anyhow::Result<()>,
) -> std::thread::Result<anyhow::Result<()>> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(check))
}

fn report_path(name: &str) -> String {
    std::env::temp_dir()
        .join(format!(
            "{}-{name}.jsonl",
            event_testkit::unique("migrate-kafka-report")
        ))
        .display()
        .to_string()
}

/// `eventbus --json migrate from-original --kafka-brokers B --topic-prefix P ARGS...`, which
/// must succeed; its JSON report.
fn import(
    vars: &[(&str, &str)],
    brokers: &str,
    prefix: &str,
    args: &[&str],
) -> anyhow::Result<Json> {
    let mut all = vec![
        "--json",
        "migrate",
        "from-original",
        "--kafka-brokers",
        brokers,
        "--topic-prefix",
        prefix,
    ];
    all.extend_from_slice(args);
    let out = run(vars, &all)?;
    ensure!(
        code(&out) == 0,
        "{args:?}: {} {}",
        stdout(&out),
        stderr(&out)
    );
    Ok(serde_json::from_str(&stdout(&out))?)
}

fn total(report: &Json, field: &str) -> u64 {
    report["total"][field].as_u64().unwrap_or(u64::MAX)
}

#[test]
fn imports_the_originals_kafka_topics_once_with_an_exact_report() -> anyhow::Result<()> {
    let Some((url, brokers)) = servers()? else {
        return Ok(());
    };
    let runtime = tokio::runtime::Runtime::new()?;
    let source_prefix = event_testkit::unique("original");
    let target_prefix = event_testkit::unique("cli-migrate-kafka");
    let vars = [
        ("EVENT_BUS_TYPE", "redis"),
        ("REDIS_URL", url.as_str()),
        ("REDIS_KEY_PREFIX", target_prefix.as_str()),
        ("EVENT_BATCH_SIZE", "64"),
    ];
    let settings = Settings::from_vars(vars)?;
    let mut rng = fastrand::Rng::with_seed(2424);
    let mut made: Vec<Made> = (0..EVENTS).map(|n| original::make(n, &mut rng)).collect();
    made.extend(original::bad(&mut rng));
    let client = runtime.block_on(async {
        let client = original::client(&brokers).await?;
        let types: BTreeSet<&str> = made.iter().map(|m| m.type_name.as_str()).collect();
        for t in types {
            original::create_topic(&client, &source_prefix, t).await?;
        }
        original::publish(&client, &source_prefix, &made).await?;
        anyhow::Ok(client)
    })?;
    let result =
        unwinding(|| check_import(&runtime, &vars, &settings, &brokers, &source_prefix, &made));
    runtime.block_on(async {
        original::delete_topics(&client, &source_prefix).await?;
        remove_target(&url, &target_prefix).await
    })?;
    result.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

fn check_import(
    runtime: &tokio::runtime::Runtime,
    vars: &[(&str, &str)],
    settings: &Settings,
    brokers: &str,
    prefix: &str,
    made: &[Made],
) -> anyhow::Result<()> {
    let valid = made.iter().filter(|m| m.expected.is_some()).count() as u64;
    let bad = made.len() as u64 - valid;
    assert_eq!(bad, 4);

    // A dry run prints the plan and writes nothing.
    let plan = import(vars, brokers, prefix, &["--dry-run"])?;
    assert_eq!(plan["dry_run"], true);
    assert_eq!(total(&plan, "read"), made.len() as u64, "{plan:#}");
    assert_eq!(total(&plan, "imported"), valid);
    assert_eq!(total(&plan, "undecodable"), bad);
    assert!(
        runtime.block_on(target_events(settings))?.is_empty(),
        "the dry run wrote"
    );

    // The import: every decodable record, once, as the original stored it.
    let report_file = report_path("first");
    let started = Instant::now();
    let report = import(vars, brokers, prefix, &["--report", &report_file])?;
    eprintln!("import of {} records: {:?}", made.len(), started.elapsed());
    assert_eq!(total(&report, "read"), made.len() as u64);
    assert_eq!(total(&report, "imported"), valid, "{report:#}");
    assert_eq!(
        (total(&report, "duplicates"), total(&report, "expired")),
        (0, 0)
    );
    assert_eq!(
        (total(&report, "undecodable"), total(&report, "failed")),
        (bad, 0)
    );
    // Per topic, in both naming forms, with the dotted type each maps to.
    let topics = &report["topics"];
    for (type_name, dotted) in [
        ("EventType.OPPORTUNITY_CREATED", "opportunity.created"),
        ("opportunity.created", "opportunity.created"),
        ("feature_flag.updated", "feature_flag.updated"),
        ("EventType.BILLING_PAID", ""),
    ] {
        let row = &topics[original::topic(prefix, type_name)];
        let want = made.iter().filter(|m| m.type_name == type_name).count() as u64;
        assert_eq!(row["read"], want, "{type_name}: {row}");
        if dotted.is_empty() {
            assert_eq!(row["event_type"], Json::Null);
        } else {
            assert_eq!(row["event_type"], dotted);
        }
    }

    // The report file: each bad record with its key and reason.
    let listed = std::fs::read_to_string(&report_file)?;
    let lines: Vec<Json> = listed
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .context("the report file is not JSON lines")?;
    let mut kinds: Vec<&str> = lines.iter().filter_map(|l| l["kind"].as_str()).collect();
    kinds.sort_unstable();
    assert_eq!(
        kinds,
        ["not_json", "schema", "unknown_type", "unknown_type"],
        "{listed}"
    );
    for line in &lines {
        let topic = line["topic"].as_str().context("no topic")?;
        let key = line["key"].as_str().context("no key")?;
        ensure!(
            key.starts_with(&format!("{topic}/")) && key.contains('@'),
            "{line}"
        );
        let record_key = line["record_key"].as_str().context("no record key")?;
        ensure!(
            made.iter().any(|m| m.expected.is_none()
                && m.key == record_key
                && original::topic(prefix, &m.type_name) == topic),
            "{line}"
        );
        ensure!(
            !line["reason"].as_str().unwrap_or_default().is_empty(),
            "{line}"
        );
    }

    // Event by event: what the bus holds is what the original stored.
    let held = runtime.block_on(target_events(settings))?;
    let mut found: BTreeMap<String, Json> = BTreeMap::new();
    for event in &held {
        ensure!(
            found
                .insert(event.id.to_string(), comparable(event))
                .is_none(),
            "{} stored twice",
            event.id
        );
    }
    let expected: BTreeMap<String, Json> = made
        .iter()
        .filter_map(|m| Some((m.id.clone(), m.expected.clone()?)))
        .collect();
    assert_eq!(found.len(), expected.len());
    for (id, want) in &expected {
        let got = found
            .get(id)
            .with_context(|| format!("{id} was not imported"))?;
        assert_eq!(got, want, "event {id}");
    }

    // Again: nothing stored twice, and the table says so.
    let started = Instant::now();
    let again = import(vars, brokers, prefix, &[])?;
    eprintln!("second run: {:?}", started.elapsed());
    assert_eq!(
        (total(&again, "imported"), total(&again, "duplicates")),
        (0, valid)
    );
    assert_eq!(runtime.block_on(target_events(settings))?.len(), held.len());
    let out = run(
        vars,
        &[
            "migrate",
            "from-original",
            "--kafka-brokers",
            brokers,
            "--topic-prefix",
            prefix,
        ],
    )?;
    ensure!(code(&out) == 0, "{}", stderr(&out));
    let text = stdout(&out);
    let row = text
        .lines()
        .find(|l| l.starts_with("total"))
        .context("no total row")?;
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        cells[1..],
        [
            made.len().to_string().as_str(),
            "0",
            valid.to_string().as_str(),
            "0",
            "4",
            "0"
        ],
        "{text}"
    );
    assert!(
        text.lines().next().unwrap_or_default().contains("imported"),
        "{text}"
    );
    assert!(
        text.contains(&original::topic(prefix, "EventType.USER_REGISTERED")),
        "{text}"
    );
    let _ = std::fs::remove_file(&report_file);
    Ok(())
}

#[test]
fn refuses_two_sources_and_a_bridge_without_brokers() -> anyhow::Result<()> {
    let out = run(
        &[("EVENT_BUS_TYPE", "redis")],
        &[
            "migrate",
            "from-original",
            "--redis-url",
            "redis://127.0.0.1:1/0",
            "--kafka-brokers",
            "127.0.0.1:1",
        ],
    )?;
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(stderr(&out).contains("one source"), "{}", stderr(&out));
    let out = run(&[("EVENT_BUS_TYPE", "redis")], &["bridge", "from-original"])?;
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(stderr(&out).contains("--kafka-brokers"), "{}", stderr(&out));
    Ok(())
}

#[path = "migrate_original_kafka/bridge.rs"]
mod bridge;
