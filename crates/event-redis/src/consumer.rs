//! Subscriptions: consumer groups, the read loop (`XREADGROUP`), taking over entries of dead
//! consumers (`XPENDING` + `XCLAIM`), and acknowledgements (`XACK`).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use event_core::dispatch::{
    Delivery, DeliverySink, DispatchSettings, Dispatcher, StopMode, StopSignal,
};
use event_core::{
    DeadLetter, DeadLetterReason, Error, EventHandler, StartFrom, Subscription, SubscriptionSpec,
};
use fred::prelude::{Client, ClientLike, SetsInterface, StreamsInterface, TransactionInterface};
use fred::types::Value;
use fred::types::streams::XReadResponse;
use time::OffsetDateTime;
use tokio::time::Instant;

use crate::bus::Inner;
use crate::{client, entry};

/// How long one `XREADGROUP` blocks: the longest an idle loop takes to notice a stop.
const BLOCK_MS: u64 = 250;
/// Replay and `StartFrom::Time` look this far before the asked time in stream ids, since an
/// entry's id (when Redis stored it) can be a little earlier than the event's timestamp when
/// clocks differ.
pub(crate) const CLOCK_SKEW_MS: i64 = 60_000;

/// Where an entry is: the index of its stream in the subscription's list, and its id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Token {
    stream: usize,
    id: String,
}

/// One subscription's fixed facts, shared by its loop and its sink.
struct Subscriber {
    inner: Arc<Inner>,
    handler: String,
    group: String,
    consumer: String,
    /// The event streams, then the group's redrive stream.
    streams: Vec<String>,
    dead_letters: String,
    /// Entries handed to the dispatcher and not yet finished, so a claim never takes them.
    in_flight: Mutex<HashSet<Token>>,
}

impl Subscriber {
    fn in_flight(&self) -> std::sync::MutexGuard<'_, HashSet<Token>> {
        self.in_flight
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Creates the groups and starts the loop of one subscription.
pub(crate) async fn subscribe(
    inner: &Arc<Inner>,
    spec: SubscriptionSpec,
    handler: Arc<dyn EventHandler>,
) -> Result<Subscription, Error> {
    let group = inner.group(&spec.handler);
    let mut streams: Vec<String> = spec
        .event_types
        .iter()
        .map(|t| inner.keys.stream(t))
        .collect();
    streams.sort();
    streams.dedup();
    for stream in &streams {
        let start = match spec.start {
            StartFrom::Latest => "$".to_string(),
            StartFrom::Earliest => "0".to_string(),
            StartFrom::Time(t) => start_id_for_time(inner, stream, t).await?,
            _ => "$".to_string(),
        };
        create_group(&inner.client, stream, &group, &start).await?;
    }
    let redrive = inner.keys.redrive(&group);
    create_group(&inner.client, &redrive, &group, "0").await?;
    streams.push(redrive);
    let _: Value = inner
        .client
        .sadd(inner.keys.handlers(), spec.handler.as_str())
        .await
        .map_err(|e| client::error("registering the handler", e))?;

    let reader = inner.client.clone_new();
    client::connect(&reader, &inner.config).await?;

    let member = inner.consumers.next_id();
    let counters = inner.add_member(&spec.handler, &group, &streams, member);
    let subscriber = Arc::new(Subscriber {
        inner: inner.clone(),
        handler: spec.handler.clone(),
        consumer: consumer_name(member),
        dead_letters: inner.keys.dead_letters(&group),
        group: group.clone(),
        streams,
        in_flight: Mutex::new(HashSet::new()),
    });
    let concurrency = spec.concurrency.unwrap_or(inner.config.handler_concurrency);
    let dispatcher = Dispatcher::start(
        handler,
        DispatchSettings::new(group.clone(), concurrency, inner.config.retry_policy()),
        Arc::new(RedisSink {
            subscriber: subscriber.clone(),
        }),
        counters,
    );
    inner.consumers.spawn(member, move |stop| {
        run(subscriber, reader, dispatcher, member, stop)
    });
    event_core::dispatch::subscription(inner, member, spec.handler, group).await
}

/// A consumer name unique across processes and restarts: a crashed consumer's entries are
/// then taken over by claims, never silently resumed under the same name.
fn consumer_name(member: u64) -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "host".into());
    format!(
        "{host}-{}-{member}-{:08x}",
        std::process::id(),
        fastrand::u32(..)
    )
}

async fn create_group(
    client: &Client,
    stream: &str,
    group: &str,
    start: &str,
) -> Result<(), Error> {
    let created: Result<Value, _> = client.xgroup_create(stream, group, start, true).await;
    match created {
        Ok(_) => Ok(()),
        // The group exists: it keeps its position, whatever start was asked for.
        Err(e) if e.details().starts_with("BUSYGROUP") => Ok(()),
        Err(e) => Err(client::error("XGROUP CREATE", e)),
    }
}

/// The group position that delivers the entries whose event timestamp is at or after `t`:
/// the id of the last entry before them.
async fn start_id_for_time(
    inner: &Inner,
    stream: &str,
    t: OffsetDateTime,
) -> Result<String, Error> {
    let t_ms = (t.unix_timestamp_nanos() / 1_000_000) as i64;
    let from = t_ms.saturating_sub(CLOCK_SKEW_MS).max(0);
    let mut last_before = if from == 0 {
        "0".to_string()
    } else {
        format!("{}-18446744073709551615", from - 1)
    };
    let mut start = entry::id_at(from);
    loop {
        let page: Vec<(String, HashMap<String, Value>)> = inner
            .client
            .xrange_values(stream, start.as_str(), "+", Some(500))
            .await
            .map_err(|e| client::error("XRANGE", e))?;
        let Some((last_id, _)) = page.last() else {
            break;
        };
        let next = format!("({last_id}");
        for (id, fields) in &page {
            match entry::decode(&inner.codec, fields) {
                Ok(event) if event.timestamp >= t => return Ok(last_before),
                _ => last_before = id.clone(),
            }
        }
        start = next;
    }
    Ok(last_before)
}

/// The loop of one subscription: claims, reads, dispatches, until asked to stop.
async fn run(
    sub: Arc<Subscriber>,
    reader: Client,
    dispatcher: Dispatcher<Token>,
    member: u64,
    mut stop: StopSignal,
) -> bool {
    let config = &sub.inner.config;
    let claim_every =
        (config.claim_idle / 2).clamp(Duration::from_millis(100), Duration::from_secs(5));
    let mut next_claim = Instant::now();
    let mut failures = 0u32;
    // Apart from the loop, which can wait a long time for room while slow handlers hold it.
    let keeper = tokio::spawn(keep_claims(sub.clone(), claim_every));
    loop {
        // Events stay in the streams, so any stop (drain included) takes nothing more.
        if stop.mode() != StopMode::Run {
            break;
        }
        let room = tokio::select! {
            biased;
            changed = stop.changed() => if changed { continue } else { break },
            room = dispatcher.reserve(config.batch_size) => room,
        };
        let mut taken = Taken::default();
        let mut outcome = Ok(());
        if Instant::now() >= next_claim {
            next_claim = Instant::now() + claim_every;
            outcome = claim(&sub, room, &mut taken).await;
        }
        if outcome.is_ok() && taken.deliveries.len() < room {
            outcome = read(&sub, &reader, room - taken.deliveries.len(), &mut taken).await;
        }
        dispatcher.release(room - taken.deliveries.len());
        settle(&sub, &mut taken).await;
        if !taken.deliveries.is_empty() {
            sub.in_flight()
                .extend(taken.deliveries.iter().map(|d| d.token.clone()));
            dispatcher.dispatch(taken.deliveries);
        }
        match outcome {
            Ok(()) => failures = 0,
            Err(e) => {
                failures += 1;
                if failures == 1 || failures.is_multiple_of(50) {
                    tracing::warn!(handler = %sub.handler, failures, "reading from Redis failed, retrying: {e}");
                }
                if e.to_string().contains("NOGROUP") {
                    // The stream or the group was deleted under us: make them again, from the
                    // start of what is left.
                    for stream in &sub.streams {
                        let _ = create_group(&sub.inner.client, stream, &sub.group, "0").await;
                    }
                }
                let pause = Duration::from_millis(100 * u64::from(failures.min(50)));
                tokio::select! {
                    biased;
                    changed = stop.changed() => if !changed { break },
                    () = tokio::time::sleep(pause) => {}
                }
            }
        }
    }
    let drained = dispatcher
        .close(stop.remaining(config.shutdown_timeout))
        .await;
    keeper.abort();
    if !drained {
        tracing::warn!(
            handler = %sub.handler,
            "handler did not finish its in-flight events in time; they stay pending and will be claimed again"
        );
    }
    let _ = reader.quit().await;
    sub.inner.remove_member(&sub.handler, member);
    drained
}

/// What one pass of the loop took from Redis.
#[derive(Default)]
struct Taken {
    deliveries: Vec<Delivery<Token>>,
    /// Entries past the retention: acknowledged without delivery.
    expired: Vec<Token>,
    /// Entries that are not events, or were delivered too often: dead-lettered at once.
    dead: Vec<(Token, DeadLetter)>,
}

impl Taken {
    /// Sorts one entry into deliveries, expired entries and dead letters.
    fn add(
        &mut self,
        sub: &Subscriber,
        stream: usize,
        id: String,
        fields: &HashMap<String, Value>,
        deliveries_before: u64,
        cutoff_ms: i64,
    ) {
        let token = Token { stream, id };
        if entry::id_millis(&token.id).is_some_and(|ms| ms < cutoff_ms) {
            self.expired.push(token);
            return;
        }
        let now = OffsetDateTime::now_utc();
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
        match entry::decode(&sub.inner.codec, fields) {
            Err(e) => {
                let letter = letter(
                    DeadLetterReason::InvalidEnvelope,
                    None,
                    Some(entry::raw_text(fields)),
                    e.to_string(),
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

/// Acknowledges expired entries and stores the dead letters found while reading.
async fn settle(sub: &Arc<Subscriber>, taken: &mut Taken) {
    let sink = RedisSink {
        subscriber: sub.clone(),
    };
    if !taken.expired.is_empty() {
        sink.ack(std::mem::take(&mut taken.expired)).await;
    }
    for (token, letter) in taken.dead.drain(..) {
        tracing::warn!(handler = %sub.handler, entry = %token.id, "entry dead-lettered: {}", letter.last_error);
        sink.dead_letter(token, letter).await;
    }
}

/// Reads new entries for this consumer.
async fn read(
    sub: &Subscriber,
    reader: &Client,
    count: usize,
    taken: &mut Taken,
) -> Result<(), Error> {
    let ids: Vec<&str> = sub.streams.iter().map(|_| ">").collect();
    let response: XReadResponse<String, String, String, Value> = reader
        .xreadgroup_map(
            sub.group.as_str(),
            sub.consumer.as_str(),
            Some(count as u64),
            Some(BLOCK_MS),
            false,
            sub.streams.clone(),
            ids,
        )
        .await
        .map_err(|e| client::error("XREADGROUP", e))?;
    let cutoff = sub.inner.cutoff_ms();
    let mut entries: Vec<(usize, String, HashMap<String, Value>)> = response
        .into_iter()
        .filter_map(|(key, entries)| Some((sub.streams.iter().position(|s| *s == key)?, entries)))
        .flat_map(|(stream, entries)| entries.into_iter().map(move |(id, f)| (stream, id, f)))
        .collect();
    // One read returns each stream's entries apart; hand them out in the order Redis stored
    // them, whatever the stream.
    entries.sort_by_key(|(_, id, _)| entry::id_order(id));
    for (stream, id, fields) in entries {
        taken.add(sub, stream, id, &fields, 0, cutoff);
    }
    Ok(())
}

/// Takes over entries other consumers (or this one, before a reconnect) left pending longer
/// than `EVENT_CLAIM_IDLE_MS`.
async fn claim(sub: &Subscriber, count: usize, taken: &mut Taken) -> Result<(), Error> {
    let client = &sub.inner.client;
    let idle = u64::try_from(sub.inner.config.claim_idle.as_millis()).unwrap_or(u64::MAX);
    let cutoff = sub.inner.cutoff_ms();
    for (stream, key) in sub.streams.iter().enumerate() {
        let room = count.saturating_sub(taken.deliveries.len());
        if room == 0 {
            break;
        }
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
            continue;
        }
        let ids: Vec<String> = counts.keys().cloned().collect();
        let claimed: Vec<(String, HashMap<String, Value>)> = client
            .xclaim_values(
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
        if !claimed.is_empty() {
            tracing::info!(handler = %sub.handler, stream = %key, count = claimed.len(), "took over entries left pending by another consumer");
        }
        for (id, fields) in claimed {
            let before = counts.get(&id).copied().unwrap_or(1);
            taken.add(sub, stream, id, &fields, before, cutoff);
        }
    }
    Ok(())
}

/// Every `interval` (at most half of `EVENT_CLAIM_IDLE_MS`), resets the idle time of the
/// entries this consumer is still working on (`XCLAIM ... JUSTID` to itself: no new delivery, no
/// delivery count), so a slow handler's events are not taken over by another consumer while
/// this one is alive. Runs until aborted when the loop ends.
async fn keep_claims(sub: Arc<Subscriber>, interval: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        let mut mine: HashMap<usize, Vec<String>> = HashMap::new();
        for token in sub.in_flight().iter() {
            mine.entry(token.stream).or_default().push(token.id.clone());
        }
        for (stream, ids) in mine {
            let kept: Result<Value, _> = sub
                .inner
                .client
                .xclaim(
                    sub.streams[stream].as_str(),
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

/// Acknowledges and dead-letters for one subscription.
struct RedisSink {
    subscriber: Arc<Subscriber>,
}

/// Attempts at an acknowledgement or a dead letter before giving up (the entry then stays
/// pending and is claimed again later: delivered twice, never lost).
const WRITE_ATTEMPTS: u32 = 5;

#[async_trait]
impl DeliverySink<Token> for RedisSink {
    async fn ack(&self, tokens: Vec<Token>) {
        let sub = &self.subscriber;
        let mut by_stream: HashMap<usize, Vec<String>> = HashMap::new();
        {
            let mut in_flight = sub.in_flight();
            for token in tokens {
                in_flight.remove(&token);
                by_stream.entry(token.stream).or_default().push(token.id);
            }
        }
        for attempt in 1..=WRITE_ATTEMPTS {
            let pipeline = sub.inner.client.pipeline();
            for (stream, ids) in &by_stream {
                let _: Result<Value, _> = pipeline
                    .xack(
                        sub.streams[*stream].as_str(),
                        sub.group.as_str(),
                        ids.clone(),
                    )
                    .await;
            }
            let replies: Vec<Result<Value, fred::error::Error>> = pipeline.try_all().await;
            match replies.into_iter().find_map(Result::err) {
                None => return,
                Some(e) if attempt == WRITE_ATTEMPTS => {
                    tracing::warn!(handler = %sub.handler, "acknowledgement failed; the entries will be delivered again: {e}");
                }
                Some(_) => tokio::time::sleep(Duration::from_millis(50 << attempt)).await,
            }
        }
    }

    async fn dead_letter(&self, token: Token, mut letter: DeadLetter) {
        let sub = &self.subscriber;
        sub.in_flight().remove(&token);
        letter.id.clear();
        let json = match serde_json::to_vec(&letter) {
            Ok(json) => json,
            Err(e) => {
                tracing::error!(handler = %sub.handler, "dead letter cannot be encoded, left pending: {e}");
                return;
            }
        };
        let stream = sub.streams[token.stream].as_str();
        for attempt in 1..=WRITE_ATTEMPTS {
            // Both or neither: a dead letter is never lost, and never stored twice.
            let tx = sub.inner.client.multi();
            let _: Result<Value, _> = tx
                .xadd(
                    sub.dead_letters.as_str(),
                    false,
                    None,
                    "*",
                    vec![("dead_letter", Value::Bytes(json.clone().into()))],
                )
                .await;
            let _: Result<Value, _> = tx.xack(stream, sub.group.as_str(), token.id.as_str()).await;
            match tx.exec::<Value>(true).await {
                Ok(_) => return,
                Err(e) if attempt == WRITE_ATTEMPTS => {
                    tracing::warn!(handler = %sub.handler, "storing a dead letter failed; the entry stays pending and will be claimed again: {e}");
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50 << attempt)).await,
            }
        }
    }
}
