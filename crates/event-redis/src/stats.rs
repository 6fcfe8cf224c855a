//! Stats (`XLEN`, `XINFO GROUPS`) and health (`PING`, consumer loops, stalls, dead letters
//! that cannot be stored).
//!
//! Reads are read-only: stats never trim a stream. Entries past the retention that trimming
//! has not removed yet (publishes trim approximately, and a stream nobody publishes to is not
//! trimmed at all) are counted with a read-only script and left out of every count.

use std::collections::{BTreeMap, HashMap};
use std::sync::LazyLock;

use event_core::{BusStats, Error, HandlerStats, Health};
use fred::prelude::{SetsInterface, StreamsInterface};
use fred::types::Value;
use fred::types::scripts::Script;

use crate::core::Inner;
use crate::{client, entry, replay, reply};

/// KEYS[1]: a stream. ARGV[1], ARGV[2]: a range as `XRANGE` takes it; ARGV[3]: the most to
/// count. Returns how many entries the range holds, up to ARGV[3], and the last one's id, so
/// a count is paged without sending any entry over the network. Reads only.
const COUNT_LUA: &str = r#"
local page = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[2], 'COUNT', ARGV[3])
local n = #page
if n == 0 then
  return {0, ''}
end
return {n, page[n][1]}
"#;

/// Entries counted per call of the count script.
const COUNT_PAGE: i64 = 1000;

/// The count script, loaded on first use.
static COUNT_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::from_lua(COUNT_LUA));

/// How many entries of `stream` lie in the range from `start` to `end` (as `XRANGE` takes
/// them: `-`, `+`, ids, `(` for exclusive).
async fn count_range(inner: &Inner, stream: &str, start: &str, end: &str) -> Result<u64, Error> {
    let mut start = start.to_string();
    let mut total = 0u64;
    loop {
        let reply: Vec<Value> = COUNT_SCRIPT
            .evalsha_with_reload(
                &inner.client,
                vec![stream.to_string()],
                vec![
                    Value::from(start.as_str()),
                    Value::from(end),
                    Value::from(COUNT_PAGE),
                ],
            )
            .await
            .map_err(|e| client::error("counting stream entries", e))?;
        let n = reply.first().and_then(Value::as_u64).unwrap_or(0);
        total = total.saturating_add(n);
        let last = reply.get(1).and_then(Value::as_string).unwrap_or_default();
        if n < COUNT_PAGE as u64 || last.is_empty() {
            return Ok(total);
        }
        start = format!("({last}");
    }
}

/// The entries of `stream` past the retention: below the server-clock cutoff.
async fn expired_in(inner: &Inner, stream: &str, cutoff_ms: Option<i64>) -> Result<u64, Error> {
    match cutoff_ms {
        Some(cutoff) if cutoff > 0 => {
            count_range(inner, stream, "-", &format!("({}", entry::id_at(cutoff))).await
        }
        _ => Ok(0),
    }
}

/// One group's numbers on one stream, from `XINFO GROUPS`.
#[derive(Default, Clone, Copy)]
struct GroupInfo {
    pending: u64,
    lag: u64,
}

/// `XINFO GROUPS` of a stream: group name to its pending count and lag.
///
/// A lag Redis cannot compute (reported as nil after deletions) is counted from the retained
/// entries after the group's last delivered id. A lag it reports for a group that has read
/// the stream to its end is taken as 0: the counter behind it (`entries-read`) can drift
/// (deletions, trims, a restart from the append-only file), and a long soak showed groups
/// with every entry delivered and acknowledged reported about 54,000 behind, which made
/// health call them stalled.
async fn groups_of(inner: &Inner, stream: &str) -> Result<HashMap<String, GroupInfo>, Error> {
    let reply: Result<Value, _> = inner.client.xinfo_groups(stream).await;
    let reply = match reply {
        Ok(reply) => reply,
        Err(e) if e.details().contains("no such key") => return Ok(HashMap::new()),
        Err(e) => return Err(client::error("XINFO GROUPS", e)),
    };
    let mut groups = HashMap::new();
    for group in reply.into_array() {
        let fields = reply::fields_of(group);
        let Some(name) = fields.get("name").and_then(Value::as_string) else {
            continue;
        };
        let pending = fields.get("pending").and_then(Value::as_u64).unwrap_or(0);
        let last = fields
            .get("last-delivered-id")
            .and_then(Value::as_string)
            .unwrap_or_else(|| "0-0".into());
        let lag = match fields.get("lag").and_then(Value::as_u64) {
            Some(0) => 0,
            Some(lag) if has_entries_after(inner, stream, &last).await? => lag,
            Some(_) => 0,
            None => {
                let retained_from = entry::id_at(inner.cutoff_ms().await.unwrap_or(0));
                let start = if entry::id_order(&last) >= entry::id_order(&retained_from) {
                    format!("({last}")
                } else {
                    retained_from
                };
                count_range(inner, stream, &start, "+").await?
            }
        };
        groups.insert(name, GroupInfo { pending, lag });
    }
    Ok(groups)
}

/// Whether `stream` holds an entry after `id`.
async fn has_entries_after(inner: &Inner, stream: &str, id: &str) -> Result<bool, Error> {
    let after: Value = inner
        .client
        .xrange(stream, format!("({id}"), "+", Some(1))
        .await
        .map_err(|e| client::error("XRANGE", e))?;
    Ok(!reply::entries(after).is_empty())
}

/// The retained entries of every event stream: `XLEN` less the entries past the retention,
/// without changing any stream.
async fn retained_lengths(inner: &Inner) -> Result<BTreeMap<String, (String, u64)>, Error> {
    let types = replay::event_types(inner).await?;
    let cutoff = inner.cutoff_ms().await;
    let mut lengths = BTreeMap::new();
    for t in &types {
        let key = inner.keys.stream(t);
        let len: u64 = inner
            .client
            .xlen(key.as_str())
            .await
            .map_err(|e| client::error("XLEN", e))?;
        let expired = if len == 0 {
            0
        } else {
            expired_in(inner, &key, cutoff).await?
        };
        lengths.insert(t.to_string(), (key, len.saturating_sub(expired)));
    }
    Ok(lengths)
}

async fn dead_letter_depth(inner: &Inner, group: &str) -> Result<u64, Error> {
    inner
        .client
        .xlen(inner.keys.dead_letters(group))
        .await
        .map_err(|e| client::error("XLEN", e))
}

pub(crate) async fn stats(inner: &Inner) -> Result<BusStats, Error> {
    let streams = retained_lengths(inner).await?;
    let mut stats = BusStats {
        backend: "redis".into(),
        ..BusStats::default()
    };
    let mut per_stream = Vec::new();
    for (event_type, (key, len)) in &streams {
        if *len > 0 {
            stats.total_events += len;
            stats.events_by_type.insert(event_type.clone(), *len);
        }
        per_stream.push((event_type.clone(), groups_of(inner, key).await?));
    }
    let handlers: Vec<String> = inner
        .client
        .smembers(inner.keys.handlers())
        .await
        .map_err(|e| client::error("SMEMBERS", e))?;
    let local: HashMap<String, (usize, event_core::dispatch::CounterSnapshot)> = inner
        .handlers
        .lock()
        .iter()
        .map(|(name, h)| (name.clone(), (h.members.len(), h.counters.snapshot())))
        .collect();
    for handler in handlers {
        let group = inner.group(&handler);
        let mut handler_stats = HandlerStats {
            group: group.clone(),
            ..HandlerStats::default()
        };
        for (event_type, groups) in &per_stream {
            if let Some(info) = groups.get(&group) {
                handler_stats.event_types.push(event_type.clone());
                handler_stats.pending += info.pending;
                handler_stats.lag += info.lag;
            }
        }
        let redrive = groups_of(inner, &inner.keys.redrive(&group)).await?;
        if let Some(info) = redrive.get(&group) {
            handler_stats.pending += info.pending;
            handler_stats.lag += info.lag;
        }
        handler_stats.dead_letter_depth = dead_letter_depth(inner, &group).await?;
        if let Some((members, counters)) = local.get(&handler) {
            handler_stats.subscriptions = *members;
            handler_stats.processed = counters.processed;
            handler_stats.failed = counters.failed;
            handler_stats.retried = counters.retried;
            handler_stats.dead_lettered = counters.dead_lettered;
            handler_stats.expired = counters.expired;
            handler_stats.last_event_at = counters.last_event_at;
            if *members > 0 {
                stats.active_subscribers += 1;
                stats.subscription_tasks += members;
            }
        }
        stats.handlers.insert(handler, handler_stats);
    }
    Ok(stats)
}

pub(crate) async fn health(inner: &Inner) -> Health {
    // On a cluster, every primary: a master that is down leaves its slots unserved.
    let ping = || client::ping_every_primary(&inner.client);
    let unreachable = |e: String| {
        format!(
            "Redis at {} does not answer: {e}",
            event_core::redact_url(&inner.redis.url),
        )
    };
    let round_trip = match inner.lifecycle.round_trip("redis", ping, unreachable).await {
        Ok(round_trip) => round_trip,
        Err(health) => return health,
    };
    let mut consumers = Vec::new();
    let mut problems = Vec::new();
    for (handler, local) in inner.handlers.active() {
        let group = &local.group;
        // Work not yet finished: lag (not delivered) plus pending (delivered, not acknowledged).
        let mut backlog = 0;
        for stream in &local.sources {
            match groups_of(inner, stream).await {
                Ok(groups) => {
                    if let Some(info) = groups.get(group) {
                        backlog += info.lag + info.pending;
                    }
                }
                Err(e) => problems.push(format!("cannot read the groups of {stream}: {e}")),
            }
        }
        let depth = dead_letter_depth(inner, group).await.unwrap_or(0);
        let alive = local.is_running(inner.lifecycle.consumers());
        if let Some(problem) = local.extra.counters.problem(&handler) {
            problems.push(problem);
        }
        consumers.push(local.health(handler, alive, backlog, depth, inner.config.stall_timeout));
    }
    Health::assess("redis", Some(round_trip), consumers, problems, false)
}
