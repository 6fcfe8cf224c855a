//! `eventbus verify-copy`: compares the retained events of two backends by type and id, and
//! each event's envelope, after `eventbus copy` (`docs/migration.md`).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use clap::Args;
use event_core::{Event, EventBus, EventId, ReplayQuery};
use event_manager::{BusType, Settings, replay_page};
use serde::Serialize;
use time::OffsetDateTime;

use super::copy::span::Span;
use crate::context::{Context, open_with};
use crate::exit::Exit;
use crate::output;

/// Arguments of `verify-copy`: `copy`'s span, with help that says to give what `copy` was
/// given.
#[derive(Args, Debug)]
#[command(
    mut_arg("from", |a| a.help("The source, as given to `copy --from`")),
    mut_arg("to", |a| a.help("The target, as given to `copy --to`")),
    mut_arg("since", |a| a.help(
        "Compare events from this time (an age such as `7d`, or an RFC 3339 timestamp), as \
         given to `copy --since`; default every retained event"
    )),
    mut_arg("until", |a| a.help(
        "Up to (not including) this time, as given to `copy --until`; default now"
    )),
    mut_arg("types", |a| a.help(
        "Only this type (repeat for several); default every type either side holds"
    )),
)]
pub(crate) struct VerifyCopyArgs {
    #[command(flatten)]
    span: Span,
}

/// Events read per page.
const PAGE: usize = 1000;
/// Ids listed per type and kind in the text report (`--json` lists them all).
const SHOWN_IDS: usize = 10;

/// The differences of one type.
#[derive(Debug, Default, Serialize)]
struct TypeDiff {
    source: u64,
    target: u64,
    /// In the source, not in the target.
    missing: Vec<EventId>,
    /// In the target, not in the source.
    extra: Vec<EventId>,
    /// In both, with different envelopes.
    different: Vec<EventId>,
    /// Held more than once by the target (a retried publish): equal copies, reported apart.
    duplicated: Vec<EventId>,
}

impl TypeDiff {
    fn equal(&self) -> bool {
        self.missing.is_empty() && self.extra.is_empty() && self.different.is_empty()
    }
}

#[derive(Debug, Serialize)]
struct Report {
    equal: bool,
    types: BTreeMap<String, TypeDiff>,
}

pub(crate) async fn run(ctx: &Context, args: VerifyCopyArgs) -> anyhow::Result<Exit> {
    let now = OffsetDateTime::now_utc();
    let query = args.span.selection(now)?.query;
    let (from, to) = args.span.ends(ctx)?;
    let (from_settings, from_explicit) = for_reading(from);
    let (to_settings, to_explicit) = for_reading(to);
    let source = open_with(from_settings, from_explicit).await?;
    let target = open_with(to_settings, to_explicit).await?;
    let left = read_all(source.bus()?.as_ref(), &query).await?;
    let right = read_all(target.bus()?.as_ref(), &query).await?;
    source.stop().await?;
    target.stop().await?;
    let report = compare(left, right);
    if ctx.json {
        output::json(&report)?;
    } else {
        print(&report);
    }
    Ok(if report.equal { Exit::Ok } else { Exit::Differ })
}

/// The settings of one end, to read only: a Kafka end does not refuse to start because
/// `ENABLE_EVENT_SOURCING=true` is set for the Redis end (it appends nothing).
fn for_reading(
    (mut settings, mut explicit): (Settings, BTreeSet<String>),
) -> (Settings, BTreeSet<String>) {
    if settings.bus_type == BusType::Kafka {
        settings.bus.enable_event_sourcing = false;
        explicit.remove("ENABLE_EVENT_SOURCING");
    }
    (settings, explicit)
}

/// Every event of the query, by type, in replay order.
async fn read_all(
    bus: &dyn EventBus,
    query: &ReplayQuery,
) -> anyhow::Result<BTreeMap<String, Vec<Event>>> {
    let mut out: BTreeMap<String, Vec<Event>> = BTreeMap::new();
    let mut cursor = None;
    loop {
        let page = replay_page(bus, query.clone(), cursor, PAGE).await?;
        for event in page.events {
            out.entry(event.event_type.to_string())
                .or_default()
                .push(event);
        }
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(out),
        }
    }
}

/// The differences, type by type.
fn compare(
    mut left: BTreeMap<String, Vec<Event>>,
    mut right: BTreeMap<String, Vec<Event>>,
) -> Report {
    let mut types: Vec<String> = left.keys().chain(right.keys()).cloned().collect();
    types.sort();
    types.dedup();
    let mut report = Report {
        equal: true,
        types: BTreeMap::new(),
    };
    for event_type in types {
        let source = left.remove(&event_type).unwrap_or_default();
        let target = right.remove(&event_type).unwrap_or_default();
        let diff = compare_type(source, target);
        report.equal &= diff.equal();
        report.types.insert(event_type, diff);
    }
    report
}

fn compare_type(source: Vec<Event>, target: Vec<Event>) -> TypeDiff {
    let mut diff = TypeDiff {
        source: source.len() as u64,
        target: target.len() as u64,
        ..TypeDiff::default()
    };
    let mut in_target: HashMap<EventId, serde_json::Value> = HashMap::new();
    for event in target {
        let value = envelope(&event);
        if let Some(first) = in_target.get(&event.id) {
            if *first == value {
                diff.duplicated.push(event.id);
            } else {
                diff.different.push(event.id);
            }
            continue;
        }
        in_target.insert(event.id, value);
    }
    let mut seen = HashSet::new();
    for event in source {
        seen.insert(event.id);
        match in_target.get(&event.id) {
            None => diff.missing.push(event.id),
            Some(value) if *value != envelope(&event) => diff.different.push(event.id),
            Some(_) => {}
        }
    }
    diff.extra = in_target
        .keys()
        .filter(|id| !seen.contains(id))
        .copied()
        .collect();
    diff.extra.sort();
    diff.different.sort();
    diff.different.dedup();
    diff
}

/// The envelope as JSON, compared whole: payload, timestamp, keys, metadata, unknown fields.
fn envelope(event: &Event) -> serde_json::Value {
    serde_json::to_value(event).unwrap_or(serde_json::Value::Null)
}

fn print(report: &Report) {
    let rows: Vec<Vec<String>> = report
        .types
        .iter()
        .map(|(t, d)| {
            vec![
                t.clone(),
                d.source.to_string(),
                d.target.to_string(),
                d.missing.len().to_string(),
                d.extra.len().to_string(),
                d.different.len().to_string(),
                d.duplicated.len().to_string(),
            ]
        })
        .collect();
    output::table(
        &[
            "type",
            "source",
            "target",
            "missing",
            "extra",
            "different",
            "duplicated",
        ],
        &rows,
    );
    for (t, d) in &report.types {
        for (kind, ids) in [
            ("missing", &d.missing),
            ("extra", &d.extra),
            ("different", &d.different),
        ] {
            for id in ids.iter().take(SHOWN_IDS) {
                out!("  {t} {kind}: {id}");
            }
            if ids.len() > SHOWN_IDS {
                out!(
                    "  {t} {kind}: ... and {} more (--json lists all)",
                    ids.len() - SHOWN_IDS
                );
            }
        }
    }
    if report.equal {
        out!("source and target hold the same events");
    } else {
        out!("source and target differ");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use event_core::EventType;

    fn event(n: u32) -> Event {
        Event::builder(EventType::USER_REGISTERED, "s")
            .payload(serde_json::json!({"user_id": n.to_string()}))
            .build()
            .unwrap()
    }

    #[test]
    fn differences_are_missing_extra_different_and_duplicated() {
        let (a, b, c, d) = (event(1), event(2), event(3), event(4));
        let mut changed = c.clone();
        changed
            .payload
            .insert("user_id".into(), serde_json::json!("changed"));
        let source = vec![a.clone(), b.clone(), c.clone()];
        let target = vec![a.clone(), a.clone(), changed, d.clone()];
        let diff = compare_type(source, target);
        assert_eq!(diff.missing, [b.id]);
        assert_eq!(diff.extra, [d.id]);
        assert_eq!(diff.different, [c.id]);
        assert_eq!(diff.duplicated, [a.id]);
        assert!(!diff.equal());
        let same = compare_type(vec![a.clone(), b.clone()], vec![b, a.clone(), a]);
        assert!(
            same.equal(),
            "order and duplicates do not make a difference"
        );
    }
}
