//! `eventbus migrate`: importing another system's events into the configured bus.
//!
//! `from-original` reads the original Python system's Redis (`timeline:{type}` sorted sets and
//! `event:{id}` bodies, `docs/migration.md`) and publishes each event with its id, timestamp,
//! source, correlation id and metadata kept. It is idempotent: before writing, it replays the
//! target bus for the types it is about to import and skips every id the target already holds,
//! so a second run (or a run after a crash) stores nothing twice.

mod decode;
mod original;
mod report;

use std::collections::HashSet;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use event_core::{Event, EventBus, EventId, EventType, ReplayQuery};
use event_manager::BusType;
use futures::StreamExt as _;
use indicatif::{ProgressBar, ProgressStyle};
use time::OffsetDateTime;

use self::decode::{Problem, decode, original_type};
use self::original::{BODY_PREFIX, OriginalRedis, TIMELINE_PREFIX};
use self::report::ImportReport;
use crate::args::{ArgError, backend_url};
use crate::context::{Context, open_with};
use crate::exit::Exit;

/// The systems `migrate` imports from.
#[derive(Subcommand, Debug)]
pub(crate) enum MigrateCommand {
    /// Import the original Python system's Redis data (`timeline:*` and `event:*`), given by
    /// the global `--redis-url` (here the source, not the target), into the bus configured by
    /// the environment (EVENT_BUS_TYPE, REDIS_URL, ...) or `--to`. Safe to run again: ids the
    /// target already holds are skipped.
    FromOriginal(FromOriginalArgs),
}

/// Arguments of `migrate from-original`.
#[derive(Args, Debug)]
pub(crate) struct FromOriginalArgs {
    /// The target bus instead of the configured one: redis://host:port/db, rediss://..., or
    /// kafka://host:port (several brokers comma-separated).
    #[arg(long, value_name = "URL")]
    to: Option<String>,
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
    /// (`docs/migration.md`).
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
}

/// Ids read from a timeline and bodies fetched per round trip.
const PAGE: u64 = 500;

/// Runs `migrate`; `source_url` is the global `--redis-url`, which names the source here.
pub(crate) async fn run(
    ctx: &Context,
    command: MigrateCommand,
    source_url: Option<String>,
) -> anyhow::Result<Exit> {
    match command {
        MigrateCommand::FromOriginal(args) => from_original(ctx, args, source_url).await,
    }
}

async fn from_original(
    ctx: &Context,
    args: FromOriginalArgs,
    source_url: Option<String>,
) -> anyhow::Result<Exit> {
    let source_url = source_url.ok_or_else(|| {
        ArgError(
            "migrate from-original needs --redis-url: the URL of the original system's Redis (redis://host:port/db)".into(),
        )
    })?;
    if event_core::redact_url(&source_url) != source_url {
        eprintln!(
            "warning: the Redis URL given on the command line holds a password, which other users of this machine can read in the process list (ps)"
        );
    }
    let (settings, explicit) = match &args.to {
        Some(url) => ctx.on_backend(&backend_url("--to", url)?)?,
        None => (ctx.settings.clone(), ctx.explicit_variables()),
    };
    if settings.bus_type == BusType::Memory && !args.dry_run {
        return Err(ArgError(
            "the target bus is the in-memory one, which ends with this command: set EVENT_BUS_TYPE=redis or kafka (and REDIS_URL or KAFKA_BOOTSTRAP_SERVERS), or give --to".into(),
        )
        .into());
    }
    let since = args
        .since
        .as_deref()
        .map(|value| crate::args::parse_time("--since", value, OffsetDateTime::now_utc()))
        .transpose()?
        .map(|t| t.unix_timestamp_nanos() as f64 / 1e9);
    let batch = settings.bus.batch_size.max(1);
    let source = OriginalRedis::connect(&source_url).await?;
    let mut report = ImportReport::new(args.report.as_deref())?;

    let timelines = source.timelines().await?;
    // Per timeline: the ranks of the ids to read.
    let mut ranks = Vec::with_capacity(timelines.len());
    for key in &timelines {
        ranks.push(source.timeline_ranks(key, since).await?);
        let name = &key[TIMELINE_PREFIX.len()..];
        report.of(key).event_type = original_type(name).map(|t| t.to_string());
    }
    let types: Vec<EventType> = {
        let mut types: Vec<EventType> = timelines
            .iter()
            .filter_map(|k| original_type(&k[TIMELINE_PREFIX.len()..]))
            .collect();
        types.sort();
        types.dedup();
        types
    };

    let target = if args.dry_run {
        None
    } else {
        Some(open_with(settings, explicit).await?)
    };
    let mut known = match &target {
        Some(manager) => held_ids(manager.bus()?.as_ref(), &types).await?,
        None => HashSet::new(),
    };
    let mut looked_up: HashSet<EventType> = types.into_iter().collect();

    let progress = ProgressBar::new(ranks.iter().map(|r| r.end - r.start).sum());
    progress.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} events read {per_sec} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let bus = target.as_ref().map(|m| m.bus()).transpose()?;
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
            let mut fresh: Vec<Event> = Vec::new();
            for ((id, score), body) in page.into_iter().zip(bodies) {
                report.of(key).read += 1;
                let Some(body) = body else {
                    report.of(key).expired += 1;
                    continue;
                };
                let body_key = format!("{BODY_PREFIX}{id}");
                match decode(&id, &body, name, score) {
                    Err(rejection) => {
                        report.problem(key, &body_key, rejection.problem, &rejection.reason)?;
                    }
                    Ok(event) => {
                        if let Some(bus) = &bus
                            && looked_up.insert(event.event_type.clone())
                        {
                            // A body whose type is not its timeline's.
                            let of_type = std::slice::from_ref(&event.event_type);
                            known.extend(held_ids(bus.as_ref(), of_type).await?);
                        }
                        if known.insert(event.id) {
                            fresh.push(event);
                        } else {
                            report.of(key).duplicates += 1;
                        }
                    }
                }
            }
            match &bus {
                Some(bus) => {
                    for chunk in fresh.chunks(batch) {
                        let ids: Vec<EventId> = chunk.iter().map(|e| e.id).collect();
                        let results = bus.publish_batch(chunk.to_vec()).await;
                        for (i, id) in ids.iter().enumerate() {
                            match results.get(i) {
                                Some(Ok(_)) => report.of(key).imported += 1,
                                Some(Err(e)) => {
                                    // Not stored: a later run tries it again.
                                    known.remove(id);
                                    let body_key = format!("{BODY_PREFIX}{id}");
                                    report.problem(
                                        key,
                                        &body_key,
                                        Problem::PublishFailed,
                                        &e.to_string(),
                                    )?;
                                }
                                None => {
                                    known.remove(id);
                                    let body_key = format!("{BODY_PREFIX}{id}");
                                    report.problem(
                                        key,
                                        &body_key,
                                        Problem::PublishFailed,
                                        "the bus gave no result for this event; run the import again",
                                    )?;
                                }
                            }
                        }
                    }
                }
                None => report.of(key).imported += fresh.len() as u64,
            }
            progress.set_position(report.total().read);
        }
    }
    progress.finish_and_clear();
    source.close().await;
    if let Some(manager) = target {
        manager.stop().await?;
    }
    report.finish()?;
    report.print(ctx.json, args.dry_run, args.report.as_deref());
    Ok(if report.total().failed == 0 {
        Exit::Ok
    } else {
        Exit::Degraded
    })
}

/// The ids of every event of `types` the target bus holds: what an earlier run stored.
///
/// The bus has no lookup by id, but replay reads every retained event of a type whatever its
/// timestamp (imported events keep their old ones), on every backend. A marker written next
/// to the events was the other choice; it can disagree with what the bus holds (a crash
/// between the two writes, a trimmed stream), where the events themselves cannot.
async fn held_ids(bus: &dyn EventBus, types: &[EventType]) -> anyhow::Result<HashSet<EventId>> {
    let mut ids = HashSet::new();
    if types.is_empty() {
        return Ok(ids);
    }
    let query = ReplayQuery::new(types.iter().cloned(), OffsetDateTime::UNIX_EPOCH);
    let mut events = bus
        .replay(query)
        .await
        .context("reading the target bus's events to skip those already imported (replay must be enabled: ENABLE_EVENT_REPLAY=true)")?;
    while let Some(event) = events.next().await {
        ids.insert(event.context("reading the target bus's events")?.id);
    }
    Ok(ids)
}
