//! `eventbus copy`: retained events from one backend to another, keeping their ids and
//! timestamps. From Redis to Kafka (the migration the original documentation describes,
//! [`to_kafka`]) it also carries each handler's position and dead letters, and refuses
//! aggregate histories; `docs/migration.md` gives the cut-over around it.

mod positions;
pub(crate) mod span;
mod to_kafka;

use clap::Args;
use std::collections::HashSet;

use event_core::{Event, EventBus, EventId, ReplayQuery};
use event_manager::{BusType, replay_page};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use time::OffsetDateTime;

use crate::context::{Context, open_with};
use crate::exit::Exit;
use crate::output;
use span::{Selection, Span};

/// Arguments of `copy`.
#[derive(Args, Debug)]
pub(crate) struct CopyArgs {
    #[command(flatten)]
    span: Span,
    /// From Redis to Kafka: copy the events of aggregates as plain events and leave their
    /// histories behind (without it, a source with aggregates is refused).
    #[arg(long)]
    skip_aggregates: bool,
    /// From Redis to Kafka: the events only, not the handlers' positions and dead letters.
    #[arg(long)]
    events_only: bool,
}

/// Events read per page.
const PAGE: usize = 1000;
/// Failures shown in the report.
const SHOWN_ERRORS: usize = 10;

pub(crate) async fn run(ctx: &Context, args: CopyArgs) -> anyhow::Result<Exit> {
    let now = OffsetDateTime::now_utc();
    let Selection {
        since,
        until,
        query,
    } = args.span.selection(now)?;
    let types = query.event_types.clone();
    let ((from_settings, from_explicit), (to_settings, to_explicit)) = args.span.ends(ctx)?;
    if let Some(since) = since {
        warn_retention(&to_settings, since, now);
    }
    if from_settings.bus_type == BusType::Redis && to_settings.bus_type == BusType::Kafka {
        let plan = to_kafka::Plan {
            types,
            since,
            until,
            skip_aggregates: args.skip_aggregates,
            events_only: args.events_only,
        };
        return to_kafka::run(ctx.json, from_settings, to_settings, plan).await;
    }
    let batch = to_settings.bus.batch_size.max(1);
    let source = open_with(from_settings, from_explicit).await?;
    let target = open_with(to_settings, to_explicit).await?;
    let (reader, writer) = (source.bus()?, target.bus()?);

    let progress = ProgressBar::no_length();
    progress.set_style(
        ProgressStyle::with_template("{spinner} copied {pos} events {per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    let there = held(writer.as_ref(), &query).await?;
    let (mut copied, mut already, mut failed, mut errors) = (0u64, 0u64, 0u64, Vec::new());
    let mut cursor = None;
    loop {
        let page = replay_page(reader.as_ref(), query.clone(), cursor, PAGE).await?;
        let read = page.events.len() as u64;
        let events: Vec<Event> = page
            .events
            .into_iter()
            .filter(|e| !there.contains(&e.id))
            .collect();
        already += read - events.len() as u64;
        for chunk in events.chunks(batch) {
            // The events as read: same ids, timestamps, keys and metadata.
            let ids: Vec<String> = chunk.iter().map(|e| e.id.to_string()).collect();
            for (id, result) in ids.iter().zip(writer.publish_batch(chunk.to_vec()).await) {
                match result {
                    Ok(_) => copied += 1,
                    Err(e) => {
                        failed += 1;
                        if errors.len() < SHOWN_ERRORS {
                            errors.push(format!("{id}: {e}"));
                        }
                    }
                }
            }
            progress.set_position(copied);
        }
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    progress.finish_and_clear();
    source.stop().await?;
    target.stop().await?;
    if ctx.json {
        output::json(&json!({
            "copied": copied,
            "already_there": already,
            "failed": failed,
            "errors": errors
        }))?;
    } else {
        out!("copied {copied} events, {already} already there, {failed} failed");
        for e in &errors {
            out!("  - {e}");
        }
    }
    Ok(if failed == 0 {
        Exit::Ok
    } else {
        Exit::Degraded
    })
}

/// The ids of the events of the query the target already holds: a second copy, or one after
/// a crash half-way, stores nothing twice.
async fn held(bus: &dyn EventBus, query: &ReplayQuery) -> anyhow::Result<HashSet<EventId>> {
    let mut ids = HashSet::new();
    let mut cursor = None;
    loop {
        let page = replay_page(bus, query.clone(), cursor, PAGE).await?;
        ids.extend(page.events.iter().map(|e| e.id));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(ids),
        }
    }
}

/// Kafka deletes by record time, and copied records keep their events' timestamps.
fn warn_retention(to: &event_manager::Settings, from: OffsetDateTime, now: OffsetDateTime) {
    if to.bus_type == BusType::Kafka
        && let Ok(retention) = time::Duration::try_from(to.kafka.retention)
        && from < now - retention
    {
        eprintln!(
            "warning: events older than KAFKA_RETENTION_MS ({} ms) keep their timestamps and Kafka may delete them soon after the copy; raise the retention of the target topics first to keep them",
            to.kafka.retention.as_millis()
        );
    }
}
