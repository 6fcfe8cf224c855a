//! `eventbus migrate`: importing another system's events into the configured bus, and
//! `eventbus bridge`: carrying what it still publishes, while it runs.
//!
//! `from-original` reads the original Python system's Redis (`timeline:{type}` sorted sets and
//! `event:{id}` bodies) or its Kafka topics (`{prefix}.{type with dots as dashes}`,
//! `docs/migration.md`) and publishes each event with its id, timestamp, source, correlation id
//! and metadata kept. It is idempotent: before writing, it replays the target bus for the types
//! it is about to import and skips every id the target already holds, so a second run (or a run
//! after a crash) stores nothing twice.

pub(crate) mod bridge;
mod decode;
mod import;
mod original;
mod original_kafka;
mod report;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand};
use event_core::{EventBus, EventType};
use event_manager::{BusType, Settings};
use indicatif::{ProgressBar, ProgressStyle};
use time::OffsetDateTime;

use self::decode::{decode, original_type};
use self::import::Importer;
use self::original::{BODY_PREFIX, OriginalRedis, TIMELINE_PREFIX};
use self::original_kafka::{DEFAULT_PREFIX, OriginalKafka, Partition, record_key, topic_type};
use self::report::ImportReport;
use crate::args::{ArgError, backend_url};
use crate::context::{Context, open_with};
use crate::exit::Exit;

/// The systems `migrate` imports from.
#[derive(Subcommand, Debug)]
pub(crate) enum MigrateCommand {
    /// Import the original Python system's data into the bus configured by the environment
    /// (EVENT_BUS_TYPE, REDIS_URL, ...) or `--to`: its Redis (`timeline:*` and `event:*`),
    /// given by the global `--redis-url`, or its Kafka topics, given by the global
    /// `--kafka-brokers` and `--topic-prefix` (here both flags name the source, not the
    /// target). Safe to run again: ids the target already holds are skipped.
    FromOriginal(FromOriginalArgs),
}

/// Arguments of `migrate from-original`.
#[derive(Args, Debug)]
pub(crate) struct FromOriginalArgs {
    /// The target bus instead of the configured one: redis://host:port/db, rediss://..., or
    /// kafka://host:port (several brokers comma-separated).
    #[arg(long, value_name = "URL")]
    to: Option<String>,
    /// The original's KAFKA_TOPIC_PREFIX, with --kafka-brokers: its topics are
    /// `PREFIX.EventType-OPPORTUNITY_CREATED` and `PREFIX.opportunity-created`.
    #[arg(long, value_name = "PREFIX", default_value = DEFAULT_PREFIX)]
    topic_prefix: String,
    /// Read and decode everything, print the plan (per-type counts), write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Write every body that was not imported (not JSON, not an envelope, unknown type, payload
    /// failing its schema, refused by the bus) to FILE, one JSON object per line with its key
    /// and reason.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Only the ids a timeline scored at or after this time (the original's publish time): an
    /// age (`1h`, `2d`) or an RFC 3339 timestamp. For catching up, during a rolling switch,
    /// with what the original's services published since the new handlers took over
    /// (`docs/migration.md`). Redis only.
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
}

/// Where `migrate` and `bridge` read the original from: the global flags that name it.
#[derive(Debug, Default)]
pub(crate) struct Source {
    /// `--redis-url`.
    pub(crate) redis_url: Option<String>,
    /// `--kafka-brokers`.
    pub(crate) kafka_brokers: Option<String>,
}

/// Ids read from a timeline and bodies fetched per round trip.
const PAGE: u64 = 500;

/// Runs `migrate`; `source` holds the global `--redis-url` and `--kafka-brokers`, which name
/// the source here.
pub(crate) async fn run(
    ctx: &Context,
    command: MigrateCommand,
    source: Source,
) -> anyhow::Result<Exit> {
    match command {
        MigrateCommand::FromOriginal(args) => from_original(ctx, args, source).await,
    }
}

/// The target's settings: `--to` or the configuration; refused when it is the in-memory bus
/// and `writes`.
pub(crate) fn target_settings(
    ctx: &Context,
    to: Option<&str>,
    writes: bool,
) -> anyhow::Result<(Settings, std::collections::BTreeSet<String>)> {
    let (settings, explicit) = match to {
        Some(url) => ctx.on_backend(&backend_url("--to", url)?)?,
        None => (ctx.settings.clone(), ctx.explicit_variables()),
    };
    if settings.bus_type == BusType::Memory && writes {
        return Err(ArgError(
            "the target bus is the in-memory one, which ends with this command: set EVENT_BUS_TYPE=redis or kafka (and REDIS_URL or KAFKA_BOOTSTRAP_SERVERS), or give --to".into(),
        )
        .into());
    }
    Ok((settings, explicit))
}

fn progress_bar(len: u64) -> ProgressBar {
    let progress = ProgressBar::new(len);
    progress.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} events read {per_sec} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    progress
}

async fn from_original(
    ctx: &Context,
    args: FromOriginalArgs,
    source: Source,
) -> anyhow::Result<Exit> {
    let (settings, explicit) = match (&source.redis_url, &source.kafka_brokers) {
        (Some(_), Some(_)) => {
            return Err(ArgError(
                "migrate from-original reads one source per run: give --redis-url (the original's Redis) or --kafka-brokers (its Kafka), not both".into(),
            )
            .into());
        }
        (None, None) => {
            return Err(ArgError(
                "migrate from-original needs its source: --redis-url URL (the original system's Redis, redis://host:port/db) or --kafka-brokers HOST:PORT (its Kafka, with --topic-prefix)".into(),
            )
            .into());
        }
        (None, Some(_)) if args.since.is_some() => {
            return Err(ArgError(
                "--since reads the Redis timelines' scores; the Kafka import reads every retained record (and skips the ids the target holds)".into(),
            )
            .into());
        }
        _ => target_settings(ctx, args.to.as_deref(), !args.dry_run)?,
    };
    let target = if args.dry_run {
        None
    } else {
        Some(open_with(settings.clone(), explicit).await?)
    };
    let bus = target.as_ref().map(|m| m.bus()).transpose()?;
    let outcome = match (source.redis_url, source.kafka_brokers) {
        (Some(url), _) => from_redis(&args, &settings, &url, bus).await,
        (None, Some(brokers)) => from_kafka(&args, &settings, &brokers, bus).await,
        (None, None) => Err(anyhow::anyhow!("no source given")),
    };
    if let Some(manager) = target {
        manager.stop().await?;
    }
    let mut report = outcome?;
    report.finish()?;
    report.print(ctx.json, args.dry_run, args.report.as_deref());
    Ok(if report.total().failed == 0 {
        Exit::Ok
    } else {
        Exit::Degraded
    })
}

async fn from_redis(
    args: &FromOriginalArgs,
    settings: &Settings,
    source_url: &str,
    bus: Option<Arc<dyn EventBus>>,
) -> anyhow::Result<ImportReport> {
    if event_core::redact_url(source_url) != source_url {
        eprintln!(
            "warning: the Redis URL given on the command line holds a password, which other users of this machine can read in the process list (ps)"
        );
    }
    let since = args
        .since
        .as_deref()
        .map(|value| crate::args::parse_time("--since", value, OffsetDateTime::now_utc()))
        .transpose()?
        .map(|t| t.unix_timestamp_nanos() as f64 / 1e9);
    let source = OriginalRedis::connect(source_url).await?;
    let mut report = ImportReport::new("timeline", args.report.as_deref())?;

    let timelines = source.timelines().await?;
    // Per timeline: the ranks of the ids to read.
    let mut ranks = Vec::with_capacity(timelines.len());
    for key in &timelines {
        ranks.push(source.timeline_ranks(key, since).await?);
        let name = &key[TIMELINE_PREFIX.len()..];
        report.of(key).event_type = original_type(name).map(|t| t.to_string());
    }
    let types = types_of(timelines.iter().map(|k| &k[TIMELINE_PREFIX.len()..]));
    let mut importer = Importer::new(report, bus, &types, settings.bus.batch_size).await?;

    let progress = progress_bar(ranks.iter().map(|r| r.end - r.start).sum());
    for (key, ranks) in timelines.iter().zip(ranks) {
        progress.set_message(key.clone());
        let name = &key[TIMELINE_PREFIX.len()..];
        let (mut start, end) = (ranks.start, ranks.end);
        while start < end {
            let page = source.timeline_page(key, start, PAGE).await?;
            if page.is_empty() {
                break;
            }
            start += page.len() as u64;
            let ids: Vec<String> = page.iter().map(|(id, _)| id.clone()).collect();
            let bodies = source.bodies(&ids).await?;
            for ((id, score), body) in page.into_iter().zip(bodies) {
                importer.report.of(key).read += 1;
                let Some(body) = body else {
                    importer.report.of(key).expired += 1;
                    continue;
                };
                let body_key = format!("{BODY_PREFIX}{id}");
                let decoded = decode(&id, &body, name, score);
                importer.take(key, &body_key, None, decoded).await?;
            }
            importer.flush().await?;
            progress.set_position(importer.report.total().read);
        }
    }
    progress.finish_and_clear();
    source.close().await;
    Ok(importer.report)
}

/// The dotted types of the original's type names, sorted, once each.
fn types_of<'a>(names: impl Iterator<Item = &'a str>) -> Vec<EventType> {
    let mut types: Vec<EventType> = names.filter_map(original_type).collect();
    types.sort();
    types.dedup();
    types
}

async fn from_kafka(
    args: &FromOriginalArgs,
    settings: &Settings,
    brokers: &str,
    bus: Option<Arc<dyn EventBus>>,
) -> anyhow::Result<ImportReport> {
    let prefix = args.topic_prefix.as_str();
    let mut source = OriginalKafka::connect(brokers).await?;
    let mut report = ImportReport::new("topic", args.report.as_deref())?;
    let topics = source.topics(prefix).await?;
    // Every partition from the earliest offset kept to the high watermark as of now: what is
    // published meanwhile is for the next run (or the bridge).
    let mut ranges = Vec::new();
    for (topic, partitions) in &topics {
        let name = topic_type(prefix, topic).unwrap_or_default();
        report.of(topic).event_type = original_type(&name).map(|t| t.to_string());
        for partition in partitions {
            let at = Partition {
                topic: topic.clone(),
                partition: *partition,
            };
            let (earliest, latest) = source.bounds(&at).await?;
            ranges.push((at, earliest, latest));
        }
    }
    let names: Vec<String> = topics
        .iter()
        .filter_map(|(t, _)| topic_type(prefix, t))
        .collect();
    let types = types_of(names.iter().map(String::as_str));
    let mut importer = Importer::new(report, bus, &types, settings.bus.batch_size).await?;

    let progress = progress_bar(
        ranges
            .iter()
            .map(|(_, from, to)| (to - from).max(0) as u64)
            .sum(),
    );
    for (at, mut position, end) in ranges {
        progress.set_message(format!("{}/{}", at.topic, at.partition));
        let name = topic_type(prefix, &at.topic).unwrap_or_default();
        while position < end {
            let fetched = source
                .fetch(&at, position, Duration::from_millis(10))
                .await?;
            for u in &fetched.undecodable {
                if u.first_offset >= end {
                    continue;
                }
                importer.report.of(&at.topic).read += 1;
                let key = record_key(&at, u.first_offset);
                let record_key = u.key.as_deref().map(String::from_utf8_lossy);
                let rejection = decode::Rejection {
                    problem: decode::Problem::NotJson,
                    reason: format!("the record cannot be read from Kafka: {}", u.reason),
                };
                importer
                    .take(&at.topic, &key, record_key.as_deref(), Err(rejection))
                    .await?;
            }
            for (offset, record) in fetched.records {
                if offset >= end {
                    continue;
                }
                importer.report.of(&at.topic).read += 1;
                let key = record_key(&at, offset);
                let own_key = record.key.as_deref().map(String::from_utf8_lossy);
                let decoded = decode_record(&name, &record, own_key.as_deref());
                importer
                    .take(&at.topic, &key, own_key.as_deref(), decoded)
                    .await?;
            }
            if fetched.next <= position {
                // Nothing more below `end`: a gap at the log's end.
                break;
            }
            position = fetched.next;
            progress.set_position(importer.report.total().read);
        }
        importer.flush().await?;
    }
    progress.finish_and_clear();
    Ok(importer.report)
}

/// A record of the original's topic of `topic_type` (its type as the original spelled it)
/// decoded into the event to import. A body without an id takes the record key's, which is
/// the event id when the publisher gave no partition key.
pub(crate) fn decode_record(
    topic_type: &str,
    record: &rskafka::record::Record,
    own_key: Option<&str>,
) -> Result<event_core::Event, decode::Rejection> {
    let value = record.value.as_deref().unwrap_or_default();
    let millis = record.timestamp.timestamp_millis() as f64 / 1e3;
    decode(own_key.unwrap_or_default(), value, topic_type, Some(millis))
}
