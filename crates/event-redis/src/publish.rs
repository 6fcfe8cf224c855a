//! Batch publishing: one Lua script appends every event of a batch, so the whole batch is one
//! command and one round trip, and each event still gets its own result.

use std::sync::LazyLock;

use event_core::{Error, Event};
use fred::types::Value;
use fred::types::scripts::Script;

use crate::client;
use crate::core::Inner;
use crate::keys::Keys;

/// KEYS: each event's stream. ARGV[1]: the `MINID` of the retention; then four values per
/// event: id, type, partition key (empty when none), envelope. Returns, per event, the new
/// entry id or the error text.
const BATCH_LUA: &str = r#"
local out = {}
for i = 1, #KEYS do
  local b = 1 + (i - 1) * 4
  local reply
  if ARGV[b + 3] == '' then
    reply = redis.pcall('XADD', KEYS[i], 'MINID', '~', ARGV[1], '*',
      'id', ARGV[b + 1], 'type', ARGV[b + 2], 'event', ARGV[b + 4])
  else
    reply = redis.pcall('XADD', KEYS[i], 'MINID', '~', ARGV[1], '*',
      'id', ARGV[b + 1], 'type', ARGV[b + 2], 'key', ARGV[b + 3], 'event', ARGV[b + 4])
  end
  if type(reply) == 'table' and reply.err then
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
    streams: Vec<String>,
    args: Vec<Value>,
}

impl<'a> Batch<'a> {
    /// A batch trimming each stream to `minid` (the retention, see `Inner::retention_minid`).
    pub(crate) fn new(keys: &'a Keys, minid: String) -> Self {
        Self {
            keys,
            streams: Vec::new(),
            args: vec![Value::from(minid)],
        }
    }

    /// Adds one encoded event.
    pub(crate) fn push(&mut self, event: &Event, json: Vec<u8>) {
        self.streams.push(self.keys.stream(&event.event_type));
        self.args.push(Value::from(event.id.to_string()));
        self.args.push(Value::from(event.event_type.as_str()));
        self.args
            .push(Value::from(event.partition_key.clone().unwrap_or_default()));
        self.args.push(Value::Bytes(json.into()));
    }

    /// Sends the batch; a result per event, in order.
    pub(crate) async fn send(self, inner: &Inner) -> Result<Vec<Result<(), Error>>, Error> {
        let n = self.streams.len();
        let replies: Vec<Value> = BATCH_SCRIPT
            .evalsha_with_reload(&inner.client, self.streams, self.args)
            .await
            .map_err(|e| client::error("publishing a batch", e))?;
        if replies.len() != n {
            return Err(Error::backend(
                "redis",
                format!(
                    "the batch script answered {} replies for {n} events",
                    replies.len()
                ),
                false,
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
}
