//! Throughput: the bus with counting handlers, and the raw `tokio::sync::mpsc` reference.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use event_core::{Event, EventBus, EventHandler, HandlerError};
use tokio::sync::{Semaphore, mpsc};

use crate::{Setup, build_events};

/// Counts events and adds a permit to `done` when it has seen `target` of them. Implements
/// [`EventHandler`] directly: `handler_fn` clones every event, which would be measured too.
struct CountingHandler {
    name: String,
    seen: AtomicU64,
    target: u64,
    done: Arc<Semaphore>,
}

#[async_trait]
impl EventHandler for CountingHandler {
    fn name(&self) -> &str {
        &self.name
    }

    async fn handle(&self, _event: &Event) -> Result<(), HandlerError> {
        if self.seen.fetch_add(1, Ordering::Relaxed) + 1 == self.target {
            self.done.add_permits(1);
        }
        Ok(())
    }
}

/// What one throughput run of the bus measured.
pub(crate) struct BusRun {
    /// From the first publish to the last event handled by every handler.
    pub(crate) total: Duration,
    /// From the first publish to the return of the last.
    pub(crate) publishing: Duration,
    /// Events handled (summed over handlers) when the last publish returned.
    pub(crate) handled_while_publishing: u64,
}

/// One throughput run: `handlers` subscriptions each count all the events.
pub(crate) async fn bus_throughput(setup: &Setup, handlers: usize) -> BusRun {
    let bus = setup.bus();
    let done = Arc::new(Semaphore::new(0));
    let mut counters = Vec::with_capacity(handlers);
    for i in 0..handlers {
        let handler = Arc::new(CountingHandler {
            name: format!("counter-{i}"),
            seen: AtomicU64::new(0),
            target: setup.events as u64,
            done: done.clone(),
        });
        counters.push(handler.clone());
        bus.subscribe(setup.spec(&handler.name), handler)
            .await
            .expect("subscribe");
    }
    let chunks = build_events(setup.events, setup.chunk);

    let started = Instant::now();
    for chunk in chunks {
        for result in bus.publish_batch(chunk).await {
            result.expect("publish");
        }
    }
    let publishing = started.elapsed();
    let handled_while_publishing = counters
        .iter()
        .map(|c| c.seen.load(Ordering::Relaxed))
        .sum();
    let _all = done
        .acquire_many(handlers as u32)
        .await
        .expect("never closed");
    let total = started.elapsed();

    bus.shutdown().await.expect("shutdown");
    BusRun {
        total,
        publishing,
        handled_while_publishing,
    }
}

/// The raw reference: the same number of `Arc<Event>`, sent in the same chunks through an
/// unbounded `tokio::sync::mpsc` channel (the bus's log is unbounded too) to one task. The
/// events stay alive until the clock stops, as they do in the bus's log.
pub(crate) async fn channel_throughput(setup: &Setup) -> Duration {
    let chunks: Vec<Vec<Arc<Event>>> = build_events(setup.events, setup.chunk)
        .into_iter()
        .map(|c| c.into_iter().map(Arc::new).collect())
        .collect();
    let (tx, mut rx) = mpsc::unbounded_channel::<Arc<Event>>();
    let target = setup.events;
    let consumer = tokio::spawn(async move {
        let mut seen = 0;
        while let Some(event) = rx.recv().await {
            std::hint::black_box(&event);
            seen += 1;
            if seen == target {
                break;
            }
        }
    });
    let started = Instant::now();
    for chunk in &chunks {
        for event in chunk {
            tx.send(event.clone())
                .expect("the consumer runs until it has all events");
        }
    }
    consumer.await.expect("consumer");
    let elapsed = started.elapsed();
    drop(chunks);
    elapsed
}
