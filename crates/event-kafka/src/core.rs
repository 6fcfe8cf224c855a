//! What every part of the Kafka backend shares: [`Inner`] (the configuration, the data and
//! control planes, the topics, the consumer loops, the handlers subscribed here) and
//! [`LocalHandler`]. The bottom of the crate's bus: it imports none of the modules that use
//! it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use event_core::dispatch::{ConsumerHost, ConsumerSet, HandlerCounters};
use event_core::{Config, Error, JsonCodec};
use rskafka::record::Record;

use crate::config::KafkaConfig;
use crate::control::ControlClient;
use crate::data::DataPlane;
use crate::topics::Topics;

/// A produce request carries records of about this many bytes at most. Brokers refuse batches
/// over `message.max.bytes` (1 MiB by default), but the real limit is lower: rskafka 0.6 sets no
/// `TCP_NODELAY` and writes a request's length and body in two writes, so a request larger than
/// one segment (about 64 KiB on loopback) waits for the broker's delayed ACK, about 40 ms.
/// Requests under 48 KiB never do: batches of 1,000 went from 21,000 to 224,000 events/s.
const PRODUCE_CHUNK_BYTES: usize = 48 * 1024;

/// A handler subscribed through this bus instance.
#[derive(Clone)]
pub(crate) struct LocalHandler {
    pub(crate) group: String,
    pub(crate) event_types: Vec<String>,
    pub(crate) counters: Arc<HandlerCounters>,
    pub(crate) members: Vec<u64>,
}

pub(crate) struct Inner {
    pub(crate) config: Config,
    /// The Kafka settings.
    pub(crate) kafka: KafkaConfig,
    pub(crate) codec: JsonCodec,
    pub(crate) plane: Arc<DataPlane>,
    pub(crate) control: ControlClient,
    pub(crate) topics: Topics,
    pub(crate) closed: AtomicBool,
    pub(crate) consumers: ConsumerSet,
    pub(crate) handlers: Mutex<HashMap<String, LocalHandler>>,
    /// One subscribe at a time: joining or starting a group is not split by another.
    pub(crate) subscribing: tokio::sync::Mutex<()>,
}

impl Inner {
    pub(crate) fn handlers(&self) -> MutexGuard<'_, HashMap<String, LocalHandler>> {
        self.handlers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
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

    /// Registers a local member of a handler.
    pub(crate) fn add_member(
        &self,
        handler: &str,
        group: &str,
        event_types: &[String],
        member: u64,
    ) -> Arc<HandlerCounters> {
        let mut handlers = self.handlers();
        let local = handlers
            .entry(handler.to_string())
            .or_insert_with(|| LocalHandler {
                group: group.to_string(),
                event_types: event_types.to_vec(),
                counters: Arc::new(HandlerCounters::default()),
                members: Vec::new(),
            });
        local.event_types = event_types.to_vec();
        local.members.push(member);
        local.counters.reset_stall_clock();
        local.counters.clone()
    }

    /// Forgets a local member once it has stopped.
    pub(crate) fn remove_member(&self, handler: &str, member: u64) {
        if let Some(local) = self.handlers().get_mut(handler) {
            local.members.retain(|m| *m != member);
        }
    }

    /// Appends records to one partition, in chunks a broker accepts; the offset of each.
    pub(crate) async fn produce(
        &self,
        topic: &str,
        partition: i32,
        records: Vec<Record>,
    ) -> Result<Vec<i64>, Error> {
        let mut offsets = Vec::with_capacity(records.len());
        let mut chunk = Vec::new();
        let mut bytes = 0;
        for r in records {
            let size = r.approximate_size();
            if !chunk.is_empty() && bytes + size > PRODUCE_CHUNK_BYTES {
                offsets.extend(
                    self.plane
                        .produce(topic, partition, std::mem::take(&mut chunk))
                        .await?,
                );
                bytes = 0;
            }
            bytes += size;
            chunk.push(r);
        }
        if !chunk.is_empty() {
            offsets.extend(self.plane.produce(topic, partition, chunk).await?);
        }
        Ok(offsets)
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
