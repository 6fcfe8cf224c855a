//! Replay: `XRANGE` from the window's start, paged, merged across types by timestamp.
//! Entries that are not events (written by another producer), envelopes of another type than
//! their stream's included, are skipped, and said so: a warning per stream and the metric
//! `eventbus_replay_skipped_entries_total{event_type}`.

use event_core::{Error, Event, EventStream, EventType, JsonCodec, ReplayQuery};
use fred::prelude::StreamsInterface;
use fred::types::Value;
use futures::StreamExt;

use crate::clock::CLOCK_SKEW_MS;
use crate::core::Inner;
use crate::counters::REPLAY_SKIPPED_METRIC;
use crate::{client, entry, reply};

/// Entries read per `XRANGE` page.
const PAGE: u64 = 1000;

pub(crate) async fn replay(inner: &Inner, query: ReplayQuery) -> Result<EventStream, Error> {
    event_core::backend::check_replay(&inner.config, &query)?;
    let types = if query.event_types.is_empty() {
        event_types(inner).await?
    } else {
        query.distinct_types()
    };
    let cutoff = inner.cutoff_ms().await.unwrap_or(0);
    let from_ms = i64::try_from(query.from.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
    // Stream ids are the time Redis stored each entry; an event stored a little before its own
    // timestamp (clock skew between hosts) is still found. Entries past the retention are
    // skipped even where approximate trimming has not removed them yet.
    let start_ms = from_ms.saturating_sub(CLOCK_SKEW_MS).max(cutoff);
    let mut events = Vec::new();
    for event_type in &types {
        let skipped = read_stream(
            inner,
            &inner.keys.stream(event_type),
            start_ms,
            &query,
            &mut events,
        )
        .await?;
        if skipped > 0 {
            tracing::warn!(
                event_type = %event_type,
                skipped,
                "replay skipped stream entries that are not events (written by another producer; consumers dead-letter them)"
            );
            metrics::counter!(REPLAY_SKIPPED_METRIC, "event_type" => event_type.to_string())
                .increment(skipped);
        }
    }
    events.sort_by(|a, b| a.timestamp.cmp(&b.timestamp).then(a.id.cmp(&b.id)));
    if let Some(limit) = query.limit {
        events.truncate(limit);
    }
    Ok(futures::stream::iter(events.into_iter().map(Ok)).boxed())
}

/// Reads one stream from `start_ms` to its end and keeps the events that match the query;
/// returns how many entries it skipped because they are not events. Copied events can carry
/// timestamps older than when they were stored, so the read goes to the end of the stream
/// rather than stopping at the window's end.
async fn read_stream(
    inner: &Inner,
    key: &str,
    start_ms: i64,
    query: &ReplayQuery,
    out: &mut Vec<Event>,
) -> Result<u64, Error> {
    let mut start = entry::id_at(start_ms);
    let mut skipped = 0;
    loop {
        let page: Value = inner
            .client
            .xrange(key, start.as_str(), "+", Some(PAGE))
            .await
            .map_err(|e| client::error("XRANGE", e))?;
        let page = reply::entries(page);
        let Some(last) = page.last() else {
            return Ok(skipped);
        };
        start = format!("({}", last.id);
        let full = page.len() as u64 == PAGE;
        for raw in page {
            match JsonCodec::keep_sealed(entry::decode(&inner.codec, &raw)) {
                // An envelope of another type than the stream's: consumers dead-letter it too.
                Ok(event) if !inner.keys.is_stream_of(key, &event.event_type) => {
                    skipped += 1;
                    tracing::debug!(stream = %key, entry = %raw.id, event_type = %event.event_type, "replay skips an envelope of another type than its stream's");
                }
                Ok(event) if query.matches(&event) => out.push(event),
                Ok(_) => {}
                // Not one of ours: consumers dead-letter it; replay skips it.
                Err(e) => {
                    skipped += 1;
                    tracing::debug!(stream = %key, entry = %raw.id, "replay skips an entry: {e}");
                }
            }
        }
        if !full {
            return Ok(skipped);
        }
    }
}

/// Every event type with a stream under the prefix (on every primary of a cluster).
pub(crate) async fn event_types(inner: &Inner) -> Result<Vec<EventType>, Error> {
    let mut types = Vec::new();
    for node in client::every_primary(&inner.client) {
        scan_node(inner, &node, &mut types).await?;
    }
    types.sort();
    types.dedup();
    Ok(types)
}

/// Adds the event types of the streams on `node` to `types`.
async fn scan_node(
    inner: &Inner,
    node: &Option<fred::prelude::Server>,
    types: &mut Vec<EventType>,
) -> Result<(), Error> {
    let mut cursor = "0".to_string();
    loop {
        let (next, keys) = client::scan_page(
            &inner.client,
            node,
            &cursor,
            &inner.keys.stream_pattern(),
            "stream",
        )
        .await?;
        cursor = next;
        for key in keys {
            if let Some(event_type) = key.as_string().and_then(|k| inner.keys.event_type_of(&k)) {
                types.push(event_type);
            }
        }
        if cursor == "0" {
            return Ok(());
        }
    }
}
