//! [`AuditTrailHandler`]: every event, of every type, appended to an audit trail: JSON Lines
//! files with size-based rotation, or a Redis stream ([`AuditSettings`]).

mod jsonl;
#[cfg(feature = "redis")]
mod redis_stream;
mod settings;

pub use settings::{AuditSettings, AuditSink};

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use event_core::{Event, EventHandler, EventType, HandlerError};
use serde::Serialize;
use time::OffsetDateTime;

use crate::domain::{RecentIds, lock};
use crate::view::RECENT_IDS;
use crate::{Error, View};
use jsonl::JsonLinesWriter;

/// What the audit trail holds so far: the view of [`AuditTrailHandler`].
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct AuditSummary {
    /// The sink's kind: `json_lines` or `redis_stream`.
    pub sink: &'static str,
    /// Where entries go: the current file, or the stream and its server (no password).
    pub location: String,
    /// JSON Lines: size at which the file is rotated, bytes.
    pub max_file_bytes: Option<u64>,
    /// JSON Lines: files kept, the current one included.
    pub max_files: Option<usize>,
    /// JSON Lines: size of the current file, bytes.
    pub current_file_bytes: Option<u64>,
    /// JSON Lines: rotations since this handler started.
    pub rotations: u64,
    /// Redis stream: about how many entries are kept.
    pub stream_max_len: Option<u64>,
    /// Entries appended since this handler started.
    pub entries_written: u64,
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
    sink: Sink,
    counts: Mutex<Counts>,
}

enum Sink {
    JsonLines(Arc<Mutex<JsonLinesWriter>>),
    #[cfg(feature = "redis")]
    Redis(redis_stream::RedisStreamWriter),
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

    /// Opens (creating it if needed) the audit trail of `settings`. A Redis stream's URL is
    /// checked now and connected to by the first event (a server that cannot be reached then
    /// fails that event as transient, so it is retried).
    ///
    /// # Errors
    /// [`Error::Audit`] when the directory or file cannot be created or opened, or
    /// the Redis URL is not one.
    pub fn open(settings: AuditSettings) -> Result<Self, Error> {
        let sink = match &settings.sink {
            AuditSink::JsonLines {
                dir,
                max_file_bytes,
                max_files,
            } => Sink::JsonLines(Arc::new(Mutex::new(JsonLinesWriter::open(
                dir.clone(),
                *max_file_bytes,
                *max_files,
            )?))),
            #[cfg(feature = "redis")]
            AuditSink::RedisStream {
                url,
                stream,
                max_len,
            } => Sink::Redis(redis_stream::RedisStreamWriter::open(
                url, stream, *max_len,
            )?),
        };
        Ok(Self {
            settings,
            sink,
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
        let mut summary = AuditSummary {
            sink: "json_lines",
            location: String::new(),
            max_file_bytes: None,
            max_files: None,
            current_file_bytes: None,
            rotations: 0,
            stream_max_len: None,
            entries_written: 0,
            by_type: BTreeMap::new(),
            last_event_at: None,
        };
        match &self.sink {
            Sink::JsonLines(writer) => {
                let writer = lock(writer);
                summary.location = writer.current_path().display().to_string();
                summary.max_file_bytes = Some(writer.max_file_bytes());
                summary.max_files = Some(writer.max_files());
                summary.current_file_bytes = Some(writer.current_bytes());
                summary.rotations = writer.rotations();
            }
            #[cfg(feature = "redis")]
            Sink::Redis(writer) => {
                summary.sink = "redis_stream";
                summary.location = writer.location();
                summary.stream_max_len = Some(writer.max_len());
            }
        }
        let counts = lock(&self.counts);
        summary.entries_written = counts.entries;
        summary.by_type = counts.by_type.clone();
        summary.last_event_at = counts.last_event_at;
        summary
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
        let audited_at = OffsetDateTime::now_utc();
        let sealed = match &self.settings.encryption {
            Some(keys) => Some(keys.seal(event).map_err(HandlerError::permanent)?),
            None => None,
        };
        let stored = sealed.as_ref().unwrap_or(event);
        match &self.sink {
            Sink::JsonLines(writer) => {
                let mut line = serde_json::to_vec(&AuditLine {
                    audited_at,
                    event: stored,
                })
                .map_err(HandlerError::permanent)?;
                line.push(b'\n');
                let writer = writer.clone();
                // File writes block: off the async workers.
                tokio::task::spawn_blocking(move || lock(&writer).append(&line))
                    .await
                    .map_err(|e| {
                        HandlerError::transient(format!("the audit write task failed: {e}"))
                    })?
                    .map_err(HandlerError::transient)?;
            }
            #[cfg(feature = "redis")]
            Sink::Redis(writer) => {
                let json = serde_json::to_string(stored).map_err(HandlerError::permanent)?;
                let at = event_core::timestamp::format(audited_at);
                writer
                    .append(event, &at, &json)
                    .await
                    .map_err(HandlerError::transient)?;
            }
        }
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
        crate::view::to_json(&self.summary())
    }
}
