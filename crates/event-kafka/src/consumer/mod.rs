//! Subscriptions: one group per handler in this process, a fetch task per partition of its
//! topics, acknowledgements tracked per partition and committed to Kafka's offset store up to
//! the first unfinished offset, dead letters produced to the group's dead-letter topic.
//!
//! Several subscriptions of one handler in this process share the group's work: the group's
//! dispatcher calls a router that hands each event to one of the subscriptions' handlers.

mod dead_letters;
mod fetch_loop;
mod tracker;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use event_core::dispatch::{
    DispatchSettings, Dispatcher, HandlerCounters, StopMode, StopSignal, Supervisor,
};
use event_core::{
    Error, Event, EventHandler, HandlerError, StartFrom, Subscription, SubscriptionSpec,
};
use time::OffsetDateTime;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::bus::Inner;
use crate::control::{ControlClient, Security};
use crate::data::OffsetAt;
use crate::member::{self, Standing, StopAt};
use crate::record;

use dead_letters::KafkaSink;
pub(crate) use dead_letters::dlq_header;
pub(crate) use tracker::{Token, Tracker};

/// How often changed positions are committed.
const COMMIT_EVERY: Duration = Duration::from_millis(100);

/// One subscription's handler, as the router sees it.
struct Member {
    id: u64,
    handler: Arc<dyn EventHandler>,
    busy: AtomicUsize,
    idle: Notify,
}

struct Busy<'a>(&'a Member);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        if self.0.busy.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// The handler the group's dispatcher calls: it hands each event to one subscription.
struct Router {
    name: String,
    members: Mutex<Vec<Arc<Member>>>,
}

impl Router {
    fn members(&self) -> MutexGuard<'_, Vec<Arc<Member>>> {
        self.members.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The subscription that handles an event: fixed by the event id while the members stay.
    fn pick(&self, event: &Event) -> Option<Arc<Member>> {
        let members = self.members();
        if members.is_empty() {
            return None;
        }
        let i = (event.id.as_uuid().as_u128() % members.len() as u128) as usize;
        Some(members[i].clone())
    }
}

#[async_trait]
impl EventHandler for Router {
    fn name(&self) -> &str {
        &self.name
    }

    async fn handle(&self, event: &Event) -> Result<(), HandlerError> {
        let Some(member) = self.pick(event) else {
            return Err(HandlerError::transient(
                "no subscription of the handler is left to handle the event",
            ));
        };
        member.busy.fetch_add(1, Ordering::AcqRel);
        let _busy = Busy(&member);
        member.handler.handle(event).await
    }

    async fn on_error(&self, event: &Event, error: &HandlerError, attempt: u32) {
        if let Some(member) = self.pick(event) {
            member.handler.on_error(event, error, attempt).await;
        }
    }
}

/// The group of one handler in this process: its member in the Kafka consumer group, the
/// partitions the coordinator assigned it, and the dispatcher its subscriptions share.
pub(crate) struct Group {
    pub(crate) inner: Arc<Inner>,
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
            let _groups = self.inner.groups();
            let mut members = self.router.members();
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
        self.inner.remove_member(&self.handler, member);
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
        self.inner.groups().remove(&self.handler);
        let _ = self.finished.send(true);
        drained
    }
}

/// Starts a subscription: joins the handler's group in this process, or starts it.
pub(crate) async fn subscribe(
    inner: &Arc<Inner>,
    spec: SubscriptionSpec,
    handler: Arc<dyn EventHandler>,
) -> Result<Subscription, Error> {
    let _one_at_a_time = inner.subscribing.lock().await;
    let group_name = inner.group(&spec.handler);
    let mut event_types: Vec<String> = spec
        .event_types
        .iter()
        .map(|t| t.as_str().to_string())
        .collect();
    event_types.sort();
    event_types.dedup();
    let member = inner.consumers.next_id();
    let entry = Arc::new(Member {
        id: member,
        handler,
        busy: AtomicUsize::new(0),
        idle: Notify::new(),
    });
    // Join the running group of the handler; wait for one that is stopping to finish first.
    let joined = loop {
        let waiting = {
            let groups = inner.groups();
            match groups.get(&spec.handler) {
                Some(g) if !g.closing.load(Ordering::Acquire) => {
                    if g.event_types != event_types {
                        return Err(Error::InvalidArgument(format!(
                            "handler {} is already subscribed in this process to {:?}; its subscriptions share one group and must name the same event types, not {:?}",
                            spec.handler, g.event_types, event_types
                        )));
                    }
                    g.router.members().push(entry.clone());
                    break Some(g.clone());
                }
                Some(g) => g.finished.subscribe(),
                None => break None,
            }
        };
        let mut finished = waiting;
        let _ = finished.wait_for(|f| *f).await;
    };
    let group = match joined {
        Some(group) => {
            inner.add_member(&spec.handler, &group_name, &event_types, member);
            group
        }
        None => {
            let counters = inner.add_member(&spec.handler, &group_name, &event_types, member);
            match start_group(inner, &spec, &group_name, &event_types, entry, counters).await {
                Ok(group) => group,
                Err(e) => {
                    inner.remove_member(&spec.handler, member);
                    return Err(e);
                }
            }
        }
    };
    let timeout = inner.config.shutdown_timeout;
    inner.consumers.spawn(member, move |stop| {
        member_loop(group, member, stop, timeout)
    });
    event_core::dispatch::subscription(inner, member, spec.handler, group_name).await
}

/// A subscription's life: wait for a stop, then leave the group.
async fn member_loop(
    group: Arc<Group>,
    member: u64,
    mut stop: StopSignal,
    timeout: Duration,
) -> bool {
    loop {
        if stop.mode() != StopMode::Run {
            break;
        }
        if !stop.changed().await {
            break;
        }
    }
    group.leave(member, stop.remaining(timeout)).await
}

/// Where a new group starts in one partition.
async fn start_position(
    inner: &Inner,
    topic: &str,
    partition: i32,
    start: StartFrom,
) -> Result<i64, Error> {
    let at = match start {
        StartFrom::Earliest => OffsetAt::Earliest,
        StartFrom::Time(t) => OffsetAt::Timestamp(record::unix_millis(t)),
        _ => OffsetAt::Latest,
    };
    inner.plane.offset_at(topic, partition, at).await
}

async fn start_group(
    inner: &Arc<Inner>,
    spec: &SubscriptionSpec,
    group_name: &str,
    event_types: &[String],
    member: Arc<Member>,
    counters: Arc<HandlerCounters>,
) -> Result<Arc<Group>, Error> {
    let mut topics: Vec<String> = event_types.iter().map(|t| inner.topics.events(t)).collect();
    let partitions = inner.config.kafka_partitions as i32;
    let mut wanted: Vec<(String, i32)> = topics.iter().map(|t| (t.clone(), partitions)).collect();
    let redrive = inner.topics.redrive(group_name);
    let dead_letters = inner.topics.dead_letters(group_name);
    wanted.push((redrive.clone(), 1));
    wanted.push((dead_letters.clone(), 1));
    let counts = inner.topics.ensure(&inner.control, &wanted).await?;
    topics.push(redrive);
    start_positions(
        inner,
        spec.start,
        group_name,
        &topics,
        &counts[..topics.len()],
    )
    .await?;
    // JoinGroup waits at the coordinator until the rebalance completes: it gets a connection
    // of its own, so heartbeats and commits of this and other groups never queue behind it.
    let coordinator = ControlClient::connect(
        &inner.config.kafka_bootstrap_servers,
        &Security::from_config(&inner.config)?,
        crate::control::DEFAULT_TIMEOUT,
    )
    .await?;

    let (stop, stopped) = watch::channel(None);
    let (finished, _) = watch::channel(false);
    let group = Arc::new(Group {
        inner: inner.clone(),
        handler: spec.handler.clone(),
        name: group_name.to_string(),
        event_types: event_types.to_vec(),
        topics,
        dead_letters,
        start: spec.start,
        trackers: Mutex::new(HashMap::new()),
        standing: Mutex::new(Standing {
            generation: -1,
            ..Standing::default()
        }),
        router: Arc::new(Router {
            name: spec.handler.clone(),
            members: Mutex::new(vec![member]),
        }),
        stop,
        membership: Mutex::new(None),
        commit_task: Mutex::new(None),
        dispatcher: Mutex::new(None),
        closing: AtomicBool::new(false),
        finished,
        counters: counters.clone(),
        failing_letters: Mutex::new(HashMap::new()),
        fault_names: FaultNames {
            membership: format!("{}/membership", spec.handler),
            commits: format!("{}/commits", spec.handler),
        },
    });
    let concurrency = spec.concurrency.unwrap_or(inner.config.handler_concurrency);
    let dispatcher = Arc::new(Dispatcher::start(
        group.router.clone(),
        DispatchSettings::new(
            group_name.to_string(),
            concurrency,
            inner.config.retry_policy(),
        ),
        Arc::new(KafkaSink {
            group: group.clone(),
        }),
        counters,
    ));
    *group.dispatcher.lock().unwrap_or_else(|p| p.into_inner()) = Some(dispatcher);
    *group.membership.lock().unwrap_or_else(|p| p.into_inner()) = Some(tokio::spawn(
        member::supervised(group.clone(), coordinator, stopped),
    ));
    *group.commit_task.lock().unwrap_or_else(|p| p.into_inner()) =
        Some(tokio::spawn(supervised_commits(group.clone())));
    inner.groups().insert(spec.handler.clone(), group.clone());
    Ok(group)
}

/// The positions of `request`'s partitions (each topic one of `topics`, the redrive topic
/// last): the group's committed offsets, and where the group starts in the partitions it never
/// consumed (`start`; the redrive topic from its beginning), which the caller commits. Returns
/// every partition's position by (topic index, partition), and the new ones to commit.
async fn positions(
    inner: &Inner,
    group_name: &str,
    start: StartFrom,
    topics: &[String],
    request: &[(String, Vec<i32>)],
) -> Result<(Vec<((usize, i32), i64)>, Vec<(String, i32, i64)>), Error> {
    if request.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let committed = inner.control.fetch_offsets(group_name, request).await?;
    let mut positions = Vec::new();
    let mut new_positions = Vec::new();
    for (topic, partitions) in request {
        let i = topics.iter().position(|t| t == topic).unwrap_or(0);
        let start = if i == topics.len() - 1 {
            StartFrom::Earliest
        } else {
            start
        };
        for &p in partitions {
            let position = match committed.get(&(topic.clone(), p)).copied().flatten() {
                Some(offset) => offset,
                None => {
                    let position = start_position(inner, topic, p, start).await?;
                    new_positions.push((topic.clone(), p, position));
                    position
                }
            };
            positions.push(((i, p), position));
        }
    }
    Ok((positions, new_positions))
}

/// A group that never consumed a partition starts where the subscription says: those
/// positions are committed before the first member joins, so events published after
/// `subscribe` returns are never skipped, whenever the assignment comes. Kafka accepts such
/// a commit only while the group has no members; with members elsewhere, the member that
/// is assigned the partition commits its start position instead.
async fn start_positions(
    inner: &Inner,
    start: StartFrom,
    group_name: &str,
    topics: &[String],
    counts: &[i32],
) -> Result<(), Error> {
    let request: Vec<(String, Vec<i32>)> = topics
        .iter()
        .zip(counts)
        .map(|(t, n)| (t.clone(), (0..*n).collect()))
        .collect();
    let (_, new_positions) = positions(inner, group_name, start, topics, &request).await?;
    if let Err(e) = inner
        .control
        .commit_offsets(group_name, -1, "", &new_positions)
        .await
    {
        tracing::debug!(group = %group_name, "start positions left to the assigned members: {e}");
    }
    Ok(())
}

/// Commits changed positions every [`COMMIT_EVERY`], restarted (with backoff, logged and
/// counted) should it fail; aborted when the group closes.
async fn supervised_commits(group: Arc<Group>) {
    let mut supervisor = Supervisor::new(group.handler.clone(), group.counters.clone());
    loop {
        let committer = group.clone();
        let mut stop = group.stop.subscribe();
        let outcome = supervisor
            .run(async move {
                loop {
                    event_core::fault::checkpoint(&committer.fault_names.commits);
                    tokio::select! {
                        () = tokio::time::sleep(COMMIT_EVERY) => {}
                        _ = stop.changed() => {}
                    }
                    committer.commit().await;
                }
            })
            .await;
        let why = match outcome {
            Ok(()) => "ended without being asked to stop".to_string(),
            Err(why) => why,
        };
        let pause = supervisor.failed("the offset commit task", &why);
        tokio::time::sleep(pause).await;
    }
}
