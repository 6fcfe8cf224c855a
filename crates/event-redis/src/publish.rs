//! Batch publishing: one Lua script appends every event of a batch, so the whole batch is one
//! command and one round trip, and each event still gets its own result. On a Redis Cluster,
//! one script per hash slot the batch's streams lie in, sent concurrently.

use std::sync::LazyLock;

use event_core::backend::{BatchResults, SharedFailure};
use event_core::{Error, Event};
use fred::types::Value;
use fred::types::scripts::Script;

use crate::client;
use crate::core::Inner;
use crate::keys::Keys;

/// KEYS: each event's stream. ARGV[1]: the `MINID` of the retention; then four values per
/// event: id, type, partition key (empty when none), envelope. Returns, per event, the new
/// entry id or the error text. After an `XADD` to a stream failed, the batch's later events of
/// that stream are not added (they fail too), so a key's events are stored as a prefix of the
/// batch's, in order, never with a gap (`EventBus::publish_batch`'s promise).
const BATCH_LUA: &str = r#"
local out = {}
local failed = {}
for i = 1, #KEYS do
  local b = 1 + (i - 1) * 4
  local reply
  if failed[KEYS[i]] then
    reply = {err = 'an earlier event of this stream in the batch was not added'}
  elseif ARGV[b + 3] == '' then
    reply = redis.pcall('XADD', KEYS[i], 'MINID', '~', ARGV[1], '*',
      'id', ARGV[b + 1], 'type', ARGV[b + 2], 'event', ARGV[b + 4])
  else
    reply = redis.pcall('XADD', KEYS[i], 'MINID', '~', ARGV[1], '*',
      'id', ARGV[b + 1], 'type', ARGV[b + 2], 'key', ARGV[b + 3], 'event', ARGV[b + 4])
  end
  if type(reply) == 'table' and reply.err then
    failed[KEYS[i]] = true
    out[i] = 'ERR ' .. reply.err
  else
    out[i] = reply
  end
end
return out
"#;

/// The batch script, loaded on first use.
static BATCH_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::from_lua(BATCH_LUA));

/// The arguments of one batch.
pub(crate) struct Batch<'a> {
    keys: &'a Keys,
    minid: String,
    /// Per event: its index in the batch's results, its stream, its four arguments.
    events: Vec<(usize, String, [Value; 4])>,
}

impl<'a> Batch<'a> {
    /// A batch trimming each stream to `minid` (the retention, see `Inner::retention_minid`).
    pub(crate) fn new(keys: &'a Keys, minid: String) -> Self {
        Self {
            keys,
            minid,
            events: Vec::new(),
        }
    }

    /// Adds one encoded event, whose result is `slot` of the batch's results.
    pub(crate) fn push(&mut self, slot: usize, event: &Event, json: Vec<u8>) {
        let args = [
            Value::from(event.id.to_string()),
            Value::from(event.event_type.as_str()),
            Value::from(event.partition_key.clone().unwrap_or_default()),
            Value::Bytes(json.into()),
        ];
        self.events
            .push((slot, self.keys.stream(&event.event_type), args));
    }

    /// Sends the batch and records each event's failure in `results`: one script per hash
    /// slot (one in all but on a cluster, where the slots' scripts run concurrently).
    pub(crate) async fn send(self, inner: &Inner, results: &mut BatchResults) {
        if self.events.is_empty() {
            return;
        }
        let streams: Vec<&str> = self.events.iter().map(|(_, s, _)| s.as_str()).collect();
        let groups = self.keys.by_slot(&streams);
        let sends = groups.iter().map(|group| {
            let mut keys = Vec::with_capacity(group.len());
            let mut args = Vec::with_capacity(1 + 4 * group.len());
            args.push(Value::from(self.minid.as_str()));
            for &i in group {
                let (_, stream, values) = &self.events[i];
                keys.push(stream.clone());
                args.extend(values.iter().cloned());
            }
            send_group(inner, keys, args)
        });
        let replies = futures::future::join_all(sends).await;
        // Each slot's written events then wait for the replicas (REDIS_WAIT_REPLICAS).
        let mut written = Vec::new();
        for (group, reply) in groups.iter().zip(replies) {
            let slots = group.iter().map(|&i| self.events[i].0);
            match reply {
                Ok(replies) => {
                    for (&i, reply) in group.iter().zip(replies) {
                        match reply {
                            Ok(()) => written.push(i),
                            Err(e) => results.fail(self.events[i].0, e),
                        }
                    }
                }
                Err(e) => results.fail_all(slots, &SharedFailure::new("redis", e)),
            }
        }
        let keys: Vec<&str> = written.iter().map(|&i| streams[i]).collect();
        let waited = inner.wait_replicas_each(&keys).await;
        for (&i, failure) in written.iter().zip(waited) {
            if let Some(e) = failure {
                results.fail(self.events[i].0, e);
            }
        }
    }
}

/// Sends the events of one hash slot in one script: a result per event, in order.
async fn send_group(
    inner: &Inner,
    keys: Vec<String>,
    args: Vec<Value>,
) -> Result<Vec<Result<(), Error>>, Error> {
    let n = keys.len();
    let replies: Vec<Value> = BATCH_SCRIPT
        .evalsha_with_reload(&inner.client, keys, args)
        .await
        .map_err(|e| client::error("publishing a batch", e))?;
    if replies.len() != n {
        // Not one reply per event: an error the client passed on as a value (a `TRYAGAIN`
        // while the slot moves to another master, say). Shown, and transient.
        let mut shown = format!("{replies:?}");
        shown.truncate(200);
        return Err(Error::backend(
            "redis",
            format!(
                "the batch script answered {} replies for {n} events: {shown}",
                replies.len()
            ),
            true,
        ));
    }
    Ok(replies
        .into_iter()
        .map(|reply| match reply.as_string() {
            Some(text) if text.starts_with("ERR ") => Err(Error::backend(
                "redis",
                format!("XADD: {}", &text[4..]),
                false,
            )),
            _ => Ok(()),
        })
        .collect())
}
