//! The fetch loop of one partition, and the supervisor that restarts it.
//!
//! The loop fetches from the partition, hands events to the group's dispatcher, and
//! dead-letters what is no event or could not be decoded; it moves its position by what the
//! fetch says (past transaction markers, aborted transactions and compaction gaps), never
//! by the last record alone, so no gap can stall it or the commit.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use event_core::DeadLetter;
use event_core::dispatch::{Delivery, DeliverySink, Dispatcher, Supervisor};
use event_core::trace::LogPosition;
use rskafka::record::{RecordAndOffset, UndecodableRecords};
use tokio::sync::watch;

use super::dead_letters::{KafkaSink, invalid_letter, undecodable_letter};
use super::{Group, Token, Tracker};
use crate::data::{Fetched, OffsetAt};
use crate::record;

/// How long one fetch waits for records: the longest an idle task takes to notice a stop.
const MAX_WAIT: Duration = Duration::from_millis(200);
/// About how many bytes one fetch returns.
const MAX_BYTES: i32 = 1024 * 1024;
/// How far a partition is read past its commit point, in offsets. An event its handler holds
/// (a slow call, or retries) holds the commit point while the partition's other keys go on;
/// reading pauses this far past it, so a rebalance, a crash or a broker restart hands out
/// again at most this many events.
const MAX_AHEAD: u64 = 1024;
/// How often a partition paused at [`MAX_AHEAD`] looks whether its commit point moved.
const AHEAD_POLL: Duration = Duration::from_millis(20);

/// What a fetch returned that is still to be handed out, in offset order.
enum Item {
    Record(RecordAndOffset),
    Undecodable(UndecodableRecords),
}

impl Item {
    fn offset(&self) -> i64 {
        match self {
            Item::Record(r) => r.offset,
            Item::Undecodable(u) => u.first_offset,
        }
    }
}

/// Places reserved in the dispatcher; those not used go back when this is dropped, also when
/// the loop panics while holding them.
struct Room<'a> {
    dispatcher: &'a Dispatcher<Token>,
    unused: usize,
}

impl Drop for Room<'_> {
    fn drop(&mut self) {
        self.dispatcher.release(self.unused);
    }
}

/// Runs the fetch loop of one partition until `stop`, restarting it (with backoff, logged and
/// counted where health reads it) whenever it panics or ends unasked. A restarted loop starts
/// again from the partition's committed offset: what the failed one handed out and was not
/// finished is delivered again (at least once).
pub(super) async fn supervised(
    group: Arc<Group>,
    dispatcher: Arc<Dispatcher<Token>>,
    mut stop: watch::Receiver<bool>,
    topic_index: usize,
    partition: i32,
) {
    let mut supervisor = Supervisor::new(group.handler.clone(), group.counters.clone());
    let what = format!(
        "the fetch loop of {} partition {partition}",
        group.topics()[topic_index]
    );
    loop {
        let run = fetch_loop(
            group.clone(),
            dispatcher.clone(),
            stop.clone(),
            topic_index,
            partition,
        );
        let outcome = supervisor.run(run).await;
        if *stop.borrow() || stop.has_changed().is_err() {
            return;
        }
        let why = match outcome {
            Ok(()) => "ended without being asked to stop".to_string(),
            Err(why) => why,
        };
        let pause = supervisor.failed(&what, &why);
        {
            let mut trackers = group.trackers();
            let Some(tracker) = trackers.get_mut(&(topic_index, partition)) else {
                return;
            };
            *tracker = tracker.restart();
        }
        tokio::select! {
            biased;
            _ = stop.changed() => return,
            () = tokio::time::sleep(pause) => {}
        }
    }
}

/// The fetch loop of one partition, from its tracker's committed offset. Records fetched
/// beyond the dispatcher's room wait in a buffer for the next pass, so a fetch is never
/// thrown away.
async fn fetch_loop(
    group: Arc<Group>,
    dispatcher: Arc<Dispatcher<Token>>,
    mut stop: watch::Receiver<bool>,
    topic_index: usize,
    partition: i32,
) {
    let key = (topic_index, partition);
    let started = group
        .trackers()
        .get(&key)
        .map(|t| (t.committed(), t.incarnation()));
    let Some((mut position, mut incarnation)) = started else {
        // The partition was given up meanwhile: nothing to do until the stop.
        let _ = stop.wait_for(|stopped| *stopped).await;
        return;
    };
    let inner = group.inner.clone();
    let reader = inner.plane.reader();
    let topic = group.topics()[topic_index].clone();
    // The type of an event topic (the redrive topic, last, holds every type of the handler).
    let topic_type = group.event_types.get(topic_index).cloned();
    let sink = KafkaSink {
        group: group.clone(),
    };
    let mut failures = 0u32;
    let batch = inner.config.batch_size.max(1);
    let mut buffer: VecDeque<Item> = VecDeque::new();
    loop {
        if *stop.borrow_and_update() {
            break;
        }
        // After the stop check: a loop already told to stop (an earlier subscription's, still
        // winding down) does not take a fault meant for the running one.
        event_core::fault::checkpoint(&group.handler);
        let ahead = group.trackers().get(&key).map_or(0, Tracker::ahead);
        let allowance = usize::try_from(MAX_AHEAD.saturating_sub(ahead)).unwrap_or(usize::MAX);
        if allowance == 0 {
            tokio::select! {
                biased;
                _ = stop.changed() => {}
                () = tokio::time::sleep(AHEAD_POLL) => {}
            }
            continue;
        }
        let mut room = tokio::select! {
            biased;
            _ = stop.changed() => continue,
            room = dispatcher.reserve(batch) => Room { dispatcher: &dispatcher, unused: room },
        };
        if buffer.is_empty() {
            let fetched = tokio::select! {
                biased;
                _ = stop.changed() => continue,
                fetched = reader.fetch(&topic, partition, position, MAX_BYTES, MAX_WAIT) => fetched,
            };
            match fetched {
                Ok(Fetched::Records {
                    records,
                    undecodable,
                    high_watermark,
                    last_stable_offset,
                    next_offset,
                }) => {
                    failures = 0;
                    let mut items: Vec<Item> = records
                        .into_iter()
                        .filter(|r| r.offset >= position)
                        .map(Item::Record)
                        .chain(
                            undecodable
                                .into_iter()
                                .filter(|u| u.first_offset >= position)
                                .map(Item::Undecodable),
                        )
                        .collect();
                    items.sort_by_key(Item::offset);
                    let empty = items.is_empty();
                    buffer.extend(items);
                    let mut next = next_offset.max(position);
                    if empty && next == position {
                        // Nothing at all from `position` on, yet the partition's decided part
                        // ends beyond it: compaction left a gap at the end of the log. (The
                        // broker reads up to the offsets it reports, so nothing below them
                        // was left out.)
                        let stable = last_stable_offset
                            .unwrap_or(high_watermark)
                            .min(high_watermark);
                        next = next.max(stable);
                    }
                    position = next;
                    metrics::gauge!(
                        super::PARTITION_LAG_METRIC,
                        "handler" => group.handler.clone(),
                        "topic" => topic.clone(),
                        "partition" => partition.to_string(),
                    )
                    .set(high_watermark.saturating_sub(position).max(0) as f64);
                    let mut trackers = group.trackers();
                    if let Some(t) = trackers.get_mut(&key) {
                        t.set_high_watermark(high_watermark);
                        if buffer.is_empty() {
                            t.read_up_to(position);
                        }
                    }
                }
                Ok(Fetched::OffsetOutOfRange) => {
                    drop(room);
                    match inner
                        .plane
                        .offset_at(&topic, partition, OffsetAt::Earliest)
                        .await
                    {
                        Ok(earliest) => {
                            tracing::warn!(handler = %group.handler, %topic, partition, position, earliest, "offset out of range; starting again from the earliest offset");
                            position = earliest;
                            let mut trackers = group.trackers();
                            let mut fresh = Tracker::at(earliest);
                            incarnation = fresh.incarnation();
                            // The new position is committed by the next pass of the commit task.
                            if let Some(old) = trackers.get(&key) {
                                fresh.sent = old.sent;
                            }
                            trackers.insert(key, fresh);
                        }
                        Err(e) => {
                            tracing::warn!(handler = %group.handler, %topic, partition, "offset out of range and the earliest offset is unknown: {e}");
                            pause(&mut stop, 1).await;
                        }
                    }
                    continue;
                }
                Err(e) => {
                    drop(room);
                    failures += 1;
                    metrics::counter!(super::FETCH_ERRORS_METRIC, "handler" => group.handler.clone())
                        .increment(1);
                    if failures == 1 || failures.is_multiple_of(50) {
                        tracing::warn!(handler = %group.handler, %topic, partition, failures, "fetching from Kafka failed, retrying: {e}");
                    }
                    pause(&mut stop, failures).await;
                    continue;
                }
            }
        }
        let mut deliveries = Vec::new();
        let mut dead: Vec<(Token, DeadLetter)> = Vec::new();
        while deliveries.len() + dead.len() < room.unused.min(allowance) {
            let Some(item) = buffer.pop_front() else {
                break;
            };
            let token = Token {
                topic: topic_index,
                partition,
                offset: item.offset(),
                incarnation,
            };
            match item {
                Item::Record(r) => match record::decode(&inner.codec, &r.record) {
                    // Another producer's envelope of another type: not for this topic's
                    // handlers, and never seen by its own type's.
                    Ok(event)
                        if topic_type
                            .as_ref()
                            .is_some_and(|t| event.event_type.as_str() != t) =>
                    {
                        let reason = format!(
                            "the envelope's event_type {} is not {}, the type of the topic {topic}",
                            event.event_type,
                            topic_type.as_deref().unwrap_or_default(),
                        );
                        let error = event_core::Error::InvalidEvent { reason };
                        dead.push((token, invalid_letter(&group, &r.record, error)));
                    }
                    Ok(event) => {
                        deliveries.push(Delivery::new(Arc::new(event), token).at(LogPosition {
                            partition,
                            offset: token.offset,
                        }))
                    }
                    Err(e) => dead.push((token, invalid_letter(&group, &r.record, e))),
                },
                Item::Undecodable(u) => dead.push((token, undecodable_letter(&group, &u))),
            }
        }
        {
            let mut trackers = group.trackers();
            if let Some(t) = trackers.get_mut(&key) {
                for token in deliveries
                    .iter()
                    .map(|d| &d.token)
                    .chain(dead.iter().map(|d| &d.0))
                {
                    t.handed_out(token.offset);
                }
                t.read_up_to(buffer.front().map_or(position, Item::offset));
            }
        }
        room.unused -= deliveries.len();
        drop(room);
        for (token, letter) in dead {
            tracing::warn!(handler = %group.handler, %topic, partition, offset = token.offset, reason = ?letter.reason, "record dead-lettered as it was read: {}", letter.last_error);
            // Counted like the dispatcher's dead letters (`HandlerStats::dead_lettered`, the
            // metric `eventbus_consumer_dead_lettered_total`): these never reach a dispatcher.
            group.counters.add_dead_lettered();
            sink.dead_letter(token, letter).await;
        }
        if !deliveries.is_empty() {
            dispatcher.dispatch(deliveries);
        }
    }
}

async fn pause(stop: &mut watch::Receiver<bool>, failures: u32) {
    let pause = Duration::from_millis(100 * u64::from(failures.min(50)));
    tokio::select! {
        _ = stop.changed() => {}
        () = tokio::time::sleep(pause) => {}
    }
}
