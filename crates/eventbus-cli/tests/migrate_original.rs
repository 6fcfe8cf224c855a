//! `eventbus migrate from-original` as a team would run it: the original Python system's Redis
//! layout written with raw Redis commands, key by key as its `EventBus.publish_event` wrote it
//! (`PUBLISH events:{type}`, `SETEX event:{id}`, `ZADD timeline:{type}`, `EXPIRE`), the body as
//! `json.dumps(event.to_dict())` printed it; then the real binary imports it into a Redis bus
//! (another database of the same server, `EVENTBUS_TEST_REDIS_URL`) and the result is read back
//! and compared event by event. A second run stores nothing twice; a dry run writes nothing.
//! The same import into Kafka (`EVENTBUS_TEST_KAFKA_BROKERS`) finds the ids it stored there.

use std::collections::BTreeMap;

use anyhow::{Context as _, ensure};
use event_core::{Event, EventBus, EventType, ReplayQuery};
use event_manager::Settings;
use event_testkit::test_server;
use fred::prelude::{Builder, Client, ClientLike};
use fred::types::Value;
use fred::types::config::Config;
use futures::TryStreamExt as _;
use serde::Serialize;
use serde_json::Value as Json;
use time::OffsetDateTime;

mod common;

use common::{code, run, stderr, stdout};

/// The original's events, whatever they are written to.
#[path = "original_data/mod.rs"]
mod original_data;

/// The original's data, written as its Python code wrote it.
#[path = "migrate_original/python.rs"]
mod python;

use original_data::imported::{
    assert_holds, command, comparable, delete_matching, import_report, report_lines, report_path,
    target_events, total_row, unwinding,
};

/// `eventbus --json migrate from-original --redis-url SOURCE ARGS...`, which must succeed
/// (`what` names the run in the error); its JSON report.
fn redis_import(
    vars: &[(&str, &str)],
    source: &str,
    args: &[&str],
    what: &str,
) -> anyhow::Result<Json> {
    import_report(vars, &["--redis-url", source], args, what)
}

/// An event as the original wrote it, and what the bus must hold after the import.
struct Written {
    id: String,
    timeline: String,
    /// Its timeline score: the original's publish time, seconds since the epoch.
    score: f64,
    /// `Some` when the import must store it; the dotted type, payload and envelope fields.
    expected: Option<Json>,
}

/// The key that claims a database for one test while it runs.
const CLAIM: &str = "migrate-original-test:claim";

/// A Redis database of the test server in which the original's keys do not exist yet.
async fn empty_database(url: &str) -> anyhow::Result<(String, Client)> {
    let base = match url.strip_prefix("redis://").and_then(|rest| rest.find('/')) {
        Some(slash) => &url[..slash + "redis://".len()],
        None => url,
    };
    for _ in 0..20 {
        let db = fastrand::u32(2..16);
        let source = format!("{base}/{db}");
        let client = Builder::from_config(Config::from_url(&source)?).build()?;
        client.init().await?;
        let found = command(
            &client,
            "SCAN",
            vec![
                "0".into(),
                "MATCH".into(),
                "timeline:*".into(),
                "COUNT".into(),
                10_000.into(),
            ],
        )
        .await?;
        let cursor = found
            .clone()
            .into_array()
            .first()
            .and_then(Value::as_string);
        let keys = found.into_array().get(1).cloned().map(Value::into_array);
        // Claimed, so that two tests of this file never share a database.
        let claimed = command(
            &client,
            "SET",
            vec![
                CLAIM.into(),
                "1".into(),
                "NX".into(),
                "EX".into(),
                600.into(),
            ],
        )
        .await?;
        if cursor.as_deref() == Some("0") && keys.is_none_or(|k| k.is_empty()) && !claimed.is_null()
        {
            return Ok((source, client));
        }
        if !claimed.is_null() {
            command(&client, "DEL", vec![CLAIM.into()]).await?;
        }
        client.quit().await?;
    }
    anyhow::bail!("every Redis database of the test server holds timeline:* keys")
}

fn now_minus(seconds: i64, micros: i64) -> OffsetDateTime {
    OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
        - time::Duration::seconds(seconds)
        + time::Duration::microseconds(micros)
}

#[derive(Serialize)]
struct Counts {
    read: u64,
    imported: u64,
    duplicates: u64,
    expired: u64,
    undecodable: u64,
    failed: u64,
}

fn totals(report: &Json) -> anyhow::Result<Counts> {
    Ok(
        serde_json::from_value(report["total"].clone()).map(|c: BTreeMap<String, Json>| {
            Counts {
                read: c["read"].as_u64().unwrap_or(u64::MAX),
                imported: c["imported"].as_u64().unwrap_or(u64::MAX),
                duplicates: c["duplicates"].as_u64().unwrap_or(u64::MAX),
                expired: c["expired"].as_u64().unwrap_or(u64::MAX),
                undecodable: c["undecodable"].as_u64().unwrap_or(u64::MAX),
                failed: c["failed"].as_u64().unwrap_or(u64::MAX),
            }
        })?,
    )
}

/// The original's data written into a database of its own, and removed again.
struct OriginalFixture {
    source: String,
    client: Client,
    written: Vec<Written>,
}

impl OriginalFixture {
    async fn write(url: &str) -> anyhow::Result<Self> {
        let (source, client) = empty_database(url).await?;
        let written = python::write_original(&client).await?;
        Ok(Self {
            source,
            client,
            written,
        })
    }

    async fn remove(self) -> anyhow::Result<()> {
        delete_matching(&self.client, "timeline:*").await?;
        for w in &self.written {
            command(&self.client, "DEL", vec![format!("event:{}", w.id).into()]).await?;
        }
        command(&self.client, "DEL", vec![CLAIM.into()]).await?;
        self.client.quit().await?;
        Ok(())
    }
}

#[test]
fn imports_the_originals_redis_once_with_an_exact_report() -> anyhow::Result<()> {
    let Some(url) = test_server("EVENTBUS_TEST_REDIS_URL", "redis")? else {
        return Ok(());
    };
    let runtime = tokio::runtime::Runtime::new()?;
    let prefix = event_testkit::unique("cli-migrate");
    let vars = [
        ("EVENT_BUS_TYPE", "redis"),
        ("REDIS_URL", url.as_str()),
        ("REDIS_KEY_PREFIX", prefix.as_str()),
        ("EVENT_BATCH_SIZE", "64"),
    ];
    let settings = Settings::from_vars(vars)?;
    let original = runtime.block_on(OriginalFixture::write(&url))?;
    let result = unwinding(|| {
        check_import(
            &runtime,
            &vars,
            &settings,
            &original.source,
            &original.written,
        )
    });
    runtime.block_on(async {
        original.remove().await?;
        let target = Builder::from_config(Config::from_url(&url)?).build()?;
        target.init().await?;
        delete_matching(&target, &format!("{prefix}:*")).await?;
        target.quit().await?;
        anyhow::Ok(())
    })?;
    result.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

#[test]
fn imports_into_kafka_once() -> anyhow::Result<()> {
    let (Some(url), Some(brokers)) = (
        test_server("EVENTBUS_TEST_REDIS_URL", "redis")?,
        test_server("EVENTBUS_TEST_KAFKA_BROKERS", "kafka")?,
    ) else {
        return Ok(());
    };
    let runtime = tokio::runtime::Runtime::new()?;
    let prefix = event_testkit::unique("cli-migrate");
    let vars = [
        ("EVENT_BUS_TYPE", "kafka"),
        ("KAFKA_BOOTSTRAP_SERVERS", brokers.as_str()),
        ("KAFKA_TOPIC_PREFIX", prefix.as_str()),
    ];
    let settings = Settings::from_vars(vars)?;
    let original = runtime.block_on(OriginalFixture::write(&url))?;
    let check = || -> anyhow::Result<()> {
        let expected: BTreeMap<String, Json> = original
            .written
            .iter()
            .filter_map(|w| Some((w.id.clone(), w.expected.clone()?)))
            .collect();
        let valid = expected.len() as u64;
        for (imported, duplicates) in [(valid, 0), (0, valid)] {
            let counts = totals(&redis_import(&vars, &original.source, &[], "import")?)?;
            assert_eq!((counts.imported, counts.duplicates), (imported, duplicates));
            assert_eq!(counts.expired, python::EXPIRED as u64);
        }
        let held = runtime.block_on(async {
            let mut config = settings.bus.clone();
            config.enable_event_sourcing = false;
            let bus = event_kafka::KafkaBus::connect(settings.kafka.clone(), config).await?;
            let types: std::collections::BTreeSet<EventType> = expected
                .values()
                .filter_map(|e| EventType::new(e["event_type"].as_str()?).ok())
                .collect();
            let events: Vec<Event> = bus
                .replay(ReplayQuery::new(types, OffsetDateTime::UNIX_EPOCH))
                .await?
                .try_collect()
                .await?;
            bus.shutdown().await?;
            anyhow::Ok(events)
        })?;
        let found: BTreeMap<String, Json> = held
            .iter()
            .map(|e| (e.id.to_string(), comparable(e)))
            .collect();
        assert_eq!(held.len(), expected.len(), "stored twice or missing");
        assert_eq!(found, expected);
        Ok(())
    };
    let result = unwinding(check);
    runtime.block_on(original.remove())?;
    result.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

fn check_import(
    runtime: &tokio::runtime::Runtime,
    vars: &[(&str, &str)],
    settings: &Settings,
    source: &str,
    written: &[Written],
) -> anyhow::Result<()> {
    let valid = written.iter().filter(|w| w.expected.is_some()).count() as u64;
    let expired = python::EXPIRED as u64;
    let bad = python::BAD as u64;
    ensure!(
        written.len() >= 300 && valid > 250,
        "{} written",
        written.len()
    );

    // A dry run prints the plan and writes nothing.
    let counts = totals(&redis_import(vars, source, &["--dry-run"], "dry run")?)?;
    assert_eq!(counts.read, written.len() as u64);
    assert_eq!(counts.imported, valid);
    assert_eq!((counts.expired, counts.undecodable), (expired, bad));
    assert!(
        runtime.block_on(target_events(settings))?.is_empty(),
        "the dry run wrote"
    );
    let out = run(
        vars,
        &[
            "migrate",
            "from-original",
            "--redis-url",
            source,
            "--dry-run",
        ],
    )?;
    ensure!(code(&out) == 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("dry run"), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("timeline:EventType.OPPORTUNITY_CREATED"),
        "{}",
        stdout(&out)
    );

    // `--since` reads only what the timelines scored from then on.
    // A whole second: the same instant however the timestamp is written.
    let cut = now_minus(3 * 86_400, 0);
    let cut_secs = cut.unix_timestamp_nanos() as f64 / 1e9;
    let recent: Vec<&Written> = written.iter().filter(|w| w.score >= cut_secs).collect();
    ensure!(
        recent.len() > 50 && recent.len() + 50 < written.len(),
        "{} of {} written since the cut",
        recent.len(),
        written.len()
    );
    let since = event_core::timestamp::format(cut);
    let plan = redis_import(vars, source, &["--dry-run", "--since", &since], "--since")?;
    let counts = totals(&plan)?;
    assert_eq!(counts.read, recent.len() as u64);
    assert_eq!(
        counts.imported,
        recent.iter().filter(|w| w.expected.is_some()).count() as u64
    );

    // The import: every decodable event, once, as the original stored it.
    let report_file = report_path("migrate-report", "first");
    let report = redis_import(vars, source, &["--report", &report_file], "import")?;
    let counts = totals(&report)?;
    assert_eq!(counts.read, written.len() as u64);
    assert_eq!(counts.imported, valid, "{report:#}");
    assert_eq!(counts.duplicates, 0);
    assert_eq!(
        (counts.expired, counts.undecodable, counts.failed),
        (expired, bad, 0)
    );
    let both = &report["timelines"];
    assert_eq!(
        both["timeline:EventType.OPPORTUNITY_CREATED"]["event_type"],
        "opportunity.created"
    );
    assert_eq!(
        both["timeline:opportunity.created"]["event_type"],
        "opportunity.created"
    );
    assert_eq!(
        both["timeline:EventType.BILLING_PAID"]["event_type"],
        Json::Null
    );

    let (listed, lines) = report_lines(&report_file)?;
    assert_eq!(lines.len() as u64, bad, "{listed}");
    let mut kinds: Vec<&str> = lines.iter().filter_map(|l| l["kind"].as_str()).collect();
    kinds.sort_unstable();
    assert_eq!(
        kinds,
        ["not_json", "schema", "unknown_type", "unknown_type"]
    );
    for line in &lines {
        let key = line["key"].as_str().context("no key")?;
        let id = key.strip_prefix("event:").context("not a body key")?;
        let timeline = line["timeline"].as_str().unwrap_or_default();
        ensure!(
            written.iter().any(|w| w.id == id
                && w.expected.is_none()
                && timeline == format!("timeline:{}", w.timeline)),
            "{line}"
        );
        ensure!(
            !line["reason"].as_str().unwrap_or_default().is_empty(),
            "{line}"
        );
    }
    let schema = lines
        .iter()
        .find(|l| l["kind"] == "schema")
        .context("no schema line")?;
    assert!(
        schema["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("email"),
        "{schema}"
    );

    // Event by event: what the bus holds is what the original stored.
    let held = runtime.block_on(target_events(settings))?;
    let expected: BTreeMap<String, Json> = written
        .iter()
        .filter_map(|w| Some((w.id.clone(), w.expected.clone()?)))
        .collect();
    assert_holds(&held, &expected)?;
    for event in &held {
        ensure!(event.event_type.as_str() != "EventType.OPPORTUNITY_CREATED");
        assert!(EventType::new(event.event_type.as_str()).is_ok());
    }

    // Again: nothing stored twice, and the report says so.
    let counts = totals(&redis_import(vars, source, &[], "second run")?)?;
    assert_eq!((counts.imported, counts.duplicates), (0, valid));
    assert_eq!((counts.expired, counts.undecodable), (expired, bad));
    assert_eq!(runtime.block_on(target_events(settings))?.len(), held.len());
    let out = run(vars, &["migrate", "from-original", "--redis-url", source])?;
    ensure!(code(&out) == 0, "{}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(
        total_row(&text)?,
        [
            written.len().to_string().as_str(),
            "0",
            valid.to_string().as_str(),
            expired.to_string().as_str(),
            bad.to_string().as_str(),
            "0",
        ],
        "{text}"
    );
    let _ = std::fs::remove_file(&report_file);
    Ok(())
}

#[test]
fn refuses_a_missing_source_and_the_in_memory_target() -> anyhow::Result<()> {
    let out = run(&[], &["migrate", "from-original"])?;
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(stderr(&out).contains("--redis-url"), "{}", stderr(&out));
    let out = run(
        &[("EVENT_BUS_TYPE", "memory")],
        &[
            "migrate",
            "from-original",
            "--redis-url",
            "redis://127.0.0.1:1/0",
        ],
    )?;
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(stderr(&out).contains("in-memory"), "{}", stderr(&out));
    Ok(())
}
