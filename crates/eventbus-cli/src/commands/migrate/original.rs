//! Reading the original system's Redis as its code wrote it: `timeline:{type}` sorted sets
//! (member: event id, score: epoch seconds) and `event:{id}` strings (the envelope's JSON,
//! with a TTL). Read only: nothing is written to the original's Redis.

use std::ops::Range;
use std::time::Duration;

use anyhow::Context as _;
use fred::prelude::{Builder, Client, ClientLike, ReconnectPolicy};
use fred::types::config::Config;
use fred::types::{CustomCommand, Value};

/// How long one command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A timeline key's prefix.
pub(crate) const TIMELINE_PREFIX: &str = "timeline:";
/// A body key's prefix.
pub(crate) const BODY_PREFIX: &str = "event:";

/// A connection to the original's Redis.
pub(crate) struct OriginalRedis {
    client: Client,
}

impl OriginalRedis {
    /// Connects to `url` (`redis://host:port/db`, `rediss://...`).
    pub(crate) async fn connect(url: &str) -> anyhow::Result<Self> {
        let shown = event_core::redact_url(url);
        let config = Config::from_url(url)
            .map_err(|e| anyhow::anyhow!("--redis-url {shown:?} is not a Redis URL: {e}"))?;
        let client = Builder::from_config(config)
            .with_connection_config(|c| {
                c.connection_timeout = CONNECT_TIMEOUT;
                c.internal_command_timeout = CONNECT_TIMEOUT;
                c.max_command_attempts = 3;
            })
            .with_performance_config(|p| p.default_command_timeout = COMMAND_TIMEOUT)
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2))
            .build()
            .with_context(|| format!("building a Redis client for {shown}"))?;
        match tokio::time::timeout(CONNECT_TIMEOUT * 2, client.init()).await {
            Ok(Ok(_task)) => Ok(Self { client }),
            Ok(Err(e)) => anyhow::bail!("cannot connect to the original's Redis at {shown}: {e}"),
            Err(_) => {
                let _ = client.quit().await;
                anyhow::bail!(
                    "cannot connect to the original's Redis at {shown} within {:?}: is the server running and the URL right?",
                    CONNECT_TIMEOUT * 2
                )
            }
        }
    }

    /// Every `timeline:*` sorted set, sorted by name.
    pub(crate) async fn timelines(&self) -> anyhow::Result<Vec<String>> {
        let mut keys = Vec::new();
        let mut cursor = "0".to_string();
        loop {
            let reply: Value = self
                .client
                .custom(
                    fred::cmd!("SCAN"),
                    vec![
                        Value::from(cursor.as_str()),
                        Value::from("MATCH"),
                        Value::from(format!("{TIMELINE_PREFIX}*")),
                        Value::from("COUNT"),
                        Value::from(1000),
                        Value::from("TYPE"),
                        Value::from("zset"),
                    ],
                )
                .await
                .context("SCAN for timeline:* on the original's Redis")?;
            let mut parts = reply.into_array().into_iter();
            cursor = parts
                .next()
                .and_then(|v| v.as_string())
                .unwrap_or_else(|| "0".into());
            for key in parts.next().map(Value::into_array).unwrap_or_default() {
                if let Some(key) = key.as_bytes() {
                    keys.push(String::from_utf8_lossy(key).into_owned());
                }
            }
            if cursor == "0" {
                break;
            }
        }
        keys.sort();
        keys.dedup();
        Ok(keys)
    }

    /// The ranks of a timeline's ids to read: all of them, or those scored at or after `since`
    /// (seconds since the epoch), which come last in rank order.
    pub(crate) async fn timeline_ranks(
        &self,
        key: &str,
        since: Option<f64>,
    ) -> anyhow::Result<Range<u64>> {
        let end = self
            .count(fred::cmd!("ZCARD"), vec![Value::from(key)], key)
            .await?;
        let start = match since {
            Some(at) => {
                let before = vec![
                    Value::from(key),
                    Value::from("-inf"),
                    Value::from(format!("({at}")),
                ];
                self.count(fred::cmd!("ZCOUNT"), before, key)
                    .await?
                    .min(end)
            }
            None => 0,
        };
        Ok(start..end)
    }

    /// A command answering a count.
    async fn count(
        &self,
        command: CustomCommand,
        args: Vec<Value>,
        key: &str,
    ) -> anyhow::Result<u64> {
        let name = command.cmd.clone();
        let reply: Value = self
            .client
            .custom(command, args)
            .await
            .with_context(|| format!("{name} {key}"))?;
        Ok(reply.as_u64().unwrap_or(0))
    }

    /// Up to `count` ids of a timeline from rank `start` on, oldest first, with their scores.
    /// The original only adds to a timeline, at the newest end, so pages by rank see every id.
    pub(crate) async fn timeline_page(
        &self,
        key: &str,
        start: u64,
        count: u64,
    ) -> anyhow::Result<Vec<(String, Option<f64>)>> {
        let stop = start + count.max(1) - 1;
        let reply: Value = self
            .client
            .custom(
                fred::cmd!("ZRANGE"),
                vec![
                    Value::from(key),
                    Value::from(start.to_string()),
                    Value::from(stop.to_string()),
                    Value::from("WITHSCORES"),
                ],
            )
            .await
            .with_context(|| format!("ZRANGE {key}"))?;
        // RESP2 answers member, score, member, score...; RESP3 [member, score] pairs.
        let mut flat = Vec::new();
        for item in reply.into_array() {
            match item {
                Value::Array(pair) => flat.extend(pair),
                other => flat.push(other),
            }
        }
        let mut page = Vec::with_capacity(flat.len() / 2);
        let mut items = flat.into_iter();
        while let Some(member) = items.next() {
            let score = items.next().and_then(|s| s.as_f64());
            let id = member
                .as_bytes()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            page.push((id, score));
        }
        Ok(page)
    }

    /// The bodies of `ids` (`MGET event:{id} ...`), `None` where the body has expired.
    pub(crate) async fn bodies(&self, ids: &[String]) -> anyhow::Result<Vec<Option<Vec<u8>>>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<Value> = ids
            .iter()
            .map(|id| Value::from(format!("{BODY_PREFIX}{id}")))
            .collect();
        let reply: Value = self
            .client
            .custom(fred::cmd!("MGET"), keys)
            .await
            .context("MGET event:* on the original's Redis")?;
        let mut bodies: Vec<Option<Vec<u8>>> = reply
            .into_array()
            .into_iter()
            .map(|v| v.as_bytes().map(<[u8]>::to_vec))
            .collect();
        bodies.resize(ids.len(), None);
        Ok(bodies)
    }

    /// Closes the connection.
    pub(crate) async fn close(self) {
        let _ = self.client.quit().await;
    }
}
