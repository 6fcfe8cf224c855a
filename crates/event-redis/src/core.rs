//! What every part of the Redis backend shares: [`Inner`] (the configuration, the client, the
//! key names, the bus's lifecycle and consumer loops, the handlers subscribed here, the
//! server's clock) and [`RedisHandler`]. The bottom of the crate: it imports none of the
//! modules that use it.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use event_core::backend::{Lifecycle, LocalHandlers};
use event_core::{Config, Error, JsonCodec};
use fred::prelude::Client;
use fred::prelude::ClientLike;
use time::OffsetDateTime;

use crate::clock::ServerClock;
use crate::config::RedisConfig;
use crate::counters::RedisCounters;
use crate::direct::Direct;
use crate::keys::Keys;
use crate::{client, entry};

/// What the Redis backend keeps beside each handler subscribed through this bus instance
/// (whose `sources` are its stream keys).
#[derive(Clone, Default)]
pub(crate) struct RedisHandler {
    pub(crate) counters: Arc<RedisCounters>,
    /// Consumer names of this handler's subscriptions that ended here, for the next ones: a
    /// subscription that takes one over takes back its unfinished entries first.
    pub(crate) retired: Vec<String>,
}

pub(crate) struct Inner {
    pub(crate) config: Config,
    /// The Redis settings (the URL, for messages).
    pub(crate) redis: RedisConfig,
    pub(crate) codec: JsonCodec,
    pub(crate) client: Client,
    /// Where an awaited single publish writes and reads itself, on a single server.
    pub(crate) direct: Option<Arc<Direct>>,
    pub(crate) keys: Keys,
    pub(crate) lifecycle: Arc<Lifecycle>,
    pub(crate) handlers: LocalHandlers<RedisHandler>,
    /// The server's clock: the reference of every retention cutoff.
    pub(crate) clock: ServerClock,
    /// Added to this host's wall clock, by tests only: a host whose clock is wrong.
    pub(crate) local_clock_offset_ms: AtomicI64,
}

impl Inner {
    /// Stream ids below this time (Unix milliseconds on the server's clock) are past the
    /// retention; `None` while the server's time is unknown (then nothing counts as expired).
    /// Never this host's clock: one host whose clock runs ahead must not trim what others
    /// still retain.
    pub(crate) async fn cutoff_ms(&self) -> Option<i64> {
        let now = self.clock.now_ms(&self.client).await?;
        let ttl = i64::try_from(self.config.event_ttl.as_millis()).unwrap_or(i64::MAX);
        Some(now.saturating_sub(ttl))
    }

    /// The `MINID` that trims a stream to the retention (`0-0`, trimming nothing, while the
    /// server's time is unknown).
    pub(crate) async fn retention_minid(&self) -> String {
        entry::id_at(self.cutoff_ms().await.unwrap_or(0))
    }

    /// This host's wall clock (for dead letters' times).
    pub(crate) fn local_now(&self) -> OffsetDateTime {
        let offset = self.local_clock_offset_ms.load(Ordering::Relaxed);
        OffsetDateTime::now_utc() + time::Duration::milliseconds(offset)
    }

    /// Waits until `REDIS_WAIT_REPLICAS` replicas of each master that holds one of `keys`
    /// have what this bus wrote there (`WAIT`, on the connection that wrote it); at once when
    /// it is 0.
    ///
    /// # Errors
    /// A transient [`Error::Backend`] when fewer replicas confirm within
    /// `REDIS_WAIT_TIMEOUT_MS`: what was written stays written.
    pub(crate) async fn wait_replicas<K: AsRef<str>>(&self, keys: &[K]) -> Result<(), Error> {
        match self
            .wait_replicas_each(keys)
            .await
            .into_iter()
            .flatten()
            .next()
        {
            Some(failure) => Err(failure),
            None => Ok(()),
        }
    }

    /// [`wait_replicas`](Self::wait_replicas) for each key: the error of the master that
    /// holds it, if that master's replicas did not confirm (the masters are waited for side
    /// by side).
    pub(crate) async fn wait_replicas_each<K: AsRef<str>>(&self, keys: &[K]) -> Vec<Option<Error>> {
        let wanted = i64::from(self.redis.wait_replicas);
        if wanted == 0 {
            return keys.iter().map(|_| None).collect();
        }
        let on: Vec<_> = keys
            .iter()
            .map(|key| client::node_of(&self.client, key.as_ref()))
            .collect();
        let mut nodes = Vec::new();
        for node in &on {
            if !nodes.contains(node) {
                nodes.push(node.clone());
            }
        }
        let outcomes =
            futures::future::join_all(nodes.iter().map(|node| self.wait_on(node, wanted))).await;
        let failures: Vec<_> = nodes.iter().zip(outcomes).collect();
        on.iter()
            .map(|node| {
                let (_, outcome) = failures.iter().find(|(n, _)| *n == node)?;
                outcome
                    .as_ref()
                    .err()
                    .map(|e| Error::backend("redis", e.clone(), true))
            })
            .collect()
    }

    /// `WAIT` on one master (`None`: the one server): `Err` says how many confirmed.
    async fn wait_on(
        &self,
        node: &Option<fred::prelude::Server>,
        wanted: i64,
    ) -> Result<(), String> {
        let timeout_ms = self.redis.wait_timeout.as_millis() as i64;
        let confirmed: i64 = self
            .client
            .with_options(&client::on_node(node))
            .custom(fred::cmd!("WAIT"), vec![wanted, timeout_ms])
            .await
            .map_err(|e| format!("WAIT: {}", e.details()))?;
        if confirmed >= wanted {
            return Ok(());
        }
        Err(format!(
            "written, but only {confirmed} of the {wanted} replicas (REDIS_WAIT_REPLICAS) confirmed it within {timeout_ms} ms{}: it may be lost if the master fails now",
            node.as_ref()
                .map(|n| format!(" on master {n}"))
                .unwrap_or_default()
        ))
    }

    pub(crate) fn group(&self, handler: &str) -> String {
        format!("{}.{handler}", self.config.consumer_group)
    }

    /// The consumer name of a subscription of `handler` that ended here, if any.
    ///
    /// A subscription that stops leaves what it read and did not finish pending under its
    /// consumer name (no command gives an entry back to the group). The next subscription of
    /// the handler in this process takes that name over and takes those entries back before
    /// anything newer, so an unsubscribe and a subscribe keep each key's order; otherwise they
    /// would wait for a claim, after newer events of their keys.
    pub(crate) fn reuse_consumer(&self, handler: &str) -> Option<String> {
        self.handlers.lock().get_mut(handler)?.extra.retired.pop()
    }
}
