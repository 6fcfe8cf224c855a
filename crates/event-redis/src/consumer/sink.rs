//! Acknowledgements (`XACK`, pipelined per stream) and dead letters, stored and acknowledged
//! both or neither by one Lua script.
//!
//! `MULTI`/`EXEC` cannot do that: Redis runs every queued command even when one fails at run
//! time (`WRONGTYPE` when the dead-letter key is not a stream), so the `XACK` succeeded while
//! the `XADD` did not, and the event was lost. The script acknowledges only after the `XADD`
//! succeeded, and only an entry still pending, so a dead letter is never stored twice either.
//! On a Redis Cluster the two streams lie in different hash slots and the script's steps are
//! sent one after the other (see [`store`]).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use event_core::DeadLetter;
use event_core::dispatch::DeliverySink;
use fred::prelude::StreamsInterface;
use fred::types::Value;
use fred::types::scripts::Script;

use super::{Subscriber, Token};

/// KEYS[1]: the dead-letter stream; KEYS[2]: the entry's stream. ARGV[1]: the dead letter
/// (JSON); ARGV[2]: the group; ARGV[3]: the entry id. Stores the dead letter, with the entry's
/// stream and id beside it ([`ORIGINAL_STREAM`], [`ORIGINAL_ID`]), then acknowledges the
/// entry; a failed `XADD` ends the script before the `XACK`. Returns 1, or 0 when the entry is
/// no longer pending (settled by someone else, or its group deleted): then nothing is written.
const DEAD_LETTER_LUA: &str = r#"
local pending = redis.pcall('XPENDING', KEYS[2], ARGV[2], ARGV[3], ARGV[3], 1)
if type(pending) == 'table' and pending.err then
  if string.find(pending.err, 'NOGROUP', 1, true) then
    return 0
  end
  return redis.error_reply(pending.err)
end
if #pending == 0 then
  return 0
end
redis.call('XADD', KEYS[1], '*', 'dead_letter', ARGV[1], 'original_stream', KEYS[2], 'original_id', ARGV[3])
redis.pcall('XACK', KEYS[2], ARGV[2], ARGV[3])
return 1
"#;

/// The field of a dead-letter entry that names the stream of the entry it was made from.
const ORIGINAL_STREAM: &str = "original_stream";
/// The field of a dead-letter entry that holds the id of the entry it was made from.
const ORIGINAL_ID: &str = "original_id";

/// The dead-letter script, loaded on first use.
static DEAD_LETTER_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::from_lua(DEAD_LETTER_LUA));

/// Attempts at an acknowledgement before giving up (the entries then stay pending and are
/// claimed again later: delivered twice, never lost).
const ACK_ATTEMPTS: u32 = 5;
/// Attempts at storing a dead letter before giving up for now: the entry stays pending, is
/// delivered again later, and health reports the failure meanwhile. Few, because a lane
/// waits for them.
const DEAD_LETTER_ATTEMPTS: u32 = 4;

/// Acknowledges and dead-letters for one attempt of a subscription's loop.
pub(super) struct RedisSink {
    subscriber: Arc<Subscriber>,
}

impl RedisSink {
    pub(super) fn new(subscriber: Arc<Subscriber>) -> Self {
        Self { subscriber }
    }
}

/// Stops holding `tokens` in flight when dropped: when their acknowledgement or dead letter is
/// over, whether it succeeded, gave up or was cancelled.
struct Release<'a> {
    sub: &'a Subscriber,
    tokens: &'a [Token],
}

impl Drop for Release<'_> {
    fn drop(&mut self) {
        let mut in_flight = self.sub.in_flight();
        for token in self.tokens {
            in_flight.remove(token);
        }
    }
}

/// The pause before attempt `attempt + 1`: 100 ms, doubling.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(50 << attempt.min(10))
}

#[async_trait]
impl DeliverySink<Token> for RedisSink {
    async fn ack(&self, tokens: Vec<Token>) {
        let sub = &self.subscriber;
        let mut by_stream: HashMap<usize, Vec<&str>> = HashMap::new();
        for token in &tokens {
            by_stream.entry(token.stream).or_default().push(&token.id);
        }
        // Held until the acknowledgement is over: a take-back read of this consumer's pending
        // entries (after a lost read) skips what is held, and would otherwise hand out again
        // an entry whose `XACK` is still on its way.
        let _release = Release {
            sub,
            tokens: &tokens,
        };
        for attempt in 1..=ACK_ATTEMPTS {
            let pipeline = sub.inner.client.pipeline();
            for (stream, ids) in &by_stream {
                let Some(key) = sub.streams.get(*stream) else {
                    continue;
                };
                let _: Result<Value, _> = pipeline
                    .xack(key.as_str(), sub.group.as_str(), ids.clone())
                    .await;
            }
            let replies: Vec<Result<Value, fred::error::Error>> = pipeline.try_all().await;
            match replies.into_iter().find_map(Result::err) {
                None => return,
                Some(e) if attempt == ACK_ATTEMPTS => {
                    tracing::warn!(handler = %sub.handler, "acknowledgement failed; the entries will be delivered again: {e}");
                }
                Some(_) => tokio::time::sleep(backoff(attempt)).await,
            }
        }
    }

    async fn dead_letter(&self, token: Token, mut letter: DeadLetter) {
        let sub = &self.subscriber;
        // Whatever happens, this attempt no longer works on it once this call is over: if it
        // stays pending, a claim takes it back once idle. Held until then, so a take-back read
        // cannot hand it out again (and store its dead letter twice) while the script runs.
        let _release = Release {
            sub,
            tokens: std::slice::from_ref(&token),
        };
        letter.id.clear();
        let json = match sub.inner.codec.encode_letter(&letter) {
            Ok(json) => json,
            Err(e) => {
                tracing::error!(handler = %sub.handler, "dead letter cannot be encoded, left pending: {e}");
                return;
            }
        };
        let Some(stream) = sub.streams.get(token.stream) else {
            return;
        };
        let json = bytes::Bytes::from(json);
        for attempt in 1..=DEAD_LETTER_ATTEMPTS {
            match store(sub, stream, &token.id, &json).await {
                Ok(_) => {
                    sub.counters.dead_letter_stored();
                    return;
                }
                Err(e) if attempt == DEAD_LETTER_ATTEMPTS => {
                    let why = e.details().to_string();
                    tracing::error!(
                        handler = %sub.handler,
                        entry = %token.id,
                        dead_letters = %sub.dead_letters,
                        "storing a dead letter failed; the entry stays pending and will be delivered again: {why}"
                    );
                    sub.counters.dead_letter_failed(&sub.handler, &why);
                }
                Err(_) => tokio::time::sleep(backoff(attempt)).await,
            }
        }
    }
}

/// Stores a dead letter for the entry `id` of `stream` and acknowledges the entry, if it is
/// still pending: in one script when the dead-letter stream and `stream` share a hash slot
/// (always, but on a Redis Cluster).
///
/// On a cluster they do not: the three steps of the script are then three commands. A
/// process that dies between storing and acknowledging leaves the entry pending; it is
/// claimed, delivered and dead-lettered again, so the dead letter is stored twice, never lost.
async fn store(
    sub: &Subscriber,
    stream: &str,
    id: &str,
    json: &bytes::Bytes,
) -> Result<(), fred::error::Error> {
    let client = &sub.inner.client;
    let dead_letters = sub.dead_letters.as_str();
    if sub.inner.keys.one_slot(&[dead_letters, stream]) {
        let keys = vec![dead_letters.to_string(), stream.to_string()];
        let args = vec![
            Value::Bytes(json.clone()),
            Value::from(sub.group.as_str()),
            Value::from(id),
        ];
        let _: i64 = DEAD_LETTER_SCRIPT
            .evalsha_with_reload(client, keys, args)
            .await?;
        return Ok(());
    }
    let pending: Result<Value, _> = client
        .xpending(stream, sub.group.as_str(), (id, id, 1))
        .await;
    match pending {
        Ok(Value::Array(rows)) if !rows.is_empty() => {}
        Ok(_) => return Ok(()),
        Err(e) if e.details().contains("NOGROUP") => return Ok(()),
        Err(e) => return Err(e),
    }
    let _: Value = client
        .xadd(
            dead_letters,
            false,
            None,
            "*",
            vec![
                ("dead_letter", Value::Bytes(json.clone())),
                (ORIGINAL_STREAM, Value::from(stream)),
                (ORIGINAL_ID, Value::from(id)),
            ],
        )
        .await?;
    let _: Value = client.xack(stream, sub.group.as_str(), id).await?;
    Ok(())
}
