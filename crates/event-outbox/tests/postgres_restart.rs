//! The PostgreSQL server crashed and started again, twice, while writers commit and roll back
//! transactions and a relay delivers them: nothing committed is lost, nothing rolled back is
//! delivered, per-key order holds, and the same relay resumes by itself. The server is one of
//! the test's own (`EVENTBUS_TEST_POSTGRES_BIN`), crashed with an immediate shutdown.

mod support;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use event_core::{Config, Event, EventBus, EventId, MemoryBus};
use event_outbox::{Outbox, Relay, RelayConfig};
use event_testkit::PostgresServer;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use support::{Recorder, Written, check, keyed_event, seed, wait_until};

const WRITERS: usize = 4;
const KEYS_PER_WRITER: usize = 20;
/// Committed events to reach before the writers stop: several relay batches of 500 after the
/// last restart.
const AT_LEAST: usize = 3_000;

/// What one writer did. A transaction whose `COMMIT` got no answer (the server died) may or
/// may not have committed: its events are "unsure" until the outbox is read afterwards.
#[derive(Default)]
struct WriterLog {
    /// Per key, in the writer's order: each event and whether its commit was confirmed.
    by_key: BTreeMap<String, Vec<(EventId, bool)>>,
    rolled_back: HashSet<EventId>,
}

async fn write_until_stopped(
    pool: PgPool,
    outbox: Outbox,
    writer: usize,
    seed: u64,
    stop: Arc<AtomicBool>,
    committed: Arc<AtomicUsize>,
    errors: Arc<AtomicUsize>,
) -> WriterLog {
    let mut rng = fastrand::Rng::with_seed(seed.wrapping_add(writer as u64));
    let mut log = WriterLog::default();
    let mut n = 0;
    while !stop.load(Ordering::SeqCst) {
        let batch: Vec<Event> = (0..rng.usize(1..=5))
            .map(|_| {
                n += 1;
                keyed_event(&format!("w{writer}-k{}", rng.usize(..KEYS_PER_WRITER)), n)
            })
            .collect();
        let commit = rng.f64() < 0.8;
        // Ok(true): committed; Ok(false): rolled back or never committed; Err: unsure.
        let outcome: Result<bool, ()> = async {
            let Ok(mut tx) = pool.begin().await else {
                return Ok(false);
            };
            if outbox.add(&mut tx, batch.clone()).await.is_err() {
                return Ok(false);
            }
            if !commit {
                let _ = tx.rollback().await;
                return Ok(false);
            }
            tx.commit().await.map(|()| true).map_err(|_| ())
        }
        .await;
        let key = |e: &Event| e.partition_key.clone().unwrap_or_default();
        match outcome {
            Ok(true) => {
                committed.fetch_add(batch.len(), Ordering::SeqCst);
                for event in &batch {
                    log.by_key
                        .entry(key(event))
                        .or_default()
                        .push((event.id, true));
                }
            }
            Ok(false) if commit => {
                errors.fetch_add(1, Ordering::SeqCst);
                log.rolled_back.extend(batch.iter().map(|e| e.id));
                // The server is down: try again shortly rather than spin.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok(false) => log.rolled_back.extend(batch.iter().map(|e| e.id)),
            Err(()) => {
                errors.fetch_add(1, Ordering::SeqCst);
                for event in &batch {
                    log.by_key
                        .entry(key(event))
                        .or_default()
                        .push((event.id, false));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_and_restarted_postgres_loses_nothing_and_the_relay_resumes() -> anyhow::Result<()>
{
    let Some(bin) = event_testkit::test_server("EVENTBUS_TEST_POSTGRES_BIN", "postgres")? else {
        return Ok(());
    };
    let seed = seed("postgres_restart");
    let mut server = PostgresServer::start(std::path::Path::new(&bin))?;
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(5))
        .connect(&server.url())
        .await?;
    event_outbox::migrate(&pool).await?;
    let outbox = Outbox::new();
    let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::new(Config::default())?);
    let recorder = Recorder::subscribe(&bus).await?;
    let mut config = RelayConfig::default();
    config.retry_backoff = Duration::from_millis(50);
    config.max_backoff = Duration::from_secs(1);
    config.poll_interval = Duration::from_millis(500);
    let relay = Relay::new(pool.clone(), outbox.clone(), bus.clone(), config).spawn();

    let stop = Arc::new(AtomicBool::new(false));
    let committed = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            tokio::spawn(write_until_stopped(
                pool.clone(),
                outbox.clone(),
                w,
                seed,
                stop.clone(),
                committed.clone(),
                errors.clone(),
            ))
        })
        .collect();

    for restart in 1..=2 {
        // Under load: the relay has delivered a good share since the last restart.
        let delivered = recorder.snapshot().len();
        wait_until("the relay delivering under load", || {
            let now = recorder.snapshot().len();
            (now >= delivered + 600)
                .then_some(())
                .ok_or(format!("{now} deliveries"))
        })
        .await?;
        server.crash()?;
        let failed = errors.load(Ordering::SeqCst);
        wait_until("the writers meeting the crashed server", || {
            let now = errors.load(Ordering::SeqCst);
            (now > failed)
                .then_some(())
                .ok_or(format!("{now} failed transactions"))
        })
        .await?;
        server.start_again()?;
        eprintln!(
            "restart {restart}: {} committed, {} failed transactions so far",
            committed.load(Ordering::SeqCst),
            errors.load(Ordering::SeqCst)
        );
    }
    let delivered = recorder.snapshot().len();
    wait_until("the relay delivering again after the restarts", || {
        let now = recorder.snapshot().len();
        let enough = committed.load(Ordering::SeqCst) >= AT_LEAST;
        (enough && now >= delivered + 600)
            .then_some(())
            .ok_or(format!("{now} deliveries"))
    })
    .await?;
    stop.store(true, Ordering::SeqCst);
    let mut logs = Vec::new();
    for writer in writers {
        logs.push(writer.await?);
    }

    // Which unsure commits did commit: their rows are in the outbox.
    let unsure: Vec<uuid::Uuid> = logs
        .iter()
        .flat_map(|l| l.by_key.values().flatten())
        .filter(|(_, sure)| !sure)
        .map(|(id, _)| *id.as_uuid())
        .collect();
    let stored: HashSet<uuid::Uuid> = sqlx::query_scalar::<_, uuid::Uuid>(
        "SELECT event_id FROM eventbus_outbox WHERE event_id = ANY($1)",
    )
    .bind(&unsure)
    .fetch_all(&pool)
    .await?
    .into_iter()
    .collect();
    let mut written = Written::default();
    for log in logs {
        written.rolled_back.extend(log.rolled_back);
        for (key, events) in log.by_key {
            for (id, sure) in events {
                if sure || stored.contains(id.as_uuid()) {
                    written.committed.insert(id);
                    written.by_key.entry(key.clone()).or_default().push(id);
                } else {
                    written.rolled_back.insert(id);
                }
            }
        }
    }
    recorder.wait_for(&written.committed).await?;
    let repeats = check(&written, &recorder.snapshot())?;
    let stats = relay.stats();
    assert!(
        !relay.is_finished(),
        "the relay stopped after the restarts: {stats:?}"
    );
    assert!(
        stats.database_errors > 0,
        "the relay never met the crashed server: {stats:?}"
    );
    // A round whose commit was cut off publishes its rows again: wait until each is marked.
    let deadline = std::time::Instant::now() + support::DEADLINE;
    loop {
        let rows: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM eventbus_outbox WHERE delivered_at IS NOT NULL",
        )
        .fetch_one(&pool)
        .await?;
        if rows as usize == written.committed.len() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{rows} rows marked delivered, {} committed",
            written.committed.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "{} committed ({} unsure, {} of them stored), {} rolled back or never committed, {repeats} repeats; relay {stats:?}",
        written.committed.len(),
        unsure.len(),
        stored.len(),
        written.rolled_back.len()
    );
    relay.shut_down().await?;
    pool.close().await;
    Ok(())
}
