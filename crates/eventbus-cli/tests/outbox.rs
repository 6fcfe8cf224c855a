//! `eventbus outbox migrate|relay|stats` against a real PostgreSQL and Redis: the schema is
//! applied (once), a running relay process publishes every committed transaction's events to
//! Redis, woken by `LISTEN/NOTIFY`, and none of a rolled-back one; SIGTERM stops it cleanly
//! with its report; `stats` agrees.

mod common;

use std::collections::HashSet;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use common::{code, eventbus, run, stderr, stdout};
use event_core::{Event, EventBus, EventId, EventType, ReplayQuery};
use event_outbox::Outbox;
use event_testkit::test_server;
use futures::TryStreamExt as _;
use serde_json::{Value, json};
use sqlx::postgres::PgPoolOptions;

/// Committed transactions, of `PER_TRANSACTION` events each: more than several of the relay's
/// claims (`--batch-size 100`).
const TRANSACTIONS: u64 = 24;
const PER_TRANSACTION: u64 = 50;

/// Kills the relay if the test ends early.
struct Relay(Option<Child>);

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A fresh schema of the test server, dropped with everything in it when the test ends.
struct Schema {
    runtime: tokio::runtime::Runtime,
    admin: sqlx::PgPool,
    name: String,
    /// The server's URL with this schema first in the search path.
    url: String,
}

impl Schema {
    fn new(database: &str, prefix: &str) -> anyhow::Result<Self> {
        let (name, url) = event_testkit::postgres_schema(database, prefix);
        let runtime = tokio::runtime::Runtime::new()?;
        let admin = runtime.block_on(PgPoolOptions::new().max_connections(1).connect(database))?;
        runtime.block_on(sqlx::query(&format!("CREATE SCHEMA {name}")).execute(&admin))?;
        Ok(Self {
            runtime,
            admin,
            name,
            url,
        })
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let drop_it = format!("DROP SCHEMA {} CASCADE", self.name);
        let _ = self
            .runtime
            .block_on(sqlx::query(&drop_it).execute(&self.admin));
    }
}

#[test]
fn a_relay_process_publishes_what_commits_and_stops_on_sigterm() -> anyhow::Result<()> {
    let (Some(database), Some(redis)) = (
        test_server("EVENTBUS_TEST_POSTGRES_URL", "postgres")?,
        test_server("EVENTBUS_TEST_REDIS_URL", "redis")?,
    ) else {
        return Ok(());
    };
    let fresh = Schema::new(&database, "cli_outbox")?;
    let (runtime, schema, url) = (&fresh.runtime, &fresh.name, &fresh.url);
    let prefix = schema.replace('_', "-");

    let migrate = |expect: &str| -> anyhow::Result<()> {
        let out = run(&[("DATABASE_URL", url.as_str())], &["outbox", "migrate"])?;
        ensure!(
            code(&out) == 0 && stdout(&out).contains(expect),
            "outbox migrate: {} {}",
            stdout(&out),
            stderr(&out)
        );
        Ok(())
    };
    migrate("applied outbox migrations [1, 2]")?;
    migrate("the outbox schema is current")?;

    let vars = [
        ("EVENT_BUS_TYPE", "redis"),
        ("REDIS_URL", redis.as_str()),
        ("REDIS_KEY_PREFIX", prefix.as_str()),
        ("DATABASE_URL", url.as_str()),
    ];
    let mut relay = Relay(Some(
        eventbus(
            &vars,
            &[
                "--json",
                "outbox",
                "relay",
                "--channel",
                schema,
                "--batch-size",
                "100",
                // Long, so the events come through `LISTEN/NOTIFY`, not through polling alone.
                "--poll-interval-ms",
                "60000",
            ],
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?,
    ));

    // Two types, one stream each on Redis.
    let types = [
        EventType::new(format!("ledger.{schema}"))?,
        EventType::new(format!("ledger_note.{schema}"))?,
    ];
    let pool = runtime.block_on(PgPoolOptions::new().max_connections(2).connect(url))?;
    let outbox = Outbox::with_channel(schema.clone());
    let mut committed = HashSet::new();
    let mut rolled_back = HashSet::new();
    runtime.block_on(async {
        for t in 0..=TRANSACTIONS {
            let events: Vec<Event> = (0..PER_TRANSACTION)
                .map(|n| {
                    Event::builder(types[(n % 2) as usize].clone(), "ledger")
                        .payload(json!({"transaction": t, "n": n}))
                        .partition_key(format!("account-{}", n % 7))
                        .build()
                })
                .collect::<Result<_, _>>()?;
            let mut tx = pool.begin().await?;
            let ids = outbox.add(&mut tx, events).await?;
            // The last one rolls back: none of its events may ever be published.
            if t == TRANSACTIONS {
                tx.rollback().await?;
                rolled_back.extend(ids);
            } else {
                tx.commit().await?;
                committed.extend(ids);
            }
        }
        anyhow::Ok(())
    })?;

    // Every committed event reaches Redis (the relay marks it delivered once published).
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let stats = runtime.block_on(Outbox::stats(&pool))?;
        if stats.pending == 0 && stats.delivered == committed.len() as u64 {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the relay left {stats:?} after 120 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let settings = event_manager::Settings::from_vars(
        vars.iter()
            .map(|(k, v)| (*k, v.to_string()))
            .collect::<Vec<_>>(),
    )?;
    let published: Vec<EventId> = runtime.block_on(async {
        let bus =
            event_redis::RedisBus::connect(settings.redis.clone(), settings.bus.clone()).await?;
        let query = ReplayQuery::new(
            types.to_vec(),
            time::OffsetDateTime::now_utc() - time::Duration::hours(1),
        );
        let events: Vec<Event> = bus.replay(query).await?.try_collect().await?;
        bus.shutdown().await?;
        anyhow::Ok(events.into_iter().map(|e| e.id).collect())
    })?;
    let distinct: HashSet<EventId> = published.iter().copied().collect();
    ensure!(
        distinct == committed,
        "{} events on Redis, {} distinct, {} committed",
        published.len(),
        distinct.len(),
        committed.len()
    );
    ensure!(
        distinct.is_disjoint(&rolled_back),
        "a rolled-back event was published"
    );

    // SIGTERM: the relay stops cleanly and reports what it did.
    let child = relay.0.take().context("the relay runs")?;
    let pid = child.id().to_string();
    ensure!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()?
            .success()
    );
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "the relay exited with {:?}: {}",
        out.status,
        stderr(&out)
    );
    let report: Value = serde_json::from_str(stdout(&out).trim())
        .with_context(|| format!("the relay's report: {}", stdout(&out)))?;
    ensure!(
        report["delivered"].as_u64() == Some(committed.len() as u64)
            && report["parked"] == 0
            // Batches of 100, up to four a round.
            && report["rounds"].as_u64() >= Some(committed.len() as u64 / 400),
        "the relay reported {report}"
    );

    let out = run(
        &[("DATABASE_URL", url.as_str())],
        &["--json", "outbox", "stats"],
    )?;
    ensure!(code(&out) == 0, "outbox stats: {}", stderr(&out));
    let stats: Value = serde_json::from_str(&stdout(&out))?;
    ensure!(
        stats["pending"] == 0
            && stats["parked"] == 0
            && stats["delivered"] == committed.len() as u64,
        "outbox stats said {stats}"
    );

    runtime.block_on(pool.close());
    Ok(())
}

/// `eventbus serve --outbox-relay` started before the outbox's schema exists: the relay fails,
/// is restarted and health says so; once `outbox migrate` ran it comes up by itself, health is
/// healthy again, and what the application commits is published.
#[test]
fn serve_supervises_the_relay_and_reports_it_in_health() -> anyhow::Result<()> {
    let Some(database) = test_server("EVENTBUS_TEST_POSTGRES_URL", "postgres")? else {
        return Ok(());
    };
    let fresh = Schema::new(&database, "cli_serve_outbox")?;
    let (runtime, url) = (&fresh.runtime, &fresh.url);

    const TOKEN: &str = "admin-token-for-the-outbox-test-01";
    let tokens = format!("admin:{TOKEN}");
    let vars = [
        ("EVENT_BUS_TYPE", "memory"),
        ("EVENT_API_TOKENS", tokens.as_str()),
        ("DATABASE_URL", url.as_str()),
    ];
    let (child, addr) = common::serve(&vars, &["--outbox-relay"])?;
    let _serve = Relay(Some(child));
    let addr = addr.to_string();
    let health = || -> anyhow::Result<Value> {
        common::get_json(&addr, "/api/v1/events/health", Some(TOKEN))
    };
    let wait_for = |what: &str, done: &dyn Fn(&Value) -> bool| -> anyhow::Result<Value> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let report = health()?;
            if done(&report) {
                return Ok(report);
            }
            ensure!(Instant::now() < deadline, "{what} within 60 s: {report}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let relay = |report: &Value| report["components"][0].clone();
    let failing = wait_for("the relay fails and is restarted", &|r| {
        relay(r)["restarts"].as_u64() >= Some(1)
    })?;
    ensure!(
        relay(&failing)["name"] == "outbox_relay"
            && relay(&failing)["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("eventbus outbox migrate")),
        "the relay's report: {failing}"
    );

    let out = run(&[("DATABASE_URL", url.as_str())], &["outbox", "migrate"])?;
    ensure!(code(&out) == 0, "outbox migrate: {}", stderr(&out));
    let up = wait_for("the relay runs and health is healthy", &|r| {
        relay(r)["state"] == "running" && r["status"] == "healthy"
    })?;
    ensure!(up["problems"].as_array().is_some_and(Vec::is_empty), "{up}");

    let pool = runtime.block_on(PgPoolOptions::new().max_connections(1).connect(url))?;
    // More than two of the relay's rounds (500), in four transactions, two types.
    let events = 1_200u64;
    runtime.block_on(async {
        for t in 0..4 {
            let mut tx = pool.begin().await?;
            let batch: Vec<Event> = (0..events / 4)
                .map(|n| {
                    let kind = if n % 2 == 0 {
                        "ledger.entry"
                    } else {
                        "ledger.note"
                    };
                    Event::builder(EventType::new(kind)?, "ledger")
                        .payload(json!({"transaction": t, "n": n}))
                        .partition_key(format!("account-{}", n % 7))
                        .build()
                })
                .collect::<Result<_, _>>()?;
            Outbox::new().add(&mut tx, batch).await?;
            tx.commit().await?;
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let stats = Outbox::stats(&pool).await?;
            if stats.delivered == events && stats.pending == 0 {
                break;
            }
            ensure!(Instant::now() < deadline, "the served relay left {stats:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        pool.close().await;
        anyhow::Ok(())
    })?;
    Ok(())
}

/// `eventbus serve` with `EVENT_VIEWS_STORE=postgres`: refused, saying what to run, before the
/// schema exists; then two served processes in one group on Redis. Events the application
/// commits to the outbox reach the bus through the relay the served managers run themselves,
/// each process handles its share, and `/views/user` answers the whole view from either.
#[test]
fn served_views_in_postgres_are_whole_in_each_process() -> anyhow::Result<()> {
    let (Some(database), Some(redis)) = (
        test_server("EVENTBUS_TEST_POSTGRES_URL", "postgres")?,
        test_server("EVENTBUS_TEST_REDIS_URL", "redis")?,
    ) else {
        return Ok(());
    };
    let fresh = Schema::new(&database, "cli_serve_views")?;
    let (runtime, url) = (&fresh.runtime, &fresh.url);
    const TOKEN: &str = "admin-token-for-the-views-test-0001";
    let tokens = format!("admin:{TOKEN}");
    let prefix = event_testkit::unique("cli-views");
    let vars = [
        ("EVENT_BUS_TYPE", "redis"),
        ("REDIS_URL", redis.as_str()),
        ("REDIS_KEY_PREFIX", prefix.as_str()),
        ("EVENT_API_TOKENS", tokens.as_str()),
        ("ENABLED_EVENT_HANDLERS", "user"),
        ("EVENT_VIEWS_STORE", "postgres"),
        ("DATABASE_URL", url.as_str()),
    ];
    let refused = run(&vars, &["serve", "--addr", "127.0.0.1:0"])?;
    ensure!(
        code(&refused) != 0 && stderr(&refused).contains("eventbus outbox migrate"),
        "serve before the schema exists: {}",
        stderr(&refused)
    );
    let out = run(&[("DATABASE_URL", url.as_str())], &["outbox", "migrate"])?;
    ensure!(code(&out) == 0, "outbox migrate: {}", stderr(&out));

    let (first, first_addr) = common::serve(&vars, &[])?;
    let _first = Relay(Some(first));
    let (second, second_addr) = common::serve(&vars, &[])?;
    let _second = Relay(Some(second));

    // 100 users, each registered and then changing reputation eight times.
    let users = 100u64;
    let pool = runtime.block_on(PgPoolOptions::new().max_connections(1).connect(url))?;
    runtime.block_on(async {
        for step in 0..9u64 {
            let mut tx = pool.begin().await?;
            let batch: Vec<Event> = (0..users)
                .map(|u| {
                    let user_id = format!("user-{u}");
                    let (event_type, payload) = if step == 0 {
                        (
                            EventType::USER_REGISTERED,
                            json!({"user_id": user_id, "email": format!("{user_id}@example.com")}),
                        )
                    } else {
                        let old = (step - 1) as f64;
                        (
                            EventType::USER_REPUTATION_CHANGED,
                            json!({"user_id": user_id, "old_score": old, "new_score": old + 1.0, "reason": "test"}),
                        )
                    };
                    Event::builder(event_type, "views_test")
                        .payload(payload)
                        .partition_key(user_id)
                        .build()
                })
                .collect::<Result<_, _>>()?;
            Outbox::new().add(&mut tx, batch).await?;
            tx.commit().await?;
        }
        pool.close().await;
        anyhow::Ok(())
    })?;

    let view = |addr: &std::net::SocketAddr| -> anyhow::Result<Value> {
        let reply = common::get_json(&addr.to_string(), "/api/v1/events/views/user", Some(TOKEN))?;
        Ok(reply["snapshot"].clone())
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let whole = loop {
        let snapshot = view(&first_addr)?;
        if snapshot["reputation_changes"] == users * 8 {
            break snapshot;
        }
        ensure!(
            Instant::now() < deadline,
            "the first process's user view within 120 s: {snapshot}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    ensure!(whole["registered"] == users, "{whole}");
    // Counts only: on Redis two events of one key can run at once in the two processes.
    ensure!(
        whole["users"]["user-7"]["ledger"]
            .as_array()
            .is_some_and(|ledger| ledger.len() == 8),
        "user-7: {}",
        whole["users"]["user-7"]
    );
    ensure!(
        view(&second_addr)? == whole,
        "the second process serves another user view"
    );
    Ok(())
}
