//! Load for the fault tests of clusters: publishers that run while a node is killed or
//! restarted, counting what succeeded and what failed, and handlers that record what they
//! handled.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::ensure;
use event_core::{Event, EventBus, EventHandler, EventId, EventType, HandlerError, handler_fn};

/// Publishers that run until told to stop, counting what succeeded, what failed and the
/// longest call.
pub struct Load {
    running: Arc<AtomicBool>,
    published: Arc<Mutex<Vec<EventId>>>,
    failed: Arc<AtomicU64>,
    /// The first few distinct errors, for the report.
    errors: Arc<Mutex<Vec<String>>>,
    longest_ms: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// How many distinct errors a [`Load`] keeps.
const ERRORS_KEPT: usize = 5;

/// What a [`Load`] did, once stopped.
#[derive(Debug)]
pub struct LoadReport {
    /// The events whose publish returned `Ok`.
    pub published: HashSet<EventId>,
    /// Events whose publish returned an error.
    pub failed: u64,
    /// The longest publish call.
    pub longest: Duration,
    /// The first few distinct errors publishes returned.
    pub errors: Vec<String>,
}

impl Load {
    /// Four publishers over `types`: two publish one event at a time, two in batches of 20,
    /// each pausing a little between calls (a few thousand events a second in all).
    pub fn start(bus: &Arc<dyn EventBus>, types: &[EventType]) -> Self {
        let load = Load {
            running: Arc::new(AtomicBool::new(true)),
            published: Arc::new(Mutex::new(Vec::new())),
            failed: Arc::new(AtomicU64::new(0)),
            errors: Arc::new(Mutex::new(Vec::new())),
            longest_ms: Arc::new(AtomicU64::new(0)),
            tasks: Vec::new(),
        };
        let tasks = (0..4)
            .map(|n| {
                let (bus, types) = (bus.clone(), types.to_vec());
                let (running, published) = (load.running.clone(), load.published.clone());
                let (failed, longest_ms) = (load.failed.clone(), load.longest_ms.clone());
                let errors = load.errors.clone();
                tokio::spawn(async move {
                    let (batch, pause) = if n < 2 {
                        (1, Duration::from_millis(2))
                    } else {
                        (20, Duration::from_millis(10))
                    };
                    let mut i = 0u64;
                    while running.load(Ordering::Acquire) {
                        let events: Vec<Event> = (0..batch)
                            .map(|_| {
                                i += 1;
                                Event::builder(types[i as usize % types.len()].clone(), "load")
                                    .partition_key(format!("p{n}-{}", i % 40))
                                    .build()
                                    .expect("a valid event")
                            })
                            .collect();
                        let began = Instant::now();
                        let results = if batch == 1 {
                            let event = events.into_iter().next().expect("one event");
                            vec![bus.publish(event).await]
                        } else {
                            bus.publish_batch(events).await
                        };
                        let took = u64::try_from(began.elapsed().as_millis()).unwrap_or(u64::MAX);
                        longest_ms.fetch_max(took, Ordering::Relaxed);
                        {
                            let mut published = published.lock().unwrap();
                            for result in results {
                                match result {
                                    Ok(id) => published.push(id),
                                    Err(e) => {
                                        failed.fetch_add(1, Ordering::Relaxed);
                                        let mut errors = errors.lock().unwrap();
                                        let text = e.to_string();
                                        if errors.len() < ERRORS_KEPT && !errors.contains(&text) {
                                            errors.push(text);
                                        }
                                    }
                                }
                            }
                        }
                        tokio::time::sleep(pause).await;
                    }
                })
            })
            .collect();
        Load { tasks, ..load }
    }

    /// How many events were published with success so far.
    pub fn published(&self) -> usize {
        self.published.lock().unwrap().len()
    }

    /// How many events failed to publish so far.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// Waits until `more` events beyond `from` were published with success.
    ///
    /// # Errors
    /// When they were not within `within`.
    pub async fn until_published(
        &self,
        from: usize,
        more: usize,
        within: Duration,
    ) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + within;
        while self.published() < from + more {
            ensure!(
                tokio::time::Instant::now() < deadline,
                "publishing stalled: {} of {more} more events published within {within:?} ({} failed; first errors: {:?})",
                self.published() - from,
                self.failed(),
                self.errors.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Stops the publishers: what they did.
    ///
    /// # Errors
    /// When a publisher panicked.
    pub async fn stop(self) -> anyhow::Result<LoadReport> {
        self.running.store(false, Ordering::Release);
        for task in self.tasks {
            task.await?;
        }
        let published = self.published.lock().unwrap().iter().copied().collect();
        Ok(LoadReport {
            published,
            failed: self.failed.load(Ordering::Relaxed),
            longest: Duration::from_millis(self.longest_ms.load(Ordering::Relaxed)),
            errors: self.errors.lock().unwrap().clone(),
        })
    }
}

/// A handler named `name` that records the id of every event it handles.
pub fn recorder(name: &str) -> (Arc<dyn EventHandler>, Arc<Mutex<Vec<EventId>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let handler = handler_fn(name.to_string(), move |event: Arc<Event>| {
        let record = record.clone();
        async move {
            record.lock().unwrap().push(event.id);
            Ok::<(), HandlerError>(())
        }
    });
    (handler, seen)
}

/// Waits until every id of `expected` is among those the recorders `seen` recorded.
///
/// # Errors
/// When some were not within `within`: how many.
pub async fn all_handled(
    seen: &[&Mutex<Vec<EventId>>],
    expected: &HashSet<EventId>,
    within: Duration,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let handled: HashSet<EventId> = seen
            .iter()
            .flat_map(|s| s.lock().unwrap().clone())
            .collect();
        let missing = expected.iter().filter(|id| !handled.contains(id)).count();
        if missing == 0 {
            return Ok(());
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "{missing} of {} events never handled within {within:?}",
            expected.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
