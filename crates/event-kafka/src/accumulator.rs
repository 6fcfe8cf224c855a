//! Produce requests: records cut into chunks a broker takes quickly ([`chunked`]), and single
//! publishes to one partition gathered: while a produce request to a partition is under
//! way, the publishes that arrive for it wait, and go together in the next request, in the
//! order they arrived. A lone publish goes at once (no linger); concurrent ones share round
//! trips, as the Java producer's accumulator does with `linger.ms=0`.
//!
//! Each partition has at most one request under way, sent by a task of its own, so a caller
//! that stops waiting (its future dropped) never strands the publishes gathered with its own.
//! Each caller still gets its own result.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use event_core::Error;
use event_core::backend::SharedFailure;
use rskafka::record::Record;
use tokio::sync::oneshot;

use crate::data::DataPlane;

/// A produce request carries records of about this many bytes (uncompressed) at most: half of
/// what brokers take by default (`message.max.bytes`, 1 MiB, counted after compression), so a
/// topic whose limit was lowered somewhat still takes it. Before rskafka's sockets had
/// `TCP_NODELAY` (patches/rskafka), requests over one loopback segment waited for the broker's
/// delayed ACK and the bus kept them under 48 KiB; with it, 512 KiB requests made batches of
/// 1,000 about a fifth faster than 48 KiB ones (258,000-276,000 against 213,000-215,000 events/s).
const PRODUCE_CHUNK_BYTES: usize = 512 * 1024;

/// A publish waiting for its request, and where its result goes.
type Waiting = (Record, oneshot::Sender<Result<(), Error>>);

/// What waits for one partition.
#[derive(Default)]
struct Queue {
    waiting: Vec<Waiting>,
    /// A task is sending this partition's requests.
    sending: bool,
}

/// A partition's queue, shared by its publishers and its sending task.
type SharedQueue = Arc<Mutex<Queue>>;

/// The single publishes waiting, per partition (topic and partition number).
#[derive(Default)]
pub(crate) struct Accumulator {
    queues: Mutex<HashMap<(String, i32), SharedQueue>>,
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Accumulator {
    fn queue(&self, topic: &str, partition: i32) -> SharedQueue {
        locked(&self.queues)
            .entry((topic.to_owned(), partition))
            .or_default()
            .clone()
    }

    /// Appends `record` to `partition` of `topic` through `plane`, in a request of its own or
    /// with the publishes to the same partition that arrived while the previous request was
    /// under way.
    pub(crate) async fn publish(
        &self,
        plane: &Arc<DataPlane>,
        topic: &str,
        partition: i32,
        record: Record,
    ) -> Result<(), Error> {
        let queue = self.queue(topic, partition);
        let (sent, result) = oneshot::channel();
        let start = {
            let mut queue = locked(&queue);
            queue.waiting.push((record, sent));
            !std::mem::replace(&mut queue.sending, true)
        };
        if start {
            tokio::spawn(send(plane.clone(), topic.to_owned(), partition, queue));
        }
        result.await.unwrap_or_else(|_| {
            Err(Error::backend(
                "kafka",
                format!("the request producing to {topic} partition {partition} ended before it answered (the runtime is shutting down)"),
                true,
            ))
        })
    }
}

/// A partition's sending task. If the task ends without finishing (a panic, or its runtime
/// dropping it), the publishes still waiting fail (their senders dropped) instead of waiting
/// forever, and the partition's next publish starts a new task.
struct Sending {
    queue: SharedQueue,
    finished: bool,
}

impl Drop for Sending {
    fn drop(&mut self) {
        if !self.finished {
            let mut queue = locked(&self.queue);
            queue.sending = false;
            queue.waiting.clear();
        }
    }
}

/// Sends the partition's waiting publishes, one request at a time, until none wait.
async fn send(plane: Arc<DataPlane>, topic: String, partition: i32, queue: SharedQueue) {
    let mut sending = Sending {
        queue,
        finished: false,
    };
    loop {
        let batch = {
            let mut queue = locked(&sending.queue);
            if queue.waiting.is_empty() {
                // Under the lock: a publish arriving after this starts a task of its own.
                queue.sending = false;
                drop(queue);
                sending.finished = true;
                return;
            }
            std::mem::take(&mut queue.waiting)
        };
        send_chunks(&plane, &topic, partition, batch).await;
    }
}

/// Produces the gathered publishes in chunks a broker accepts, one after the other, and tells
/// each caller its chunk's result. After a chunk fails with a transient error the later ones
/// are not sent (their callers get the same error): a caller that retries must not find a
/// later event of its key written before its own. A permanent failure (the broker refusing
/// that chunk's records) fails that chunk alone.
async fn send_chunks(plane: &DataPlane, topic: &str, partition: i32, gathered: Vec<Waiting>) {
    let mut failed: Option<SharedFailure> = None;
    for chunk in chunked(gathered, |(record, _)| record.approximate_size()) {
        let (records, waiters): (Vec<Record>, Vec<_>) = chunk.into_iter().unzip();
        let outcome = match &failed {
            Some(failure) => Err(failure.to_error()),
            None => plane.produce(topic, partition, records).await.map(drop),
        };
        match outcome {
            Ok(()) => {
                for waiter in waiters {
                    let _ = waiter.send(Ok(()));
                }
            }
            Err(e) => {
                let transient = e.is_transient();
                let failure = SharedFailure::new("kafka", e);
                for waiter in waiters {
                    let _ = waiter.send(Err(failure.to_error()));
                }
                if transient {
                    failed = Some(failure);
                }
            }
        }
    }
}

/// Splits `items` in order into the chunks of one produce request each: under
/// [`PRODUCE_CHUNK_BYTES`] by `size`, a larger item alone.
pub(crate) fn chunked<T>(items: Vec<T>, size: impl Fn(&T) -> usize) -> Vec<Vec<T>> {
    let mut chunks = Vec::new();
    let mut chunk = Vec::new();
    let mut bytes = 0;
    for item in items {
        let item_bytes = size(&item);
        if !chunk.is_empty() && bytes + item_bytes > PRODUCE_CHUNK_BYTES {
            chunks.push(std::mem::take(&mut chunk));
            bytes = 0;
        }
        bytes += item_bytes;
        chunk.push(item);
    }
    if !chunk.is_empty() {
        chunks.push(chunk);
    }
    chunks
}
