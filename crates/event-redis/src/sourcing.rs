//! Event sourcing: an aggregate's history is a list of envelopes; appends check the expected
//! version and write the history and the event streams in one Lua script, atomically. On a
//! Redis Cluster, where they lie in different hash slots, the history is written first and
//! the events published after it, with a note that lets a recovery publish them if the
//! process stops in between ([`append_apart`]).

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use event_core::backend::BatchResults;
use event_core::{AggregateAppend, Error, Event, ExpectedVersion};
use fred::prelude::{ListInterface, SortedSetsInterface};
use fred::types::Value;
use fred::types::scripts::Script;
use futures::FutureExt;

use crate::core::Inner;
use crate::publish::Batch;
use crate::{client, entry};

/// KEYS[1]: the aggregate's list; KEYS[2..]: each event's stream. ARGV[1]: the expected length
/// of the list; ARGV[2]: the `MINID` of the retention; then four values per event: id, type,
/// partition key, envelope. Returns `{1, new_version}` or `{0, current_version}`.
const APPEND_LUA: &str = r#"
local current = redis.call('LLEN', KEYS[1])
if current ~= tonumber(ARGV[1]) then
  return {0, current}
end
local n = #KEYS - 1
for i = 1, n do
  local base = 2 + (i - 1) * 4
  redis.call('XADD', KEYS[1 + i], 'MINID', '~', ARGV[2], '*',
    'id', ARGV[base + 1], 'type', ARGV[base + 2], 'key', ARGV[base + 3], 'event', ARGV[base + 4])
  redis.call('RPUSH', KEYS[1], ARGV[base + 4])
end
return {1, current + n}
"#;

/// KEYS[1]: the aggregate's list. ARGV[1]: the expected length of the list; then the
/// envelopes. The history alone, for a Redis Cluster (see [`append_apart`]). Returns
/// `{1, new_version}` or `{0, current_version}`.
const RESERVE_LUA: &str = r#"
local current = redis.call('LLEN', KEYS[1])
if current ~= tonumber(ARGV[1]) then
  return {0, current}
end
for i = 2, #ARGV do
  redis.call('RPUSH', KEYS[1], ARGV[i])
end
return {1, current + #ARGV - 1}
"#;

/// How often an append with [`ExpectedVersion::Any`] retries when others append at once.
const ANY_VERSION_ATTEMPTS: u32 = 10;

/// The append script, loaded on first use.
static APPEND_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::from_lua(APPEND_LUA));
/// The history-only append script of a cluster, loaded on first use.
static RESERVE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::from_lua(RESERVE_LUA));

/// How an attempt at an append ended.
enum Appended {
    /// At this version.
    At(u64),
    /// Refused: the history is at this version.
    Conflict(u64),
}

pub(crate) async fn append(inner: &Inner, append: AggregateAppend) -> Result<u64, Error> {
    event_core::backend::check_sourcing(&inner.config)?;
    let list = inner
        .keys
        .aggregate(&append.aggregate_type, &append.aggregate_id);
    for _ in 0..ANY_VERSION_ATTEMPTS {
        let current = match append.expected_version {
            ExpectedVersion::Exact(version) => version,
            _ => inner
                .client
                .llen::<u64, _>(list.as_str())
                .await
                .map_err(|e| client::error("LLEN", e))?,
        };
        // Stamps versions from `current`, and refuses an exact version that cannot match.
        let events = append.prepare(current)?;
        let envelopes = events
            .iter()
            .map(|event| inner.codec.encode(event))
            .collect::<Result<Vec<_>, _>>()?;
        let appended = if inner.keys.is_cluster() {
            append_apart(inner, &list, current, &events, envelopes).await?
        } else {
            append_at_once(inner, &list, current, &events, envelopes).await?
        };
        match appended {
            Appended::At(version) => return Ok(version),
            Appended::Conflict(actual) => {
                if let ExpectedVersion::Exact(expected) = append.expected_version {
                    return Err(Error::VersionConflict {
                        aggregate_type: append.aggregate_type,
                        aggregate_id: append.aggregate_id,
                        expected,
                        actual,
                    });
                }
                // Another writer appended between LLEN and the script: read again.
            }
        }
    }
    Err(Error::backend(
        "redis",
        format!(
            "{} {} is appended to by others too often: gave up after {ANY_VERSION_ATTEMPTS} attempts",
            append.aggregate_type, append.aggregate_id
        ),
        true,
    ))
}

/// Checks the version and writes the history and the event streams in one script: both or
/// neither.
async fn append_at_once(
    inner: &Inner,
    list: &str,
    current: u64,
    events: &[Event],
    envelopes: Vec<Vec<u8>>,
) -> Result<Appended, Error> {
    let mut keys = vec![list.to_string()];
    let mut args = vec![
        Value::from(current as i64),
        Value::from(inner.retention_minid().await),
    ];
    for (event, json) in events.iter().zip(envelopes) {
        keys.push(inner.keys.stream(&event.event_type));
        args.push(Value::from(event.id.to_string()));
        args.push(Value::from(event.event_type.as_str()));
        args.push(Value::from(event.partition_key.clone().unwrap_or_default()));
        args.push(Value::Bytes(json.into()));
    }
    let reply: Vec<i64> = APPEND_SCRIPT
        .evalsha_with_reload(&inner.client, keys.clone(), args)
        .await
        .map_err(|e| client::error("appending to the aggregate", e))?;
    let appended = script_outcome(&reply)?;
    if let Appended::At(_) = appended {
        inner.wait_replicas(&keys).await?;
    }
    Ok(appended)
}

fn script_outcome(reply: &[i64]) -> Result<Appended, Error> {
    match reply {
        [1, version] => Ok(Appended::At(*version as u64)),
        [0, actual] => Ok(Appended::Conflict(*actual as u64)),
        other => Err(Error::backend(
            "redis",
            format!("the append script answered {other:?}"),
            false,
        )),
    }
}

/// The append on a Redis Cluster, where the history and the event streams lie in different
/// hash slots and no script can write them all.
///
/// The history is written first, with the version check, in one script on its own slot; the
/// events are then published. Before that, the append is noted in the set of unpublished
/// appends (`{prefix}:aggregates:unpublished`, scored by time), and the note is removed once
/// every event is published. A process that dies in between leaves the note: the recovery
/// ([`recover_unpublished`]), which every bus on a cluster runs, publishes the events of a
/// note older than [`RECOVER_AFTER_MS`] from the history and removes it. So the history and
/// the streams still agree, at least once: an event is never published without being in the
/// history, nor left in the history unpublished; a crash can publish an event twice.
async fn append_apart(
    inner: &Inner,
    list: &str,
    current: u64,
    events: &[Event],
    envelopes: Vec<Vec<u8>>,
) -> Result<Appended, Error> {
    let note = Note {
        from: current,
        count: events.len() as u64,
        list: list.to_string(),
    }
    .encode();
    let unpublished = inner.keys.unpublished();
    let _: Value = inner
        .client
        .zadd(
            unpublished.as_str(),
            None,
            None,
            false,
            false,
            (now_ms(inner).await as f64, note.as_str()),
        )
        .await
        .map_err(|e| client::error("noting an append", e))?;
    let mut args = vec![Value::from(current as i64)];
    args.extend(
        envelopes
            .iter()
            .map(|json| Value::Bytes(json.clone().into())),
    );
    let reply: Vec<i64> = RESERVE_SCRIPT
        .evalsha_with_reload(&inner.client, vec![list.to_string()], args)
        .await
        .map_err(|e| client::error("appending to the aggregate", e))?;
    let appended = script_outcome(&reply)?;
    if let Appended::At(version) = appended {
        publish_noted(inner, events, envelopes).await.map_err(|e| {
            Error::backend(
                "redis",
                format!(
                    "appended versions {}..={version} to the history, but publishing them failed ({e}); they will be published by the recovery of unpublished appends",
                    current + 1
                ),
                false,
            )
        })?;
    }
    let _: Result<Value, _> = inner.client.zrem(unpublished.as_str(), note.as_str()).await;
    if let Appended::At(_) = appended {
        // The streams waited for their replicas as the batch published them; the history now.
        inner.wait_replicas(&[list]).await?;
    }
    Ok(appended)
}

/// Publishes events already in a history, retrying the failed ones a few times.
async fn publish_noted(
    inner: &Inner,
    events: &[Event],
    envelopes: Vec<Vec<u8>>,
) -> Result<(), Error> {
    const ATTEMPTS: u32 = 3;
    let mut left: Vec<usize> = (0..events.len()).collect();
    let mut attempt = 1;
    loop {
        let mut batch = Batch::new(&inner.keys, inner.retention_minid().await);
        let (mut results, _) = BatchResults::prepare(events, |_| Ok(()));
        for &i in &left {
            batch.push(i, &events[i], envelopes[i].clone());
        }
        batch.send(inner, &mut results).await;
        let mut last_error = None;
        left.clear();
        for (i, result) in results.into_results().into_iter().enumerate() {
            if let Err(e) = result {
                left.push(i);
                last_error = Some(e);
            }
        }
        match last_error {
            None => return Ok(()),
            Some(e) if attempt == ATTEMPTS => return Err(e),
            Some(_) => {
                tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
                attempt += 1;
            }
        }
    }
}

/// A note of an append on a cluster whose events are not all published yet: `count` events
/// from version `from + 1` of the history in `list`.
struct Note {
    from: u64,
    count: u64,
    list: String,
}

impl Note {
    /// `from count token list`: the token keeps two notes of the same versions apart (an
    /// append refused and then made again).
    fn encode(&self) -> String {
        format!(
            "{} {} {:016x} {}",
            self.from,
            self.count,
            fastrand::u64(..),
            self.list
        )
    }

    fn decode(text: &str) -> Option<Self> {
        let mut parts = text.splitn(4, ' ');
        let from = parts.next()?.parse().ok()?;
        let count = parts.next()?.parse().ok()?;
        let _token = parts.next()?;
        let list = parts.next()?.to_string();
        Some(Self { from, count, list })
    }
}

/// How old a note of an unpublished append must be before the recovery publishes its events:
/// longer than any append takes, so an append under way is left alone.
pub(crate) const RECOVER_AFTER_MS: i64 = 60_000;

/// The time on the server's clock, or this host's when it is unknown.
async fn now_ms(inner: &Inner) -> i64 {
    match inner.clock.now_ms(&inner.client).await {
        Some(now) => now,
        None => (inner.local_now().unix_timestamp_nanos() / 1_000_000) as i64,
    }
}

/// Publishes the events of the appends noted unpublished more than [`RECOVER_AFTER_MS`] ago,
/// from their histories, and removes their notes; returns how many appends it published.
/// Events still in the history are published even if the append had published some of
/// them before it stopped: at least once.
pub(crate) async fn recover_unpublished(inner: &Inner) -> Result<u64, Error> {
    const PAGE: u64 = 100;
    let unpublished = inner.keys.unpublished();
    let before = (now_ms(inner).await - RECOVER_AFTER_MS) as f64;
    let mut recovered = 0;
    loop {
        let notes: Vec<String> = inner
            .client
            .zrangebyscore(
                unpublished.as_str(),
                f64::NEG_INFINITY,
                before,
                false,
                Some((0, PAGE as i64)),
            )
            .await
            .map_err(|e| client::error("reading the unpublished appends", e))?;
        for text in &notes {
            if let Some(note) = Note::decode(text) {
                let last = note.from + note.count;
                let raw: Vec<Value> = inner
                    .client
                    .lrange(note.list.as_str(), note.from as i64, last as i64 - 1)
                    .await
                    .map_err(|e| client::error("LRANGE", e))?;
                let envelopes: Vec<Vec<u8>> = raw.iter().map(entry::value_bytes).collect();
                let events = envelopes
                    .iter()
                    .map(|json| inner.codec.decode(json))
                    .collect::<Result<Vec<Event>, _>>()?;
                publish_noted(inner, &events, envelopes).await?;
                recovered += 1;
                tracing::warn!(history = %note.list, from = note.from + 1, to = last, "published the events of an append whose process stopped before publishing them");
            }
            let _: Value = inner
                .client
                .zrem(unpublished.as_str(), text.as_str())
                .await
                .map_err(|e| client::error("ZREM", e))?;
        }
        if (notes.len() as u64) < PAGE {
            return Ok(recovered);
        }
    }
}

/// On a cluster, runs [`recover_unpublished`] every [`RECOVER_AFTER_MS`] / 2 while the bus
/// exists and is open; a failed or panicking round is logged and the next one runs.
pub(crate) fn start_recovery(inner: &Arc<Inner>) {
    let weak = Arc::downgrade(inner);
    tokio::spawn(async move {
        let every = Duration::from_millis(RECOVER_AFTER_MS as u64 / 2);
        loop {
            let Some(inner) = weak.upgrade() else { return };
            if inner.lifecycle.is_closed() {
                return;
            }
            let round = AssertUnwindSafe(recover_unpublished(&inner)).catch_unwind();
            match round.await {
                Ok(Ok(0)) => {}
                Ok(Ok(n)) => tracing::warn!(appends = n, "published unpublished appends"),
                Ok(Err(e)) => {
                    tracing::warn!("recovering unpublished appends failed, retrying later: {e}")
                }
                Err(_) => {
                    tracing::error!("recovering unpublished appends panicked, retrying later")
                }
            }
            drop(inner);
            tokio::time::sleep(every).await;
        }
    });
}

pub(crate) async fn load(
    inner: &Inner,
    aggregate_type: &str,
    aggregate_id: &str,
) -> Result<Vec<Event>, Error> {
    event_core::backend::check_sourcing(&inner.config)?;
    let list = inner.keys.aggregate(aggregate_type, aggregate_id);
    let raw: Vec<Value> = inner
        .client
        .lrange(list.as_str(), 0, -1)
        .await
        .map_err(|e| client::error("LRANGE", e))?;
    raw.iter()
        .map(|v| inner.codec.decode(&entry::value_bytes(v)))
        .collect()
}
