//! Relays and inbox handlers as real processes, killed with SIGKILL at random points while
//! writers commit and roll back transactions: between a commit and its relay, between a
//! relay's publish and its recording, and inside a handler's transaction. Against the real
//! PostgreSQL (`EVENTBUS_TEST_POSTGRES_URL`) and Redis (`EVENTBUS_TEST_REDIS_URL`).
//!
//! The processes are this test binary run again with `OUTBOX_KILL_CHILD=relay|handler`: the
//! test then plays that part until it is killed. A relay sometimes stops after publishing a
//! round and before recording it, and a handler after its writes and before its commit; each
//! says so on its output, and the parent kills it right there. The parent also kills relays
//! and handlers at random while the writers run (a handler so killed may have committed and
//! not acknowledged: the inbox skips the redelivery).
//!
//! The check: every committed event's effect is applied exactly once, with exactly one
//! follow-up event published through the outbox; none of a rolled-back transaction's events
//! has any effect; every outbox row ends delivered.

mod support;

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use event_core::{
    Config, Event, EventBus, EventId, EventType, HandlerError, StartFrom, SubscriptionSpec,
};
use event_outbox::{
    AfterPublish, InboxConfig, InboxLayer, InboxTransaction, Outbox, Relay, RelayConfig,
    TransactionalHandler,
};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use support::{DEADLINE, Writers, Written, seed, test_db};
use tower::Layer as _;

const TEST: &str = "relays_and_handlers_killed_with_sigkill_lose_nothing_and_apply_once";
const ROLE: &str = "OUTBOX_KILL_CHILD";
const RELAYS: usize = 2;
const HANDLERS: usize = 2;
/// Committed events to write at least, across 120 keys: many relay batches of 100.
const AT_LEAST: usize = 2_500;
/// The types written, both handled by the one inbox handler.
const TYPES: [EventType; 2] = [
    EventType::OPPORTUNITY_CREATED,
    EventType::OPPORTUNITY_UPDATED,
];
/// Kills to make at least, at each point, before the writers stop.
const KILLS: [(Point, usize); 4] = [
    (Point::AfterCommit, 3),
    (Point::AfterPublish, 2),
    (Point::InTransaction, 3),
    (Point::Handling, 2),
];

/// Where a process was killed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Point {
    /// A relay at a random moment while writers commit: rows committed and not yet relayed.
    AfterCommit,
    /// A relay that published a round and had not recorded it.
    AfterPublish,
    /// A handler that had written its effects and not committed.
    InTransaction,
    /// A handler at a random moment: also between its commit and its acknowledgement.
    Handling,
}

/// The marker a child prints where it waits to be killed.
const PAUSED: &str = "OUTBOX-CHILD-PAUSED";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_and_handlers_killed_with_sigkill_lose_nothing_and_apply_once() -> anyhow::Result<()>
{
    if let Ok(role) = std::env::var(ROLE) {
        return child(&role).await;
    }
    let Some(db) = test_db().await? else {
        return Ok(());
    };
    let Some(redis) = event_testkit::test_server("EVENTBUS_TEST_REDIS_URL", "redis")? else {
        return db.drop_schema().await;
    };
    let seed = seed(TEST);
    let mut rng = fastrand::Rng::with_seed(seed);
    sqlx::query("CREATE TABLE effects (event_id UUID NOT NULL, key TEXT NOT NULL)")
        .execute(&db.pool)
        .await?;
    sqlx::query("CREATE TABLE counters (key TEXT PRIMARY KEY, n BIGINT NOT NULL)")
        .execute(&db.pool)
        .await?;
    let prefix = event_testkit::unique("outbox-kill");
    let env = vec![
        (
            "OUTBOX_KILL_PG".to_string(),
            std::env::var("EVENTBUS_TEST_POSTGRES_URL")?,
        ),
        ("OUTBOX_KILL_SCHEMA".to_string(), db.schema.clone()),
        ("OUTBOX_KILL_REDIS".to_string(), redis.clone()),
        ("OUTBOX_KILL_PREFIX".to_string(), prefix.clone()),
    ];
    let (lines, said) = mpsc::channel::<(usize, u64, String)>();
    let mut fleet = Fleet {
        env,
        lines,
        children: Vec::new(),
        spawned: 0,
        pausing: true,
    };
    for role in ["relay"; RELAYS].into_iter().chain(["handler"; HANDLERS]) {
        let slot = fleet.children.len();
        let (child, generation) = fleet.spawn(role, slot)?;
        fleet.children.push((role, child, generation));
    }

    // Two writers on 60 keys each, paced so that kills land while rows wait.
    let writers = Writers::new(2, 60, &TYPES, Duration::from_millis(2));
    let writing = tokio::spawn({
        let (writers, pool, outbox) = (writers.clone(), db.pool.clone(), db.outbox.clone());
        async move { writers.run(&pool, &outbox, seed).await }
    });
    let mut kills: BTreeMap<Point, usize> = BTreeMap::new();
    let mut next_random_kill = Instant::now() + Duration::from_millis(rng.u64(300..900));
    let deadline = Instant::now() + DEADLINE * 2;
    let mut drained = false;
    while !drained {
        anyhow::ensure!(
            Instant::now() < deadline,
            "not done within {:?}: kills {kills:?}",
            DEADLINE * 2
        );
        // Kill where a child waits to be killed.
        while let Ok((slot, generation, line)) = said.try_recv() {
            // A line of a process already replaced is stale.
            if fleet.children[slot].2 != generation {
                continue;
            }
            // The test harness may have begun the line ("test ... ").
            if let Some(at) = line.find(PAUSED) {
                let point = match line[at + PAUSED.len()..].trim() {
                    "after-publish" => Point::AfterPublish,
                    _ => Point::InTransaction,
                };
                fleet.kill_and_replace(slot)?;
                *kills.entry(point).or_default() += 1;
            }
        }
        let enough_kills = KILLS
            .iter()
            .all(|(point, least)| kills.get(point).copied().unwrap_or(0) >= *least);
        if !writers.stop.load(Ordering::SeqCst) {
            if Instant::now() >= next_random_kill {
                let slot = rng.usize(..RELAYS + HANDLERS);
                fleet.kill_and_replace(slot)?;
                let point = if slot < RELAYS {
                    Point::AfterCommit
                } else {
                    Point::Handling
                };
                *kills.entry(point).or_default() += 1;
                next_random_kill = Instant::now() + Duration::from_millis(rng.u64(300..900));
            }
            if enough_kills && writers.committed() >= AT_LEAST {
                // From now on the processes run undisturbed until everything is handled.
                writers.stop.store(true, Ordering::SeqCst);
                fleet.pausing = false;
            }
        } else {
            drained = all_handled(&db.pool).await?;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let log = writing.await??;
    fleet.kill_all();
    anyhow::ensure!(
        writers.failed() == 0,
        "{} transactions failed",
        writers.failed()
    );
    let written = Written::from_log(log, |_| false);

    // Exactly once: one effect per committed event, none of a rolled-back one.
    let applied: Vec<(uuid::Uuid, i64)> =
        sqlx::query_as("SELECT event_id, count(*) FROM effects GROUP BY event_id")
            .fetch_all(&db.pool)
            .await?;
    let twice: Vec<_> = applied.iter().filter(|(_, n)| *n != 1).collect();
    anyhow::ensure!(
        twice.is_empty(),
        "effects applied more than once: {twice:?}"
    );
    let applied: HashSet<EventId> = applied
        .iter()
        .map(|(id, _)| EventId::from_uuid(*id))
        .collect();
    let leaked = applied.intersection(&written.rolled_back).count();
    anyhow::ensure!(leaked == 0, "{leaked} rolled-back events had effects");
    anyhow::ensure!(
        applied == written.committed,
        "{} effects for {} committed events",
        applied.len(),
        written.committed.len()
    );
    let counters: Vec<(String, i64)> = sqlx::query_as("SELECT key, n FROM counters")
        .fetch_all(&db.pool)
        .await?;
    let counted: BTreeMap<String, usize> = counters
        .into_iter()
        .map(|(key, n)| (key, n as usize))
        .collect();
    let per_key: BTreeMap<String, usize> = written
        .by_key
        .iter()
        .map(|(key, ids)| (key.clone(), ids.len()))
        .collect();
    assert_eq!(counted, per_key, "each key's counter");
    // One follow-up per handled event, published through the outbox in the handler's
    // transaction.
    let follow_ups: Vec<(Option<String>, i64)> = sqlx::query_as(
        "SELECT event->>'causation_id', count(*) FROM eventbus_outbox
         WHERE event_type = $1 GROUP BY 1",
    )
    .bind(EventType::USER_PROFILE_UPDATED.as_str())
    .fetch_all(&db.pool)
    .await?;
    assert_eq!(follow_ups.len(), written.committed.len(), "follow-ups");
    let parked: i64 =
        sqlx::query_scalar("SELECT count(*) FROM eventbus_outbox WHERE parked_at IS NOT NULL")
            .fetch_one(&db.pool)
            .await?;
    assert_eq!(parked, 0, "parked outbox rows");
    assert!(follow_ups.iter().all(|(_, n)| *n == 1), "a follow-up twice");
    eprintln!(
        "{} committed, {} rolled back; SIGKILLs: {kills:?}",
        written.committed.len(),
        written.rolled_back.len()
    );
    let bus = redis_bus(&redis, &prefix, Config::default()).await?;
    let dead = bus.dead_letters("effects", 100).await?;
    assert!(
        dead.is_empty(),
        "{} dead letters: {:?}",
        dead.len(),
        dead.first()
    );
    bus.shutdown().await?;
    for (point, least) in KILLS {
        assert!(
            kills.get(&point).copied().unwrap_or(0) >= least,
            "fewer than {least} kills at {point:?}"
        );
    }
    db.drop_schema().await
}

/// Whether every committed event was handled and every outbox row (the follow-ups too)
/// delivered.
async fn all_handled(pool: &PgPool) -> anyhow::Result<bool> {
    let (pending, events, effects): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM eventbus_outbox
                 WHERE delivered_at IS NULL AND parked_at IS NULL),
                (SELECT count(*) FROM eventbus_outbox WHERE event_type = ANY($1)),
                (SELECT count(DISTINCT event_id) FROM effects)",
    )
    .bind(TYPES.map(|t| t.as_str().to_string()))
    .fetch_one(pool)
    .await?;
    Ok(pending == 0 && events == effects)
}

/// The child processes, each in a slot, and the lines they print.
struct Fleet {
    env: Vec<(String, String)>,
    /// Each line with its slot and the generation of the process that printed it.
    lines: mpsc::Sender<(usize, u64, String)>,
    /// Per slot: the role, the process, its generation.
    children: Vec<(&'static str, Child, u64)>,
    /// Processes spawned so far: the next generation.
    spawned: u64,
    /// Whether new children pause to be killed.
    pausing: bool,
}

impl Fleet {
    fn spawn(&mut self, role: &str, slot: usize) -> anyhow::Result<(Child, u64)> {
        self.spawned += 1;
        let generation = self.spawned;
        let mut child = Command::new(std::env::current_exe()?)
            .args(["--exact", TEST, "--nocapture", "--test-threads=1"])
            .env(ROLE, role)
            .env("OUTBOX_KILL_PAUSING", if self.pausing { "1" } else { "0" })
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child.stdout.take().expect("piped");
        let lines = self.lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines.send((slot, generation, line)).is_err() {
                    return;
                }
            }
        });
        Ok((child, generation))
    }

    /// SIGKILL, then a new process in the same slot.
    fn kill_and_replace(&mut self, slot: usize) -> anyhow::Result<()> {
        let role = self.children[slot].0;
        let old = &mut self.children[slot].1;
        old.kill()?;
        old.wait()?;
        let (child, generation) = self.spawn(role, slot)?;
        self.children[slot].1 = child;
        self.children[slot].2 = generation;
        Ok(())
    }

    fn kill_all(&mut self) {
        for (_, child, _) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// The child's part, until it is killed.
async fn child(role: &str) -> anyhow::Result<()> {
    let var = |name: &str| std::env::var(name).map_err(|_| anyhow::anyhow!("{name} not set"));
    let options = var("OUTBOX_KILL_PG")?
        .parse::<PgConnectOptions>()?
        .options([("search_path", var("OUTBOX_KILL_SCHEMA")?.as_str())]);
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .connect_with(options)
        .await?;
    let outbox = Outbox::with_channel(var("OUTBOX_KILL_SCHEMA")?);
    // A killed handler's events go to another one after two seconds. Every kill counts as a
    // failed attempt of the events the killed process held (read ahead too), and the test
    // kills often: retries are raised so that no event is dead-lettered for being caught in
    // the crash of others (the bus's poison-event limit, not what this test is about).
    let config = Config::from_vars([
        ("EVENT_CLAIM_IDLE_MS", "2000"),
        ("EVENT_MAX_RETRIES", "100"),
    ])?;
    let bus: Arc<dyn EventBus> = Arc::new(
        redis_bus(
            &var("OUTBOX_KILL_REDIS")?,
            &var("OUTBOX_KILL_PREFIX")?,
            config,
        )
        .await?,
    );
    let pausing = var("OUTBOX_KILL_PAUSING")? == "1";
    match role {
        "relay" => {
            let hook: AfterPublish = Arc::new(move || {
                Box::pin(async move {
                    if pausing && fastrand::f64() < 0.2 {
                        say(&format!("{PAUSED} after-publish"));
                        std::future::pending::<()>().await;
                    }
                })
            });
            let mut config = RelayConfig::default();
            config.batch_size = 100;
            config.poll_interval = Duration::from_millis(200);
            Relay::with_after_publish(pool, outbox, bus, config, hook)
                .run(std::future::pending())
                .await?;
        }
        _ => {
            let handler =
                InboxLayer::new(pool, outbox, InboxConfig::default()).layer(Effects { pausing });
            let spec = SubscriptionSpec::new("effects", TYPES)
                .start_from(StartFrom::Earliest)
                .concurrency(4);
            let _subscription = bus.subscribe(spec, Arc::new(handler)).await?;
            std::future::pending::<()>().await;
        }
    }
    Ok(())
}

/// The Redis bus of the test's streams.
async fn redis_bus(
    url: &str,
    prefix: &str,
    config: Config,
) -> anyhow::Result<event_redis::RedisBus> {
    let redis = event_redis::RedisConfig::builder()
        .url(url)
        .key_prefix(prefix)
        .build()?;
    Ok(event_redis::RedisBus::connect(redis, config).await?)
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Records each event's effect and bumps its key's counter, and publishes a follow-up, in the
/// inbox's transaction; sometimes stops there to be killed.
struct Effects {
    pausing: bool,
}

#[async_trait]
impl TransactionalHandler for Effects {
    fn name(&self) -> &str {
        "effects"
    }

    async fn handle(&self, event: &Event, tx: &mut InboxTransaction) -> Result<(), HandlerError> {
        let key = event.partition_key.clone().unwrap_or_default();
        sqlx::query("INSERT INTO effects (event_id, key) VALUES ($1, $2)")
            .bind(event.id.as_uuid())
            .bind(&key)
            .execute(tx.connection())
            .await
            .map_err(HandlerError::transient)?;
        sqlx::query(
            "INSERT INTO counters (key, n) VALUES ($1, 1)
             ON CONFLICT (key) DO UPDATE SET n = counters.n + 1",
        )
        .bind(&key)
        .execute(tx.connection())
        .await
        .map_err(HandlerError::transient)?;
        let follow_up = event
            .caused(EventType::USER_PROFILE_UPDATED, "effects")
            .payload(serde_json::json!({"key": key}))
            .partition_key(key)
            .build()
            .map_err(HandlerError::permanent)?;
        tx.publish([follow_up])
            .await
            .map_err(HandlerError::transient)?;
        if self.pausing && fastrand::f64() < 0.01 {
            say(&format!("{PAUSED} in-transaction"));
            std::future::pending::<()>().await;
        }
        Ok(())
    }
}
