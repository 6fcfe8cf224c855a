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
use event_manager::Settings;
use event_testkit::test_server;
use serde_json::Value as Json;

mod common;

use common::{code, eventbus, run, stderr, stdout};

/// The original's events, whatever they are written to.
#[path = "original_data/mod.rs"]
mod original_data;

/// The original's records, written as its Python code wrote them.
#[path = "migrate_original_kafka/original.rs"]
mod original;

use original::Made;
use original_data::imported::{
    self, assert_holds, comparable, report_lines, target_events, total_row, unwinding,
};

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

/// Removes the target's keys.
async fn remove_target(url: &str, prefix: &str) -> anyhow::Result<()> {
    use fred::prelude::{Builder, ClientLike};
    use fred::types::config::Config;
    let client = Builder::from_config(Config::from_url(url)?).build()?;
    client.init().await?;
    imported::delete_matching(&client, &format!("{prefix}:*")).await?;
    client.quit().await?;
    Ok(())
}

/// A fresh path for the report file `name` of a run.
fn report_path(name: &str) -> String {
    imported::report_path("migrate-kafka-report", name)
}

/// `eventbus --json migrate from-original --kafka-brokers B --topic-prefix P ARGS...`, which
/// must succeed; its JSON report.
fn import(
    vars: &[(&str, &str)],
    brokers: &str,
    prefix: &str,
    args: &[&str],
) -> anyhow::Result<Json> {
    let source = ["--kafka-brokers", brokers, "--topic-prefix", prefix];
    imported::import_report(vars, &source, args, &format!("{args:?}"))
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
    let (listed, lines) = report_lines(&report_file)?;
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
    let expected: BTreeMap<String, Json> = made
        .iter()
        .filter_map(|m| Some((m.id.clone(), m.expected.clone()?)))
        .collect();
    assert_holds(&held, &expected)?;

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
    assert_eq!(
        total_row(&text)?,
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
