//! `copy` from Redis to Kafka, the migration: the events of each type in stream order (the
//! order every consumer group read them), skipping those the target already holds; then each
//! handler's position ([`positions`]) and its dead letters with their
//! provenance. Aggregate histories are refused: Kafka has no event sourcing here.

use std::collections::{BTreeMap, HashSet};

use event_core::{DeadLetter, Error, EventBus, EventId, EventType};
use event_kafka::KafkaBus;
use event_manager::Settings;
use event_redis::{GroupPosition, RedisBus};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use time::OffsetDateTime;

use super::positions::{self, Start};
use crate::args::ArgError;
use crate::exit::Exit;
use crate::output;

/// Entries read per page of a stream.
const PAGE: usize = 1000;
/// The limit that lists every dead letter (Redis refuses a count of `i64::MAX` or more).
const EVERY_LETTER: usize = u32::MAX as usize;
/// Failures shown in the report.
const SHOWN_ERRORS: usize = 10;

/// What to copy.
pub(crate) struct Plan {
    pub(crate) types: Vec<EventType>,
    pub(crate) since: Option<OffsetDateTime>,
    pub(crate) until: Option<OffsetDateTime>,
    /// Copy the events of aggregates although their histories stay behind.
    pub(crate) skip_aggregates: bool,
    /// Events only: no positions, no dead letters.
    pub(crate) events_only: bool,
}

/// The closing report (`--json` prints it as is).
#[derive(Debug, Default, Serialize)]
struct Report {
    copied: u64,
    already_there: u64,
    failed: u64,
    not_events: u64,
    errors: Vec<String>,
    types: BTreeMap<String, TypeReport>,
    handlers: BTreeMap<String, HandlerReport>,
    warnings: Vec<String>,
}

#[derive(Debug, Default, Serialize)]
struct TypeReport {
    read: u64,
    copied: u64,
    already_there: u64,
    failed: u64,
    not_events: u64,
    outside_window: u64,
}

#[derive(Debug, Default, Serialize)]
struct HandlerReport {
    group: String,
    /// Per type: where the group starts on Kafka.
    positions: BTreeMap<String, Start>,
    /// Events delivered and not acknowledged on Redis when copied: delivered again.
    pending: u64,
    /// Events it had finished that it is delivered again ([`Start::redelivered`]).
    redelivered: u64,
    /// The most events it can handle twice across the switch: `pending + redelivered`.
    duplicate_bound: u64,
    /// Events it had not finished that are not on Kafka (outside the window, or failed).
    unfinished_not_copied: u64,
    /// Dead letters redriven to it on Redis and not finished: not copied.
    unfinished_redrives: u64,
    dead_letters_copied: u64,
    dead_letters_already_there: u64,
}

/// The events of one type on the source, in stream order, with their entry ids.
type Copied = Vec<(String, EventId)>;

pub(crate) async fn run(
    json: bool,
    from: Settings,
    to: Settings,
    plan: Plan,
) -> anyhow::Result<Exit> {
    let source = RedisBus::connect(from.redis.clone(), from.bus.clone()).await?;
    if source.has_aggregates().await? && !plan.skip_aggregates {
        return Err(ArgError(
            "the source holds aggregate histories (event sourcing: append_to_aggregate, load_aggregate), which the Kafka backend does not offer; nothing was copied. Keep the services that use aggregates on Redis (EVENT_BUS_TYPE=redis) and move the others, or keep their state in PostgreSQL with the outbox and views (docs/outbox.md); --skip-aggregates copies their events as plain events and leaves the histories behind".into(),
        )
        .into());
    }
    let target = KafkaBus::connect(to.kafka.clone(), to.bus.clone()).await?;
    let types = if plan.types.is_empty() {
        source.event_types().await?
    } else {
        plan.types.clone()
    };
    let batch = to.bus.batch_size.max(1);
    let mut report = Report::default();
    let progress = ProgressBar::no_length();
    progress.set_style(
        ProgressStyle::with_template("{spinner} copied {pos} events {per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    let mut sources: Vec<(EventType, Copied)> = Vec::new();
    for event_type in &types {
        let copied = copy_type(
            &source,
            &target,
            event_type,
            &plan,
            batch,
            &progress,
            &mut report,
        )
        .await?;
        sources.push((event_type.clone(), copied));
    }
    progress.finish_and_clear();
    if !plan.events_only {
        carry_positions(&source, &target, &sources, &mut report).await?;
        carry_dead_letters(&source, &target, &mut report).await?;
    }
    source.shutdown().await?;
    target.shutdown().await?;
    print(json, &report)?;
    let incomplete = report.failed > 0
        || report
            .handlers
            .values()
            .any(|h| h.unfinished_not_copied > 0 || h.unfinished_redrives > 0);
    Ok(if incomplete { Exit::Degraded } else { Exit::Ok })
}

/// Copies one type's stream in stream order; returns its events (entry id, event id).
async fn copy_type(
    source: &RedisBus,
    target: &KafkaBus,
    event_type: &EventType,
    plan: &Plan,
    batch: usize,
    progress: &ProgressBar,
    report: &mut Report,
) -> anyhow::Result<Copied> {
    let there: HashSet<EventId> = target
        .topic_records(event_type)
        .await?
        .into_iter()
        .flat_map(|p| p.records.into_iter().filter_map(|(_, id)| id))
        .collect();
    let mut counts = TypeReport::default();
    let mut events = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = source
            .read_stream(event_type, after.as_deref(), PAGE)
            .await?;
        let Some(last) = page.last() else { break };
        after = Some(last.entry_id.clone());
        let full = page.len() == PAGE;
        let mut to_send = Vec::new();
        for entry in page {
            counts.read += 1;
            let event = match entry.event {
                Ok(event) => event,
                Err(_) => {
                    counts.not_events += 1;
                    continue;
                }
            };
            events.push((entry.entry_id, event.id));
            if plan.since.is_some_and(|t| event.timestamp < t)
                || plan.until.is_some_and(|t| event.timestamp >= t)
            {
                counts.outside_window += 1;
            } else if there.contains(&event.id) {
                counts.already_there += 1;
            } else {
                to_send.push(event);
            }
        }
        for chunk in to_send.chunks(batch) {
            let ids: Vec<EventId> = chunk.iter().map(|e| e.id).collect();
            for (id, result) in ids.iter().zip(target.publish_batch(chunk.to_vec()).await) {
                match result {
                    Ok(_) => counts.copied += 1,
                    Err(e) => {
                        counts.failed += 1;
                        if report.errors.len() < SHOWN_ERRORS {
                            report.errors.push(format!("{event_type} {id}: {e}"));
                        }
                    }
                }
            }
            progress.inc(chunk.len() as u64);
        }
        if !full {
            break;
        }
    }
    report.copied += counts.copied;
    report.already_there += counts.already_there;
    report.failed += counts.failed;
    report.not_events += counts.not_events;
    report.types.insert(event_type.to_string(), counts);
    Ok(events)
}

/// Commits, for every handler with a group on a copied type, the offsets where it starts.
async fn carry_positions(
    source: &RedisBus,
    target: &KafkaBus,
    sources: &[(EventType, Copied)],
    report: &mut Report,
) -> anyhow::Result<()> {
    for (event_type, events) in sources {
        let groups = source.group_positions(event_type).await?;
        if groups.is_empty() {
            continue;
        }
        let records = target.topic_records(event_type).await?;
        let on_target: HashSet<EventId> = records
            .iter()
            .flat_map(|p| p.records.iter().filter_map(|(_, id)| *id))
            .collect();
        for group in &groups {
            let finished = finished_events(group, events);
            let start = positions::start(&records, &finished);
            target
                .commit_group_offsets(&group.handler, event_type, &start.offsets)
                .await
                .map_err(|e| {
                    anyhow::anyhow!(
                        "giving handler {} its position in {event_type}: {e} (stop the handler's services on Kafka before the copy)",
                        group.handler
                    )
                })?;
            let handler = report.handlers.entry(group.handler.clone()).or_default();
            handler.group = group.group.clone();
            let pending = events
                .iter()
                .filter(|(entry, _)| group.pending.contains(entry))
                .count() as u64;
            handler.pending += pending;
            handler.redelivered += start.redelivered;
            handler.duplicate_bound = handler.pending + handler.redelivered;
            handler.unfinished_not_copied += events
                .iter()
                .filter(|(entry, id)| !group.finished(entry) && !on_target.contains(id))
                .count() as u64;
            handler.positions.insert(event_type.to_string(), start);
        }
    }
    for (handler, h) in report.handlers.iter_mut() {
        h.unfinished_redrives = source.unfinished_redrives(handler).await?;
    }
    for (handler, h) in &report.handlers {
        if h.unfinished_redrives > 0 {
            report.warnings.push(format!(
                "{handler} has {} dead letters redriven on Redis and not finished: they are not copied; let them finish on Redis and copy again",
                h.unfinished_redrives
            ));
        }
        if h.unfinished_not_copied > 0 {
            report.warnings.push(format!(
                "{handler} had not finished {} events that are not on Kafka (outside --since/--until, or failed): it will not see them",
                h.unfinished_not_copied
            ));
        }
    }
    Ok(())
}

/// The events of a type a group had finished on the source.
fn finished_events(group: &GroupPosition, events: &Copied) -> HashSet<EventId> {
    events
        .iter()
        .filter(|(entry, _)| group.finished(entry))
        .map(|(_, id)| *id)
        .collect()
}

/// Copies the dead letters of every handler with a position, except those the target holds.
async fn carry_dead_letters(
    source: &RedisBus,
    target: &KafkaBus,
    report: &mut Report,
) -> anyhow::Result<()> {
    for (handler, h) in report.handlers.iter_mut() {
        let letters = known_letters(source.dead_letters(handler, EVERY_LETTER).await)?;
        let there: HashSet<String> =
            known_letters(target.dead_letters(handler, EVERY_LETTER).await)?
                .iter()
                .map(letter_key)
                .collect();
        for letter in letters {
            if there.contains(&letter_key(&letter)) {
                h.dead_letters_already_there += 1;
                continue;
            }
            target.import_dead_letter(&letter).await?;
            h.dead_letters_copied += 1;
        }
    }
    Ok(())
}

/// A handler that never had a dead letter (or a group) has none.
fn known_letters(letters: Result<Vec<DeadLetter>, Error>) -> Result<Vec<DeadLetter>, Error> {
    match letters {
        Err(Error::UnknownHandler { .. }) => Ok(Vec::new()),
        other => other,
    }
}

/// What identifies a dead letter on both sides: its event, or the record it kept.
fn letter_key(letter: &DeadLetter) -> String {
    match &letter.event {
        Some(event) => format!("event:{}", event.id),
        None => format!("raw:{}", letter.raw.as_deref().unwrap_or_default()),
    }
}

fn print(json: bool, report: &Report) -> anyhow::Result<()> {
    if json {
        return output::json(report);
    }
    out!(
        "copied {} events, {} already there, {} failed, {} entries not events",
        report.copied,
        report.already_there,
        report.failed,
        report.not_events
    );
    for e in &report.errors {
        out!("  - {e}");
    }
    let mut rows = Vec::new();
    for (handler, h) in &report.handlers {
        for (event_type, s) in &h.positions {
            rows.push(vec![
                handler.clone(),
                event_type.clone(),
                s.skipped.to_string(),
                s.unfinished.to_string(),
                s.redelivered.to_string(),
            ]);
        }
    }
    if !rows.is_empty() {
        out!("handler positions on Kafka:");
        output::table(
            &[
                "handler",
                "type",
                "finished (skipped)",
                "to deliver",
                "delivered again",
            ],
            &rows,
        );
        let rows: Vec<Vec<String>> = report
            .handlers
            .iter()
            .map(|(handler, h)| {
                vec![
                    handler.clone(),
                    h.pending.to_string(),
                    h.duplicate_bound.to_string(),
                    h.dead_letters_copied.to_string(),
                    h.dead_letters_already_there.to_string(),
                ]
            })
            .collect();
        output::table(
            &[
                "handler",
                "pending on Redis",
                "duplicate bound",
                "dead letters copied",
                "already there",
            ],
            &rows,
        );
    }
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn finished_events_follow_the_group() {
        let (a, b, c) = (EventId::new(), EventId::new(), EventId::new());
        let events: Copied = vec![("1-0".into(), a), ("2-0".into(), b), ("3-0".into(), c)];
        let group = GroupPosition {
            handler: "h".into(),
            group: "g.h".into(),
            last_delivered: "2-0".into(),
            pending: BTreeSet::from(["1-0".to_string()]),
        };
        assert_eq!(finished_events(&group, &events), HashSet::from([b]));
    }

    #[test]
    fn letters_match_by_event_or_record() {
        let now = OffsetDateTime::now_utc();
        let letter = DeadLetter {
            id: "1".into(),
            handler: "h".into(),
            group: "g.h".into(),
            reason: event_core::DeadLetterReason::InvalidEnvelope,
            event: None,
            raw: Some("x".into()),
            attempts: 1,
            first_error: "e".into(),
            last_error: "e".into(),
            first_failed_at: now,
            last_failed_at: now,
            dead_lettered_at: now,
        };
        assert_eq!(letter_key(&letter), "raw:x");
    }
}
