//! The PostgreSQL server crashed and started again, twice, while writers commit and roll back
//! transactions and a relay delivers them: nothing committed is lost, nothing rolled back is
//! delivered, per-key order holds, and the same relay resumes by itself. The server is one of
//! the test's own (`EVENTBUS_TEST_POSTGRES_BIN`), crashed with an immediate shutdown.

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use event_core::{Config, EventBus, EventType, MemoryBus};
use event_outbox::{Outbox, Relay, RelayConfig};
use event_testkit::PostgresServer;
use sqlx::postgres::PgPoolOptions;
use support::{Recorder, TxOutcome, Writers, Written, check, seed, wait_until};

const WRITERS: usize = 4;
const KEYS_PER_WRITER: usize = 20;
/// Committed events to reach before the writers stop: several relay batches of 500 after the
/// last restart.
const AT_LEAST: usize = 3_000;

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

    let writers = Writers::new(
        WRITERS,
        KEYS_PER_WRITER,
        &[EventType::OPPORTUNITY_CREATED],
        Duration::ZERO,
    );
    let writing = tokio::spawn({
        let (writers, pool, outbox) = (writers.clone(), pool.clone(), outbox.clone());
        async move { writers.run(&pool, &outbox, seed).await }
    });

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
        let failed = writers.failed();
        wait_until("the writers meeting the crashed server", || {
            let now = writers.failed();
            (now > failed)
                .then_some(())
                .ok_or(format!("{now} failed transactions"))
        })
        .await?;
        server.start_again()?;
        eprintln!(
            "restart {restart}: {} committed, {} failed transactions so far",
            writers.committed(),
            writers.failed()
        );
    }
    let delivered = recorder.snapshot().len();
    wait_until("the relay delivering again after the restarts", || {
        let now = recorder.snapshot().len();
        let enough = writers.committed() >= AT_LEAST;
        (enough && now >= delivered + 600)
            .then_some(())
            .ok_or(format!("{now} deliveries"))
    })
    .await?;
    writers.stop.store(true, Ordering::SeqCst);
    let log = writing.await??;

    // Which unsure commits did commit: their rows are in the outbox.
    let unsure: Vec<uuid::Uuid> = log
        .iter()
        .filter(|e| e.outcome == TxOutcome::Unsure)
        .map(|e| *e.id.as_uuid())
        .collect();
    let stored: HashSet<uuid::Uuid> = sqlx::query_scalar::<_, uuid::Uuid>(
        "SELECT event_id FROM eventbus_outbox WHERE event_id = ANY($1)",
    )
    .bind(&unsure)
    .fetch_all(&pool)
    .await?
    .into_iter()
    .collect();
    let written = Written::from_log(log, |id| stored.contains(id.as_uuid()));
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
