//! The delivery engine every backend shares: per-key ordered concurrency, retries with backoff
//! that never stall other keys, dead-lettering with provenance, batched acknowledgements.
//!
//! A backend reads deliveries from its log, [`reserve`](Dispatcher::reserve)s room for them,
//! hands them to [`Dispatcher::dispatch`], and is told through its [`DeliverySink`] which to
//! acknowledge and which to dead-letter. The dispatcher spreads deliveries over
//! `concurrency` lanes by the hash of their ordering key, so one key always runs on one lane,
//! in order. A lane that must retry an event parks it (and the later events of the same key)
//! on a timer and goes on with other keys.

mod consumers;
mod counters;
mod lane;
mod supervisor;

use std::hash::{Hash, Hasher};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures::FutureExt;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;

pub use consumers::{ConsumerHost, ConsumerSet, MemberControl, StopMode, StopSignal, subscription};
pub use counters::{CounterSnapshot, HandlerCounters};
pub use supervisor::Supervisor;

use crate::{DeadLetter, Event, EventHandler, RetryPolicy};

/// One event handed to a dispatcher, with the backend's token to acknowledge it by.
#[derive(Debug)]
pub struct Delivery<T> {
    /// The event.
    pub event: Arc<Event>,
    /// The backend's handle on it (an offset, a stream entry id, ...).
    pub token: T,
    /// Failed attempts already made before this delivery (a redelivery after a crash).
    pub prior_attempts: u32,
    /// Where the event's record lies, in a partitioned log (Kafka): its `process` spans say so.
    pub position: Option<crate::trace::LogPosition>,
}

impl<T> Delivery<T> {
    /// A first delivery.
    pub fn new(event: Arc<Event>, token: T) -> Self {
        Self {
            event,
            token,
            prior_attempts: 0,
            position: None,
        }
    }

    /// The delivery, read at `position` in a partitioned log.
    #[must_use]
    pub fn at(mut self, position: crate::trace::LogPosition) -> Self {
        self.position = Some(position);
        self
    }
}

/// Where a dispatcher reports finished deliveries: implemented by each backend.
#[async_trait]
pub trait DeliverySink<T>: Send + Sync + 'static {
    /// Acknowledges deliveries the handler finished.
    async fn ack(&self, tokens: Vec<T>);

    /// Stores the dead letter (its `id` is empty: the sink assigns one) and then acknowledges
    /// the delivery.
    async fn dead_letter(&self, token: T, letter: DeadLetter);
}

/// How a dispatcher runs.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct DispatchSettings {
    /// The handler's consumer group, for dead-letter provenance.
    pub group: String,
    /// Lanes, that is events in progress at once.
    pub concurrency: usize,
    /// Deliveries accepted and not yet finished, at most (back-pressure on the reader).
    pub max_in_flight: usize,
    /// Retries of transient failures.
    pub retry: RetryPolicy,
    /// Acknowledgements are sent in batches of at most this many.
    pub ack_batch: usize,
    /// The backend, as the `messaging.system` of the processing spans (see
    /// [`trace`](crate::trace)).
    pub system: &'static str,
}

impl DispatchSettings {
    /// Settings with `max_in_flight` = 64 per lane, at least 1024, and acknowledgements in
    /// batches of 256.
    pub fn new(group: impl Into<String>, concurrency: usize, retry: RetryPolicy) -> Self {
        let concurrency = concurrency.max(1);
        Self {
            group: group.into(),
            concurrency,
            max_in_flight: (concurrency * 64).max(1024),
            retry,
            ack_batch: 256,
            system: "memory",
        }
    }

    /// The backend's name (`redis`, `kafka`; `memory` unless set), for the processing spans.
    pub fn with_system(mut self, system: &'static str) -> Self {
        self.system = system;
        self
    }
}

/// Runs one subscription's deliveries through its handler.
pub struct Dispatcher<T> {
    lanes: Vec<mpsc::UnboundedSender<Vec<Delivery<T>>>>,
    counters: Arc<HandlerCounters>,
    tasks: Vec<JoinHandle<()>>,
    room: Arc<Semaphore>,
    /// The lane that gets the next run of key-less deliveries.
    next_lane: AtomicUsize,
    /// Why a lane died, once one has.
    lane_died: watch::Receiver<Option<String>>,
    /// Lanes whose task has not ended yet.
    running: Arc<watch::Sender<LaneCount>>,
}

#[derive(Clone, Copy, Debug)]
struct LaneCount {
    running: usize,
    /// No lane has panicked or been aborted.
    all_clean: bool,
}

/// Counts a lane's task as ended when dropped: at its end (clean), after a panic, or when
/// aborted (neither clean: what it held was never finished).
struct LaneEnded {
    count: Arc<watch::Sender<LaneCount>>,
    clean: bool,
}

impl LaneEnded {
    /// The lane finished everything it was given.
    fn finished(&mut self) {
        self.clean = true;
    }
}

impl Drop for LaneEnded {
    fn drop(&mut self) {
        let clean = self.clean;
        self.count.send_modify(|c| {
            c.running = c.running.saturating_sub(1);
            c.all_clean &= clean;
        });
    }
}

/// Waits until every lane of a dispatcher has ended ([`Dispatcher::lanes_ended`]).
#[derive(Clone, Debug)]
pub struct LanesEnded(watch::Receiver<LaneCount>);

impl LanesEnded {
    /// Returns once every lane has ended: `true` when each finished everything it was given
    /// (none panicked or was aborted), so nothing it held needs to be handed out again.
    pub async fn wait(mut self) -> bool {
        let ended = self
            .0
            .wait_for(|c| c.running == 0)
            .await
            .map(|c| c.all_clean);
        // An error: the counter is gone with every lane, each having counted itself out.
        ended.unwrap_or_else(|_| self.0.borrow().all_clean)
    }
}

/// Key-less deliveries go to lanes in runs of at least this many: they need no order, and
/// one send per run costs far less than one per delivery. Under a backlog the runs still
/// reach every lane, one read after another.
const KEYLESS_RUN: usize = 32;

impl<T: Send + 'static> Dispatcher<T> {
    /// Starts the lanes of a dispatcher for `handler`.
    pub fn start(
        handler: Arc<dyn EventHandler>,
        settings: DispatchSettings,
        sink: Arc<dyn DeliverySink<T>>,
        counters: Arc<HandlerCounters>,
    ) -> Self {
        let room = Arc::new(Semaphore::new(settings.max_in_flight));
        let shared = Arc::new(lane::LaneShared {
            handler,
            settings,
            sink,
            counters: counters.clone(),
            room: room.clone(),
        });
        let lane_died = Arc::new(watch::Sender::new(None));
        let (running, _) = watch::channel(LaneCount {
            running: shared.settings.concurrency,
            all_clean: true,
        });
        let running = Arc::new(running);
        let (lanes, tasks) = (0..shared.settings.concurrency)
            .map(|_| {
                let (tx, rx) = mpsc::unbounded_channel();
                let run = AssertUnwindSafe(lane::run(rx, shared.clone())).catch_unwind();
                let died = lane_died.clone();
                let mut ended = LaneEnded {
                    count: running.clone(),
                    clean: false,
                };
                let task = tokio::spawn(async move {
                    match run.await {
                        Ok(()) => ended.finished(),
                        Err(panic) => {
                            let why = lane::panic_message(&*panic);
                            died.send_replace(Some(why));
                        }
                    }
                });
                (tx, task)
            })
            .unzip();
        Self {
            lanes,
            counters,
            tasks,
            room,
            next_lane: AtomicUsize::new(0),
            lane_died: lane_died.subscribe(),
            running,
        }
    }

    /// A handle that tells when every lane of this dispatcher has ended, also after the
    /// dispatcher itself was dropped (a consumer loop that failed): a restart waits for the
    /// failed attempt's lanes before handing their unfinished events out again, so no event
    /// runs in two attempts at once.
    pub fn lanes_ended(&self) -> LanesEnded {
        LanesEnded(self.running.subscribe())
    }

    /// Fails the consumer loop when a lane died: its events would never be acknowledged nor
    /// their room given back, so the loop must be restarted rather than wait for room forever.
    fn check_lanes(&self) {
        if let Some(why) = self.lane_died.borrow().as_ref() {
            panic!("a delivery lane of the dispatcher failed: {why}");
        }
    }

    /// Waits until there is room for at least one delivery and reserves room for up to `want`;
    /// returns how many were reserved. Each reserved place must be filled by
    /// [`dispatch`](Self::dispatch) or given back with [`release`](Self::release).
    ///
    /// # Panics
    /// When a lane of the dispatcher died (a bug, or a sink that panicked): the consumer loop
    /// then ends, and its supervisor restarts it with a new dispatcher.
    pub async fn reserve(&self, want: usize) -> usize {
        self.check_lanes();
        let want = want.max(1);
        let take = self.room.available_permits().clamp(1, want);
        let mut died = self.lane_died.clone();
        tokio::select! {
            acquired = self.room.acquire_many(take as u32) => match acquired {
                Ok(permit) => {
                    permit.forget();
                    take
                }
                // The semaphore is never closed; a closed one means no room.
                Err(_) => 0,
            },
            _ = died.wait_for(Option::is_some) => {
                self.check_lanes();
                0
            }
        }
    }

    /// Gives back reserved room that was not used.
    pub fn release(&self, unused: usize) {
        if unused > 0 {
            self.room.add_permits(unused);
        }
    }

    /// Hands reserved deliveries to their lanes. Deliveries with the same partition key go to
    /// one lane and keep their order; deliveries without a key are handed out in runs.
    ///
    /// # Panics
    /// When a lane of the dispatcher died, as [`reserve`](Self::reserve).
    pub fn dispatch(&self, deliveries: Vec<Delivery<T>>) {
        self.check_lanes();
        let redelivered = deliveries.iter().filter(|d| d.prior_attempts > 0).count();
        self.counters
            .add_delivered(deliveries.len() as u64, redelivered as u64);
        let n = self.lanes.len();
        if n == 1 {
            self.send(0, deliveries);
            return;
        }
        let keyless = deliveries
            .iter()
            .filter(|d| d.event.partition_key.is_none())
            .count();
        let run = keyless.div_ceil(n).max(KEYLESS_RUN);
        let mut lane = self.next_lane.load(Ordering::Relaxed) % n;
        let mut in_run = 0;
        let mut per_lane: Vec<Vec<Delivery<T>>> = (0..n).map(|_| Vec::new()).collect();
        for d in deliveries {
            let target = if d.event.partition_key.is_some() {
                (ordering_hash(&d.event) % n as u64) as usize
            } else {
                if in_run == run {
                    lane = (lane + 1) % n;
                    in_run = 0;
                }
                in_run += 1;
                lane
            };
            per_lane[target].push(d);
        }
        self.next_lane.store((lane + 1) % n, Ordering::Relaxed);
        for (lane, batch) in per_lane.into_iter().enumerate() {
            if !batch.is_empty() {
                self.send(lane, batch);
            }
        }
    }

    fn send(&self, lane: usize, batch: Vec<Delivery<T>>) {
        if self.lanes[lane].send(batch).is_err() {
            // A lane ends early only by a panic, which `check_lanes` reports; the deliveries
            // stay unacknowledged and are delivered again after the restart.
            self.check_lanes();
            panic!("a delivery lane of the dispatcher ended early");
        }
    }

    /// Stops taking deliveries and waits up to `timeout` for the lanes to finish everything
    /// they hold (retries included). Returns `true` if they did; on `false` the remaining lanes
    /// were stopped and their unfinished deliveries were never acknowledged.
    pub async fn close(self, timeout: Duration) -> bool {
        drop(self.lanes);
        let mut tasks = self.tasks;
        let all = futures::future::join_all(tasks.iter_mut());
        match tokio::time::timeout(timeout, all).await {
            Ok(_) => true,
            Err(_) => {
                for task in &tasks {
                    task.abort();
                }
                false
            }
        }
    }
}

/// The hash that picks a delivery's lane: of the partition key, or of the id when there is
/// none. Stable within a process, which is all lanes need.
pub fn ordering_hash(event: &Event) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    match &event.partition_key {
        Some(key) => key.hash(&mut hasher),
        None => event.id.hash(&mut hasher),
    }
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EventType, HandlerError, handler_fn};

    struct PanickingSink;

    #[async_trait]
    impl DeliverySink<u32> for PanickingSink {
        async fn ack(&self, _: Vec<u32>) {
            panic!("the sink broke");
        }

        async fn dead_letter(&self, _: u32, _: DeadLetter) {}
    }

    /// A lane that dies (here: its sink panics) fails the consumer loop at its next reserve,
    /// so the supervisor restarts it, instead of the loop waiting for room forever.
    #[tokio::test]
    async fn a_dead_lane_fails_the_loop() {
        let handler = handler_fn("h", |_| async { Ok::<(), HandlerError>(()) });
        let mut settings = DispatchSettings::new("g", 1, RetryPolicy::default());
        settings.max_in_flight = 1;
        let dispatcher = Arc::new(Dispatcher::start(
            handler,
            settings,
            Arc::new(PanickingSink),
            Arc::new(HandlerCounters::default()),
        ));
        let event = Event::builder(EventType::SIGNAL_DETECTED, "test")
            .build()
            .unwrap();
        assert_eq!(dispatcher.reserve(1).await, 1);
        dispatcher.dispatch(vec![Delivery::new(Arc::new(event), 7)]);
        let waiting = dispatcher.clone();
        let loop_task = tokio::spawn(async move { waiting.reserve(1).await });
        let failure = tokio::time::timeout(Duration::from_secs(20), loop_task)
            .await
            .expect("reserve returned or panicked");
        assert!(
            failure.is_err_and(|e| e.is_panic()),
            "reserve went on after a lane died"
        );
    }
}
