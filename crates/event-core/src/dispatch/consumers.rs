//! [`ConsumerSet`]: the running consumer loops of a bus, and how they are told to stop.
//!
//! Every backend runs one loop per subscription. Unsubscribe stops one loop, shutdown stops
//! them all, and both may happen at once: whoever asks, returns only once the loop has ended
//! and its in-flight events are done.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// What a consumer loop is asked to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopMode {
    /// Keep delivering.
    Run,
    /// Deliver what is already published, then stop, all before `until` (shutdown of a bus
    /// that keeps nothing afterwards; persistent backends treat it like [`StopMode::Now`]).
    Drain {
        /// The deadline.
        until: Instant,
    },
    /// Take nothing more (the group keeps it) and finish in-flight events before `until`.
    Now {
        /// The deadline.
        until: Instant,
    },
}

impl StopMode {
    /// The deadline, once a stop is asked for.
    pub fn deadline(self) -> Option<Instant> {
        match self {
            StopMode::Run => None,
            StopMode::Drain { until } | StopMode::Now { until } => Some(until),
        }
    }

    /// Sleeps until the deadline, or forever while running.
    pub async fn deadline_passed(self) {
        match self.deadline() {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    }
}

/// The receiving side of a loop's stop requests.
#[derive(Clone, Debug)]
pub struct StopSignal {
    rx: watch::Receiver<StopMode>,
}

impl StopSignal {
    /// The current request, marking it seen.
    pub fn mode(&mut self) -> StopMode {
        *self.rx.borrow_and_update()
    }

    /// Waits for a new request; `false` if nobody can send one any more (stop then).
    pub async fn changed(&mut self) -> bool {
        self.rx.changed().await.is_ok()
    }

    /// Whether a stop was asked for, or nobody can ask any more (the bus is gone): a loop
    /// that ends now ends as it should.
    pub fn is_stopping(&self) -> bool {
        *self.rx.borrow() != StopMode::Run || self.rx.has_changed().is_err()
    }

    /// How long is left to finish in-flight work: until the deadline, or `default` when the
    /// loop ended without being asked.
    pub fn remaining(&self, default: std::time::Duration) -> std::time::Duration {
        self.rx
            .borrow()
            .deadline()
            .map_or(default, |d| d.saturating_duration_since(Instant::now()))
    }
}

struct Member {
    stop: watch::Sender<StopMode>,
    /// Taken by the first caller that stops the member.
    task: Option<JoinHandle<bool>>,
    /// Turns `true` when the loop has ended, for callers that did not take `task`.
    ended: watch::Receiver<bool>,
}

/// The consumer loops of one bus.
#[derive(Default)]
pub struct ConsumerSet {
    members: Mutex<HashMap<u64, Member>>,
    next_id: AtomicU64,
}

impl std::fmt::Debug for ConsumerSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerSet")
            .field("running", &self.len())
            .finish()
    }
}

impl ConsumerSet {
    fn members(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Member>> {
        // A panic while holding this lock leaves the map itself consistent.
        self.members
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A new, unique member id (to register the member elsewhere before it runs).
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Runs a consumer loop under `id`. The loop gets its [`StopSignal`] and returns whether it
    /// finished every event it had taken.
    pub fn spawn<F, Fut>(&self, id: u64, run: F)
    where
        F: FnOnce(StopSignal) -> Fut,
        Fut: Future<Output = bool> + Send + 'static,
    {
        let (stop, rx) = watch::channel(StopMode::Run);
        let (ended_tx, ended) = watch::channel(false);
        let fut = run(StopSignal { rx });
        let task = tokio::spawn(async move {
            let drained = fut.await;
            let _ = ended_tx.send(true);
            drained
        });
        self.members().insert(
            id,
            Member {
                stop,
                task: Some(task),
                ended,
            },
        );
    }

    /// Runs a consumer loop under `id` like [`spawn`](Self::spawn), restarted by `supervisor`
    /// whenever it panics or ends without being asked to stop. `run` makes each attempt: it
    /// gets the stop signal and how many times the loop failed before (a restart must give
    /// back what the failed attempt held). Returns, once asked to stop, whether the last
    /// attempt finished every event it had taken.
    ///
    /// An attempt that fails while the loop is being stopped, or a stop that comes while a
    /// restart waits, still gets one more attempt: it sees the stop at once, and does what a
    /// stopping loop does (give back what the failed attempt held, leave its group).
    pub fn spawn_supervised<F, Fut>(&self, id: u64, mut supervisor: super::Supervisor, mut run: F)
    where
        F: FnMut(StopSignal, u32) -> Fut + Send + 'static,
        Fut: Future<Output = bool> + Send + 'static,
    {
        self.spawn(id, move |mut stop| async move {
            let mut failures = 0u32;
            let mut failed_while_stopping = false;
            loop {
                let outcome = supervisor.run(run(stop.clone(), failures)).await;
                let why = match outcome {
                    Ok(drained) if stop.is_stopping() => return drained,
                    Err(why) if stop.is_stopping() => {
                        tracing::error!("consumer loop {why} while stopping");
                        if std::mem::replace(&mut failed_while_stopping, true) {
                            return false;
                        }
                        failures = failures.saturating_add(1);
                        continue;
                    }
                    Ok(_) => "ended without being asked to stop".to_string(),
                    Err(why) => why,
                };
                failures = failures.saturating_add(1);
                let pause = supervisor.failed("consumer loop", &why);
                tokio::select! {
                    biased;
                    changed = stop.changed() => if !changed { return false },
                    () = tokio::time::sleep(pause) => {}
                }
            }
        });
    }

    /// Whether the member's loop is still running.
    pub fn is_running(&self, id: u64) -> bool {
        self.members()
            .get(&id)
            .is_some_and(|m| !*m.ended.borrow() && m.task.as_ref().is_none_or(|t| !t.is_finished()))
    }

    /// How many loops are registered.
    pub fn len(&self) -> usize {
        self.members().len()
    }

    /// Whether no loop is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Asks a member to stop and waits until its loop has ended, also when another caller is
    /// stopping it at the same time. A `Drain` asked for during a `Now` does not weaken it.
    pub async fn stop(&self, id: u64, mode: StopMode) {
        let (task, mut ended) = {
            let mut members = self.members();
            let Some(member) = members.get_mut(&id) else {
                return;
            };
            member.stop.send_if_modified(|current| {
                let stronger = matches!(mode, StopMode::Now { .. }) || *current == StopMode::Run;
                if stronger {
                    *current = mode;
                }
                stronger
            });
            (member.task.take(), member.ended.clone())
        };
        match task {
            Some(task) => {
                if let Err(e) = task.await {
                    tracing::error!("consumer loop failed: {e}");
                }
            }
            // Another caller took the task: wait for the same loop to end. An error means the
            // task is gone without signalling (it panicked), which ends it too.
            None => {
                let _ = ended.wait_for(|ended| *ended).await;
            }
        }
        self.members().remove(&id);
    }

    /// Stops every member. Members registered while this runs (a subscribe racing with
    /// shutdown) are stopped too: passes repeat until none is left.
    pub async fn stop_all(&self, mode: StopMode) {
        loop {
            let ids: Vec<u64> = self.members().keys().copied().collect();
            if ids.is_empty() {
                break;
            }
            futures::future::join_all(ids.into_iter().map(|id| self.stop(id, mode))).await;
        }
    }
}

/// A bus that runs consumer loops: what [`MemberControl`] needs from it.
pub trait ConsumerHost: Send + Sync + 'static {
    /// The bus's consumer loops.
    fn consumers(&self) -> &ConsumerSet;
    /// Whether the bus has been shut down.
    fn is_closed(&self) -> bool;
    /// How long an unsubscribe waits for in-flight events (`EVENT_SHUTDOWN_TIMEOUT_MS`).
    fn shutdown_timeout(&self) -> std::time::Duration;
    /// How shutdown stops the consumer loops, by `until`: [`StopMode::Now`] by default (the
    /// log keeps what was not taken); a bus that keeps nothing afterwards drains.
    fn shutdown_mode(&self, until: Instant) -> StopMode {
        StopMode::Now { until }
    }
}

/// The end of every backend's subscribe, once the member's consumer loop is spawned: its
/// [`Subscription`](crate::Subscription), or, when the bus shut down while the subscription
/// was starting, the loop stopped as shutdown stops the others and
/// [`Error::ShutDown`](crate::Error::ShutDown).
///
/// # Errors
/// [`Error::ShutDown`](crate::Error::ShutDown) when the bus is shut down.
pub async fn subscription<H: ConsumerHost>(
    host: &std::sync::Arc<H>,
    member: u64,
    handler: String,
    group: String,
) -> Result<crate::Subscription, crate::Error> {
    if host.is_closed() {
        let until = Instant::now() + host.shutdown_timeout();
        host.consumers()
            .stop(member, host.shutdown_mode(until))
            .await;
        return Err(crate::Error::ShutDown {
            operation: "subscriptions",
        });
    }
    Ok(crate::Subscription::new(
        handler,
        group,
        Box::new(MemberControl::new(host.clone(), member)),
    ))
}

/// The [`SubscriptionControl`](crate::SubscriptionControl) of one member of a
/// [`ConsumerSet`]: unsubscribe stops its loop at once (the group keeps what it did not take)
/// and waits for its in-flight events.
pub struct MemberControl<H> {
    host: std::sync::Arc<H>,
    member: u64,
}

impl<H> MemberControl<H> {
    /// The control of `member` on `host`.
    pub fn new(host: std::sync::Arc<H>, member: u64) -> Self {
        Self { host, member }
    }
}

#[async_trait::async_trait]
impl<H: ConsumerHost> crate::SubscriptionControl for MemberControl<H> {
    async fn unsubscribe(&self) -> Result<(), crate::Error> {
        let until = Instant::now() + self.host.shutdown_timeout();
        self.host
            .consumers()
            .stop(self.member, StopMode::Now { until })
            .await;
        Ok(())
    }

    fn is_active(&self) -> bool {
        !self.host.is_closed() && self.host.consumers().is_running(self.member)
    }
}
