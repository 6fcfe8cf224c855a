//! What every part of the Redis backend shares: [`Inner`] (the configuration, the client, the
//! key names, the consumer loops, the handlers subscribed here, the server's clock) and
//! [`LocalHandler`]. The bottom of the crate: it imports none of the modules that use it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use event_core::dispatch::{ConsumerHost, ConsumerSet, HandlerCounters};
use event_core::{Config, Error, JsonCodec};
use fred::prelude::Client;
use time::OffsetDateTime;

use crate::clock::ServerClock;
use crate::config::RedisConfig;
use crate::counters::RedisCounters;
use crate::entry;
use crate::keys::Keys;

/// A handler subscribed through this bus instance.
#[derive(Clone)]
pub(crate) struct LocalHandler {
    pub(crate) group: String,
    pub(crate) streams: Vec<String>,
    pub(crate) counters: Arc<HandlerCounters>,
    pub(crate) redis_counters: Arc<RedisCounters>,
    pub(crate) members: Vec<u64>,
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
    pub(crate) keys: Keys,
    pub(crate) closed: AtomicBool,
    pub(crate) consumers: ConsumerSet,
    pub(crate) handlers: Mutex<HashMap<String, LocalHandler>>,
    /// The server's clock: the reference of every retention cutoff.
    pub(crate) clock: ServerClock,
    /// Added to this host's wall clock, by tests only: a host whose clock is wrong.
    pub(crate) local_clock_offset_ms: AtomicI64,
}

impl Inner {
    /// The handlers subscribed through this instance.
    pub(crate) fn handlers(&self) -> MutexGuard<'_, HashMap<String, LocalHandler>> {
        self.handlers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

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

    pub(crate) fn group(&self, handler: &str) -> String {
        format!("{}.{handler}", self.config.consumer_group)
    }

    pub(crate) fn check_open(&self, operation: &'static str) -> Result<(), Error> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::ShutDown { operation });
        }
        Ok(())
    }
}

impl ConsumerHost for Inner {
    fn consumers(&self) -> &ConsumerSet {
        &self.consumers
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn shutdown_timeout(&self) -> std::time::Duration {
        self.config.shutdown_timeout
    }
}

impl Inner {
    /// Registers a local member of a handler; its counters.
    pub(crate) fn add_member(
        &self,
        handler: &str,
        group: &str,
        streams: &[String],
        member: u64,
    ) -> (Arc<HandlerCounters>, Arc<RedisCounters>) {
        let mut handlers = self.handlers();
        let local = handlers
            .entry(handler.to_string())
            .or_insert_with(|| LocalHandler {
                group: group.to_string(),
                streams: streams.to_vec(),
                counters: Arc::new(HandlerCounters::default()),
                redis_counters: Arc::new(RedisCounters::default()),
                members: Vec::new(),
                retired: Vec::new(),
            });
        local.streams = streams.to_vec();
        local.members.push(member);
        local.counters.reset_stall_clock();
        (local.counters.clone(), local.redis_counters.clone())
    }

    /// Forgets a local member once its loop has ended for good; its consumer name goes to the
    /// next subscription of the handler here.
    pub(crate) fn remove_member(&self, handler: &str, member: u64, consumer: String) {
        if let Some(local) = self.handlers().get_mut(handler) {
            local.members.retain(|m| *m != member);
            local.retired.push(consumer);
        }
    }

    /// The consumer name of a subscription of `handler` that ended here, if any.
    ///
    /// A subscription that stops leaves what it read and did not finish pending under its
    /// consumer name (no command gives an entry back to the group). The next subscription of
    /// the handler in this process takes that name over and takes those entries back before
    /// anything newer, so an unsubscribe and a subscribe keep each key's order; otherwise they
    /// would wait for a claim, after newer events of their keys.
    pub(crate) fn reuse_consumer(&self, handler: &str) -> Option<String> {
        self.handlers().get_mut(handler)?.retired.pop()
    }
}
