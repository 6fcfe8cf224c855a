//! A new user's realistic workload on `RedisBus`: three event types, handler A on types 1 and
//! 2, handler B on types 2 and 3, a backlog of 3,000 events per type (far more than one read
//! or batch) published before anyone subscribes, more published live with partition keys,
//! each handler's group run by three buses at once (two in this process, one a child process
//! killed with SIGKILL mid-run), and foreign entries written into the bus's own streams with a
//! raw client: no `event` field, not JSON, JSON of another shape, a 1 MiB value, binary
//! garbage, and a valid envelope of another type than its stream's.
//!
//! At the end: every valid event handled at least once by each of its handlers, in order per
//! key within each consumer (events taken over from the killed process excepted, as
//! `docs/redis.md` says), each foreign entry dead-lettered once per handler of its stream with
//! its raw fields, the killed process's entries taken over, nothing pending, stats with lag 0
//! and the right dead-letter counts, health healthy without a loop restart, and a replay of
//! every type that returns exactly the valid events.

mod common;

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use common::{Scenario, Settings, admin_client, lock, n_of, numbered, secs, wait_until};
use event_core::{
    DeadLetterReason, Event, EventBus, EventHandler, EventType, HandlerError, HealthStatus,
    ReplayQuery, StartFrom, SubscriptionSpec,
};
use event_redis::RedisBus;
use fred::prelude::{Client, ClientLike, ListInterface, StreamsInterface};
use fred::types::Value;
use futures::TryStreamExt as _;
use time::OffsetDateTime;

/// Valid events per type published before anyone subscribes.
const BACKLOG_PER_TYPE: u64 = 3_000;
/// Valid events per type published after the child process is killed.
const AFTER_KILL_PER_TYPE: u64 = 400;
/// Partition keys per type.
const KEYS_PER_TYPE: u64 = 40;
/// `EVENT_CLAIM_IDLE_MS`: how long the killed process's entries wait before being taken over.
const CLAIM_IDLE: Duration = Duration::from_secs(2);
/// The child process is killed once it has handled this many events.
const KILL_AFTER: u64 = 300;
/// Dead letters keep at most this much of an entry's raw text (plus `...`).
const RAW_TEXT_LIMIT: usize = 64 * 1024;
/// The kind of foreign entry that is a valid envelope, of another type than its stream's.
const ENVELOPE: &str = "an envelope of another type";
/// The types (indices) of handler A and of handler B.
const OF: [[usize; 2]; 2] = [[0, 1], [1, 2]];

/// Set in the environment of the child process: `{handler A} {handler B} {type} {type} {type}`.
const CHILD_VAR: &str = "EVENTBUS_USER_TRIAL_CHILD";
/// The Redis list the child appends `{handler index} {event id} {key} {n}` to per event.
const CHILD_LOG_VAR: &str = "EVENTBUS_USER_TRIAL_LOG";

/// One handling of an event by one consumer (`bus0`, `bus1` or `child`) of handler `h`.
#[derive(Clone, Debug)]
struct Handled {
    consumer: &'static str,
    h: usize,
    id: String,
    key: String,
    n: u64,
}

impl Handled {
    /// The records of `lines`.
    fn parse_all(consumer: &'static str, lines: &[String]) -> anyhow::Result<Vec<Self>> {
        lines.iter().map(|l| Self::parse(consumer, l)).collect()
    }

    /// The record of `line` (`{h} {event id} {key} {n}`, as [`line`] writes it).
    fn parse(consumer: &'static str, line: &str) -> anyhow::Result<Self> {
        let parts: Vec<&str> = line.split(' ').collect();
        let [h, id, key, n] = parts.as_slice() else {
            bail!("a malformed record {line:?}");
        };
        let (h, id, key, n) = (h.parse()?, id.to_string(), key.to_string(), n.parse()?);
        Ok(Self {
            consumer,
            h,
            id,
            key,
            n,
        })
    }
}

/// The valid event ids of the types `of`.
fn ids_of(valid: &[Vec<String>; 3], of: [usize; 2]) -> HashSet<&String> {
    of.iter().flat_map(|t| &valid[*t]).collect()
}

/// The distinct event ids of `records`.
fn ids<'r>(records: impl IntoIterator<Item = &'r Handled>) -> HashSet<&'r String> {
    records.into_iter().map(|r| &r.id).collect()
}

/// What still stands in the way, if anything.
fn status(problems: Vec<String>) -> Option<String> {
    (!problems.is_empty()).then(|| problems.join("; "))
}

/// How a handling of `event` by handler `h` is recorded.
fn line(h: usize, event: &Event) -> String {
    let key = event.partition_key.as_deref().unwrap_or("-");
    format!("{h} {} {key} {}", event.id, n_of(event))
}

/// A foreign entry written into the stream of type `stream`.
struct Foreign {
    stream: usize,
    marker: String,
    kind: &'static str,
}

/// The trial's set-up and what it wrote.
struct Trial<'a> {
    sc: &'a Scenario,
    types: [EventType; 3],
    streams: Vec<String>,
    handlers: [String; 2],
    groups: [String; 2],
    /// Valid event ids per type.
    valid: [Vec<String>; 3],
    foreign: Vec<Foreign>,
    /// The next event number (per type).
    next: u64,
}

impl Trial<'_> {
    /// Publishes `per_type` more valid events of each type, types mixed in batches of 150.
    async fn publish(&mut self, bus: &RedisBus, per_type: u64) -> anyhow::Result<()> {
        let all = events(&self.types, self.next, per_type);
        self.next += per_type;
        for chunk in all.chunks(150) {
            let results = bus.publish_batch(chunk.iter().map(|(_, e)| e.clone()).collect());
            for ((t, _), result) in chunk.iter().zip(results.await) {
                self.valid[*t].push(result?.to_string());
            }
        }
        Ok(())
    }

    /// Writes one foreign entry of each kind into each stream with raw `XADD`, each marked.
    async fn write_foreign(&mut self, phase: &str) -> anyhow::Result<()> {
        let binary = |n| (0..n).map(|_| fastrand::u8(128..)).collect::<Vec<u8>>();
        for t in 0..3 {
            // A valid envelope of another of the three types, in this type's stream.
            let event = numbered(&self.types[(t + 2) % 3], 900_000, Some("stray"));
            let json = serde_json::to_vec(&event)?;
            let kinds: [(&'static str, &[u8], Vec<u8>); 6] = [
                ("no event field", b"payload", b"hello".to_vec()),
                ("not JSON", b"event", b"{not json".to_vec()),
                ("JSON of another shape", b"event", br#"{"a":1}"#.to_vec()),
                ("a 1 MiB value", b"event", vec![b'x'; 1 << 20]),
                ("binary garbage", &binary(64), binary(512)),
                (ENVELOPE, b"event", json),
            ];
            for (kind, name, value) in kinds {
                let marker = format!("{phase}-{t}-{}", self.foreign.len());
                let fields: [(&[u8], &[u8]); 2] = [(b"marker", marker.as_bytes()), (name, &value)];
                self.sc.raw_xadd(&self.streams[t], "*", &fields).await?;
                self.foreign.push(Foreign {
                    stream: t,
                    marker,
                    kind,
                });
            }
        }
        Ok(())
    }

    /// The foreign entries handler `h` reads.
    fn foreign_of(&self, h: usize) -> impl Iterator<Item = &Foreign> {
        self.foreign
            .iter()
            .filter(move |f| OF[h].contains(&f.stream))
    }

    /// Entries pending for handler `h`'s group.
    async fn pending(&self, h: usize) -> anyhow::Result<u64> {
        let mut pending = 0;
        for t in OF[h] {
            pending += self.sc.pending(&self.streams[t], &self.groups[h]).await?;
        }
        Ok(pending)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_a_killed_process_and_foreign_entries_lose_nothing() -> anyhow::Result<()> {
    let Some(scenario) = Scenario::start("eventbus-user-trial").await? else {
        return Ok(());
    };
    scenario.run(trial).await
}

async fn trial(sc: &Scenario) -> anyhow::Result<()> {
    let mut config = sc.config();
    config.bus.claim_idle = CLAIM_IDLE;
    let types = ["one", "two", "three"].map(|verb| sc.event_type(verb));
    let suffix = format!("{:08x}", fastrand::u32(..));
    let handlers = [format!("a{suffix}"), format!("b{suffix}")];
    let mut tr = Trial {
        sc,
        streams: types.iter().map(|t| sc.stream(t)).collect(),
        groups: handlers.clone().map(|h| sc.group(&config, &h)),
        types,
        handlers,
        valid: Default::default(),
        foreign: Vec::new(),
        next: 0,
    };
    let publisher = Arc::new(config.connect().await?);

    // The backlog, with a set of foreign entries in the middle of each stream.
    tr.publish(&publisher, BACKLOG_PER_TYPE / 2).await?;
    tr.write_foreign("backlog").await?;
    tr.publish(&publisher, BACKLOG_PER_TYPE / 2).await?;

    // Two instances of each handler in this process.
    let log: Arc<Mutex<Vec<Handled>>> = Arc::default();
    let (mut buses, mut subscriptions) = (Vec::new(), Vec::new());
    for consumer in ["bus0", "bus1"] {
        let bus = config.connect().await?;
        for (h, handler) in tr.handlers.iter().enumerate() {
            let types = OF[h].map(|t| tr.types[t].clone());
            let spec = SubscriptionSpec::new(handler, types).start_from(StartFrom::Earliest);
            let recorder = recording(consumer, handler, h, log.clone());
            subscriptions.push(bus.subscribe(spec, recorder).await?);
        }
        buses.push(bus);
    }

    // Live events (ten per type at each poll) while the handlers run. Once the backlog's
    // foreign entries are settled (so only this process's buses saw them), the third instance
    // of each handler starts, in a child process.
    wait_until("backlog's foreign entries", secs(30), async || {
        tr.publish(&publisher, 10).await?;
        let mut problems = Vec::new();
        for h in 0..2 {
            let letters = sc.xlen(&sc.dead_letters(&tr.groups[h])).await?;
            if letters < tr.foreign_of(h).count() as u64 {
                problems.push(format!("{h}: {letters} dead letters"));
            }
        }
        Ok(status(problems))
    })
    .await?;
    let child_log = format!("{}:child-log", sc.prefix);
    let mut child = spawn_child(&tr, &child_log)?;
    let pid = child.0.id();
    let admin = &sc.admin;
    wait_until("the child process to handle events", secs(30), async || {
        tr.publish(&publisher, 10).await?;
        if let Some(status) = child.0.try_wait()? {
            bail!("the child process ended by itself: {status}");
        }
        let handled: u64 = admin.llen(child_log.as_str()).await?;
        let pending = child_pending(&tr, pid).await?.len();
        Ok((handled < KILL_AFTER || pending == 0)
            .then(|| format!("{handled} handled, {pending} pending")))
    })
    .await?;
    child.0.kill()?;
    child.0.wait()?;
    let orphans = child_pending(&tr, pid).await?;
    ensure!(!orphans.is_empty(), "the child was killed holding nothing");
    let lines: Vec<String> = admin.lrange(child_log.as_str(), 0, -1).await?;
    let by_child = Handled::parse_all("child", &lines)?;

    // More events, with foreign entries between them; every stream ends with valid events.
    tr.publish(&publisher, AFTER_KILL_PER_TYPE / 2).await?;
    tr.write_foreign("live").await?;
    tr.publish(&publisher, AFTER_KILL_PER_TYPE / 2).await?;

    let expected = OF.map(|of| ids_of(&tr.valid, of));
    wait_until("every event handled", secs(60), async || {
        let mut problems = Vec::new();
        for (h, expected) in expected.iter().enumerate() {
            let missing = {
                let log = lock(&log);
                let seen = ids(log.iter().chain(&by_child).filter(|r| r.h == h));
                expected.difference(&seen).count()
            };
            let pending = tr.pending(h).await?;
            if missing > 0 || pending > 0 {
                problems.push(format!("{h}: {missing} missing, {pending} pending"));
            }
        }
        Ok(status(problems))
    })
    .await?;

    let records: Vec<Handled> = lock(&log).clone();
    let orphan_ids = event_ids(admin, &orphans).await?;
    let stats = [buses[0].stats().await?, buses[1].stats().await?];
    let all: Vec<&Handled> = records.iter().chain(&by_child).collect();
    let mut summary = Vec::new();
    for (h, handler) in tr.handlers.iter().enumerate() {
        let mine: Vec<&Handled> = all.iter().copied().filter(|r| r.h == h).collect();
        // Nothing else: the envelopes of another type are dead-lettered, handled by nobody.
        let stranger = mine.iter().find(|r| !expected[h].contains(&r.id));
        ensure!(stranger.is_none(), "not of its types: {stranger:?}");
        // The killed process's entries were taken over by this process's buses.
        let here = ids(records.iter().filter(|r| r.h == h));
        let orphaned = orphan_ids.iter().filter(|o| o.0 == h).count();
        let lost = orphan_ids.iter().find(|o| o.0 == h && !here.contains(&o.1));
        ensure!(lost.is_none(), "{lost:?} never taken over");
        let again = mine.len() - ids(mine.iter().copied()).len();
        let letters = check_dead_letters(&buses[0], &tr, h).await?;
        summary.push(format!(
            "{handler}: {} handlings of {} events ({again} again), {orphaned} taken over from the killed process, {letters} dead letters",
            mine.len(),
            expected[h].len(),
        ));

        // Stats: nothing left, the dead letters counted, this process's counters agree.
        let s = &stats[0].handlers[handler];
        let dead_lettered: u64 = stats
            .iter()
            .map(|st| st.handlers[handler].dead_lettered)
            .sum();
        let ok = s.lag == 0 && s.pending == 0 && s.dead_letter_depth == letters;
        ensure!(
            ok && dead_lettered == letters,
            "{handler}: {s:?}; {dead_lettered} dead letters counted, {letters} stored"
        );
        for (st, consumer) in stats.iter().zip(["bus0", "bus1"]) {
            let s = &st.handlers[handler];
            let calls = mine.iter().filter(|r| r.consumer == consumer).count() as u64;
            let ok = s.processed == calls && s.failed + s.retried == 0 && s.subscriptions == 1;
            ensure!(ok, "{consumer}: {s:?}, the handler ran {calls} times");
        }
    }
    for (t, event_type) in tr.types.iter().enumerate() {
        let foreign = tr.foreign.iter().filter(|f| f.stream == t).count();
        let entries = Some((tr.valid[t].len() + foreign) as u64);
        let counted = stats[0].events_by_type.get(event_type.as_str()).copied();
        ensure!(counted == entries, "{event_type}: {counted:?} in the stats");
    }

    check_order(all.iter().copied(), &orphan_ids)?;
    // Replay of every type: the valid events, none of the foreign entries.
    let query = ReplayQuery::new(tr.types.to_vec(), OffsetDateTime::UNIX_EPOCH);
    let replayed: Vec<Event> = publisher.replay(query).await?.try_collect().await?;
    let valid: HashSet<&String> = tr.valid.iter().flatten().collect();
    let replayed_ids: HashSet<String> = replayed.iter().map(|e| e.id.to_string()).collect();
    let exact = replayed.len() == valid.len() && replayed_ids.iter().all(|id| valid.contains(id));
    ensure!(
        exact,
        "replay: {} events for {} valid",
        replayed.len(),
        valid.len()
    );
    for (bus, name) in buses.iter().zip(["bus0", "bus1"]) {
        let health = bus.health().await;
        let consumers_ok = health.consumers.len() == 2
            && (health.consumers.iter())
                .all(|c| c.alive && !c.stalled && c.lag == 0 && c.loop_failures == 0);
        let ok = health.status == HealthStatus::Healthy && health.problems.is_empty();
        ensure!(ok && consumers_ok, "{name} is not healthy: {health:?}");
    }
    let stopped = subscriptions.iter().filter(|s| !s.is_active()).count();
    ensure!(stopped == 0, "{stopped} subscriptions stopped");
    eprintln!(
        "{} valid events, {} foreign entries; the child handled {} before the kill and held {} pending\n{}",
        tr.valid.iter().map(Vec::len).sum::<usize>(),
        tr.foreign.len(),
        by_child.len(),
        orphans.len(),
        summary.join("\n")
    );
    for bus in &buses {
        bus.shutdown().await?;
    }
    publisher.shutdown().await?;
    Ok(())
}

/// Handler `h` (named `handler`) on `consumer`: records each event, then works a millisecond.
fn recording(
    consumer: &'static str,
    handler: &str,
    h: usize,
    log: Arc<Mutex<Vec<Handled>>>,
) -> Arc<dyn EventHandler> {
    event_core::handler_fn(handler.to_string(), move |event: Arc<Event>| {
        let record = Handled::parse(consumer, &line(h, &event));
        let recorded = record.map(|r| lock(&log).push(r));
        async move {
            recorded.map_err(HandlerError::permanent)?;
            tokio::time::sleep(Duration::from_millis(1)).await;
            Ok(())
        }
    })
}

/// The events `next..next + per_type` of each type, keyed `t{type}k{n % KEYS_PER_TYPE}`.
fn events(types: &[EventType; 3], next: u64, per_type: u64) -> Vec<(usize, Event)> {
    let mut events = Vec::new();
    for n in next..next + per_type {
        for (t, event_type) in types.iter().enumerate() {
            let key = format!("t{t}k{}", n % KEYS_PER_TYPE);
            events.push((t, numbered(event_type, n, Some(&key))));
        }
    }
    events
}

/// Each foreign entry handler `h` reads dead-lettered once (`invalid_envelope`, its raw fields,
/// provenance), the envelope of another type too (as on Kafka); nothing else dead-lettered.
/// Returns the dead letters' count.
async fn check_dead_letters(bus: &RedisBus, tr: &Trial<'_>, h: usize) -> anyhow::Result<u64> {
    let (handler, group) = (&tr.handlers[h], &tr.groups[h]);
    let letters = bus.dead_letters(handler, 10_000).await?;
    let mut accounted = 0;
    for f in tr.foreign_of(h) {
        let pair = format!("marker={}", f.marker);
        let shows = |raw: &str| raw.split(' ').any(|p| p == pair);
        let matching: Vec<_> = (letters.iter())
            .filter(|l| l.raw.as_deref().is_some_and(shows))
            .collect();
        let [letter] = matching.as_slice() else {
            bail!("{} dead letters of {}", matching.len(), f.kind);
        };
        let l = letter;
        let raw = l.raw.as_deref().unwrap_or_default();
        let ok = l.reason == DeadLetterReason::InvalidEnvelope
            && l.event.is_none()
            && (&l.handler, &l.group) == (handler, group)
            && l.attempts >= 1
            && !l.last_error.is_empty()
            && (f.kind != ENVELOPE || l.last_error.contains("event_type"))
            && l.first_failed_at <= l.dead_lettered_at
            && raw.len() <= RAW_TEXT_LIMIT + 3;
        ensure!(
            ok,
            "{}: {:?}, {} bytes raw",
            f.kind,
            l.last_error,
            raw.len()
        );
        accounted += 1;
    }
    let count = letters.len();
    ensure!(count == accounted, "{count} dead letters, {accounted} owed");
    Ok(accounted as u64)
}

/// Per consumer and handler, each key's events in publish order; an event the killed process
/// held may come late (taken over), as `docs/redis.md` says.
fn check_order<'r>(
    records: impl Iterator<Item = &'r Handled>,
    excused: &HashSet<(usize, String)>,
) -> anyhow::Result<()> {
    let mut last: HashMap<(&str, usize, &str), u64> = HashMap::new();
    let mut late = 0;
    for r in records {
        let slot = (r.consumer, r.h, r.key.as_str());
        if let Some(max) = last.get(&slot).copied().filter(|max| r.n <= *max) {
            let (consumer, h, n, key) = (r.consumer, r.h, r.n, &r.key);
            let ok = excused.contains(&(h, r.id.clone()));
            ensure!(ok, "{consumer}, {h}: n={n} of {key} after n={max}");
            late += 1;
        }
        let max = last.entry(slot).or_insert(r.n);
        *max = (*max).max(r.n);
    }
    eprintln!("per-key order held; {late} events taken over came after newer ones of their key");
    Ok(())
}

/// Starts this test binary again as a third instance of both handlers.
fn spawn_child(tr: &Trial<'_>, log: &str) -> anyhow::Result<ChildGuard> {
    let [a, b] = &tr.handlers;
    let spec = format!("{a} {b} {} {} {}", tr.types[0], tr.types[1], tr.types[2]);
    let child = Command::new(std::env::current_exe()?)
        .args(["--exact", "user_trial_child", "--nocapture"])
        .env(CHILD_VAR, spec)
        .env(CHILD_LOG_VAR, log)
        .env("REDIS_URL", &tr.sc.url)
        .env("REDIS_KEY_PREFIX", &tr.sc.prefix)
        .env("EVENT_CLAIM_IDLE_MS", CLAIM_IDLE.as_millis().to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting the child process")?;
    Ok(ChildGuard(child))
}

/// A child process, killed when dropped.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The child side: does nothing unless `EVENTBUS_USER_TRIAL_CHILD` is set.
#[test]
fn user_trial_child() {
    let Ok(spec) = std::env::var(CHILD_VAR) else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().expect("the child's runtime");
    if let Err(e) = runtime.block_on(child_main(spec)) {
        eprintln!("the user-trial child failed: {e:#}");
        std::process::exit(2);
    }
}

/// Subscribes both handlers, each recording its handlings in a Redis list, and runs until
/// killed (or 90 s, should its parent die without killing it).
async fn child_main(spec: String) -> anyhow::Result<()> {
    let log_key = std::env::var(CHILD_LOG_VAR)?;
    let config = Settings::from_env()?;
    let recorder = admin_client(&config.redis.url).await?;
    let bus = config.connect().await?;
    let words: Vec<&str> = spec.split(' ').collect();
    let [a, b, types @ ..] = words.as_slice() else {
        bail!("a malformed {CHILD_VAR}: {spec:?}");
    };
    let types = types
        .iter()
        .map(|t| EventType::new(*t))
        .collect::<Result<Vec<_>, _>>()?;
    let mut subscriptions = Vec::new();
    for (h, handler) in [a, b].into_iter().enumerate() {
        let types = OF[h].map(|t| types[t].clone());
        let (recorder, log_key) = (recorder.clone(), log_key.clone());
        let handle = event_core::handler_fn(*handler, move |event: Arc<Event>| {
            let (recorder, log_key) = (recorder.clone(), log_key.clone());
            async move {
                let pushed = recorder.rpush::<i64, _, _>(log_key.as_str(), line(h, &event));
                pushed.await.map(drop).map_err(HandlerError::transient)
            }
        });
        let spec = SubscriptionSpec::new(*handler, types).start_from(StartFrom::Earliest);
        subscriptions.push(bus.subscribe(spec, handle).await?);
    }
    tokio::time::sleep(Duration::from_secs(90)).await;
    Ok(())
}

/// A pending entry: handler index, stream, entry id.
type Pending = (usize, String, String);

/// The entries pending for the child's consumers (their names hold its pid): (handler index,
/// stream, entry id).
async fn child_pending(tr: &Trial<'_>, pid: u32) -> anyhow::Result<Vec<Pending>> {
    let tag = format!("-{pid}-");
    let mut found = Vec::new();
    for (h, group) in tr.groups.iter().enumerate() {
        for stream in OF[h].map(|t| &tr.streams[t]) {
            let args = vec![stream.as_str(), group.as_str(), "-", "+", "100000"];
            let rows: Value = tr.sc.admin.custom(fred::cmd!("XPENDING"), args).await?;
            for row in rows.into_array().into_iter().map(Value::into_array) {
                let id = row.first().and_then(Value::as_string);
                let consumer = row.get(1).and_then(Value::as_string).unwrap_or_default();
                if let Some(id) = id.filter(|_| consumer.contains(&tag)) {
                    found.push((h, stream.clone(), id));
                }
            }
        }
    }
    Ok(found)
}

/// The event ids of stream entries: (handler index, event id).
async fn event_ids(
    admin: &Client,
    entries: &[Pending],
) -> anyhow::Result<HashSet<(usize, String)>> {
    let mut ids = HashSet::new();
    for (h, stream, entry) in entries {
        let read = admin.xrange(stream.as_str(), entry.as_str(), entry.as_str(), None);
        let found: Vec<(String, HashMap<String, String>)> = read.await?;
        let id = found
            .into_iter()
            .next()
            .and_then(|(_, mut f)| f.remove("id"));
        ids.insert((*h, id.context("a pending entry without an event id")?));
    }
    Ok(ids)
}
