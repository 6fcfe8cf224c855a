//! Subscriptions: consumer groups, the supervised read loop (`XREADGROUP`), taking over
//! entries of dead consumers (`XPENDING` + `XCLAIM`), and acknowledgements (`XACK`).
//!
//! - [`run`]: one attempt of a subscription's loop, restarted by the bus's supervisor when it
//!   panics or ends unasked;
//! - [`take`]: reading and claiming entries, and sorting them into deliveries, expired entries
//!   and dead letters;
//! - [`sink`]: acknowledgements and dead letters (stored and acknowledged both or neither);
//! - [`slots`]: reading on a Redis Cluster, one hash slot at a time, a failing master isolated.

mod run;
mod sink;
mod slots;
mod take;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use event_core::dispatch::{DispatchSettings, Dispatcher, HandlerCounters, Supervisor};
use event_core::{Error, EventHandler, StartFrom, Subscription, SubscriptionSpec};
use fred::prelude::{Client, SetsInterface, StreamsInterface};
use fred::types::Value;
use time::OffsetDateTime;
use tokio::task::JoinHandle;

use crate::clock::CLOCK_SKEW_MS;
use crate::core::Inner;
use crate::counters::RedisCounters;
use crate::{client, entry, reply};

/// Where an entry is: the index of its stream in the subscription's list, and its id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Token {
    stream: usize,
    id: String,
}

/// One attempt of a subscription's loop: the subscription's fixed facts, and the entries this
/// attempt holds.
struct Subscriber {
    inner: Arc<Inner>,
    handler: String,
    group: String,
    /// The same in every attempt: entries a failed attempt held stay pending under it, and
    /// the next attempt's claim pass takes them back once they are idle.
    consumer: String,
    /// The event streams, then the group's redrive stream.
    streams: Vec<String>,
    /// The indices of `streams` by hash slot: one `XREADGROUP` reads each group (one group of
    /// them all but on a Redis Cluster).
    slots: Vec<Vec<usize>>,
    /// On a cluster, how the reads of each slot fare ([`slots`]).
    slot_reads: slots::SlotReads,
    dead_letters: String,
    counters: Arc<RedisCounters>,
    /// The handler's shared counters (entries dropped by retention are counted there).
    handler_counters: Arc<HandlerCounters>,
    /// The dispatcher of the last attempt that died, finishing what it holds in the
    /// background; shared by every attempt (see `run`).
    abandoned: Arc<Mutex<Option<JoinHandle<bool>>>>,
    /// Entries read by this attempt and not yet finished (handed to the dispatcher, or
    /// carried over to the next pass): claims skip them and the claim keeper refreshes them.
    in_flight: Mutex<HashSet<Token>>,
}

impl Subscriber {
    fn in_flight(&self) -> std::sync::MutexGuard<'_, HashSet<Token>> {
        self.in_flight
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The same subscription holding nothing, for a new attempt: the failed attempt's entries
    /// are no longer "ours in flight", so they can be claimed again.
    fn fresh(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            handler: self.handler.clone(),
            group: self.group.clone(),
            consumer: self.consumer.clone(),
            streams: self.streams.clone(),
            slots: self.slots.clone(),
            slot_reads: slots::SlotReads::default(),
            dead_letters: self.dead_letters.clone(),
            counters: self.counters.clone(),
            handler_counters: self.handler_counters.clone(),
            abandoned: self.abandoned.clone(),
            in_flight: Mutex::new(HashSet::new()),
        }
    }
}

/// Unregisters a local member when its supervised loop is over for good (asked to stop, or
/// the bus gone), however it ended.
struct MemberGuard {
    inner: Arc<Inner>,
    handler: String,
    member: u64,
    consumer: String,
}

impl Drop for MemberGuard {
    fn drop(&mut self) {
        // Its consumer name goes to the next subscription of the handler here.
        let consumer = std::mem::take(&mut self.consumer);
        self.inner
            .handlers
            .remove_member(&self.handler, self.member, |local| {
                local.extra.retired.push(consumer)
            });
    }
}

/// Creates the groups and starts the supervised loop of one subscription.
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

    // The first attempt's reader is connected here, so a subscribe to an unreachable server
    // fails at once; restarts connect their own.
    let reader = inner.client.clone_new();
    client::connect(&reader, &inner.redis).await?;

    let member = inner.lifecycle.consumers().next_id();
    let local = inner
        .handlers
        .add_member(&spec.handler, &group, &streams, member);
    let (counters, redis_counters) = (local.counters, local.extra.counters);
    let consumer = inner
        .reuse_consumer(&spec.handler)
        .unwrap_or_else(|| consumer_name(member));
    let template = Subscriber {
        inner: inner.clone(),
        handler: spec.handler.clone(),
        consumer: consumer.clone(),
        dead_letters: inner.keys.dead_letters(&group),
        group: group.clone(),
        slots: inner.keys.by_slot(&streams),
        slot_reads: slots::SlotReads::default(),
        streams,
        counters: redis_counters,
        handler_counters: counters.clone(),
        abandoned: Arc::new(Mutex::new(None)),
        in_flight: Mutex::new(HashSet::new()),
    };
    let concurrency = spec.concurrency.unwrap_or(inner.config.handler_concurrency);
    let settings = DispatchSettings::new(group.clone(), concurrency, inner.config.retry_policy())
        .with_system("redis");
    let supervisor = Supervisor::new(spec.handler.clone(), counters.clone());
    let mut first_reader = Some(reader);
    let guard = MemberGuard {
        inner: inner.clone(),
        handler: spec.handler.clone(),
        member,
        consumer,
    };
    inner
        .lifecycle
        .consumers()
        .spawn_supervised(member, supervisor, move |stop, failures| {
            // Owned by this closure, which the supervisor drops once the loop is over.
            let _member = &guard;
            let attempt = Arc::new(template.fresh());
            let dispatcher = start_dispatcher(&attempt, &handler, &settings, &counters);
            run::attempt(attempt, first_reader.take(), dispatcher, stop, failures)
        });
    event_core::dispatch::subscription(&inner.lifecycle, member, spec.handler, group).await
}

fn start_dispatcher(
    attempt: &Arc<Subscriber>,
    handler: &Arc<dyn EventHandler>,
    settings: &DispatchSettings,
    counters: &Arc<HandlerCounters>,
) -> Dispatcher<Token> {
    Dispatcher::start(
        handler.clone(),
        settings.clone(),
        Arc::new(sink::RedisSink::new(attempt.clone())),
        counters.clone(),
    )
}

/// A consumer name unique across processes and restarts: a crashed consumer's entries are
/// then taken over by claims, never silently resumed under the same name by another process.
/// Within one process, a later subscription of the same handler reuses the name of one that
/// ended ([`Inner::reuse_consumer`]).
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
    let t_ms = i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX);
    let from = t_ms.saturating_sub(CLOCK_SKEW_MS).max(0);
    let mut last_before = if from == 0 {
        "0".to_string()
    } else {
        format!("{}-18446744073709551615", from - 1)
    };
    let mut start = entry::id_at(from);
    loop {
        let page: Value = inner
            .client
            .xrange(stream, start.as_str(), "+", Some(500))
            .await
            .map_err(|e| client::error("XRANGE", e))?;
        let page = reply::entries(page);
        let Some(last) = page.last() else {
            break;
        };
        let next = format!("({}", last.id);
        for raw in page {
            match entry::decode(&inner.codec, &raw) {
                Ok(event) if event.timestamp >= t => return Ok(last_before),
                _ => last_before = raw.id,
            }
        }
        start = next;
    }
    Ok(last_before)
}
