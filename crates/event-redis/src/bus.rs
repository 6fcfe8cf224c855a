//! [`RedisBus`]: the [`EventBus`] on Redis Streams.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use async_trait::async_trait;
use event_core::backend::{BatchResults, Lifecycle, LocalHandlers};
use event_core::telemetry;
use event_core::{
    AggregateAppend, BusStats, Capabilities, Config, DeadLetter, DeadLetterSelection,
    EnvSettings as _, Error, Event, EventBus, EventHandler, EventId, EventStream, Health,
    JsonCodec, RedriveReport, ReplayQuery, Subscription, SubscriptionSpec, Unpublished,
};
use fred::prelude::{ClientLike, StreamsInterface};
use fred::types::Value;

use crate::clock::ServerClock;
use crate::config::RedisConfig;
use crate::core::Inner;
use crate::direct::{Direct, Outcome};
use crate::keys::Keys;
use crate::{admin, client, consumer, entry, publish, replay, sourcing, stats};

/// The event bus on Redis Streams: a stream per event type, a consumer group per handler,
/// dead-letter streams, replay by time, event sourcing with optimistic concurrency.
///
/// ```no_run
/// use std::sync::Arc;
/// use event_core::{handler_fn, Config, Event, EventBus, EventType, HandlerError, SubscriptionSpec};
/// use event_redis::{RedisBus, RedisConfig};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let redis = RedisConfig::builder().url("redis://localhost:6379/0").build()?;
/// let bus = RedisBus::connect(redis, Config::from_env()?).await?; // EVENT_TTL_SECONDS, ...
/// bus.subscribe(
///     SubscriptionSpec::new("audit", [EventType::USER_REGISTERED]),
///     handler_fn("audit", |event| async move {
///         println!("{} {}", event.event_type, event.id);
///         Ok::<(), HandlerError>(())
///     }),
/// )
/// .await?;
/// bus.publish(Event::builder(EventType::USER_REGISTERED, "user_service").build()?).await?;
/// bus.shutdown().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisBus {
    pub(crate) inner: Arc<Inner>,
}

const CAPABILITIES: Capabilities = Capabilities {
    backend: "redis",
    persistent: true,
    shared_groups: true,
    per_key_order: true,
    replay_by_time: true,
    event_sourcing: true,
    retention: true,
};

impl RedisBus {
    /// Connects to the server of `redis` and checks it answers; `config` holds the settings
    /// every backend shares. A `redis://` URL that names a node of a Redis Cluster connects to
    /// the cluster, as `redis-cluster://` would (and [`redis_config`](Self::redis_config)
    /// then shows that URL).
    ///
    /// # Errors
    /// [`Error::Config`] for a bad configuration or URL, [`Error::Backend`] when the server
    /// cannot be reached (the message names the URL without its password).
    pub async fn connect(redis: RedisConfig, config: Config) -> Result<Self, Error> {
        config.validate()?;
        redis.validate()?;
        let mut redis = redis;
        let mut client = client::build(&redis)?;
        client::connect(&client, &redis).await?;
        if !redis.is_cluster() && client::is_cluster_node(&client).await {
            // A `redis://` URL naming one node of a cluster: that node alone answers MOVED
            // for most keys, so the bus talks to the whole cluster instead.
            let _ = client.quit().await;
            redis.url = client::as_cluster_url(&redis.url);
            tracing::info!(
                url = %event_core::redact_url(&redis.url),
                "REDIS_URL names a node of a Redis Cluster: connecting to the cluster"
            );
            client = client::build(&redis)?;
            client::connect(&client, &redis).await?;
        }
        // `WAIT` counts the writes of its own connection: with it, every write goes through
        // the client's.
        let direct = if redis.wait_replicas == 0 {
            Direct::for_client(&client, &redis.key_prefix)
        } else {
            None
        };
        let bus = Self {
            inner: Arc::new(Inner {
                codec: JsonCodec::from_config(&config),
                keys: Keys::new(&redis.key_prefix, redis.is_cluster()),
                redis,
                client,
                direct,
                lifecycle: Arc::new(Lifecycle::new(config.shutdown_timeout)),
                handlers: LocalHandlers::new("redis"),
                clock: ServerClock::default(),
                local_clock_offset_ms: AtomicI64::new(0),
                config,
            }),
        };
        if bus.inner.keys.is_cluster() {
            sourcing::start_recovery(&bus.inner);
        }
        Ok(bus)
    }

    /// The shared settings in use.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The Redis settings in use.
    pub fn redis_config(&self) -> &RedisConfig {
        &self.inner.redis
    }

    /// Makes this bus believe its host's wall clock is `offset_ms` ahead (negative: behind),
    /// as a host with a wrong clock would. For tests of clock skew only.
    #[doc(hidden)]
    pub fn fake_local_clock_offset(&self, offset_ms: i64) {
        self.inner
            .local_clock_offset_ms
            .store(offset_ms, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for RedisBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let url = event_core::redact_url(&self.inner.redis.url);
        self.inner
            .lifecycle
            .fmt_bus(f, "RedisBus", &[("url", &url)])
    }
}

impl RedisBus {
    /// `publish`, unrecorded.
    async fn add_one(&self, event: Event) -> Result<EventId, Error> {
        self.inner.lifecycle.check_open("publishes")?;
        let json = self.inner.codec.encode(&event)?;
        let key = self.inner.keys.stream(&event.event_type);
        let minid = self.inner.retention_minid().await;
        let fields = entry::fields(&event, json);
        if let Some(direct) = &self.inner.direct
            && let Outcome::Added = direct.xadd(key.as_str(), &minid, &fields).await?
        {
            return Ok(event.id);
        }
        let _: Value = self
            .inner
            .client
            .xadd(key.as_str(), false, ("MINID", "~", minid), "*", fields)
            .await
            .map_err(|e| client::error("XADD", e))?;
        self.inner.wait_replicas(&[key]).await?;
        Ok(event.id)
    }

    /// `publish_batch`, unrecorded.
    async fn add_batch(&self, events: &[Event]) -> Vec<Result<EventId, Error>> {
        if let Err(refused) = self.inner.lifecycle.check_open_batch(events.len()) {
            return refused;
        }
        let mut batch = publish::Batch::new(&self.inner.keys, self.inner.retention_minid().await);
        let (mut results, encoded) = BatchResults::prepare(events, |e| self.inner.codec.encode(e));
        for (slot, json) in encoded {
            batch.push(slot, &events[slot], json);
        }
        batch.send(&self.inner, &mut results).await;
        results.into_results()
    }
}

#[async_trait]
impl EventBus for RedisBus {
    fn capabilities(&self) -> Capabilities {
        CAPABILITIES
    }

    async fn publish(&self, event: Event) -> Result<EventId, Error> {
        telemetry::publish_one("redis", event, |e| self.add_one(e)).await
    }

    async fn publish_batch(&self, events: Vec<Event>) -> Vec<Result<EventId, Error>> {
        telemetry::publish_batch(
            "redis",
            events,
            |e| async move { self.add_batch(&e).await },
            |e| e,
        )
        .await
    }

    async fn publish_batch_returning(
        &self,
        events: Vec<Event>,
    ) -> Vec<Result<EventId, Unpublished>> {
        let publish = |events: Vec<Event>| async move {
            let results = self.add_batch(&events).await;
            (events, results)
        };
        telemetry::publish_batch_returning("redis", events, publish).await
    }

    async fn subscribe(
        &self,
        spec: SubscriptionSpec,
        handler: Arc<dyn EventHandler>,
    ) -> Result<Subscription, Error> {
        self.inner.lifecycle.check_subscription(&spec)?;
        consumer::subscribe(&self.inner, spec, handler).await
    }

    async fn replay(&self, query: ReplayQuery) -> Result<EventStream, Error> {
        replay::replay(&self.inner, query).await
    }

    async fn stats(&self) -> Result<BusStats, Error> {
        stats::stats(&self.inner).await
    }

    async fn health(&self) -> Health {
        stats::health(&self.inner).await
    }

    async fn dead_letters(&self, handler: &str, limit: usize) -> Result<Vec<DeadLetter>, Error> {
        admin::dead_letters(&self.inner, handler, limit).await
    }

    async fn redrive_dead_letters(
        &self,
        handler: &str,
        selection: DeadLetterSelection,
    ) -> Result<RedriveReport, Error> {
        admin::redrive(&self.inner, handler, &selection).await
    }

    async fn purge_dead_letters(
        &self,
        handler: &str,
        selection: DeadLetterSelection,
    ) -> Result<u64, Error> {
        admin::purge(&self.inner, handler, &selection).await
    }

    async fn append_to_aggregate(&self, append: AggregateAppend) -> Result<u64, Error> {
        self.inner.lifecycle.check_open("publishes")?;
        sourcing::append(&self.inner, append).await
    }

    async fn load_aggregate(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Result<Vec<Event>, Error> {
        sourcing::load(&self.inner, aggregate_type, aggregate_id).await
    }

    async fn shutdown(&self) -> Result<(), Error> {
        // Events not yet delivered stay in the streams for the next start: consumers stop
        // taking events at once and only finish what they hold. A second call waits too.
        if self.inner.lifecycle.shutdown().await {
            if let Some(direct) = &self.inner.direct {
                direct.close().await;
            }
            self.inner
                .client
                .quit()
                .await
                .map_err(|e| client::error("closing the connection", e))?;
        }
        Ok(())
    }
}
