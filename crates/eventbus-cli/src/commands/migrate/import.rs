//! The import loop's half that does not depend on the source: skipping what the target already
//! holds, publishing in batches, and counting into the report. The Redis and Kafka sources
//! hand it decoded bodies one by one, each under the name of the timeline or topic it came
//! from (the report's row) and its own key (the report file's line).

use std::collections::HashSet;
use std::sync::Arc;

use anyhow::Context as _;
use event_core::{Event, EventBus, EventId, EventType, ReplayQuery};
use futures::StreamExt as _;
use time::OffsetDateTime;

use super::decode::{Problem, Rejection};
use super::report::ImportReport;

/// Decoded events on their way into the target bus, or counted only in a dry run.
pub(crate) struct Importer {
    pub(crate) report: ImportReport,
    bus: Option<Arc<dyn EventBus>>,
    /// Ids the target holds, or that this run stored.
    known: HashSet<EventId>,
    /// Types whose ids are in `known`.
    looked_up: HashSet<EventType>,
    batch: usize,
    /// Events to publish, with their row, key and record key.
    fresh: Vec<(Event, String, String, Option<String>)>,
}

impl Importer {
    /// An importer into `bus` (`None`: a dry run), which first reads the ids the target holds
    /// of `types`.
    pub(crate) async fn new(
        report: ImportReport,
        bus: Option<Arc<dyn EventBus>>,
        types: &[EventType],
        batch: usize,
    ) -> anyhow::Result<Self> {
        let known = match &bus {
            Some(bus) => held_ids(bus.as_ref(), types).await?,
            None => HashSet::new(),
        };
        Ok(Self {
            report,
            bus,
            known,
            looked_up: types.iter().cloned().collect(),
            batch: batch.max(1),
            fresh: Vec::new(),
        })
    }

    /// Takes one decoded body (already counted as read) of row `row`, stored under `key`
    /// (and, in Kafka, with its own record key).
    pub(crate) async fn take(
        &mut self,
        row: &str,
        key: &str,
        record_key: Option<&str>,
        decoded: Result<Event, Rejection>,
    ) -> anyhow::Result<()> {
        let event = match decoded {
            Ok(event) => event,
            Err(rejection) => {
                return self.report.problem(
                    row,
                    key,
                    record_key,
                    rejection.problem,
                    &rejection.reason,
                );
            }
        };
        if let Some(bus) = &self.bus
            && self.looked_up.insert(event.event_type.clone())
        {
            // A body whose type is not its row's.
            let of_type = std::slice::from_ref(&event.event_type);
            self.known.extend(held_ids(bus.as_ref(), of_type).await?);
        }
        if !self.known.insert(event.id) {
            self.report.of(row).duplicates += 1;
            return Ok(());
        }
        self.fresh.push((
            event,
            row.to_string(),
            key.to_string(),
            record_key.map(str::to_string),
        ));
        if self.fresh.len() >= self.batch {
            self.flush().await?;
        }
        Ok(())
    }

    /// Publishes what was taken and not yet published.
    pub(crate) async fn flush(&mut self) -> anyhow::Result<()> {
        let fresh = std::mem::take(&mut self.fresh);
        let Some(bus) = &self.bus else {
            for (_, row, _, _) in &fresh {
                self.report.of(row).imported += 1;
            }
            return Ok(());
        };
        for chunk in fresh.chunks(self.batch) {
            let events: Vec<Event> = chunk.iter().map(|(e, _, _, _)| e.clone()).collect();
            let results = bus.publish_batch(events).await;
            for (i, (event, row, key, record_key)) in chunk.iter().enumerate() {
                let failed = match results.get(i) {
                    Some(Ok(_)) => None,
                    Some(Err(e)) => Some(e.to_string()),
                    None => {
                        Some("the bus gave no result for this event; run the import again".into())
                    }
                };
                match failed {
                    None => self.report.of(row).imported += 1,
                    Some(reason) => {
                        // Not stored: a later run tries it again.
                        self.known.remove(&event.id);
                        self.report.problem(
                            row,
                            key,
                            record_key.as_deref(),
                            Problem::PublishFailed,
                            &reason,
                        )?;
                    }
                }
            }
        }
        Ok(())
    }
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
