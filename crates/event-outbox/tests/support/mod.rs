//! What the outbox tests share: a fresh schema on the test PostgreSQL, a recording handler,
//! writers that commit or roll back at random, and waiting on conditions.

#![allow(dead_code, unreachable_pub)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use event_core::{
    Event, EventBus, EventHandler, EventId, EventType, HandlerError, StartFrom, SubscriptionSpec,
};
use event_outbox::{Outbox, Relay, RelayConfig};
use event_testkit::{InterceptedBus, PublishHook};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

/// Every wait on a condition gives up after this: generous, for a loaded 2-core machine.
pub const DEADLINE: Duration = Duration::from_secs(180);

/// A schema of its own on the test server, migrated; dropped by [`TestDb::drop_schema`].
pub struct TestDb {
    pub pool: PgPool,
    admin: PgPool,
    pub schema: String,
    pub outbox: Outbox,
}

/// The test database, or `None` (after a `SKIPPED` line) when no server is configured
/// outside an integration run; in one, a missing server is an error saying how to start it.
pub async fn test_db() -> anyhow::Result<Option<TestDb>> {
    let Some(url) = event_testkit::test_server("EVENTBUS_TEST_POSTGRES_URL", "postgres")? else {
        return Ok(None);
    };
    let schema = event_testkit::unique("outbox_test").replace('-', "_");
    let admin = PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(60))
        .connect(&url)
        .await?;
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&admin)
        .await?;
    let options = url
        .parse::<PgConnectOptions>()?
        .options([("search_path", schema.as_str())]);
    let pool = PgPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(Duration::from_secs(60))
        .connect_with(options)
        .await?;
    let report = event_outbox::migrate(&pool).await?;
    assert_eq!(report.applied, [1, 2]);
    // Applying again is a no-op.
    assert!(event_outbox::migrate(&pool).await?.applied.is_empty());
    Ok(Some(TestDb {
        pool,
        admin,
        outbox: Outbox::with_channel(schema.clone()),
        schema,
    }))
}

impl TestDb {
    /// A relay of this database's outbox to `bus`.
    pub fn relay(&self, bus: &Arc<dyn EventBus>, config: RelayConfig) -> Relay {
        Relay::new(self.pool.clone(), self.outbox.clone(), bus.clone(), config)
    }

    pub async fn drop_schema(self) -> anyhow::Result<()> {
        self.pool.close().await;
        sqlx::query(&format!("DROP SCHEMA {} CASCADE", self.schema))
            .execute(&self.admin)
            .await?;
        self.admin.close().await;
        Ok(())
    }
}

/// The seed of this test's randomness: `OUTBOX_TEST_SEED` to replay a run, else a new one.
/// Printed, so a failure can be replayed.
pub fn seed(test: &str) -> u64 {
    let seed = std::env::var("OUTBOX_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("{test}: seed {seed} (OUTBOX_TEST_SEED={seed} replays it)");
    seed
}

/// An event of `key`, the `n`th of that key.
pub fn keyed_event(key: &str, n: u64) -> Event {
    keyed_event_of(EventType::OPPORTUNITY_CREATED, key, n)
}

/// An event of `event_type` and `key`, the `n`th of that key.
pub fn keyed_event_of(event_type: EventType, key: &str, n: u64) -> Event {
    Event::builder(event_type, "outbox_test")
        .payload(serde_json::json!({"key": key, "n": n}))
        .partition_key(key)
        .build()
        .expect("a valid event")
}

/// One delivery seen by a [`Recorder`].
#[derive(Clone, Debug)]
pub struct Delivery {
    pub id: EventId,
    pub key: String,
    pub n: u64,
    pub at: Instant,
}

/// A handler that records every delivery, in order.
#[derive(Default)]
pub struct Recorder {
    pub deliveries: Mutex<Vec<Delivery>>,
}

#[async_trait]
impl EventHandler for Recorder {
    fn name(&self) -> &str {
        "recorder"
    }

    async fn handle(&self, event: &Event) -> Result<(), HandlerError> {
        let delivery = Delivery {
            id: event.id,
            key: event.payload["key"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            n: event.payload["n"].as_u64().unwrap_or_default(),
            at: Instant::now(),
        };
        self.deliveries.lock().unwrap().push(delivery);
        Ok(())
    }
}

impl Recorder {
    /// Subscribes a new recorder to `bus` from its earliest event, one event at a time, so
    /// deliveries come in publish order.
    pub async fn subscribe(bus: &Arc<dyn EventBus>) -> anyhow::Result<Arc<Recorder>> {
        let recorder = Arc::new(Recorder::default());
        let spec = SubscriptionSpec::new("recorder", [EventType::OPPORTUNITY_CREATED])
            .start_from(StartFrom::Earliest)
            .concurrency(1);
        // The subscription lives as long as the bus.
        std::mem::forget(bus.subscribe(spec, recorder.clone()).await?);
        Ok(recorder)
    }

    pub fn snapshot(&self) -> Vec<Delivery> {
        self.deliveries.lock().unwrap().clone()
    }

    pub fn distinct_ids(&self) -> HashSet<EventId> {
        self.deliveries
            .lock()
            .unwrap()
            .iter()
            .map(|d| d.id)
            .collect()
    }

    /// Waits until every id of `expected` was delivered.
    pub async fn wait_for(&self, expected: &HashSet<EventId>) -> anyhow::Result<()> {
        wait_until("every committed event delivered", || {
            let seen = self.distinct_ids();
            let missing = expected.iter().filter(|id| !seen.contains(id)).count();
            (missing == 0)
                .then_some(())
                .ok_or(format!("{missing} not yet delivered"))
        })
        .await
    }
}

/// Polls `condition` until it holds or [`DEADLINE`] passes; the error names what was last seen.
pub async fn wait_until(
    what: &str,
    mut condition: impl FnMut() -> Result<(), String>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let last = match condition() {
            Ok(()) => return Ok(()),
            Err(seen) => seen,
        };
        if Instant::now() >= deadline {
            anyhow::bail!(
                "{what}: not reached within {}s ({last})",
                DEADLINE.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What the writers did: the ids of committed and rolled-back transactions' events, and
/// each key's committed events in order.
#[derive(Default, Debug)]
pub struct Written {
    pub committed: HashSet<EventId>,
    pub rolled_back: HashSet<EventId>,
    pub by_key: BTreeMap<String, Vec<EventId>>,
}

impl Written {
    /// What a writers' log says was written; an unsure event counts as committed when
    /// `committed_if_unsure` says its row exists.
    pub fn from_log(log: Vec<Logged>, committed_if_unsure: impl Fn(&EventId) -> bool) -> Self {
        let mut written = Written::default();
        for Logged { id, key, outcome } in log {
            let committed = match outcome {
                TxOutcome::Committed => true,
                TxOutcome::RolledBack => false,
                TxOutcome::Unsure => committed_if_unsure(&id),
            };
            if committed {
                written.committed.insert(id);
                written.by_key.entry(key).or_default().push(id);
            } else {
                written.rolled_back.insert(id);
            }
        }
        written
    }
}

/// How a writer's transaction ended, as far as the writer knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxOutcome {
    Committed,
    /// Rolled back, or failed before its `COMMIT`.
    RolledBack,
    /// Its `COMMIT` got no answer (the server died): it may or may not have committed.
    Unsure,
}

/// One event of a writers' log.
#[derive(Clone, Debug)]
pub struct Logged {
    pub id: EventId,
    pub key: String,
    pub outcome: TxOutcome,
}

/// Writers that run until stopped, and what they share with the test: when to stop,
/// committed events and failed transactions so far.
pub struct Writers {
    count: usize,
    keys_per_writer: usize,
    types: Vec<EventType>,
    pace: Duration,
    pub stop: std::sync::atomic::AtomicBool,
    committed: std::sync::atomic::AtomicUsize,
    failed: std::sync::atomic::AtomicUsize,
}

impl Writers {
    /// `count` writers, each owning `keys_per_writer` keys, writing events of `types`, one
    /// transaction every `pace` at most.
    pub fn new(
        count: usize,
        keys_per_writer: usize,
        types: &[EventType],
        pace: Duration,
    ) -> Arc<Self> {
        Arc::new(Self {
            count,
            keys_per_writer,
            types: types.to_vec(),
            pace,
            stop: Default::default(),
            committed: Default::default(),
            failed: Default::default(),
        })
    }

    pub fn committed(&self) -> usize {
        self.committed.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn failed(&self) -> usize {
        self.failed.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The writers' tasks, each on its keys (`w{writer}-k{j}`), writing transactions of 1 to 5
    /// events of the types (picked at random) that commit with probability 0.8, until
    /// [`stop`](Self::stop). A transaction that fails (the server is down) is logged and
    /// counted, and the writer goes on after 50 ms. Returns the log, each writer's events in
    /// its order.
    pub async fn run(
        self: &Arc<Self>,
        pool: &PgPool,
        outbox: &Outbox,
        seed: u64,
    ) -> anyhow::Result<Vec<Logged>> {
        use std::sync::atomic::Ordering::SeqCst;
        let tasks: Vec<_> = (0..self.count)
            .map(|writer| {
                let (pool, outbox) = (pool.clone(), outbox.clone());
                let shared = self.clone();
                let mut rng = fastrand::Rng::with_seed(seed.wrapping_add(writer as u64));
                tokio::spawn(async move {
                    let mut log = Vec::new();
                    let mut n = 0;
                    while !shared.stop.load(SeqCst) {
                        let batch: Vec<Event> = (0..rng.usize(1..=5))
                            .map(|_| {
                                n += 1;
                                let key =
                                    format!("w{writer}-k{}", rng.usize(..shared.keys_per_writer));
                                let types = &shared.types;
                                keyed_event_of(types[rng.usize(..types.len())].clone(), &key, n)
                            })
                            .collect();
                        let commit = rng.f64() < 0.8;
                        let outcome = async {
                            let Ok(mut tx) = pool.begin().await else {
                                return None;
                            };
                            outbox.add(&mut tx, batch.clone()).await.ok()?;
                            if !commit {
                                let _ = tx.rollback().await;
                                return Some(TxOutcome::RolledBack);
                            }
                            Some(match tx.commit().await {
                                Ok(()) => TxOutcome::Committed,
                                Err(_) => TxOutcome::Unsure,
                            })
                        }
                        .await;
                        let outcome = match outcome {
                            Some(TxOutcome::Committed) => {
                                shared.committed.fetch_add(batch.len(), SeqCst);
                                TxOutcome::Committed
                            }
                            Some(TxOutcome::RolledBack) => TxOutcome::RolledBack,
                            failed => {
                                shared.failed.fetch_add(1, SeqCst);
                                tokio::time::sleep(Duration::from_millis(50)).await;
                                failed.unwrap_or(TxOutcome::RolledBack)
                            }
                        };
                        log.extend(batch.iter().map(|e| Logged {
                            id: e.id,
                            key: e.partition_key.clone().unwrap_or_default(),
                            outcome,
                        }));
                        tokio::time::sleep(shared.pace).await;
                    }
                    log
                })
            })
            .collect();
        let mut log = Vec::new();
        for task in tasks {
            log.extend(task.await?);
        }
        Ok(log)
    }
}

/// `writers` tasks, each owning its keys (`w{writer}-k{j}`, `keys_per_writer` of them), write
/// `events` events in all in transactions of 1 to 5 events that commit with probability 0.8
/// and roll back otherwise. A key's events are numbered 0, 1, ... in commit order.
pub async fn write_randomly(
    db: &TestDb,
    seed: u64,
    writers: usize,
    keys_per_writer: usize,
    events: usize,
) -> anyhow::Result<Written> {
    let per_writer = events / writers;
    let mut tasks = Vec::new();
    for writer in 0..writers {
        let pool = db.pool.clone();
        let outbox = db.outbox.clone();
        let mut rng = fastrand::Rng::with_seed(seed.wrapping_add(writer as u64));
        tasks.push(tokio::spawn(async move {
            let mut written = Written::default();
            let mut next_n: HashMap<String, u64> = HashMap::new();
            let mut done = 0;
            while done < per_writer {
                let size = rng.usize(1..=5).min(per_writer - done);
                let batch: Vec<Event> = (0..size)
                    .map(|_| {
                        let key = format!("w{writer}-k{}", rng.usize(..keys_per_writer));
                        let n = *next_n.get(&key).unwrap_or(&0);
                        next_n.insert(key.clone(), n + 1);
                        keyed_event(&key, n)
                    })
                    .collect();
                let commit = rng.f64() < 0.8;
                let mut tx = pool.begin().await?;
                outbox.add(&mut tx, batch.clone()).await?;
                if commit {
                    tx.commit().await?;
                    for event in &batch {
                        written.committed.insert(event.id);
                        let key = event.partition_key.clone().unwrap_or_default();
                        written.by_key.entry(key).or_default().push(event.id);
                    }
                } else {
                    tx.rollback().await?;
                    for event in &batch {
                        written.rolled_back.insert(event.id);
                        // The numbers of a rolled-back transaction are used again.
                        let key = event.partition_key.clone().unwrap_or_default();
                        *next_n.get_mut(&key).unwrap() -= 1;
                    }
                }
                done += size;
            }
            Ok::<_, anyhow::Error>(written)
        }));
    }
    let mut all = Written::default();
    for task in tasks {
        let written = task.await??;
        all.committed.extend(written.committed);
        all.rolled_back.extend(written.rolled_back);
        all.by_key.extend(written.by_key);
    }
    Ok(all)
}

/// Checks the deliveries against what was written: every committed event delivered, no
/// rolled-back one, and each key's first deliveries in commit order. Returns how many
/// deliveries were repeats.
pub fn check(written: &Written, deliveries: &[Delivery]) -> anyhow::Result<usize> {
    let mut first: HashMap<EventId, usize> = HashMap::new();
    let mut repeats = 0;
    let mut order: BTreeMap<&str, Vec<EventId>> = BTreeMap::new();
    for (i, d) in deliveries.iter().enumerate() {
        anyhow::ensure!(
            !written.rolled_back.contains(&d.id),
            "event {} of a rolled-back transaction was delivered",
            d.id
        );
        anyhow::ensure!(
            written.committed.contains(&d.id),
            "event {} was delivered but never written",
            d.id
        );
        if first.insert(d.id, i).is_some() {
            repeats += 1;
        } else {
            order.entry(d.key.as_str()).or_default().push(d.id);
        }
    }
    let missing = written
        .committed
        .iter()
        .filter(|id| !first.contains_key(id))
        .count();
    anyhow::ensure!(
        missing == 0,
        "{missing} committed events were never delivered"
    );
    for (key, ids) in &written.by_key {
        let seen = order.get(key.as_str()).cloned().unwrap_or_default();
        anyhow::ensure!(
            &seen == ids,
            "key {key}: first deliveries out of commit order ({} events)",
            ids.len()
        );
    }
    Ok(repeats)
}

/// A publish hook that notes the ids it published, so a test knows what one relay put on the
/// bus; `fail_next` makes that many publishes fail transiently.
#[derive(Default)]
pub struct Tap {
    pub published: Mutex<Vec<EventId>>,
    pub fail_next: std::sync::atomic::AtomicUsize,
}

#[async_trait]
impl PublishHook for Tap {
    async fn publish_batch(
        &self,
        inner: &dyn EventBus,
        events: Vec<Event>,
    ) -> Vec<Result<EventId, event_core::Error>> {
        use std::sync::atomic::Ordering;
        let failing = self
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            return events
                .iter()
                .map(|_| Err(event_core::Error::backend("tap", "injected failure", true)))
                .collect();
        }
        let results = inner.publish_batch(events).await;
        let mut published = self.published.lock().unwrap();
        published.extend(results.iter().filter_map(|r| r.as_ref().ok().copied()));
        results
    }
}

/// `inner`, its publishes through a [`Tap`].
pub type TappedBus = InterceptedBus<Tap>;

/// `inner` behind a [`Tap`].
pub fn tapped(inner: Arc<dyn EventBus>) -> Arc<TappedBus> {
    InterceptedBus::new(inner, Tap::default())
}

/// A relay that hangs after publishing its `kill_at`th round, before recording it, so that a
/// test can kill it there; `stuck` tells when it does, `tap` what it published.
pub struct KillableRelay {
    pub handle: event_outbox::RelayHandle,
    pub tap: Arc<TappedBus>,
    pub stuck: Arc<std::sync::atomic::AtomicBool>,
}

impl KillableRelay {
    pub fn spawn(
        db: &TestDb,
        bus: &Arc<dyn EventBus>,
        config: event_outbox::RelayConfig,
        kill_at: usize,
    ) -> KillableRelay {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let rounds = Arc::new(AtomicUsize::new(0));
        let stuck = Arc::new(AtomicBool::new(false));
        let hook: event_outbox::AfterPublish = {
            let stuck = stuck.clone();
            Arc::new(move || {
                let round = rounds.fetch_add(1, Ordering::SeqCst) + 1;
                let stuck = stuck.clone();
                Box::pin(async move {
                    if round == kill_at {
                        stuck.store(true, Ordering::SeqCst);
                        std::future::pending::<()>().await;
                    }
                })
            })
        };
        let tap = tapped(bus.clone());
        let handle = event_outbox::Relay::with_after_publish(
            db.pool.clone(),
            db.outbox.clone(),
            tap.clone(),
            config,
            hook,
        )
        .spawn();
        KillableRelay { handle, tap, stuck }
    }

    pub fn is_stuck(&self) -> bool {
        self.stuck.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Kills it (wherever it is) and returns the ids it had published.
    pub fn kill(self) -> Vec<EventId> {
        self.handle.abort();
        self.tap.hook().published.lock().unwrap().clone()
    }
}

/// Checks that every event delivered more than once is one that a killed relay published.
pub fn repeats_were_published_by_killed_relays(
    deliveries: &[Delivery],
    published_by_killed: &HashSet<EventId>,
) -> anyhow::Result<()> {
    let mut seen = HashSet::new();
    for d in deliveries {
        anyhow::ensure!(
            seen.insert(d.id) || published_by_killed.contains(&d.id),
            "event {} came twice but no killed relay had published it",
            d.id
        );
    }
    Ok(())
}
