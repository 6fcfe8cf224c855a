//! A cache of rskafka `PartitionClient`s, one per (topic, partition), each holding its own
//! connection to the partition's leader.
//!
//! Why several caches: a Kafka broker answers the requests of one connection in order, so a
//! fetch that long-polls for `max_wait` holds back every request sent after it on the same
//! connection. Produces therefore never share a connection with fetches, and each independent
//! reader (a consumer loop) has connections of its own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rskafka::client::Client;
use rskafka::client::error::Error as ClientError;
use rskafka::client::partition::{PartitionClient, UnknownTopicHandling};

type Key = (String, i32);

/// Partition clients built on first use and dropped when an error says they are stale.
#[derive(Debug, Default)]
pub(crate) struct PartitionClients {
    clients: Mutex<HashMap<Key, Arc<PartitionClient>>>,
}

impl PartitionClients {
    /// The cached client of a partition, or a new one connected to its leader.
    pub(crate) async fn get(
        &self,
        client: &Client,
        topic: &str,
        partition: i32,
    ) -> Result<Arc<PartitionClient>, ClientError> {
        let key = (topic.to_owned(), partition);
        if let Some(cached) = self.lock().get(&key) {
            return Ok(Arc::clone(cached));
        }
        // Built outside the lock; when two calls race, the first one cached wins and the
        // other's connection is dropped.
        let fresh = Arc::new(
            client
                // `Retry`: right after a topic is created, brokers may not know it for a
                // moment; the backoff deadline bounds the wait for one that does not exist.
                .partition_client(topic, partition, UnknownTopicHandling::Retry)
                .await?,
        );
        Ok(Arc::clone(self.lock().entry(key).or_insert(fresh)))
    }

    /// Drops the cached client of a partition if it is still `used` (not one another call
    /// already rebuilt); with no client named, whatever is cached.
    pub(crate) fn forget(&self, topic: &str, partition: i32, used: Option<&Arc<PartitionClient>>) {
        let key = (topic.to_owned(), partition);
        let mut clients = self.lock();
        let stale = match (clients.get(&key), used) {
            (Some(cached), Some(used)) => Arc::ptr_eq(cached, used),
            (Some(_), None) => true,
            (None, _) => false,
        };
        if stale {
            tracing::debug!(topic, partition, "dropping the Kafka partition client");
            clients.remove(&key);
        }
    }

    /// How many partitions have a client.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Key, Arc<PartitionClient>>> {
        // Every change is a single map operation, so the map is whole even after a panic.
        self.clients.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
