//! [`AuditTrailHandler`]: every event, of every type, appended to an audit trail: JSON Lines
//! files with size-based rotation ([`AuditSettings`]).

mod jsonl;
mod settings;

pub use settings::{AuditSettings, AuditSink};

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use event_core::{Event, EventHandler, EventType, HandlerError};
use serde::Serialize;
use time::OffsetDateTime;

use crate::domain::{RecentIds, lock};
use crate::registry::RECENT_IDS;
use crate::{HandlersError, View};
use jsonl::JsonLinesWriter;

/// What the audit trail holds so far: the view of [`AuditTrailHandler`].
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct AuditSummary {
    /// The sink's kind (`json_lines`).
    pub sink: &'static str,
    /// The file being appended to.
    pub path: PathBuf,
    /// Size at which the file is rotated, bytes.
    pub max_file_bytes: u64,
    /// Files kept, the current one included.
    pub max_files: usize,
    /// Entries appended since this handler started.
    pub entries_written: u64,
    /// Size of the current file, bytes.
    pub current_file_bytes: u64,
    /// Rotations since this handler started.
    pub rotations: u64,
    /// Entries appended since start, by event type.
    pub by_type: BTreeMap<String, u64>,
    /// Timestamp of the last event appended.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_event_at: Option<OffsetDateTime>,
}

#[derive(Debug)]
struct Counts {
    seen: RecentIds,
    entries: u64,
    by_type: BTreeMap<String, u64>,
    last_event_at: Option<OffsetDateTime>,
}

/// Appends every event it receives to the audit trail, one JSON object per line:
/// `{"audited_at": "...", "event": {...the envelope...}}`.
///
/// Its [`event_types`](AuditTrailHandler::event_types) are the 20 standard types,
/// `agent.task_started` and the extra types of its [`AuditSettings`]. A write that fails
/// (a full disk, say) fails the event as transient, so it is retried and not lost.
pub struct AuditTrailHandler {
    settings: AuditSettings,
    writer: Arc<Mutex<JsonLinesWriter>>,
    counts: Mutex<Counts>,
}

impl std::fmt::Debug for AuditTrailHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditTrailHandler")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl AuditTrailHandler {
    /// The handler's name (and consumer group suffix).
    pub const NAME: &'static str = "audit";

    /// Opens (creating it if needed) the audit trail of `settings`.
    ///
    /// # Errors
    /// [`HandlersError::Audit`] when the directory or file cannot be created or opened.
    pub fn open(settings: AuditSettings) -> Result<Self, HandlersError> {
        let writer = match &settings.sink {
            AuditSink::JsonLines {
                dir,
                max_file_bytes,
                max_files,
            } => JsonLinesWriter::open(dir.clone(), *max_file_bytes, *max_files)?,
        };
        Ok(Self {
            settings,
            writer: Arc::new(Mutex::new(writer)),
            counts: Mutex::new(Counts {
                seen: RecentIds::new(RECENT_IDS),
                entries: 0,
                by_type: BTreeMap::new(),
                last_event_at: None,
            }),
        })
    }

    /// The event types it subscribes to: the 20 standard types, `agent.task_started`, and
    /// the settings' extra types.
    pub fn event_types(&self) -> Vec<EventType> {
        let mut types = EventType::STANDARD.to_vec();
        types.push(crate::domain::agent_task_started());
        types.push(crate::domain::reanalysis_requested());
        for extra in &self.settings.extra_event_types {
            if !types.contains(extra) {
                types.push(extra.clone());
            }
        }
        types
    }

    /// What the trail holds so far.
    pub fn summary(&self) -> AuditSummary {
        let (path, current_file_bytes, rotations, max_file_bytes, max_files) = {
            let writer = lock(&self.writer);
            (
                writer.current_path(),
                writer.current_bytes(),
                writer.rotations(),
                writer.max_file_bytes(),
                writer.max_files(),
            )
        };
        let counts = lock(&self.counts);
        AuditSummary {
            sink: "json_lines",
            path,
            max_file_bytes,
            max_files,
            entries_written: counts.entries,
            current_file_bytes,
            rotations,
            by_type: counts.by_type.clone(),
            last_event_at: counts.last_event_at,
        }
    }
}

#[derive(Serialize)]
struct AuditLine<'a> {
    #[serde(with = "time::serde::rfc3339")]
    audited_at: OffsetDateTime,
    event: &'a Event,
}

#[async_trait]
impl EventHandler for AuditTrailHandler {
    fn name(&self) -> &str {
        Self::NAME
    }

    async fn handle(&self, event: &Event) -> Result<(), HandlerError> {
        if lock(&self.counts).seen.contains(&event.id) {
            return Ok(());
        }
        let mut line = serde_json::to_vec(&AuditLine {
            audited_at: OffsetDateTime::now_utc(),
            event,
        })
        .map_err(HandlerError::permanent)?;
        line.push(b'\n');
        let writer = self.writer.clone();
        tokio::task::spawn_blocking(move || lock(&writer).append(&line))
            .await
            .map_err(|e| HandlerError::transient(format!("the audit write task failed: {e}")))?
            .map_err(HandlerError::transient)?;
        let mut counts = lock(&self.counts);
        if counts.seen.insert(event.id) {
            counts.entries += 1;
            *counts
                .by_type
                .entry(event.event_type.as_str().to_owned())
                .or_default() += 1;
            counts.last_event_at = Some(
                counts
                    .last_event_at
                    .map_or(event.timestamp, |t| t.max(event.timestamp)),
            );
        }
        Ok(())
    }
}

impl View for AuditTrailHandler {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn snapshot(&self) -> serde_json::Value {
        crate::registry::to_json(&self.summary())
    }
}
