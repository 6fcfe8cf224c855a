//! Subscriptions: one group per handler in this process, a fetch task per partition of its
//! topics, acknowledgements tracked per partition and committed to Kafka's offset store up to
//! the first unfinished offset, dead letters produced to the group's dead-letter topic.
//!
//! Several subscriptions of one handler in this process share the group's work: the group's
//! dispatcher calls a router that hands each event to one of the subscriptions' handlers.

mod dead_letters;
mod fetch_loop;
mod membership;
mod positions;
mod router;
mod subscribe;
mod tracker;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use event_core::dispatch::{Dispatcher, HandlerCounters};
use event_core::{Error, StartFrom};
use time::OffsetDateTime;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Fetches from Kafka that failed (each is retried), by `handler`.
pub(crate) const FETCH_ERRORS_METRIC: &str = "eventbus_kafka_fetch_errors_total";
/// Offset commits that failed (each is retried), by `handler`.
pub(crate) const COMMIT_ERRORS_METRIC: &str = "eventbus_kafka_commit_errors_total";
/// Generations of the consumer group this process's members joined, by `handler`.
pub(crate) const REBALANCES_METRIC: &str = "eventbus_kafka_rebalances_total";
/// Records of a partition after this member's fetch position, by `handler`, `topic` and
/// `partition`, as of the member's last fetch (the Java consumer's `records-lag`).
pub(crate) const PARTITION_LAG_METRIC: &str = "eventbus_kafka_partition_lag";

use crate::core::Inner;

pub(crate) use dead_letters::{dead_letter_record, dlq_header};
use membership::{Standing, StopAt};
use positions::positions;
use router::Router;
pub(crate) use subscribe::subscribe;
pub(crate) use tracker::{Token, Tracker};

/// The running group of each handler subscribed in this process, by handler name.
#[derive(Default)]
pub(crate) struct Groups(Mutex<HashMap<String, Arc<Group>>>);

impl Groups {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<Group>>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The running group of `handler` here, if any.
    pub(crate) fn get(&self, handler: &str) -> Option<Arc<Group>> {
        self.lock().get(handler).cloned()
    }
}

/// The group of one handler in this process: its member in the Kafka consumer group, the
/// partitions the coordinator assigned it, and the dispatcher its subscriptions share.
pub(crate) struct Group {
    pub(crate) inner: Arc<Inner>,
    /// The registry this group is in while it runs.
    groups: Arc<Groups>,
    pub(crate) handler: String,
    pub(crate) name: String,
    /// The event types, sorted.
    event_types: Vec<String>,
    /// The event topics, then the redrive topic.
    topics: Vec<String>,
    dead_letters: String,
    /// Where a new group starts in the event topics.
    start: StartFrom,
    /// The positions of the partitions this member owns now.
    trackers: Mutex<HashMap<(usize, i32), Tracker>>,
    standing: Mutex<Standing>,
    router: Arc<Router>,
    stop: watch::Sender<StopAt>,
    membership: Mutex<Option<JoinHandle<()>>>,
    commit_task: Mutex<Option<JoinHandle<()>>>,
    dispatcher: Mutex<Option<Arc<Dispatcher<Token>>>>,
    closing: AtomicBool,
    finished: watch::Sender<bool>,
    /// The handler's counters: loop failures are recorded there, for health.
    pub(crate) counters: Arc<HandlerCounters>,
    /// Dead letters that could not be stored yet, by token: since when, attempts, the error.
    failing_letters: Mutex<HashMap<Token, (OffsetDateTime, u32, String)>>,
    /// Names under which tests arm faults in the membership and commit tasks
    /// (`event_core::fault::checkpoint`); the fetch loops use the handler's name.
    pub(crate) fault_names: FaultNames,
}

/// The names of a group's tasks for `event_core::fault`.
pub(crate) struct FaultNames {
    /// The membership task: `{handler}/membership`.
    pub(crate) membership: String,
    /// The commit task: `{handler}/commits`.
    pub(crate) commits: String,
}

/// The partitions a member owns in one generation: their fetch tasks and the signal that
/// stops them.
pub(crate) struct Owned {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    partitions: Vec<(usize, i32)>,
}

impl Drop for Owned {
    /// Fetch tasks never outlive their generation, even when the member's task is aborted.
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Group {
    pub(crate) fn trackers(&self) -> MutexGuard<'_, HashMap<(usize, i32), Tracker>> {
        self.trackers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn standing_guard(&self) -> MutexGuard<'_, Standing> {
        self.standing.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The member's generation, member id and whether it was fenced.
    pub(crate) fn standing(&self) -> Standing {
        self.standing_guard().clone()
    }

    pub(crate) fn set_standing(&self, generation: i32, member_id: &str) {
        let mut standing = self.standing_guard();
        standing.generation = generation;
        standing.member_id = member_id.to_string();
    }

    /// The membership task died: its generation's partitions (their fetch tasks died with it)
    /// are forgotten, and the member is in no generation until it rejoins.
    pub(crate) fn forget_generation(&self) {
        self.trackers().clear();
        self.standing_guard().generation = -1;
    }

    /// Records why the member keeps failing to join or to take its partitions (`None`: it
    /// took them).
    pub(crate) fn set_trouble(&self, trouble: Option<String>) {
        self.standing_guard().trouble = trouble;
    }

    /// Another process joined with this process's `KAFKA_GROUP_INSTANCE_ID`: this member
    /// stops for good, and health says why.
    pub(crate) fn fence(&self, instance: Option<&str>) {
        let why = format!(
            "another process joined Kafka group {} with the same KAFKA_GROUP_INSTANCE_ID ({}); this one stopped consuming: give each process its own id",
            self.name,
            instance.unwrap_or_default()
        );
        tracing::error!(group = %self.name, "{why}");
        let mut standing = self.standing_guard();
        standing.generation = -1;
        standing.fenced = Some(why);
    }

    /// The event topics, then the redrive topic.
    pub(crate) fn topics(&self) -> &[String] {
        &self.topics
    }

    /// The partitions this member owns, by topic name.
    pub(crate) fn owned(&self) -> Vec<(String, i32)> {
        self.trackers()
            .keys()
            .map(|(topic, partition)| (self.topics[*topic].clone(), *partition))
            .collect()
    }

    /// Delivered and not finished, over the partitions this member owns.
    pub(crate) fn pending(&self) -> u64 {
        self.trackers().values().map(Tracker::pending).sum()
    }

    /// Not delivered yet, over the partitions this member owns.
    pub(crate) fn lag(&self) -> u64 {
        self.trackers().values().map(Tracker::lag).sum()
    }

    /// Whether the member is running: in its group or joining it, not fenced.
    pub(crate) fn fetching(&self) -> bool {
        let running = self
            .membership
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(|t| !t.is_finished());
        running && self.standing_guard().fenced.is_none()
    }

    /// Positions that changed since they were last committed.
    fn changed(&self) -> Vec<(String, i32, i64)> {
        self.trackers()
            .iter()
            .filter(|(_, t)| t.changed())
            .map(|((topic, partition), t)| (self.topics[*topic].clone(), *partition, t.committed()))
            .collect()
    }

    /// Commits the changed positions with the member's generation; nothing between
    /// generations (the coordinator would refuse it).
    async fn commit(&self) {
        let Standing {
            generation,
            member_id,
            ..
        } = self.standing();
        if generation < 0 {
            return;
        }
        let changed = self.changed();
        if changed.is_empty() {
            return;
        }
        match self
            .inner
            .control
            .commit_offsets(&self.name, generation, &member_id, &changed)
            .await
        {
            Ok(()) => {
                let mut trackers = self.trackers();
                for (topic, partition, offset) in changed {
                    if let Some(i) = self.topics.iter().position(|t| *t == topic)
                        && let Some(t) = trackers.get_mut(&(i, partition))
                    {
                        t.sent = offset;
                    }
                }
            }
            Err(e) => {
                metrics::counter!(COMMIT_ERRORS_METRIC, "handler" => self.handler.clone())
                    .increment(1);
                tracing::debug!(group = %self.name, generation, "committing offsets failed, retrying: {e}");
            }
        }
    }

    /// Takes the partitions of a new generation: reads their committed offsets (a partition
    /// the group never consumed starts where the subscription says, and that position is
    /// committed at once), then starts a fetch task for each.
    pub(crate) async fn take(
        self: &Arc<Self>,
        assigned: &BTreeMap<String, Vec<i32>>,
        generation: i32,
        member_id: &str,
    ) -> Result<Owned, Error> {
        let mut request = Vec::new();
        for (topic, partitions) in assigned {
            if self.topics.contains(topic) {
                request.push((topic.clone(), partitions.clone()));
            } else {
                tracing::warn!(group = %self.name, %topic, "assigned a topic this handler does not subscribe to; ignored");
            }
        }
        let (positions, new_positions) =
            positions(&self.inner, &self.name, self.start, &self.topics, &request).await?;
        self.inner
            .control
            .commit_offsets(&self.name, generation, member_id, &new_positions)
            .await?;
        let dispatcher = self
            .dispatcher
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let (stop, _) = watch::channel(false);
        let mut owned = Owned {
            tasks: Vec::new(),
            partitions: Vec::new(),
            stop,
        };
        let Some(dispatcher) = dispatcher else {
            return Ok(owned);
        };
        let mut trackers = self.trackers();
        for ((i, p), position) in positions {
            trackers.insert((i, p), Tracker::at(position));
            owned.partitions.push((i, p));
            owned.tasks.push(tokio::spawn(fetch_loop::supervised(
                self.clone(),
                dispatcher.clone(),
                owned.stop.subscribe(),
                i,
                p,
            )));
        }
        Ok(owned)
    }

    /// Gives up the partitions of a generation: their fetch tasks stop, the events already
    /// handed to the handler finish (until `deadline`), the positions are committed, and the
    /// partitions are forgotten. Events still running at the deadline are left to the
    /// partitions' next owner, which handles them again.
    pub(crate) async fn revoke(&self, mut owned: Owned, deadline: Instant) {
        let _ = owned.stop.send(true);
        let mut tasks = std::mem::take(&mut owned.tasks);
        let partitions = std::mem::take(&mut owned.partitions);
        // A task stops at its next await on the signal; one stuck longer (a dead letter that
        // cannot be written while the broker is away) is aborted at the deadline.
        let joined =
            tokio::time::timeout_at(deadline, futures::future::join_all(tasks.iter_mut())).await;
        if joined.is_err() {
            for task in &tasks {
                task.abort();
            }
            for task in tasks {
                let _ = task.await;
            }
        }
        let pending = || {
            let trackers = self.trackers();
            partitions
                .iter()
                .filter_map(|key| trackers.get(key))
                .map(Tracker::pending)
                .sum::<u64>()
        };
        while pending() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let unfinished = pending();
        if unfinished > 0 {
            tracing::warn!(
                handler = %self.handler,
                unfinished,
                "the handler did not finish the events of the partitions it gives up in time; they stay uncommitted and their next owner handles them again"
            );
        }
        self.commit().await;
        let mut trackers = self.trackers();
        for key in &partitions {
            trackers.remove(key);
        }
    }

    /// Finishes deliveries: those of a tracker that was replaced since (the partition taken
    /// again, or its fetch loop restarted) are left alone, as their events are delivered again.
    fn ack(&self, tokens: &[Token]) {
        let mut trackers = self.trackers();
        for token in tokens {
            if let Some(t) = trackers.get_mut(&(token.topic, token.partition))
                && t.incarnation() == token.incarnation
            {
                t.finish(token.offset);
            }
        }
    }

    /// Whether the tracker that handed out `token` still tracks its partition, and the group
    /// is not stopping.
    fn owns(&self, token: Token) -> bool {
        !self.closing.load(Ordering::Acquire)
            && self
                .trackers()
                .get(&(token.topic, token.partition))
                .is_some_and(|t| t.incarnation() == token.incarnation)
    }

    /// A dead letter could not be stored after `attempts` tries: health says so until it is.
    fn dead_letter_failing(&self, token: Token, attempts: u32, error: &Error) {
        let mut failing = self
            .failing_letters
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let since = failing
            .get(&token)
            .map_or_else(OffsetDateTime::now_utc, |(since, _, _)| *since);
        failing.insert(token, (since, attempts, error.to_string()));
    }

    /// The dead letter is stored (or left to another member): health stops reporting it.
    fn dead_letter_stored(&self, token: Token) {
        self.failing_letters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&token);
    }

    /// Dead letters that cannot be stored, in words, for health.
    pub(crate) fn dead_letter_problems(&self) -> Vec<String> {
        // A write abandoned with its partition (revoked, or its fetch task restarted) is the
        // next owner's to make: no longer this member's problem.
        let tokens: Vec<Token> = self
            .failing_letters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .copied()
            .collect();
        let gone: Vec<Token> = tokens.into_iter().filter(|t| !self.owns(*t)).collect();
        let mut failing = self
            .failing_letters
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for token in gone {
            failing.remove(&token);
        }
        let mut problems: Vec<String> = failing
            .iter()
            .map(|(token, (since, attempts, error))| {
                format!(
                    "consumer {}: the dead letter of {} partition {} offset {} cannot be stored in {} (failing since {since}, {attempts} attempts; still retrying, and the partition's commit waits for it): {error}",
                    self.handler,
                    self.topics[token.topic],
                    token.partition,
                    token.offset,
                    self.dead_letters,
                )
            })
            .collect();
        problems.sort();
        problems
    }

    /// A subscription leaves: the last one stops the group, finishes what it holds and
    /// commits. Returns whether everything taken was finished in time.
    async fn leave(self: &Arc<Self>, member: u64, timeout: Duration) -> bool {
        let (last, leaving) = {
            let _groups = self.groups.lock();
            let mut members = self.router.subscribers();
            let leaving = members.iter().find(|m| m.id == member).cloned();
            if members.len() <= 1 {
                self.closing.store(true, Ordering::Release);
                (true, leaving)
            } else {
                members.retain(|m| m.id != member);
                (false, leaving)
            }
        };
        let drained = if last {
            self.close(timeout).await
        } else if let Some(leaving) = leaving {
            // The others take the group's next events; wait for this one's calls to end.
            tokio::time::timeout(timeout, async {
                loop {
                    let idle = leaving.idle.notified();
                    if leaving.busy.load(Ordering::Acquire) == 0 {
                        break;
                    }
                    idle.await;
                }
            })
            .await
            .is_ok()
        } else {
            true
        };
        self.inner
            .handlers
            .remove_member(&self.handler, member, |_| {});
        drained
    }

    async fn close(self: &Arc<Self>, timeout: Duration) -> bool {
        let until = Instant::now() + timeout;
        let _ = self.stop.send(Some(until));
        // The member gives its partitions up (fetching stops, in-flight events finish until
        // the deadline, positions are committed) and leaves the group.
        let membership = self
            .membership
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(mut task) = membership
            && tokio::time::timeout_at(until + Duration::from_secs(2), &mut task)
                .await
                .is_err()
        {
            task.abort();
            let _ = task.await;
        }
        let timeout = until.saturating_duration_since(Instant::now());
        let dispatcher = self
            .dispatcher
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let drained = match dispatcher.map(Arc::try_unwrap) {
            Some(Ok(dispatcher)) => dispatcher.close(timeout).await,
            Some(Err(_)) | None => true,
        };
        if !drained {
            tracing::warn!(
                handler = %self.handler,
                "handler did not finish its in-flight events in time; they stay uncommitted and will be delivered again"
            );
        }
        let commit_task = self
            .commit_task
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(task) = commit_task {
            task.abort();
            let _ = task.await;
        }
        self.groups.lock().remove(&self.handler);
        let _ = self.finished.send(true);
        drained
    }
}
