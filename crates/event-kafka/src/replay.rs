//! Replay: per partition from the offset of the window's start (ListOffsets by time) to the
//! high watermark taken when the replay starts, merged across partitions and types by
//! timestamp. No group moves.

use event_core::{Error, EventStream, EventType, JsonCodec, ReplayQuery};
use futures::StreamExt;

use crate::admin::read_partition;
use crate::core::Inner;
use crate::data::OffsetAt;
use crate::record;

/// Replay looks this far before the asked time: a record's Kafka timestamp is its event's,
/// and events published out of timestamp order are still found.
const CLOCK_SKEW_MS: i64 = 60_000;

pub(crate) async fn replay(inner: &Inner, query: ReplayQuery) -> Result<EventStream, Error> {
    event_core::backend::check_replay(&inner.config, &query)?;
    let topics: Vec<(EventType, String, i32)> = if query.event_types.is_empty() {
        inner.topics.all_event_topics(&inner.control).await?
    } else {
        let mut topics = Vec::new();
        for event_type in query.distinct_types() {
            let topic = inner.topics.events(event_type.as_str());
            if let Some(n) = inner.topics.existing(&inner.control, &topic).await? {
                topics.push((event_type, topic, n));
            }
        }
        topics
    };
    let from_ms = record::unix_millis(query.from)
        .saturating_sub(CLOCK_SKEW_MS)
        .max(0);
    let mut events = Vec::new();
    for (topic_type, topic, partitions) in &topics {
        for partition in 0..*partitions {
            let end = inner
                .plane
                .offset_at(topic, partition, OffsetAt::Latest)
                .await?;
            let start = inner
                .plane
                .offset_at(topic, partition, OffsetAt::Timestamp(from_ms))
                .await?;
            for (offset, r) in read_partition(inner, topic, partition, start, end).await? {
                match JsonCodec::keep_sealed(record::decode(&inner.codec, &r)) {
                    // Another producer's envelope of another type: consumers dead-letter it.
                    Ok(event) if event.event_type != *topic_type => {
                        tracing::debug!(%topic, partition, offset, event_type = %event.event_type, "replay skips an envelope of another type than its topic's")
                    }
                    Ok(event) if query.matches(&event) => events.push(event),
                    Ok(_) => {}
                    // Not one of ours: consumers dead-letter it; replay only skips it.
                    Err(e) => {
                        tracing::debug!(%topic, partition, offset, "replay skips a record: {e}")
                    }
                }
            }
        }
    }
    events.sort_by(|a, b| a.timestamp.cmp(&b.timestamp).then(a.id.cmp(&b.id)));
    if let Some(limit) = query.limit {
        events.truncate(limit);
    }
    Ok(futures::stream::iter(events.into_iter().map(Ok)).boxed())
}
