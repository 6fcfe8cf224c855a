//! Acknowledgements (`XACK`, pipelined per stream) and dead letters, stored and acknowledged
//! both or neither by one Lua script.
//!
//! `MULTI`/`EXEC` cannot do that: Redis runs every queued command even when one fails at run
//! time (`WRONGTYPE` when the dead-letter key is not a stream), so the `XACK` succeeded while
//! the `XADD` did not, and the event was lost. The script acknowledges only after the `XADD`
//! succeeded, and only an entry still pending, so a dead letter is never stored twice either.

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
/// (JSON); ARGV[2]: the group; ARGV[3]: the entry id. Stores the dead letter, then
/// acknowledges the entry; a failed `XADD` ends the script before the `XACK`. Returns 1, or 0
/// when the entry is no longer pending (settled by someone else, or its group deleted): then
/// nothing is written.
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
redis.call('XADD', KEYS[1], '*', 'dead_letter', ARGV[1])
redis.pcall('XACK', KEYS[2], ARGV[2], ARGV[3])
return 1
"#;

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

/// The pause before attempt `attempt + 1`: 100 ms, doubling.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(50 << attempt.min(10))
}

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
        // Whatever happens, this attempt no longer works on it: if it stays pending, a claim
        // takes it back once idle.
        sub.in_flight().remove(&token);
        letter.id.clear();
        let json = match serde_json::to_vec(&letter) {
            Ok(json) => json,
            Err(e) => {
                tracing::error!(handler = %sub.handler, "dead letter cannot be encoded, left pending: {e}");
                return;
            }
        };
        let Some(stream) = sub.streams.get(token.stream) else {
            return;
        };
        let keys = vec![sub.dead_letters.clone(), stream.clone()];
        let args = vec![
            Value::Bytes(json.into()),
            Value::from(sub.group.as_str()),
            Value::from(token.id.as_str()),
        ];
        for attempt in 1..=DEAD_LETTER_ATTEMPTS {
            let stored: Result<i64, _> = DEAD_LETTER_SCRIPT
                .evalsha_with_reload(&sub.inner.client, keys.clone(), args.clone())
                .await;
            match stored {
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
