//! [`MemoryBus`]: the embedded in-memory backend.

mod clock;
mod consumer;
mod store;

use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use futures::StreamExt;
use tokio::sync::Notify;

use crate::backend::{self, Lifecycle, NOT_AN_ENVELOPE};
use crate::codec::JsonCodec;
use crate::dispatch::{DeliverySink, DispatchSettings, Dispatcher, LanesEnded, Supervisor};
use crate::telemetry;
use crate::{
    AggregateAppend, BusStats, Capabilities, Config, ConsumerHealth, DeadLetter,
    DeadLetterSelection, Error, Event, EventBus, EventHandler, EventId, EventStream, Health,
    RedriveReport, ReplayQuery, Subscription, SubscriptionSpec, Unpublished,
};
use clock::StoreClock;
use consumer::MemorySink;
use store::{Store, Token};

/// The embedded event bus: zero set-up, in-process, with every semantic of the Redis and Kafka
/// backends except persistence across restarts.
///
/// Events are kept as `Arc<Event>` in a log per type, never serialized (only measured, to
/// enforce `EVENT_MAX_PAYLOAD_BYTES` the same way the other backends do). Retention trims
/// events older than `EVENT_TTL_SECONDS` by the time they were stored, on tokio's clock: a
/// test that pauses and advances it (the `event-test` harness) moves retention too.
///
/// ```
/// use std::sync::Arc;
/// use event_core::{handler_fn, Config, Event, EventBus, EventType, HandlerError, MemoryBus, SubscriptionSpec};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), event_core::Error> {
/// let bus = MemoryBus::new(Config::default())?;
/// let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
/// let handler = handler_fn("printer", move |event| {
///     let tx = tx.clone();
///     async move {
///         tx.send(event.id).ok();
///         Ok::<(), HandlerError>(())
///     }
/// });
/// bus.subscribe(SubscriptionSpec::new("printer", [EventType::USER_REGISTERED]), handler).await?;
/// let id = bus
///     .publish(Event::builder(EventType::USER_REGISTERED, "user_service").field("user_id", "u-1").build()?)
///     .await?;
/// assert_eq!(rx.recv().await, Some(id));
/// bus.shutdown().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct MemoryBus {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    config: Config,
    codec: JsonCodec,
    /// Shutdown drains: nothing is kept after shutdown, so the loops deliver what is
    /// published first.
    lifecycle: Arc<Lifecycle>,
    store: Mutex<Store>,
    /// Retention's clock (tokio's, so a paused and advanced test clock moves it).
    clock: StoreClock,
}

impl Inner {
    /// Locks the store. A panic while holding the lock cannot leave it half-updated in a way
    /// that matters more than losing the bus, so a poisoned lock is used as is.
    fn store(&self) -> MutexGuard<'_, Store> {
        self.store
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Now, for retention, in Unix milliseconds.
    fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }
}

const CAPABILITIES: Capabilities = Capabilities {
    backend: "memory",
    persistent: false,
    shared_groups: false,
    per_key_order: true,
    replay_by_time: true,
    event_sourcing: true,
    retention: true,
};

impl MemoryBus {
    /// A bus with the given configuration (only the settings that apply to memory are used).
    ///
    /// # Errors
    /// [`Error::Config`] when the configuration is invalid.
    pub fn new(config: Config) -> Result<Self, Error> {
        config.validate()?;
        Ok(Self {
            inner: Arc::new(Inner {
                codec: JsonCodec::from_config(&config),
                store: Mutex::new(Store::new(config.event_ttl)),
                clock: StoreClock::start(),
                lifecycle: Arc::new(Lifecycle::draining(config.shutdown_timeout)),
                config,
            }),
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Stores events; a bus already shut down takes none and hands them back.
    fn append_or_return(&self, events: Vec<Event>) -> Result<Vec<EventId>, (Error, Vec<Event>)> {
        let mut wake = Vec::new();
        let ids = {
            let mut store = self.inner.store();
            if store.closed {
                let error = Error::ShutDown {
                    operation: "publishes",
                };
                return Err((error, events));
            }
            store.append(events, self.inner.now_ms(), &mut wake)
        };
        for notify in wake {
            notify.notify_one();
        }
        Ok(ids)
    }
}

impl Default for MemoryBus {
    fn default() -> Self {
        // The default configuration is valid by construction.
        Self::new(Config::default())
            .unwrap_or_else(|e| unreachable!("default config is valid: {e}"))
    }
}

impl std::fmt::Debug for MemoryBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.lifecycle.fmt_bus(f, "MemoryBus", &[])
    }
}

impl MemoryBus {
    /// `publish`, unrecorded.
    async fn append_one(&self, event: Event) -> Result<EventId, Error> {
        // Publishing never waits on I/O here; this yield point lets a publisher in a tight loop
        // give the consumers it wakes a turn on its worker thread.
        tokio::task::consume_budget().await;
        self.inner.lifecycle.check_open("publishes")?;
        self.inner.codec.check_size(&event)?;
        let ids = self
            .append_or_return(vec![event])
            .map_err(|(error, _)| error)?;
        Ok(ids[0])
    }

    /// `publish_batch_returning`, unrecorded.
    async fn append_batch(&self, events: Vec<Event>) -> Vec<Result<EventId, Unpublished>> {
        tokio::task::consume_budget().await;
        let mut results: Vec<Result<EventId, Unpublished>> = Vec::with_capacity(events.len());
        let mut accepted = Vec::with_capacity(events.len());
        for event in events {
            match self.inner.codec.check_size(&event) {
                Ok(()) => {
                    results.push(Ok(event.id));
                    accepted.push(event);
                }
                Err(error) => results.push(Err(Unpublished::new(event, error))),
            }
        }
        if let Err((_, events)) = self.append_or_return(accepted) {
            // The bus is shut down: nothing was written, and every event goes back.
            let mut events = events.into_iter();
            for r in results.iter_mut().filter(|r| r.is_ok()) {
                if let Some(event) = events.next() {
                    *r = Err(Unpublished::new(
                        event,
                        Error::ShutDown {
                            operation: "publishes",
                        },
                    ));
                }
            }
        }
        results
    }
}

#[async_trait]
impl EventBus for MemoryBus {
    fn capabilities(&self) -> Capabilities {
        CAPABILITIES
    }

    async fn publish(&self, event: Event) -> Result<EventId, Error> {
        telemetry::publish_one("memory", event, |e| self.append_one(e)).await
    }

    async fn publish_batch(&self, events: Vec<Event>) -> Vec<Result<EventId, Error>> {
        self.publish_batch_returning(events)
            .await
            .into_iter()
            .map(|r| r.map_err(|unpublished| unpublished.error))
            .collect()
    }

    async fn publish_batch_returning(
        &self,
        events: Vec<Event>,
    ) -> Vec<Result<EventId, Unpublished>> {
        telemetry::publish_batch("memory", events, |e| self.append_batch(e), |u| &u.error).await
    }

    async fn subscribe(
        &self,
        spec: SubscriptionSpec,
        handler: Arc<dyn EventHandler>,
    ) -> Result<Subscription, Error> {
        self.inner.lifecycle.check_subscription(&spec)?;
        let config = &self.inner.config;
        let group = format!("{}.{}", config.consumer_group, spec.handler);
        let member = self.inner.lifecycle.consumers().next_id();
        let notify = Arc::new(Notify::new());
        let counters = self.inner.store().join(
            &spec.handler,
            &group,
            &spec.event_types,
            spec.start,
            member,
            notify.clone(),
        )?;
        let concurrency = spec.concurrency.unwrap_or(config.handler_concurrency);
        let settings = DispatchSettings::new(group.clone(), concurrency, config.retry_policy());
        let sink: Arc<dyn DeliverySink<Token>> = Arc::new(MemorySink {
            inner: self.inner.clone(),
            handler: spec.handler.clone(),
        });
        let inner = self.inner.clone();
        let handler_name = spec.handler.clone();
        let supervisor = Supervisor::new(spec.handler.clone(), counters.clone());
        let mut last_lanes: Option<LanesEnded> = None;
        self.inner.lifecycle.consumers().spawn_supervised(
            member,
            supervisor,
            move |stop, failures| {
                let failed_lanes = last_lanes.take();
                let dispatcher = Dispatcher::start(
                    handler.clone(),
                    settings.clone(),
                    sink.clone(),
                    counters.clone(),
                );
                last_lanes = Some(dispatcher.lanes_ended());
                let (inner, handler_name, notify) =
                    (inner.clone(), handler_name.clone(), notify.clone());
                async move {
                    if failures > 0 {
                        // The failed attempt's lanes finish (and acknowledge) what they hold
                        // first. Only if one of them could not (it died, or outlived the grace)
                        // does the group go back to its acknowledged position: rewinding while
                        // they still ran would run their events twice.
                        let grace = stop.remaining(inner.config.shutdown_timeout);
                        let finished = match failed_lanes {
                            Some(lanes) => tokio::time::timeout(grace, lanes.wait())
                                .await
                                .unwrap_or(false),
                            None => false,
                        };
                        if !finished {
                            inner.store().rewind(&handler_name);
                        }
                    }
                    consumer::run(inner, handler_name, member, dispatcher, notify, stop).await
                }
            },
        );
        crate::dispatch::subscription(&self.inner.lifecycle, member, spec.handler, group).await
    }

    async fn replay(&self, query: ReplayQuery) -> Result<EventStream, Error> {
        backend::check_replay(&self.inner.config, &query)?;
        let events = {
            let mut store = self.inner.store();
            store.trim(self.inner.now_ms());
            store.replay(&query)
        };
        Ok(futures::stream::iter(events.into_iter().map(|e| Ok((*e).clone()))).boxed())
    }

    async fn stats(&self) -> Result<BusStats, Error> {
        let mut store = self.inner.store();
        store.trim(self.inner.now_ms());
        Ok(store.stats())
    }

    async fn health(&self) -> Health {
        if self.inner.lifecycle.is_closed() {
            return Health::shut_down("memory");
        }
        let consumers = {
            let mut store = self.inner.store();
            store.trim(self.inner.now_ms());
            store.consumers()
        };
        let stall = self.inner.config.stall_timeout;
        let consumers = consumers
            .into_iter()
            .map(|(handler, lag, depth, counters)| {
                let stalled = lag > 0 && counters.idle_for(stall);
                ConsumerHealth::new(handler, true, stalled, lag, depth)
                    .with_loop_failures(&counters)
            })
            .collect();
        Health::assess("memory", None, consumers, Vec::new(), false)
    }

    async fn dead_letters(&self, handler: &str, limit: usize) -> Result<Vec<DeadLetter>, Error> {
        self.inner.store().dead_letters(handler, limit)
    }

    async fn redrive_dead_letters(
        &self,
        handler: &str,
        selection: DeadLetterSelection,
    ) -> Result<RedriveReport, Error> {
        let (redriven, wake) = {
            let mut store = self.inner.store();
            let (redriven, unusable) = store.redrive(handler, &selection)?;
            let report = RedriveReport {
                redriven: redriven.len() as u64,
                skipped: unusable
                    .into_iter()
                    .map(|d| (d.id, NOT_AN_ENVELOPE.to_string()))
                    .collect(),
            };
            (report, store.listeners_of(handler))
        };
        for notify in wake {
            notify.notify_one();
        }
        Ok(redriven)
    }

    async fn purge_dead_letters(
        &self,
        handler: &str,
        selection: DeadLetterSelection,
    ) -> Result<u64, Error> {
        self.inner.store().purge(handler, &selection)
    }

    async fn append_to_aggregate(&self, append: AggregateAppend) -> Result<u64, Error> {
        backend::check_sourcing(&self.inner.config)?;
        self.inner.lifecycle.check_open("publishes")?;
        let key = (append.aggregate_type.clone(), append.aggregate_id.clone());
        let mut wake = Vec::new();
        let version = {
            let mut store = self.inner.store();
            if store.closed {
                return Err(Error::ShutDown {
                    operation: "publishes",
                });
            }
            let events = append.prepare(store.aggregate_version(&key))?;
            for event in &events {
                self.inner.codec.check_size(event)?;
            }
            store.record_aggregate(key.clone(), &events);
            store.append(events, self.inner.now_ms(), &mut wake);
            store.aggregate_version(&key)
        };
        for notify in wake {
            notify.notify_one();
        }
        Ok(version)
    }

    async fn load_aggregate(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Result<Vec<Event>, Error> {
        backend::check_sourcing(&self.inner.config)?;
        Ok(self
            .inner
            .store()
            .load_aggregate(&(aggregate_type.to_string(), aggregate_id.to_string())))
    }

    async fn shutdown(&self) -> Result<(), Error> {
        self.inner.lifecycle.close();
        self.inner.store().closed = true;
        self.inner.lifecycle.stop_consumers().await;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
