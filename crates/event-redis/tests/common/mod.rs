//! Helpers shared by the Redis-specific tests: a scenario on the shared test server under a
//! key prefix of its own (deleted afterwards), raw commands for what a foreign producer or a
//! crashed consumer would do, a recording handler, and waiting on conditions with deadlines.
#![allow(dead_code)] // Each test binary uses its own part of these helpers.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, bail};
use event_core::{
    Config, EnvSettings as _, Event, EventBus, EventHandler, EventId, EventType, HandlerError,
};
use event_testkit::{test_server, unique};
use fred::prelude::{Builder, Client, ClientLike, KeysInterface, StreamsInterface};
use fred::types::Value;
use tokio::time::Instant;

/// Every scenario ends within this, cleanup excluded.
pub(crate) const SCENARIO_BOUND: Duration = Duration::from_secs(120);
/// How often conditions are polled.
const POLL: Duration = Duration::from_millis(25);
/// The event source of every event here.
pub(crate) const SOURCE: &str = "eventbus_redis_tests";

/// One test's place on the shared server: its URL, key prefix and a plain client.
pub(crate) struct Scenario {
    pub(crate) url: String,
    pub(crate) prefix: String,
    pub(crate) admin: Client,
}

impl Scenario {
    /// A scenario under a fresh prefix, or `None` when no test server is configured.
    pub(crate) async fn start(name: &str) -> anyhow::Result<Option<Self>> {
        let Some(url) = test_server("EVENTBUS_TEST_REDIS_URL", "redis")? else {
            return Ok(None);
        };
        let admin = admin_client(&url).await?;
        Ok(Some(Self {
            url,
            prefix: unique(name),
            admin,
        }))
    }

    /// A bus's settings on this scenario's prefix.
    pub(crate) fn config(&self) -> Settings {
        Settings::on(&self.url, &self.prefix)
    }

    /// A fresh event type, unique to this run.
    pub(crate) fn event_type(&self, verb: &str) -> EventType {
        EventType::new(format!("t{:08x}.{verb}", fastrand::u32(..))).expect("a valid type")
    }

    pub(crate) fn stream(&self, event_type: &EventType) -> String {
        format!("{}:stream:{event_type}", self.prefix)
    }

    pub(crate) fn group(&self, config: &Settings, handler: &str) -> String {
        format!("{}.{handler}", config.bus.consumer_group)
    }

    pub(crate) fn dead_letters(&self, group: &str) -> String {
        format!("{}:dlq:{group}", self.prefix)
    }

    /// Runs the scenario within [`SCENARIO_BOUND`], then deletes every key under the prefix.
    pub(crate) async fn run<F>(self, scenario: F) -> anyhow::Result<()>
    where
        F: AsyncFnOnce(&Scenario) -> anyhow::Result<()>,
    {
        let outcome = match tokio::time::timeout(SCENARIO_BOUND, scenario(&self)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(anyhow::anyhow!(
                "the scenario did not finish within {SCENARIO_BOUND:?}"
            )),
        };
        cleanup(&self.admin, &self.prefix).await;
        let _ = self.admin.quit().await;
        outcome
    }

    /// The server's clock, in Unix milliseconds (`TIME`).
    pub(crate) async fn server_ms(&self) -> anyhow::Result<i64> {
        let reply: Value = self
            .admin
            .custom(fred::cmd!("TIME"), Vec::<Value>::new())
            .await?;
        let parts = reply.into_array();
        let secs: i64 = parts.first().and_then(Value::as_i64).context("TIME")?;
        let micros: i64 = parts.get(1).and_then(Value::as_i64).context("TIME")?;
        Ok(secs * 1000 + micros / 1000)
    }

    /// `XADD stream id field value ...` with byte strings, as a foreign producer would.
    pub(crate) async fn raw_xadd(
        &self,
        stream: &str,
        id: &str,
        fields: &[(&[u8], &[u8])],
    ) -> anyhow::Result<String> {
        let mut args = vec![Value::from(stream), Value::from(id)];
        for (name, value) in fields {
            args.push(Value::Bytes(name.to_vec().into()));
            args.push(Value::Bytes(value.to_vec().into()));
        }
        let reply: Value = self.admin.custom(fred::cmd!("XADD"), args).await?;
        reply.as_string().context("XADD answered no id")
    }

    /// Writes `event` with the fields the bus writes, with `XADD` at `id` and no trimming.
    pub(crate) async fn raw_event(&self, event: &Event, id: &str) -> anyhow::Result<String> {
        let json = serde_json::to_vec(event)?;
        let event_id = event.id.to_string();
        let mut fields: Vec<(&[u8], &[u8])> = vec![
            (b"id", event_id.as_bytes()),
            (b"type", event.event_type.as_str().as_bytes()),
        ];
        if let Some(key) = &event.partition_key {
            fields.push((b"key", key.as_bytes()));
        }
        fields.push((b"event", &json));
        self.raw_xadd(&self.stream(&event.event_type), id, &fields)
            .await
    }

    /// Entries delivered to `group` on `stream` and not acknowledged.
    pub(crate) async fn pending(&self, stream: &str, group: &str) -> anyhow::Result<u64> {
        let reply: Value = self.admin.xpending(stream, group, ()).await?;
        Ok(reply
            .into_array()
            .first()
            .and_then(Value::as_u64)
            .unwrap_or(0))
    }

    pub(crate) async fn xlen(&self, key: &str) -> anyhow::Result<u64> {
        Ok(self.admin.xlen(key).await?)
    }

    /// Waits until `seen` holds `total` distinct events and nothing is pending for `group` on
    /// `streams`.
    pub(crate) async fn wait_all_handled(
        &self,
        seen: &Seen,
        total: usize,
        streams: &[String],
        group: &str,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        wait_until(
            "every event handled and acknowledged",
            timeout,
            async || {
                let handled = seen.distinct();
                let mut pending = 0;
                for stream in streams {
                    pending += self.pending(stream, group).await?;
                }
                Ok((handled < total || pending > 0)
                    .then(|| format!("{handled} of {total} handled, {pending} pending")))
            },
        )
        .await
    }
}

/// A plain client with a command timeout.
pub(crate) async fn admin_client(url: &str) -> anyhow::Result<Client> {
    let config = fred::types::config::Config::from_url(url)?;
    let client = Builder::from_config(config)
        .with_performance_config(|p| p.default_command_timeout = Duration::from_secs(10))
        .build()?;
    tokio::time::timeout(Duration::from_secs(10), client.init())
        .await
        .context("connecting the test's own client timed out")??;
    Ok(client)
}

/// Deletes every key under the prefix (best effort).
async fn cleanup(admin: &Client, prefix: &str) {
    let mut cursor = "0".to_string();
    loop {
        let reply: Result<Value, _> = admin
            .custom(
                fred::cmd!("SCAN"),
                vec![
                    cursor.clone(),
                    "MATCH".into(),
                    format!("{prefix}:*"),
                    "COUNT".into(),
                    "1000".into(),
                ],
            )
            .await;
        let Ok(reply) = reply else { break };
        let mut parts = reply.into_array().into_iter();
        cursor = parts
            .next()
            .and_then(|c| c.as_string())
            .unwrap_or_else(|| "0".into());
        let keys: Vec<String> = parts
            .next()
            .map(Value::into_array)
            .unwrap_or_default()
            .iter()
            .filter_map(Value::as_string)
            .collect();
        if !keys.is_empty() {
            let _: Result<Value, _> = admin.del(keys).await;
        }
        if cursor == "0" {
            break;
        }
    }
}

/// The connections the server has (`CLIENT LIST`), each as its `name=value` fields.
pub(crate) async fn client_list(admin: &Client) -> anyhow::Result<Vec<HashMap<String, String>>> {
    let list: Value = admin.custom(fred::cmd!("CLIENT"), vec!["LIST"]).await?;
    let list = list.as_string().context("CLIENT LIST answered no text")?;
    Ok(list.lines().map(client_fields).collect())
}

/// The `name=value` fields of one `CLIENT LIST` / `CLIENT INFO` line.
pub(crate) fn client_fields(line: &str) -> HashMap<String, String> {
    line.split_whitespace()
        .filter_map(|field| field.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Polls `check` until it answers `Ok(None)`, failing after `timeout` with the last
/// `Some(status)` it gave.
pub(crate) async fn wait_until<F>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<()>
where
    F: AsyncFnMut() -> anyhow::Result<Option<String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match check().await? {
            None => return Ok(()),
            Some(status) if Instant::now() >= deadline => {
                bail!("timed out after {timeout:?} waiting for {what}: {status}")
            }
            Some(_) => tokio::time::sleep(POLL).await,
        }
    }
}

/// An event numbered `n` (payload `{"n": n}`), with a partition key when given.
pub(crate) fn numbered(event_type: &EventType, n: u64, key: Option<&str>) -> Event {
    let mut builder = Event::builder(event_type.clone(), SOURCE).field("n", n);
    if let Some(key) = key {
        builder = builder.partition_key(key);
    }
    builder.build().expect("a valid event")
}

/// The `n` of a [`numbered`] event.
pub(crate) fn n_of(event: &Event) -> u64 {
    event
        .payload
        .get("n")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(u64::MAX)
}

/// Publishes events in batches of 150; returns their ids in order.
pub(crate) async fn publish_all(
    bus: &dyn EventBus,
    events: Vec<Event>,
) -> anyhow::Result<Vec<EventId>> {
    let mut ids = Vec::with_capacity(events.len());
    for chunk in events.chunks(150) {
        for result in bus.publish_batch(chunk.to_vec()).await {
            ids.push(result?);
        }
    }
    Ok(ids)
}

/// What a recording handler saw, in the order it saw it.
#[derive(Default)]
pub(crate) struct Seen {
    events: Mutex<Vec<Arc<Event>>>,
}

impl Seen {
    pub(crate) fn push(&self, event: Arc<Event>) {
        lock(&self.events).push(event);
    }

    pub(crate) fn all(&self) -> Vec<Arc<Event>> {
        lock(&self.events).clone()
    }

    pub(crate) fn len(&self) -> usize {
        lock(&self.events).len()
    }

    /// How many distinct events were seen.
    pub(crate) fn distinct(&self) -> usize {
        let mut ids: Vec<EventId> = lock(&self.events).iter().map(|e| e.id).collect();
        ids.sort_unstable();
        ids.dedup();
        ids.len()
    }

    /// How often each event was seen.
    pub(crate) fn counts(&self) -> HashMap<EventId, usize> {
        let mut counts = HashMap::new();
        for event in lock(&self.events).iter() {
            *counts.entry(event.id).or_default() += 1;
        }
        counts
    }
}

/// A handler that records each event and then runs `then` on it.
pub(crate) fn recording<F, Fut>(name: &str, seen: Arc<Seen>, then: F) -> Arc<dyn EventHandler>
where
    F: Fn(Arc<Event>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    let then = Arc::new(then);
    event_core::handler_fn(name.to_string(), move |event: Arc<Event>| {
        seen.push(event.clone());
        let then = then.clone();
        async move { then(event).await }
    })
}

/// Fails unless each of `ids` was seen exactly once and nothing else was seen.
pub(crate) fn exactly_once(seen: &Seen, ids: &[EventId]) -> anyhow::Result<()> {
    let counts = seen.counts();
    let missing = ids.iter().filter(|id| !counts.contains_key(id)).count();
    let twice = counts.values().filter(|n| **n > 1).count();
    let strangers = counts.len() + missing - ids.len();
    if missing + twice + strangers > 0 {
        bail!(
            "{} events expected: {missing} never handled, {twice} handled more than once, {strangers} handled but not expected",
            ids.len()
        );
    }
    Ok(())
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub(crate) fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// The two halves of a Redis bus's settings, as the tests change them: the Redis backend's own
/// and the shared ones.
#[derive(Clone, Debug, Default)]
pub(crate) struct Settings {
    /// `REDIS_*`.
    pub(crate) redis: event_redis::RedisConfig,
    /// The settings every backend shares.
    pub(crate) bus: Config,
}

impl Settings {
    /// The defaults, on the server at `url` under `prefix`.
    pub(crate) fn on(url: &str, prefix: &str) -> Self {
        let mut settings = Self::default();
        settings.redis.url = url.to_string();
        settings.redis.key_prefix = prefix.to_string();
        settings
    }

    /// Both halves from the process environment.
    pub(crate) fn from_env() -> anyhow::Result<Self> {
        Ok(Self {
            redis: event_redis::RedisConfig::from_env()?,
            bus: Config::from_env()?,
        })
    }

    /// A bus with these settings.
    pub(crate) async fn connect(&self) -> Result<event_redis::RedisBus, event_core::Error> {
        event_redis::RedisBus::connect(self.redis.clone(), self.bus.clone()).await
    }
}
