//! Taking entries: new ones (`XREADGROUP`), those other consumers left pending (`XPENDING` +
//! `XCLAIM`), keeping this consumer's own fresh (`XCLAIM ... JUSTID`), and sorting what came
//! into deliveries, entries past the retention, and dead letters.
//!
//! Replies are read as raw values ([`crate::reply`]): one entry that is not an event (a
//! binary field name from a foreign producer) becomes a dead letter of its own instead of
//! failing the reply that carries it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use event_core::dispatch::{Delivery, DeliverySink};
use event_core::{DeadLetter, DeadLetterReason, Error, EventType, JsonCodec};
use fred::prelude::{Client, ClientLike, Options, StreamsInterface};
use fred::types::Value;

use super::sink::RedisSink;
use super::{Subscriber, Token};
use crate::reply::RawEntry;
use crate::{client, entry, reply};

/// How long one `XREADGROUP` blocks: the longest an idle loop takes to notice a stop.
const BLOCK_MS: u64 = 250;
/// How long a read of one hash slot's streams may take on a Redis Cluster beyond its blocking
/// time, before it counts as failed.
const SLOT_READ_TIMEOUT: Duration = Duration::from_secs(2);

/// Reads and claims are sent once, never again after a reconnect. Redis registers what an
/// `XREADGROUP` or `XCLAIM` hands out in the consumer's pending list when it runs, even if the
/// reply is then lost with the connection; a resent read would return the entries after those
/// and hand out newer events of a key before older ones. A failed read is reported instead,
/// and the loop takes the lost entries back from its pending list first
/// ([`read_own_pending`]).
fn once() -> Options {
    Options {
        max_attempts: Some(1),
        ..Options::default()
    }
}

/// What one pass of the loop took from Redis.
#[derive(Default)]
pub(super) struct Taken {
    pub(super) deliveries: Vec<Delivery<Token>>,
    /// Entries past the retention: acknowledged without delivery, and counted.
    expired: Vec<Token>,
    /// Entries deleted while pending: nothing to deliver, acknowledged.
    gone: Vec<Token>,
    /// Entries that are not events, or were delivered too often: dead-lettered at once.
    dead: Vec<(Token, DeadLetter)>,
}

impl Taken {
    /// Adds what `other` took, after what this one took.
    pub(super) fn append(&mut self, mut other: Taken) {
        self.deliveries.append(&mut other.deliveries);
        self.expired.append(&mut other.expired);
        self.gone.append(&mut other.gone);
        self.dead.append(&mut other.dead);
    }

    /// Sorts one entry into deliveries, expired or deleted entries and dead letters.
    /// `cutoff_ms` is the retention's cutoff on the server's clock (`None`: unknown, nothing
    /// expires).
    fn add(
        &mut self,
        sub: &Subscriber,
        stream: usize,
        raw: RawEntry,
        deliveries_before: u64,
        cutoff_ms: Option<i64>,
    ) {
        let token = Token {
            stream,
            id: raw.id.clone(),
        };
        let expired = cutoff_ms
            .is_some_and(|cutoff| entry::id_millis(&token.id).is_some_and(|ms| ms < cutoff));
        if expired {
            self.expired.push(token);
            return;
        }
        if raw.fields.is_none() {
            self.gone.push(token);
            return;
        }
        let now = sub.inner.local_now();
        let max_retries = u64::from(sub.inner.config.max_retries);
        let letter = |reason, event, raw, error: String, attempts| DeadLetter {
            id: String::new(),
            handler: sub.handler.clone(),
            group: sub.group.clone(),
            reason,
            event,
            raw,
            attempts,
            first_error: error.clone(),
            last_error: error,
            first_failed_at: now,
            last_failed_at: now,
            dead_lettered_at: now,
        };
        match entry::decode(&sub.inner.codec, &raw) {
            Err(e) => {
                let (reason, event, error) = JsonCodec::failed_decode(e);
                let error = format!("{error} (entry {} of {})", raw.id, sub.streams[stream]);
                // A sealed event keeps its envelope; anything else keeps the entry's text.
                let text = event
                    .is_none()
                    .then(|| entry::raw_text(raw.fields.as_deref().unwrap_or_default()));
                let letter = letter(reason, event, text, error, 1);
                self.dead.push((token, letter));
            }
            // Another producer's envelope of another type than its stream's, as on Kafka: its
            // own type's handlers never see it here, and this stream's may not subscribe to
            // its type. The redrive stream, last, holds every type of the handler.
            Ok(event)
                if stream + 1 < sub.streams.len()
                    && !sub
                        .inner
                        .keys
                        .is_stream_of(&sub.streams[stream], &event.event_type) =>
            {
                let key = &sub.streams[stream];
                let own = sub.inner.keys.event_type_of(key);
                let own = own.as_ref().map_or("?", EventType::as_str);
                let error = format!(
                    "the envelope's event_type {} is not {own}, the type of the stream {key} \
                     (entry {})",
                    event.event_type, raw.id,
                );
                let text = entry::raw_text(raw.fields.as_deref().unwrap_or_default());
                let letter = letter(
                    DeadLetterReason::InvalidEnvelope,
                    None,
                    Some(text),
                    error,
                    1,
                );
                self.dead.push((token, letter));
            }
            Ok(event) if deliveries_before > max_retries => {
                // Delivered this often and never acknowledged: the consumers holding it died
                // or gave up. Handing it out again would repeat that forever.
                let error = format!(
                    "delivered {deliveries_before} times without being acknowledged (consumers crashed or stopped while handling it)"
                );
                let attempts = u32::try_from(deliveries_before).unwrap_or(u32::MAX);
                let letter = letter(
                    DeadLetterReason::RetriesExhausted,
                    Some(event),
                    None,
                    error,
                    attempts,
                );
                self.dead.push((token, letter));
            }
            Ok(event) => {
                let mut delivery = Delivery::new(Arc::new(event), token);
                delivery.prior_attempts = u32::try_from(deliveries_before).unwrap_or(u32::MAX);
                self.deliveries.push(delivery);
            }
        }
    }
}

/// Acknowledges expired and deleted entries (counting the expired ones) and stores the dead
/// letters found while reading.
pub(super) async fn settle(sub: &Arc<Subscriber>, taken: &mut Taken) {
    let sink = RedisSink::new(sub.clone());
    if !taken.expired.is_empty() {
        sub.handler_counters
            .add_expired(&sub.handler, taken.expired.len() as u64);
        sink.ack(std::mem::take(&mut taken.expired)).await;
    }
    if !taken.gone.is_empty() {
        tracing::debug!(handler = %sub.handler, count = taken.gone.len(), "entries deleted while pending acknowledged");
        sink.ack(std::mem::take(&mut taken.gone)).await;
    }
    for (token, letter) in taken.dead.drain(..) {
        // Counted like the dispatcher's dead letters (`HandlerStats::dead_lettered`, the
        // metric `eventbus_consumer_dead_lettered_total`): these never reach a dispatcher.
        sub.handler_counters.add_dead_lettered();
        tracing::warn!(handler = %sub.handler, entry = %token.id, "entry dead-lettered: {}", letter.last_error);
        sink.dead_letter(token, letter).await;
    }
}

/// Reads up to `count` new entries per stream for this consumer (`COUNT` applies to each
/// stream: the caller carries over what exceeds its room), in one blocking `XREADGROUP` of
/// all its streams: when they share one hash slot (always, but on a Redis Cluster, which
/// `super::slots` reads).
pub(super) async fn read(
    sub: &Subscriber,
    reader: &Client,
    count: usize,
    taken: &mut Taken,
) -> Result<(), Error> {
    let all: Vec<usize> = (0..sub.streams.len()).collect();
    read_at(
        sub,
        reader,
        count,
        new_at(&all),
        Some(BLOCK_MS),
        None,
        taken,
    )
    .await?;
    Ok(())
}

/// The streams `streams` (indices of the subscription's) at `>`: their new entries.
pub(super) fn new_at(streams: &[usize]) -> Vec<(usize, String)> {
    streams.iter().map(|&s| (s, ">".to_string())).collect()
}

/// Takes back every entry this consumer still has pending (`XREADGROUP` from id `0` reads a
/// consumer's own history) and does not hold in flight, in each stream's order: what a failed
/// attempt of the loop had read and not finished, or what a read whose reply was lost with its
/// connection handed out. Handing these out before any new entry keeps each key's order.
pub(super) async fn read_own_pending(
    sub: &Subscriber,
    reader: &Client,
    taken: &mut Taken,
) -> Result<(), Error> {
    let all: Vec<usize> = (0..sub.streams.len()).collect();
    read_own_pending_of(sub, reader, &all, taken).await
}

/// [`read_own_pending`] of the subscription's streams `streams` only.
pub(super) async fn read_own_pending_of(
    sub: &Subscriber,
    reader: &Client,
    streams: &[usize],
    taken: &mut Taken,
) -> Result<(), Error> {
    const PAGE: usize = 500;
    // Held before the reads are sent: an entry finished (acknowledged, no longer held) while
    // a read was under way is still skipped.
    let held = sub.in_flight().clone();
    for &stream in streams {
        let mut after = "0".to_string();
        loop {
            let at = vec![(stream, after)];
            let read = read_at(sub, reader, PAGE, at, None, Some(&held), taken).await?;
            match read.last {
                Some(last) if read.entries == PAGE => after = last,
                _ => break,
            }
        }
    }
    Ok(())
}

/// What one `XREADGROUP` returned.
pub(super) struct Read {
    /// Entries in the reply, those skipped included.
    pub(super) entries: usize,
    /// The id of the reply's last entry.
    last: Option<String>,
}

/// One `XREADGROUP` of the subscription's streams `at` their ids (stream index, id), its
/// entries sorted into `taken`, except those in `skip` (a read of the consumer's own history
/// returns those it holds in flight too).
pub(super) async fn read_at(
    sub: &Subscriber,
    reader: &Client,
    count: usize,
    at: Vec<(usize, String)>,
    block: Option<u64>,
    skip: Option<&HashSet<Token>>,
    taken: &mut Taken,
) -> Result<Read, Error> {
    let (keys, ids): (Vec<String>, Vec<String>) = at
        .into_iter()
        .map(|(i, id)| (sub.streams[i].clone(), id))
        .unzip();
    let mut options = once();
    if sub.inner.keys.is_cluster() {
        // A master that is down must not hold the other slots' reads for the full command
        // timeout (see `super::slots`).
        options.timeout = Some(SLOT_READ_TIMEOUT + Duration::from_millis(block.unwrap_or(0)));
    }
    let response: Value = reader
        .with_options(&options)
        .xreadgroup(
            sub.group.as_str(),
            sub.consumer.as_str(),
            Some(count as u64),
            block,
            false,
            keys,
            ids,
        )
        .await
        .map_err(|e| client::error("XREADGROUP", e))?;
    let mut entries: Vec<(usize, RawEntry)> = Vec::new();
    for (key, list) in reply::streams(response) {
        match sub.streams.iter().position(|s| *s == key) {
            Some(stream) => entries.extend(list.into_iter().map(|e| (stream, e))),
            None => {
                tracing::warn!(handler = %sub.handler, stream = %key, "XREADGROUP answered for a stream it was not asked about")
            }
        }
    }
    let mut read = Read {
        entries: entries.len(),
        last: None,
    };
    if entries.is_empty() {
        return Ok(read);
    }
    let cutoff = sub.inner.cutoff_ms().await;
    // One read returns each stream's entries apart; hand them out in the order Redis stored
    // them, whatever the stream (a stable sort: each stream's own order holds).
    entries.sort_by_key(|(_, e)| entry::id_order(&e.id));
    read.last = entries.last().map(|(_, e)| e.id.clone());
    if let Some(skip) = skip {
        entries.retain(|(stream, e)| {
            !skip.contains(&Token {
                stream: *stream,
                id: e.id.clone(),
            })
        });
    }
    for (stream, raw) in entries {
        taken.add(sub, stream, raw, 0, cutoff);
    }
    Ok(read)
}

/// Takes over entries other consumers (or this one, in an attempt that failed or before a
/// reconnect) left pending longer than `EVENT_CLAIM_IDLE_MS`, at most `count` in all.
pub(super) async fn claim(sub: &Subscriber, count: usize, taken: &mut Taken) -> Result<(), Error> {
    let cutoff = sub.inner.cutoff_ms().await;
    let (mut tried, mut failed) = (0, None);
    for stream in 0..sub.streams.len() {
        let room = count.saturating_sub(taken.deliveries.len());
        if room == 0 {
            break;
        }
        tried += 1;
        // A stream that cannot be claimed from (its master down, on a cluster) does not keep
        // the others' entries from being taken over; it is tried again at the next pass.
        if let Err(e) = claim_stream(sub, stream, room, cutoff, taken).await {
            tracing::debug!(handler = %sub.handler, stream = %sub.streams[stream], "claiming failed: {e}");
            failed.get_or_insert((e, 0)).1 += 1;
        }
    }
    match failed {
        Some((e, failures)) if failures == tried => Err(e),
        _ => Ok(()),
    }
}

/// [`claim`] on one stream of the subscription: at most `room` entries.
async fn claim_stream(
    sub: &Subscriber,
    stream: usize,
    room: usize,
    cutoff: Option<i64>,
    taken: &mut Taken,
) -> Result<(), Error> {
    let key = &sub.streams[stream];
    let idle = u64::try_from(sub.inner.config.claim_idle.as_millis()).unwrap_or(u64::MAX);
    let mut options = once();
    if sub.inner.keys.is_cluster() {
        options.timeout = Some(SLOT_READ_TIMEOUT);
    }
    let client = sub.inner.client.with_options(&options);
    let pending: Value = client
        .xpending(
            key.as_str(),
            sub.group.as_str(),
            (idle, "-", "+", room as u64),
        )
        .await
        .map_err(|e| client::error("XPENDING", e))?;
    let mut counts = HashMap::new();
    {
        let in_flight = sub.in_flight();
        for row in pending.into_array() {
            let row = row.into_array();
            let (Some(id), Some(times)) = (
                row.first().and_then(Value::as_string),
                row.get(3).and_then(Value::as_u64),
            ) else {
                continue;
            };
            let token = Token { stream, id };
            if !in_flight.contains(&token) {
                counts.insert(token.id, times);
            }
        }
    }
    if counts.is_empty() {
        return Ok(());
    }
    let ids: Vec<String> = counts.keys().cloned().collect();
    let claimed: Value = client
        .xclaim(
            key.as_str(),
            sub.group.as_str(),
            sub.consumer.as_str(),
            idle,
            ids,
            None,
            None,
            None,
            false,
            false,
        )
        .await
        .map_err(|e| client::error("XCLAIM", e))?;
    let claimed = reply::entries(claimed);
    if !claimed.is_empty() {
        sub.handler_counters.add_claimed(claimed.len() as u64);
        tracing::info!(handler = %sub.handler, stream = %key, count = claimed.len(), "took over entries left pending by another consumer");
    }
    for raw in claimed {
        let before = counts.get(&raw.id).copied().unwrap_or(1);
        taken.add(sub, stream, raw, before, cutoff);
    }
    Ok(())
}

/// Every `interval` (at most half of `EVENT_CLAIM_IDLE_MS`), resets the idle time of the
/// entries this attempt holds (`XCLAIM ... JUSTID` to itself: no new delivery, no delivery
/// count), so a slow handler's events are not taken over by another consumer while this one
/// is alive. Runs until aborted, when its attempt ends (by a panic too).
pub(super) async fn keep_claims(sub: Arc<Subscriber>, interval: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        let mut mine: HashMap<usize, Vec<String>> = HashMap::new();
        for token in sub.in_flight().iter() {
            mine.entry(token.stream).or_default().push(token.id.clone());
        }
        for (stream, ids) in mine {
            let Some(key) = sub.streams.get(stream) else {
                continue;
            };
            let kept: Result<Value, _> = sub
                .inner
                .client
                .xclaim(
                    key.as_str(),
                    sub.group.as_str(),
                    sub.consumer.as_str(),
                    0,
                    ids,
                    None,
                    None,
                    None,
                    false,
                    true,
                )
                .await;
            if let Err(e) = kept {
                tracing::debug!(handler = %sub.handler, "refreshing claims failed, retrying next time: {e}");
            }
        }
    }
}
