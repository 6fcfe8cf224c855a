//! Consumer groups across processes, against a real broker (`EVENTBUS_TEST_KAFKA_BROKERS`)
//! and Kafka's own tool (`EVENTBUS_TEST_KAFKA_CLASSPATH`): processes running the same handler
//! split its partitions, take over from a process killed with SIGKILL, and scale up and down
//! under load without losing an event. The consumer processes are this test binary run again
//! with `EVENTBUS_KAFKA_GROUP_CHILD` set; each writes the id of every event it handles to a
//! file of its own.

mod support;

use support::Settings;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, ensure};
use event_core::{
    Event, EventBus, EventId, EventType, HandlerError, StartFrom, SubscriptionSpec, handler_fn,
};
use event_kafka::KafkaBus;
use tokio::time::Instant;

const CHILD: &str = "EVENTBUS_KAFKA_GROUP_CHILD";
const PARTITIONS: u32 = 6;
const SESSION: Duration = Duration::from_secs(6);
/// The session timeout of the static members' test (see there).
const STATIC_SESSION: Duration = Duration::from_secs(45);

/// How the consumer processes of a test run: the topic's partitions, the time a handler takes
/// per event, and how many events a process handles at once.
#[derive(Clone, Copy, Debug)]
struct Profile {
    partitions: u32,
    delay: Duration,
    concurrency: usize,
}

const DEFAULT_PROFILE: Profile = Profile {
    partitions: PARTITIONS,
    delay: Duration::from_millis(2),
    concurrency: 16,
};

fn config(brokers: &str, prefix: &str, profile: Profile) -> Settings {
    let mut config = Settings::default();
    config.kafka.bootstrap_servers = brokers.split(',').map(|s| s.trim().to_string()).collect();
    config.kafka.topic_prefix = prefix.to_string();
    config.kafka.partitions = profile.partitions;
    config.bus.handler_concurrency = profile.concurrency;
    config.kafka.session_timeout = SESSION;
    config.kafka.heartbeat_interval = Duration::from_millis(500);
    config.kafka.rebalance_timeout = Duration::from_secs(10);
    config
}

/// A consumer process: handles events, writing each id to its file, until it is killed or
/// its stop file appears (then it shuts down cleanly and exits).
#[tokio::test]
async fn consumer_child() -> anyhow::Result<()> {
    let Ok(settings) = std::env::var(CHILD) else {
        return Ok(());
    };
    let parts: Vec<&str> = settings.split('|').collect();
    let [
        brokers,
        prefix,
        event_type,
        handler,
        file,
        partitions,
        delay_ms,
        concurrency,
    ] = parts[..]
    else {
        anyhow::bail!("bad {CHILD}: {settings}");
    };
    let profile = Profile {
        partitions: partitions.parse()?,
        delay: Duration::from_millis(delay_ms.parse()?),
        concurrency: concurrency.parse()?,
    };
    let bus = config(brokers, prefix, profile).connect().await?;
    bus.subscribe(
        SubscriptionSpec::new(handler.to_string(), [EventType::new(event_type)?])
            .start_from(StartFrom::Earliest),
        support::id_writer(handler, Path::new(file), profile.delay)?,
    )
    .await?;
    let stop = PathBuf::from(format!("{file}.stop"));
    let deadline = Instant::now() + Duration::from_secs(240);
    while !stop.exists() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bus.shutdown().await?;
    Ok(())
}

/// The test's group: its topic, handler and the consumer processes it started.
struct Scenario {
    brokers: String,
    bus: KafkaBus,
    prefix: String,
    event_type: EventType,
    handler: String,
    group: String,
    dir: PathBuf,
    profile: Profile,
    children: Vec<(std::process::Child, PathBuf)>,
}

impl Scenario {
    async fn new(brokers: &str, name: &str) -> anyhow::Result<Self> {
        Self::with(brokers, name, DEFAULT_PROFILE).await
    }

    async fn with(brokers: &str, name: &str, profile: Profile) -> anyhow::Result<Self> {
        let tag = format!("{:08x}", fastrand::u32(..));
        let prefix = format!("eventbus-groups-{tag}");
        let handler = format!("{name}{tag}");
        let dir = std::env::temp_dir().join(format!("eventbus-kafka-groups-{tag}"));
        std::fs::create_dir_all(&dir)?;
        let config = config(brokers, &prefix, profile);
        let group = format!("{}.{handler}", config.bus.consumer_group);
        Ok(Self {
            brokers: brokers.to_string(),
            bus: config.connect().await?,
            event_type: EventType::new(format!("test.grouped{tag}"))?,
            prefix,
            handler,
            group,
            dir,
            profile,
            children: Vec::new(),
        })
    }

    /// Starts a consumer process; returns its index.
    fn start(&mut self) -> anyhow::Result<usize> {
        let i = self.children.len();
        let file = self.dir.join(format!("consumer-{i}.txt"));
        let child = std::process::Command::new(std::env::current_exe()?)
            .args(["consumer_child", "--exact", "--nocapture"])
            .env(
                CHILD,
                format!(
                    "{}|{}|{}|{}|{}|{}|{}|{}",
                    self.brokers,
                    self.prefix,
                    self.event_type,
                    self.handler,
                    file.display(),
                    self.profile.partitions,
                    self.profile.delay.as_millis(),
                    self.profile.concurrency
                ),
            )
            .stdout(std::process::Stdio::null())
            .spawn()?;
        self.children.push((child, file));
        Ok(i)
    }

    /// Asks a consumer process to shut down cleanly and waits for it to exit.
    async fn stop(&mut self, i: usize) -> anyhow::Result<()> {
        let (child, file) = &mut self.children[i];
        std::fs::write(format!("{}.stop", file.display()), b"")?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while child.try_wait()?.is_none() {
            ensure!(
                Instant::now() < deadline,
                "consumer {i} did not exit within 60 s of its stop"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Kills a consumer process with SIGKILL.
    fn kill(&mut self, i: usize) -> anyhow::Result<()> {
        let (child, _) = &mut self.children[i];
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    /// The ids each consumer process handled, in order.
    fn handled(&self) -> Vec<Vec<EventId>> {
        self.children
            .iter()
            .map(|(_, file)| support::read_ids(file))
            .collect()
    }

    async fn publish(&self, n: usize, round: &str) -> anyhow::Result<Vec<EventId>> {
        let events: Vec<Event> = (0..n)
            .map(|k| {
                Event::builder(self.event_type.clone(), "groups")
                    .partition_key(format!("{round}-{k}"))
                    .build()
            })
            .collect::<Result<_, _>>()?;
        Ok(self
            .bus
            .publish_batch(events)
            .await
            .into_iter()
            .collect::<Result<_, _>>()?)
    }

    /// Waits until every one of `ids` was handled by some process.
    async fn until_handled(&self, ids: &[EventId], within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let seen: HashSet<EventId> = self.handled().into_iter().flatten().collect();
            let missing = ids.iter().filter(|id| !seen.contains(id)).count();
            if missing == 0 {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "{missing} of {} events were not handled within {within:?}",
                ids.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the group has `n` members, each owning a partition, in the bus's stats.
    async fn until_members(&self, n: usize) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let stats = self.bus.stats().await?;
            let members = stats
                .handlers
                .get(&self.handler)
                .map(|h| h.members.clone())
                .unwrap_or_default();
            if members.len() == n && members.iter().all(|m| !m.partitions.is_empty()) {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "the group did not reach {n} members with partitions within 60 s: {members:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Scenario {
    fn drop(&mut self) {
        for (child, _) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// How often each id was handled, over all processes.
fn counts(handled: &[Vec<EventId>]) -> HashMap<EventId, usize> {
    let mut counts = HashMap::new();
    for id in handled.iter().flatten() {
        *counts.entry(*id).or_default() += 1;
    }
    counts
}

/// Waits until the numbers of events each process handled satisfy `ready`.
async fn wait_handled(
    s: &Scenario,
    what: &str,
    ready: impl Fn(&[usize]) -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let handled: Vec<usize> = s.handled().iter().map(Vec::len).collect();
        if ready(&handled) {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "gave up waiting for {what}: handled {handled:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Two processes split the partitions and each event is handled once; Kafka's tool lists the
/// group with both members and its lag; one process killed with SIGKILL, the other takes its
/// partitions over within the session timeout and every event is handled.
#[tokio::test]
async fn two_processes_share_the_partitions_and_survive_a_kill() -> anyhow::Result<()> {
    if std::env::var(CHILD).is_ok() {
        return Ok(());
    }
    let Some(brokers) = event_testkit::test_server("EVENTBUS_TEST_KAFKA_BROKERS", "kafka")? else {
        return Ok(());
    };
    let Some(classpath) = event_testkit::test_server("EVENTBUS_TEST_KAFKA_CLASSPATH", "kafka")?
    else {
        return Ok(());
    };
    let mut s = Scenario::new(&brokers, "shared").await?;
    // The topic exists before the consumers subscribe, so that both join at once.
    let mut ids = s.publish(1, "warm-up").await?;
    s.start()?;
    s.start()?;
    s.until_members(2).await?;

    ids.extend(s.publish(600, "steady").await?);
    s.until_handled(&ids, Duration::from_secs(60)).await?;
    let handled = s.handled();
    let per_process: Vec<usize> = handled.iter().map(Vec::len).collect();
    eprintln!("steady state: the two processes handled {per_process:?} events");
    ensure!(
        per_process.iter().all(|n| *n > 0),
        "one process handled nothing: {per_process:?}"
    );
    ensure!(
        per_process.iter().sum::<usize>() == ids.len(),
        "{per_process:?} do not add up to the {} published: events were handled twice",
        ids.len()
    );

    // What an operator sees: both members with their partitions, and the lag per partition.
    let deadline = Instant::now() + Duration::from_secs(90);
    while s.bus.stats().await?.handlers[&s.handler].lag > 0 {
        ensure!(Instant::now() < deadline, "the group's lag stayed above 0");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let members = support::tool_members(&classpath, &brokers, &s.group)
        .await?
        .context("kafka-consumer-groups found no active members")?;
    ensure!(members.len() == 2, "{members:?}");
    ensure!(
        members.iter().map(|m| m.partitions).sum::<usize>() == PARTITIONS as usize + 1,
        "the members do not own the {PARTITIONS} event partitions and the redrive partition: {members:?}"
    );
    let offsets = support::tool_offsets(&classpath, &brokers, &s.group).await?;
    let topic = format!("{}.{}", s.prefix, s.event_type);
    let event_rows: Vec<_> = offsets.iter().filter(|o| o.topic == topic).collect();
    ensure!(
        event_rows.len() == PARTITIONS as usize,
        "the tool lists {} partitions of {topic}: {offsets:?}",
        event_rows.len()
    );
    ensure!(
        event_rows
            .iter()
            .all(|o| o.lag == Some(0) && members.iter().any(|m| m.consumer_id == o.consumer_id)),
        "every partition should show lag 0 and an owner among the members: {offsets:?}"
    );

    // SIGKILL one; the other takes everything over once the session ends.
    s.kill(0)?;
    let killed_at = Instant::now();
    let more = s.publish(300, "after-kill").await?;
    s.until_handled(&more, SESSION + Duration::from_secs(60))
        .await?;
    eprintln!(
        "after the kill, the survivor handled the next 300 events within {:?}",
        killed_at.elapsed()
    );
    let survivor: HashSet<EventId> = s.handled()[1].iter().copied().collect();
    ensure!(
        more.iter().all(|id| survivor.contains(id)),
        "events published after the kill were not all handled by the survivor"
    );
    ensure!(s.bus.stats().await?.handlers[&s.handler].members.len() == 1);
    s.stop(1).await?;
    s.bus.shutdown().await?;
    Ok(())
}

/// One consumer, scaled to three and back to one while a publisher runs: no event is lost,
/// and the duplicates (handled again after a rebalance) are counted and reported.
#[tokio::test]
async fn scaling_up_and_down_under_load_loses_nothing() -> anyhow::Result<()> {
    if std::env::var(CHILD).is_ok() {
        return Ok(());
    }
    let Some(brokers) = event_testkit::test_server("EVENTBUS_TEST_KAFKA_BROKERS", "kafka")? else {
        return Ok(());
    };
    let mut s = Scenario::new(&brokers, "scaled").await?;
    let mut ids = s.publish(1, "warm-up").await?;
    s.start()?;
    s.until_members(1).await?;

    // The publisher runs until the scaling is over, however long the machine takes for it.
    let (done, publishing) = tokio::sync::watch::channel(false);
    let publisher = {
        let bus = s.bus.clone();
        let event_type = s.event_type.clone();
        tokio::spawn(async move {
            let mut ids = Vec::new();
            let mut round = 0;
            while !*publishing.borrow() && round < 3000 {
                let events: Vec<Event> = (0..20)
                    .map(|k| {
                        Event::builder(event_type.clone(), "groups")
                            .partition_key(format!("{round}-{k}"))
                            .build()
                    })
                    .collect::<Result<_, _>>()?;
                for result in bus.publish_batch(events).await {
                    ids.push(result?);
                }
                round += 1;
                // A steady trickle, not a flood: the processes keep up between rebalances.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            anyhow::Ok(ids)
        })
    };
    // Each step waits for the processes to have handled events under the new membership.
    let handled_by = |s: &Scenario| s.handled().iter().map(Vec::len).collect::<Vec<_>>();
    wait_handled(&s, "the first process to handle events", |n| n[0] >= 50).await?;
    s.start()?;
    s.start()?;
    s.until_members(3).await?;
    let at_three = handled_by(&s);
    wait_handled(&s, "all three processes to handle events", |n| {
        n.iter().zip(&at_three).all(|(now, then)| now > then) && n.iter().all(|n| *n > 0)
    })
    .await?;
    s.stop(1).await?;
    s.stop(2).await?;
    s.until_members(1).await?;
    let at_one = handled_by(&s);
    wait_handled(&s, "the remaining process to handle events", |n| {
        n[0] > at_one[0]
    })
    .await?;
    let _ = done.send(true);
    ids.extend(publisher.await??);
    s.until_handled(&ids, Duration::from_secs(90)).await?;

    let handled = s.handled();
    let counts = counts(&handled);
    let duplicates: usize = counts.values().map(|n| n - 1).sum();
    let per_process: Vec<usize> = handled.iter().map(Vec::len).collect();
    eprintln!(
        "scaled 1 → 3 → 1 under load: {} events published, all handled; per process {per_process:?}; {duplicates} handled twice",
        ids.len()
    );
    ensure!(
        per_process.iter().all(|n| *n > 0),
        "a process handled nothing: {per_process:?}"
    );
    ensure!(
        counts.len() == ids.len(),
        "{} distinct events handled, {} published",
        counts.len(),
        ids.len()
    );
    // Clean rebalances finish in-flight events and commit before giving partitions up, so an
    // event is handled twice only when a member gave a partition up with events handed out
    // and not committed: at most a dispatcher's window (1,024) per member per rebalance. The
    // test changes the membership four times (two joins, two leaves); the generation is not
    // visible from this process, which is no member, so each change counts as one rebalance.
    let rebalances = 4;
    let bound = rebalances * 3 * 1024;
    eprintln!("at most {bound} duplicates allowed");
    ensure!(
        duplicates <= bound,
        "{duplicates} of {} events handled twice in {rebalances} clean rebalances",
        ids.len()
    );
    s.stop(0).await?;
    s.bus.shutdown().await?;
    Ok(())
}

/// Static membership (`KAFKA_GROUP_INSTANCE_ID`): a member that stops without leaving and
/// comes back with the same instance id gets its partitions back and the other member sees no
/// rebalance (its generation does not move); a second member with an id already in use fences
/// the first, whose health says why.
#[tokio::test]
async fn static_members_return_without_a_rebalance() -> anyhow::Result<()> {
    if std::env::var(CHILD).is_ok() {
        return Ok(());
    }
    let Some(brokers) = event_testkit::test_server("EVENTBUS_TEST_KAFKA_BROKERS", "kafka")? else {
        return Ok(());
    };
    let tag = format!("{:08x}", fastrand::u32(..));
    let prefix = format!("eventbus-static-{tag}");
    let event_type = EventType::new(format!("test.static{tag}"))?;
    let handler = format!("static{tag}");
    let handled = Arc::new(Mutex::new(Vec::new()));
    let member = |instance: &str| {
        let mut config = config(&brokers, &prefix, DEFAULT_PROFILE);
        config.kafka.group_instance_id = Some(instance.to_string());
        // A static member keeps its partitions while it is away for less than the session
        // timeout; a loaded machine can take several seconds to shut a bus down and start
        // another, so give it a margin the test does not depend on.
        config.kafka.session_timeout = STATIC_SESSION;
        let handled = handled.clone();
        let handler = handler.clone();
        let event_type = event_type.clone();
        async move {
            let bus = config.connect().await?;
            bus.subscribe(
                SubscriptionSpec::new(handler.clone(), [event_type])
                    .start_from(StartFrom::Earliest),
                handler_fn(handler, move |event: Arc<Event>| {
                    let handled = handled.clone();
                    async move {
                        handled.lock().unwrap().push(event.id);
                        Ok::<(), HandlerError>(())
                    }
                }),
            )
            .await?;
            anyhow::Ok(bus)
        }
    };
    let generation = |bus: &KafkaBus| {
        let bus = bus.clone();
        let handler = handler.clone();
        async move { anyhow::Ok(bus.stats().await?.handlers[&handler].generation) }
    };
    // Both members' partitions from one look at the group (two looks could straddle a
    // rebalance and pair an old assignment with a new one).
    let partitions_of = |bus: &KafkaBus| {
        let bus = bus.clone();
        let handler = handler.clone();
        async move {
            let stats = bus.stats().await?;
            let of = |instance: &str| {
                stats.handlers[&handler]
                    .members
                    .iter()
                    .find(|m| m.instance_id.as_deref() == Some(instance))
                    .map(|m| m.partitions.clone())
            };
            anyhow::Ok((of("a"), of("b")))
        }
    };
    let publisher = config(&brokers, &prefix, DEFAULT_PROFILE).connect().await?;
    publisher
        .publish(Event::builder(event_type.clone(), "static").build()?)
        .await?;
    let a = member("a").await?;
    let b = member("b").await?;
    // Both members own partitions once the second join's rebalance is over.
    let deadline = Instant::now() + Duration::from_secs(90);
    let (before, b_generation) = loop {
        let (pa, pb) = partitions_of(&b).await?;
        let g = generation(&b).await?;
        if let (Some(pa), Some(pb), Some(g)) = (pa, pb, g)
            && !pa.is_empty()
            && !pb.is_empty()
            && generation(&a).await? == Some(g)
        {
            break (pa, g);
        }
        ensure!(
            Instant::now() < deadline,
            "the two static members never settled"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // `a` stops without leaving (static), and comes back with the same id.
    a.shutdown().await?;
    let a = member("a").await?;
    let deadline = Instant::now() + Duration::from_secs(90);
    while generation(&a).await?.is_none() {
        ensure!(
            Instant::now() < deadline,
            "the returning member never joined"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ids: Vec<EventId> = (0..60)
        .map(|k| {
            Event::builder(event_type.clone(), "static")
                .partition_key(format!("k{k}"))
                .build()
        })
        .collect::<Result<Vec<_>, _>>()
        .map(|events| async { publisher.publish_batch(events).await })?
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let seen: HashSet<EventId> = handled.lock().unwrap().iter().copied().collect();
        if ids.iter().all(|id| seen.contains(id)) {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "events were not handled after the return"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ensure!(
        generation(&b).await? == Some(b_generation),
        "the other member went through a rebalance: generation {b_generation} became {:?}",
        generation(&b).await?
    );
    // The coordinator's description follows the member's return: wait for it to show `a`
    // with its old partitions.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (now, _) = partitions_of(&b).await?;
        if now.as_ref() == Some(&before) {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the returning member did not get its partitions back: {before:?} before, {now:?} now"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ensure!(
        generation(&b).await? == Some(b_generation),
        "the other member went through a rebalance: generation {b_generation} became {:?}",
        generation(&b).await?
    );

    // A second process with `b`'s id fences the first.
    let intruder = member("b").await?;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let health = b.health().await;
        if health
            .problems
            .iter()
            .any(|p| p.contains("KAFKA_GROUP_INSTANCE_ID"))
        {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the fenced member's health never said so: {health:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for bus in [a, b, intruder, publisher] {
        bus.shutdown().await?;
    }
    Ok(())
}

/// A member whose handler outlasts the rebalance timeout gives its partitions up when a second
/// member joins: the rebalance completes, the stuck event is handled again by the partition's
/// next owner, and every event is handled.
#[tokio::test]
async fn a_stuck_handler_gives_its_partitions_up() -> anyhow::Result<()> {
    if std::env::var(CHILD).is_ok() {
        return Ok(());
    }
    let Some(brokers) = event_testkit::test_server("EVENTBUS_TEST_KAFKA_BROKERS", "kafka")? else {
        return Ok(());
    };
    let tag = format!("{:08x}", fastrand::u32(..));
    let prefix = format!("eventbus-stuck-{tag}");
    let event_type = EventType::new(format!("test.stuck{tag}"))?;
    let handler = format!("stuck{tag}");
    let mut settings = config(&brokers, &prefix, DEFAULT_PROFILE);
    settings.kafka.partitions = 1;
    settings.kafka.rebalance_timeout = Duration::from_secs(3);
    settings.bus.shutdown_timeout = Duration::from_secs(1);
    let publisher = settings.connect().await?;
    // Range orders static members by instance id: after the rebalance the single partition
    // belongs to the second member ("a"), not the stuck one ("z").
    let mut stuck_settings = settings.clone();
    stuck_settings.kafka.group_instance_id = Some("z".into());
    settings.kafka.group_instance_id = Some("a".into());
    let stuck = publisher
        .publish(Event::builder(event_type.clone(), "stuck").build()?)
        .await?;
    // The first member hangs on every event; the second handles them.
    let first = stuck_settings.connect().await?;
    let started = Arc::new(tokio::sync::Notify::new());
    let signal = started.clone();
    first
        .subscribe(
            SubscriptionSpec::new(handler.clone(), [event_type.clone()])
                .start_from(StartFrom::Earliest),
            handler_fn(handler.clone(), move |_: Arc<Event>| {
                let signal = signal.clone();
                async move {
                    signal.notify_one();
                    tokio::time::sleep(Duration::from_secs(300)).await;
                    Ok::<(), HandlerError>(())
                }
            }),
        )
        .await?;
    tokio::time::timeout(Duration::from_secs(90), started.notified())
        .await
        .context("the first member never started the event")?;
    let handled = Arc::new(Mutex::new(Vec::new()));
    let record = handled.clone();
    let second = settings.connect().await?;
    second
        .subscribe(
            SubscriptionSpec::new(handler.clone(), [event_type.clone()])
                .start_from(StartFrom::Earliest),
            handler_fn(handler.clone(), move |event: Arc<Event>| {
                let record = record.clone();
                async move {
                    record.lock().unwrap().push(event.id);
                    Ok::<(), HandlerError>(())
                }
            }),
        )
        .await?;
    let deadline = Instant::now() + Duration::from_secs(90);
    while !handled.lock().unwrap().contains(&stuck) {
        ensure!(
            Instant::now() < deadline,
            "the stuck event was never handled by the other member"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let more = publisher
        .publish(Event::builder(event_type.clone(), "stuck").build()?)
        .await?;
    let deadline = Instant::now() + Duration::from_secs(90);
    while !handled.lock().unwrap().contains(&more) {
        ensure!(Instant::now() < deadline, "a later event was not handled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for bus in [first, second, publisher] {
        bus.shutdown().await?;
    }
    Ok(())
}

/// One handler's group across 1, 2 and 4 processes on a topic of 12 partitions: the partitions
/// spread evenly over the processes, and the rate at which a backlog is handled grows with
/// them. The handlers wait on I/O (20 ms an event, 4 at a time per process), the workload that
/// scaling out is for; on two cores a CPU-bound handler could not show it.
#[tokio::test]
async fn scaling_out_spreads_the_partitions_and_raises_the_handled_rate() -> anyhow::Result<()> {
    if std::env::var(CHILD).is_ok() {
        return Ok(());
    }
    let Some(brokers) = event_testkit::test_server("EVENTBUS_TEST_KAFKA_BROKERS", "kafka")? else {
        return Ok(());
    };
    let profile = Profile {
        partitions: 12,
        delay: Duration::from_millis(20),
        concurrency: 4,
    };
    let mut s = Scenario::with(&brokers, "scale", profile).await?;
    let topic = format!("{}.{}", s.prefix, s.event_type);
    let mut rates = Vec::new();
    for processes in [1, 2, 4] {
        while s.children.len() < processes {
            s.start()?;
        }
        s.until_members(processes).await?;
        let stats = s.bus.stats().await?;
        let owned: Vec<usize> = stats.handlers[&s.handler]
            .members
            .iter()
            .map(|m| m.partitions.get(&topic).map_or(0, Vec::len))
            .collect();
        ensure!(
            owned.iter().all(|n| *n == 12 / processes),
            "{processes} processes own {owned:?} of the 12 partitions, not {} each",
            12 / processes
        );
        let began = Instant::now();
        let ids = s.publish(1_200, &format!("scale{processes}")).await?;
        s.until_handled(&ids, Duration::from_secs(120)).await?;
        let rate = ids.len() as f64 / began.elapsed().as_secs_f64();
        eprintln!(
            "{processes} process(es), partitions {owned:?}: 1,200 events handled at {rate:.0} events/s"
        );
        rates.push(rate);
    }
    // Four processes could reach four times one process's rate; half of that is the bar, so
    // a loaded machine does not fail the test, while a group that does not scale does.
    ensure!(
        rates[2] > 2.0 * rates[0],
        "the handled rate did not grow with the processes: {rates:?} events/s for 1, 2 and 4"
    );
    Ok(())
}
