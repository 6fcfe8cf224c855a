//! What `eventbus migrate from-original` stored in a Redis bus, read back to be compared, and
//! the Redis and report-file chores around the import tests.

use std::collections::BTreeMap;

use anyhow::{Context as _, ensure};
use event_core::{Event, EventBus, ReplayQuery};
use event_manager::Settings;
use fred::prelude::{Client, ClientLike};
use fred::types::Value;
use futures::TryStreamExt as _;
use serde_json::{Value as Json, json};
use time::OffsetDateTime;

use crate::common::{code, run, stderr, stdout};

/// The fields of an imported event that the import must keep or map.
pub(crate) fn comparable(event: &Event) -> Json {
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
pub(crate) async fn target_events(settings: &Settings) -> anyhow::Result<Vec<Event>> {
    let bus = event_redis::RedisBus::connect(settings.redis.clone(), settings.bus.clone()).await?;
    let events: Vec<Event> = bus
        .replay(ReplayQuery::new([], OffsetDateTime::UNIX_EPOCH))
        .await?
        .try_collect()
        .await?;
    bus.shutdown().await?;
    Ok(events)
}

/// One raw Redis command.
pub(crate) async fn command(
    client: &Client,
    name: &'static str,
    args: Vec<Value>,
) -> anyhow::Result<Value> {
    Ok(client.custom(fred::cmd!(name), args).await?)
}

/// Deletes the keys matching `pattern`.
pub(crate) async fn delete_matching(client: &Client, pattern: &str) -> anyhow::Result<()> {
    let mut cursor = "0".to_string();
    loop {
        let reply = command(
            client,
            "SCAN",
            vec![
                cursor.clone().into(),
                "MATCH".into(),
                pattern.into(),
                "COUNT".into(),
                1000.into(),
            ],
        )
        .await?;
        let mut parts = reply.into_array().into_iter();
        cursor = parts
            .next()
            .and_then(|v| v.as_string())
            .unwrap_or_else(|| "0".into());
        for key in parts.next().map(Value::into_array).unwrap_or_default() {
            command(client, "DEL", vec![key]).await?;
        }
        if cursor == "0" {
            return Ok(());
        }
    }
}

/// Runs a check that may panic (a failed assertion), so that the caller can clean up before it
/// fails as the check did (`resume_unwind`).
pub(crate) fn unwinding(
    check: impl FnOnce() -> anyhow::Result<()>,
) -> std::thread::Result<anyhow::Result<()>> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(check))
}

/// A fresh path in the temporary directory for the report file `name` of a test run
/// (`test` tells the tests apart).
pub(crate) fn report_path(test: &str, name: &str) -> String {
    std::env::temp_dir()
        .join(format!("{}-{name}.jsonl", event_testkit::unique(test)))
        .display()
        .to_string()
}

/// `eventbus --json migrate from-original SOURCE... ARGS...`, which must succeed (`what` names
/// the run in the error); its JSON report.
pub(crate) fn import_report(
    vars: &[(&str, &str)],
    source: &[&str],
    args: &[&str],
    what: &str,
) -> anyhow::Result<Json> {
    let mut all = vec!["--json", "migrate", "from-original"];
    all.extend_from_slice(source);
    all.extend_from_slice(args);
    let out = run(vars, &all)?;
    ensure!(code(&out) == 0, "{what}: {} {}", stdout(&out), stderr(&out));
    Ok(serde_json::from_str(&stdout(&out))?)
}

/// The report file of a run (`--report`): its text and its JSON lines.
pub(crate) fn report_lines(path: &str) -> anyhow::Result<(String, Vec<Json>)> {
    let listed = std::fs::read_to_string(path)?;
    let lines: Vec<Json> = listed
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .context("the report file is not JSON lines")?;
    Ok((listed, lines))
}

/// Event by event: what the bus holds (`held`) is what the original stored (`expected`, by
/// id), each once.
pub(crate) fn assert_holds(
    held: &[Event],
    expected: &BTreeMap<String, Json>,
) -> anyhow::Result<()> {
    let mut found: BTreeMap<String, Json> = BTreeMap::new();
    for event in held {
        ensure!(
            found
                .insert(event.id.to_string(), comparable(event))
                .is_none(),
            "{} stored twice",
            event.id
        );
    }
    assert_eq!(found.len(), expected.len());
    for (id, want) in expected {
        let got = found
            .get(id)
            .with_context(|| format!("{id} was not imported"))?;
        assert_eq!(got, want, "event {id}");
    }
    Ok(())
}

/// The counts in the `total` row of a run's text report (the row's label left out).
pub(crate) fn total_row(text: &str) -> anyhow::Result<Vec<&str>> {
    let row = text
        .lines()
        .find(|l| l.starts_with("total"))
        .context("no total row")?;
    Ok(row.split_whitespace().skip(1).collect())
}
