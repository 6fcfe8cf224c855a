//! The inbox against the real PostgreSQL (`EVENTBUS_TEST_POSTGRES_URL`): a handler's effects
//! and the events it publishes happen once per event, however often and however concurrently
//! the event is delivered, and whatever fails on the way.

mod support;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use event_core::{Config, Event, EventBus, EventHandler, EventType, HandlerError, MemoryBus};
use event_outbox::{
    InboxConfig, InboxHandler, InboxLayer, InboxTransaction, Outbox, RelayConfig,
    TransactionalHandler, clean_inbox,
};
use sqlx::Row as _;
use support::{TestDb, seed, test_db, wait_until};
use tower::Layer as _;

/// Adds each event's amount to its account, and publishes one follow-up event; fails
/// transiently after writing when the event says so, or hangs (to be aborted) there.
struct Ledger {
    /// The `token`s of the deliveries that hang inside their transaction now.
    hanging: Arc<Mutex<HashSet<String>>>,
}

#[async_trait]
impl TransactionalHandler for Ledger {
    fn name(&self) -> &str {
        "ledger"
    }

    async fn handle(&self, event: &Event, tx: &mut InboxTransaction) -> Result<(), HandlerError> {
        let account = event.payload["account"].as_str().unwrap_or_default();
        let amount = event.payload["amount"].as_i64().unwrap_or_default();
        sqlx::query(
            "INSERT INTO accounts (account, total) VALUES ($1, $2)
             ON CONFLICT (account) DO UPDATE SET total = accounts.total + $2",
        )
        .bind(account)
        .bind(amount)
        .execute(tx.connection())
        .await
        .map_err(HandlerError::transient)?;
        let follow_up = event
            .caused(EventType::USER_PROFILE_UPDATED, "ledger")
            .payload(serde_json::json!({"account": account}))
            .partition_key(account)
            .build()
            .map_err(HandlerError::permanent)?;
        tx.publish([follow_up])
            .await
            .map_err(HandlerError::transient)?;
        match event.metadata.get("fault").and_then(|f| f.as_str()) {
            Some("fail") => Err(HandlerError::transient("injected failure after writing")),
            Some("hang") => {
                let token = event.metadata.get("token").and_then(|t| t.as_str());
                self.hanging
                    .lock()
                    .unwrap()
                    .insert(token.unwrap_or_default().to_string());
                std::future::pending().await
            }
            _ => Ok(()),
        }
    }
}

/// The test database with the ledger's `accounts` table, and the [`Ledger`] behind an inbox
/// (its hanging deliveries noted in `hanging`); `None` when the test is skipped.
async fn ledger(
    hanging: &Arc<Mutex<HashSet<String>>>,
) -> anyhow::Result<Option<(TestDb, InboxHandler<Ledger>)>> {
    let Some(db) = test_db().await? else {
        return Ok(None);
    };
    sqlx::query("CREATE TABLE accounts (account TEXT PRIMARY KEY, total BIGINT NOT NULL)")
        .execute(&db.pool)
        .await?;
    let handler = InboxLayer::new(db.pool.clone(), db.outbox.clone(), InboxConfig::default())
        .layer(Ledger {
            hanging: hanging.clone(),
        });
    Ok(Some((db, handler)))
}

/// Thousands of events over many accounts, each delivered one to four times, some copies at
/// the same moment, some failing after their writes and some cut off inside their
/// transaction: each account's total is the sum of its events' amounts, and each event
/// published exactly one follow-up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inbox_applies_each_event_once_under_redelivery() -> anyhow::Result<()> {
    let hanging: Arc<Mutex<HashSet<String>>> = Arc::default();
    let Some((db, handler)) = ledger(&hanging).await? else {
        return Ok(());
    };
    let handler = Arc::new(handler);
    let seed = seed("the_inbox_applies_each_event_once_under_redelivery");
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut expected = std::collections::BTreeMap::<String, i64>::new();
    let mut events = Vec::new();
    for n in 0..3000 {
        let account = format!("acct-{}", rng.usize(..200));
        let amount = rng.i64(1..1000);
        *expected.entry(account.clone()).or_default() += amount;
        let event = Event::builder(EventType::USER_REGISTERED, "inbox_test")
            .payload(serde_json::json!({"account": account, "amount": amount, "n": n}))
            .partition_key(account)
            .build()?;
        events.push(event);
    }

    // Each delivery round: every event not yet known to be handled, 1 to 4 copies at once.
    let mut failures = 0;
    let mut hangs = 0;
    let mut pending: Vec<Event> = events.clone();
    let mut round = 0;
    while !pending.is_empty() {
        round += 1;
        // A hundred events at a time, so that the copies at once contend without queueing
        // for the pool's connections for long.
        for chunk in pending.chunks(100) {
            let mut tasks = Vec::new();
            let mut hung = Vec::new();
            for event in chunk {
                for copy_number in 0..rng.usize(1..=4) {
                    let mut copy = event.clone();
                    // Faults on the first rounds only, so that every event is handled at last.
                    let fault = match rng.usize(..20) {
                        0 if round <= 2 => Some("fail"),
                        1 if round <= 2 => Some("hang"),
                        _ => None,
                    };
                    let token = format!("{round}-{}-{copy_number}", event.id);
                    if let Some(fault) = fault {
                        copy.metadata.insert("fault".into(), fault.into());
                        copy.metadata.insert("token".into(), token.clone().into());
                    }
                    let handler = handler.clone();
                    let task = tokio::spawn(async move { handler.handle(&copy).await });
                    if fault == Some("hang") {
                        hung.push((token, task));
                    } else {
                        tasks.push(task);
                    }
                }
            }
            // A hanging delivery holds its event's inbox record (copies of that event wait
            // for it) and a connection: cut each off, as a killed process would be, once it
            // hangs inside its transaction, or let it be if it ended first (it found the
            // event handled).
            hangs += hung.len();
            wait_until("every hanging delivery inside its transaction", || {
                hung.retain(|(token, task)| {
                    let inside = hanging.lock().unwrap().contains(token);
                    if inside {
                        task.abort();
                    }
                    !(inside || task.is_finished())
                });
                hung.is_empty()
                    .then_some(())
                    .ok_or_else(|| format!("{} deliveries neither hang nor ended", hung.len()))
            })
            .await?;
            for task in tasks {
                if let Err(error) = task.await? {
                    assert!(error.is_transient(), "{error}");
                    failures += 1;
                }
            }
        }
        let mut handled = HashSet::new();
        // Which events have their record now: the rest go round again.
        let rows = sqlx::query("SELECT event_id FROM eventbus_inbox WHERE handler = 'ledger'")
            .fetch_all(&db.pool)
            .await?;
        for row in rows {
            handled.insert(row.try_get::<uuid::Uuid, _>(0)?);
        }
        pending.retain(|e| !handled.contains(e.id.as_uuid()));
        // Redeliver a few handled ones too, as a bus would after a lost acknowledgement.
        pending.extend(events.iter().filter(|_| rng.usize(..50) == 0).cloned());
        pending.retain(|e| round < 6 || !handled.contains(e.id.as_uuid()));
        anyhow::ensure!(round < 20, "events still unhandled after 20 rounds");
    }

    let totals: std::collections::BTreeMap<String, i64> =
        sqlx::query("SELECT account, total FROM accounts")
            .fetch_all(&db.pool)
            .await?
            .iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect::<Result<_, sqlx::Error>>()?;
    assert_eq!(totals, expected, "each event applied exactly once");
    let follow_ups: i64 = sqlx::query_scalar("SELECT count(*) FROM eventbus_outbox")
        .fetch_one(&db.pool)
        .await?;
    assert_eq!(follow_ups as usize, events.len(), "one follow-up per event");
    let stats = handler.stats();
    eprintln!(
        "{} events in {round} rounds: {stats:?}, {failures} injected failures, {hangs} deliveries made to hang (cut off inside their transaction, or ended finding the event handled)",
        events.len()
    );
    assert_eq!(stats.handled as usize, events.len());
    assert!(stats.duplicates > 0 && failures > 0 && hangs > 0);
    db.drop_schema().await
}

/// The events a handler publishes reach the bus through the outbox after its commit, caused
/// by the event handled; a handler that fails publishes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_published_in_the_inbox_transaction_go_through_the_outbox() -> anyhow::Result<()> {
    let Some((db, handler)) = ledger(&Arc::default()).await? else {
        return Ok(());
    };
    let event = |fault: Option<&str>| {
        let mut event = Event::builder(EventType::USER_REGISTERED, "inbox_test")
            .payload(serde_json::json!({"account": "a", "amount": 5}))
            .build()
            .unwrap();
        if let Some(fault) = fault {
            event.metadata.insert("fault".into(), fault.into());
        }
        event
    };
    let good = event(None);
    handler.handle(&good).await.map_err(anyhow::Error::msg)?;
    assert!(handler.handle(&event(Some("fail"))).await.is_err());
    let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::new(Config::default())?);
    let relay = db.relay(&bus, RelayConfig::default());
    assert_eq!(relay.deliver_pending().await?.delivered, 1);
    let outbox = Outbox::stats(&db.pool).await?;
    assert_eq!((outbox.pending, outbox.delivered), (0, 1));
    let cause: String = sqlx::query_scalar("SELECT event->>'causation_id' FROM eventbus_outbox")
        .fetch_one(&db.pool)
        .await?;
    assert_eq!(cause, good.id.to_string());
    bus.shutdown().await?;
    db.drop_schema().await
}

/// Past the duplicate-detection window the record is gone and a redelivery is handled again:
/// the documented limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_window_a_redelivery_is_handled_again() -> anyhow::Result<()> {
    let Some((db, handler)) = ledger(&Arc::default()).await? else {
        return Ok(());
    };
    let event = Event::builder(EventType::USER_REGISTERED, "inbox_test")
        .payload(serde_json::json!({"account": "a", "amount": 5}))
        .build()?;
    for _ in 0..3 {
        handler.handle(&event).await.map_err(anyhow::Error::msg)?;
    }
    assert_eq!(clean_inbox(&db.pool, Duration::from_secs(3600)).await?, 0);
    assert_eq!(clean_inbox(&db.pool, Duration::ZERO).await?, 1);
    handler.handle(&event).await.map_err(anyhow::Error::msg)?;
    let total: i64 = sqlx::query_scalar("SELECT total FROM accounts WHERE account = 'a'")
        .fetch_one(&db.pool)
        .await?;
    assert_eq!(total, 10, "handled once in the window, once more past it");
    assert_eq!(handler.stats().duplicates, 2);
    db.drop_schema().await
}
