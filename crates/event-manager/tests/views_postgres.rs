//! Views stored in PostgreSQL (`EVENT_VIEWS_STORE=postgres`): two managers share the handler
//! groups, one of them is stopped part-way and a new one started in its place, then one starts
//! alone. On Kafka the views every one of them serves equal those one process computes in
//! memory from the whole history; on Redis (no per-key order across a group's processes) they
//! equal each other and the reference's counters. Each event is in a view's journal once, and
//! the agents' alerts (follow-up events, through the outbox and the relay) reach the system
//! view once each.
//!
//! Needs `EVENTBUS_TEST_POSTGRES_URL` and `EVENTBUS_TEST_KAFKA_BROKERS` or
//! `EVENTBUS_TEST_REDIS_URL` (`cargo xtask services up postgres kafka redis`); without them it
//! prints SKIPPED, or fails in an integration run.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, ensure};
use event_core::{Event, EventBus, EventType};
use event_manager::{EventBusManager, Settings};
use event_testkit::test_server;
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

/// The domain handlers under test: every view but the market signals', and the system view
/// also receives the agents' alerts.
const HANDLERS: [&str; 4] = ["user", "opportunity", "agent", "system"];
const USERS: usize = 100;
const OPPORTUNITIES: usize = 60;
const AGENTS: usize = 50;
/// Every wait on a condition gives up after this: generous, for a loaded 2-core machine.
const DEADLINE: Duration = Duration::from_secs(240);

fn event(event_type: EventType, key: &str, payload: Value) -> anyhow::Result<Event> {
    let Value::Object(payload) = payload else {
        anyhow::bail!("a payload is an object");
    };
    Ok(Event::builder(event_type, "views_test")
        .payload(payload)
        .partition_key(key)
        .build()?)
}

/// The history: each user registers and changes reputation, each opportunity is created and
/// updated (some updates ask for a re-analysis), each agent starts and completes tasks, a run
/// of them failing (which raises an error-rate alert).
fn history() -> anyhow::Result<Vec<Event>> {
    let mut per_key: Vec<Vec<Event>> = Vec::new();
    for u in 0..USERS {
        let id = format!("user-{u}");
        let mut events = vec![event(
            EventType::USER_REGISTERED,
            &id,
            json!({"user_id": id, "email": format!("{id}@example.com"), "username": id}),
        )?];
        for step in 0..7u32 {
            let old = f64::from(step * 10);
            events.push(event(
                EventType::USER_REPUTATION_CHANGED,
                &id,
                json!({"user_id": id, "old_score": old, "new_score": old + 10.0 + u as f64, "reason": format!("step {step}")}),
            )?);
        }
        per_key.push(events);
    }
    for o in 0..OPPORTUNITIES {
        let id = format!("opp-{o}");
        let mut events = vec![event(
            EventType::OPPORTUNITY_CREATED,
            &id,
            json!({"opportunity_id": id, "title": format!("Opportunity {o}"), "description": "d", "ai_solution_type": "nlp"}),
        )?];
        for step in 0..7 {
            let field = if step % 3 == 0 {
                "description"
            } else {
                "title"
            };
            events.push(event(
                EventType::OPPORTUNITY_UPDATED,
                &id,
                json!({"opportunity_id": id, "changes": {field: format!("{field} {step}")}, "updated_by": "views_test"}),
            )?);
        }
        per_key.push(events);
    }
    for a in 0..AGENTS {
        let id = format!("agent-{a}");
        let mut events = vec![event(
            EventType::AGENT_STARTED,
            &id,
            json!({"agent_id": id, "agent_type": "monitor"}),
        )?];
        for task in 0..13 {
            // Agents with an even number fail tasks 3 to 9: over half of the window.
            let success = a % 2 == 1 || !(3..10).contains(&task);
            events.push(event(
                EventType::AGENT_TASK_COMPLETED,
                &id,
                json!({"agent_id": id, "task_id": format!("{id}-t{task}"), "task_type": "scan", "duration_seconds": 1.5, "success": success}),
            )?);
        }
        per_key.push(events);
    }
    // Interleaved across keys, in order within each.
    let mut all = Vec::new();
    let longest = per_key.iter().map(Vec::len).max().unwrap_or(0);
    for i in 0..longest {
        all.extend(per_key.iter().filter_map(|events| events.get(i).cloned()));
    }
    Ok(all)
}

/// A view's snapshot with what differs by nature between runs taken out: the time an alert
/// was raised (the follow-up event is new in each run), a running agent's uptime (counted to
/// now), and the order of lists that several keys append to.
fn comparable(mut snapshot: Value) -> Value {
    for (list, field) in [
        ("recent_errors", "at"),
        ("reanalysis_requests", "at"),
        ("agents", "uptime_seconds"),
    ] {
        if let Some(Value::Array(items)) = snapshot.get_mut(list) {
            for item in items.iter_mut() {
                if let Value::Object(fields) = item {
                    fields.remove(field);
                }
            }
            items.sort_by_key(Value::to_string);
        }
    }
    snapshot
}

/// The views one process computes in memory from the whole history.
async fn reference(history: &[Event]) -> anyhow::Result<Vec<(String, Value)>> {
    let settings = Settings::from_vars([("ENABLED_EVENT_HANDLERS", HANDLERS.join(","))])?;
    let manager = EventBusManager::builder(settings).build()?;
    manager.start().await?;
    let bus = manager.bus()?;
    for event in history {
        bus.publish(event.clone()).await?;
    }
    let alerts = (AGENTS / 2) as u64;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let stats = manager.stats().await?;
        let done = stats
            .handlers
            .values()
            .all(|h| h.lag == 0 && h.pending == 0);
        let system = manager.view("system").context("no system view")?.snapshot();
        if done && system["errors_by_severity"]["high"] == json!(alerts) {
            break;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "the in-memory reference did not finish: {system}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let views = views_of(&manager).await?;
    manager.stop().await?;
    Ok(views)
}

async fn views_of(manager: &EventBusManager) -> anyhow::Result<Vec<(String, Value)>> {
    let mut views = Vec::new();
    for name in HANDLERS {
        let view = manager
            .view(name)
            .with_context(|| format!("no {name} view"))?;
        view.refresh()
            .await
            .map_err(|e| anyhow::anyhow!("refreshing {name}: {e}"))?;
        views.push((name.to_string(), comparable(view.snapshot())));
    }
    Ok(views)
}

/// Waits until `manager` serves the `expected` views; on the deadline, names the first that
/// differs.
async fn wait_for_views(
    who: &str,
    manager: &EventBusManager,
    expected: &[(String, Value)],
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let views = views_of(manager).await?;
        let differs = views.iter().zip(expected).find(|(got, want)| got != want);
        let Some(((name, got), (_, want))) = differs else {
            return Ok(());
        };
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!(
                "{who}'s {name} view differs from the reference:\n got {got}\nwant {want}"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

struct Database {
    admin: PgPool,
    pool: PgPool,
    schema: String,
    url: String,
}

/// A schema of its own on the test server, migrated; `None` (after a SKIPPED line) without a
/// server outside an integration run.
async fn database() -> anyhow::Result<Option<Database>> {
    let Some(url) = test_server("EVENTBUS_TEST_POSTGRES_URL", "postgres")? else {
        return Ok(None);
    };
    let (schema, schema_url) = event_testkit::postgres_schema(&url, "views_test");
    let admin = PgPoolOptions::new()
        .max_connections(2)
        .connect(&url)
        .await?;
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&admin)
        .await?;
    let url = schema_url;
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect(&url)
        .await?;
    event_outbox::migrate(&pool).await?;
    Ok(Some(Database {
        admin,
        pool,
        schema,
        url,
    }))
}

impl Database {
    async fn drop(self) -> anyhow::Result<()> {
        self.pool.close().await;
        sqlx::query(&format!("DROP SCHEMA {} CASCADE", self.schema))
            .execute(&self.admin)
            .await?;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_kafka_every_process_serves_the_views_of_the_whole_history() -> anyhow::Result<()> {
    let Some(brokers) = test_server("EVENTBUS_TEST_KAFKA_BROKERS", "kafka")? else {
        return Ok(());
    };
    let Some(db) = database().await? else {
        return Ok(());
    };
    let mut settings = Settings::from_vars([
        ("EVENT_BUS_TYPE", "kafka"),
        ("KAFKA_BOOTSTRAP_SERVERS", brokers.as_str()),
    ])?;
    settings.kafka.topic_prefix = event_testkit::unique("views");
    // A key stays with one process of a group (its partition's), so the journal keeps each
    // key's order and every view equals the reference exactly.
    scenario(settings, &db, Compare::Exactly).await?;
    db.drop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_redis_every_process_serves_the_same_views_with_every_event_once() -> anyhow::Result<()>
{
    let Some(url) = test_server("EVENTBUS_TEST_REDIS_URL", "redis")? else {
        return Ok(());
    };
    let Some(db) = database().await? else {
        return Ok(());
    };
    let mut settings = Settings::from_vars([("EVENT_BUS_TYPE", "redis"), ("REDIS_URL", &url)])?;
    settings.redis.key_prefix = event_testkit::unique("views");
    // Redis hands a group's entries to whichever process reads next, so two events of one key
    // can run at once in two processes (docs/redis.md): the views then fold them in commit
    // order. Every process still serves the same views, with every event applied once.
    scenario(settings, &db, Compare::Counts).await?;
    db.drop().await
}

/// How a process's views are held against the reference.
#[derive(Clone, Copy, PartialEq)]
enum Compare {
    /// Equal.
    Exactly,
    /// Equal to each other process's, and the reference's counters.
    Counts,
}

/// Two processes share the groups; the second stops part-way and a third takes its place;
/// after everything is handled a fourth starts alone. Checks every process's views.
async fn scenario(mut settings: Settings, db: &Database, compare: Compare) -> anyhow::Result<()> {
    settings.enabled_event_handlers =
        event_manager::HandlerSelection::Only(HANDLERS.map(String::from).to_vec());
    settings.views_store = event_manager::ViewsStore::Postgres;
    settings.database_url = Some(db.url.clone());
    let history = history()?;
    let expected = reference(&history).await?;
    let start = || async {
        let manager = EventBusManager::builder(settings.clone()).build()?;
        manager.start().await?;
        anyhow::Ok(manager)
    };
    let first = start().await?;
    let second = start().await?;
    let publisher = first.bus()?;
    let (before, after) = history.split_at(history.len() / 2);
    publish(&publisher, before).await?;
    // The second process stops part-way through the first half (what it held goes to the
    // others), and a new one takes its place for the second half.
    wait_for_journal(&db.pool, "user", (USERS * 2) as i64).await?;
    second.stop().await?;
    let third = start().await?;
    publish(&publisher, after).await?;
    for (view, count) in journal_counts() {
        wait_for_journal(&db.pool, view, count).await?;
    }
    let processes = [("the first process", &first), ("the third process", &third)];
    for (who, manager) in processes {
        match compare {
            Compare::Exactly => wait_for_views(who, manager, &expected).await?,
            Compare::Counts => {
                let views = views_of(manager).await?;
                same_counters(who, &views, &expected)?;
                same_views(who, &views, &views_of(&first).await?)?;
            }
        }
    }
    // Each event applied once: the journal holds every handled event once, and nothing more
    // arrives.
    check_journal(&db.pool).await?;
    // A restart with nothing new folds the journal alone.
    let served = views_of(&first).await?;
    first.stop().await?;
    third.stop().await?;
    let fourth = start().await?;
    same_views(
        "a process started after the others",
        &views_of(&fourth).await?,
        &served,
    )?;
    fourth.stop().await?;
    check_journal(&db.pool).await
}

/// How many events each view's journal must hold: every event of its types, and the system
/// view one alert per failing agent.
fn journal_counts() -> [(&'static str, i64); 4] {
    [
        ("agent", (AGENTS * 14) as i64),
        ("opportunity", (OPPORTUNITIES * 8) as i64),
        ("system", (AGENTS / 2) as i64),
        ("user", (USERS * 8) as i64),
    ]
}

async fn check_journal(pool: &PgPool) -> anyhow::Result<()> {
    let journal: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT view, count(*), count(DISTINCT event_id) FROM eventbus_view_journal
         GROUP BY view ORDER BY view",
    )
    .fetch_all(pool)
    .await?;
    let want = journal_counts();
    ensure!(journal.len() == want.len(), "journals: {journal:?}");
    for ((view, rows, distinct), (name, count)) in journal.iter().zip(want) {
        ensure!(
            view == name && *rows == count && *distinct == count,
            "journal of {view}: {rows} rows, {distinct} events; expected {count} of {name}"
        );
    }
    Ok(())
}

/// The views `who` serves equal those the first process served.
fn same_views(who: &str, got: &[(String, Value)], first: &[(String, Value)]) -> anyhow::Result<()> {
    for ((name, got), (_, want)) in got.iter().zip(first) {
        ensure!(
            got == want,
            "{who} serves another {name} view than the first process:\n got {got}\nwant {want}"
        );
    }
    Ok(())
}

/// The counters of every view equal the reference's.
fn same_counters(
    who: &str,
    views: &[(String, Value)],
    expected: &[(String, Value)],
) -> anyhow::Result<()> {
    let counters = [
        ("user", &["registered", "reputation_changes"][..]),
        ("opportunity", &["created", "updated", "active"][..]),
        ("agent", &["running", "alerts_raised"][..]),
        ("system", &["errors_by_severity"][..]),
    ];
    for ((name, got), (_, want)) in views.iter().zip(expected) {
        let fields = counters
            .iter()
            .find(|(view, _)| view == name)
            .map_or(&[][..], |(_, fields)| *fields);
        for field in fields {
            ensure!(
                got[field] == want[field],
                "{who}'s {name} view has {field} {}, the reference {}",
                got[field],
                want[field]
            );
        }
    }
    Ok(())
}

async fn publish(bus: &Arc<dyn EventBus>, events: &[Event]) -> anyhow::Result<()> {
    for chunk in events.chunks(200) {
        for result in bus.publish_batch(chunk.to_vec()).await {
            result?;
        }
    }
    Ok(())
}

/// Waits until the view's journal holds at least `rows` events.
async fn wait_for_journal(pool: &PgPool, view: &str, rows: i64) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let count: i64 =
            sqlx::query_scalar("SELECT count(*) FROM eventbus_view_journal WHERE view = $1")
                .bind(view)
                .fetch_one(pool)
                .await?;
        if count >= rows {
            return Ok(());
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "the {view} journal holds {count} events, not {rows}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
