//! Event sourcing: an aggregate's history is a list of envelopes; appends check the expected
//! version and write the history and the event streams in one Lua script, atomically.

use std::sync::LazyLock;

use event_core::{AggregateAppend, Error, Event, ExpectedVersion};
use fred::prelude::ListInterface;
use fred::types::Value;
use fred::types::scripts::Script;

use crate::core::Inner;
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

/// How often an append with [`ExpectedVersion::Any`] retries when others append at once.
const ANY_VERSION_ATTEMPTS: u32 = 10;

/// The append script, loaded on first use.
static APPEND_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::from_lua(APPEND_LUA));

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
        let mut keys = vec![list.clone()];
        let mut args = vec![
            Value::from(current as i64),
            Value::from(inner.retention_minid().await),
        ];
        for event in &events {
            let json = inner.codec.encode(event)?;
            keys.push(inner.keys.stream(&event.event_type));
            args.push(Value::from(event.id.to_string()));
            args.push(Value::from(event.event_type.as_str()));
            args.push(Value::from(event.partition_key.clone().unwrap_or_default()));
            args.push(Value::Bytes(json.into()));
        }
        let reply: Vec<i64> = APPEND_SCRIPT
            .evalsha_with_reload(&inner.client, keys, args)
            .await
            .map_err(|e| client::error("appending to the aggregate", e))?;
        match reply.as_slice() {
            [1, version] => return Ok(*version as u64),
            [0, actual] => {
                if let ExpectedVersion::Exact(expected) = append.expected_version {
                    return Err(Error::VersionConflict {
                        aggregate_type: append.aggregate_type,
                        aggregate_id: append.aggregate_id,
                        expected,
                        actual: *actual as u64,
                    });
                }
                // Another writer appended between LLEN and the script: read again.
            }
            other => {
                return Err(Error::backend(
                    "redis",
                    format!("the append script answered {other:?}"),
                    false,
                ));
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
