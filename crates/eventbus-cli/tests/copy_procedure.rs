//! The Redis-to-Kafka cut-over of `docs/migration.md`, run whole with handlers live: events
//! published on Redis and partly handled (some pending in retries, some dead-lettered, a
//! backlog never delivered), the services stopped, `eventbus copy` (events, positions, dead
//! letters), `eventbus verify-copy`, the same handlers started on Kafka and more events
//! published there. Every event is handled by every handler of its type, none is skipped, and
//! the repeats stay within the bound the copy reports.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use event_core::{
    AggregateAppend, Event, EventBus, EventId, EventType, ExpectedVersion, HandlerError,
    SubscriptionSpec, handler_fn,
};
use event_kafka::KafkaBus;
use event_manager::Settings;
use event_redis::RedisBus;
use event_testkit::test_server;
use serde_json::{Value, json};

use common::{code, run, stderr, stdout};

/// The handlers and their types: `ledger` reads two types, `auditor` all three; `archiver`
/// is never flaky, so nothing of it is pending when the services stop.
fn handlers() -> Vec<(&'static str, Vec<EventType>)> {
    vec![
        (
            "ledger",
            vec![
                EventType::OPPORTUNITY_CREATED,
                EventType::OPPORTUNITY_UPDATED,
            ],
        ),
        ("mailer", vec![EventType::USER_REGISTERED]),
        (
            "auditor",
            vec![
                EventType::OPPORTUNITY_CREATED,
                EventType::OPPORTUNITY_UPDATED,
                EventType::USER_REGISTERED,
            ],
        ),
        ("archiver", vec![EventType::OPPORTUNITY_CREATED]),
    ]
}

/// The handler that never fails transiently.
const STEADY: &str = "archiver";

/// Events handled successfully, by handler and event id.
type Handled = Arc<Mutex<HashMap<(String, EventId), u32>>>;

/// Events published before the Redis services stop (more than one read of 1000 per type).
const BEFORE_STOP: usize = 3000;
/// Events published on Redis while the services are stopped: never delivered there.
const WHILE_STOPPED: usize = 1200;
/// Events published on Kafka after the switch.
const AFTER_SWITCH: usize = 900;
/// Events that fail transiently on Redis (a retry an hour away: pending when the services
/// stop), each on a key of its own, near the end of the first batch.
const FLAKY: usize = 6;
/// Events every handler refuses for good: dead-lettered on Redis (one of each type at
/// least).
const POISON_AT: [usize; 5] = [7, 608, 1209, 1810, 2411];

/// The deadline of each wait.
const WAIT: Duration = Duration::from_secs(180);

fn event(n: usize, phase: &str, flaky: bool, poison: bool) -> anyhow::Result<Event> {
    let event_type = match n % 3 {
        0 => EventType::OPPORTUNITY_CREATED,
        1 => EventType::OPPORTUNITY_UPDATED,
        _ => EventType::USER_REGISTERED,
    };
    let key = if flaky {
        format!("flaky-{n}")
    } else {
        format!("k-{}", n % 40)
    };
    Ok(Event::builder(event_type, "copy-procedure")
        .payload(json!({"n": n, "phase": phase, "flaky": flaky, "poison": poison}))
        .partition_key(key)
        .build()?)
}

/// The handler `name`, recording each success; `flaky` events fail transiently while
/// `on_redis` is set, `poison` events always fail for good.
fn handler(
    name: &'static str,
    handled: Handled,
    on_redis: Arc<AtomicBool>,
) -> Arc<dyn event_core::EventHandler> {
    handler_fn(name, move |event: Arc<Event>| {
        let (handled, on_redis) = (handled.clone(), on_redis.clone());
        async move {
            if event.payload["poison"] == true {
                return Err(HandlerError::permanent("poison: refused for good"));
            }
            if event.payload["flaky"] == true && name != STEADY && on_redis.load(Ordering::SeqCst) {
                return Err(HandlerError::transient("flaky: the service is down"));
            }
            *handled
                .lock()
                .unwrap()
                .entry((name.to_string(), event.id))
                .or_default() += 1;
            Ok(())
        }
    })
}

/// Waits for `done` with a deadline, checking every 200 ms.
async fn wait_for(
    what: &str,
    mut done: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let start = Instant::now();
    while !done()? {
        if start.elapsed() > WAIT {
            bail!("timed out after {WAIT:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// Whether every handler of each event's type handled it at least once.
fn all_handled(handled: &Handled, events: &[Event]) -> bool {
    let handled = handled.lock().unwrap();
    events.iter().all(|e| {
        handlers()
            .iter()
            .filter(|(_, types)| types.contains(&e.event_type))
            .all(|(h, _)| handled.contains_key(&(h.to_string(), e.id)))
    })
}

async fn subscribe_all(
    bus: &dyn EventBus,
    handled: &Handled,
    on_redis: &Arc<AtomicBool>,
) -> anyhow::Result<()> {
    for (name, types) in handlers() {
        bus.subscribe(
            SubscriptionSpec::new(name, types),
            handler(name, handled.clone(), on_redis.clone()),
        )
        .await?;
    }
    Ok(())
}

async fn publish(bus: &dyn EventBus, events: &[Event]) -> anyhow::Result<()> {
    for chunk in events.chunks(500) {
        for r in bus.publish_batch(chunk.to_vec()).await {
            r?;
        }
    }
    Ok(())
}

#[test]
fn redis_to_kafka_cut_over_with_live_handlers() -> anyhow::Result<()> {
    let (Some(url), Some(brokers)) = (
        test_server("EVENTBUS_TEST_REDIS_URL", "redis")?,
        test_server("EVENTBUS_TEST_KAFKA_BROKERS", "kafka")?,
    ) else {
        return Ok(());
    };
    let prefix = event_testkit::unique("copy-procedure");
    let vars = [
        ("EVENT_BUS_TYPE", "redis"),
        ("REDIS_URL", url.as_str()),
        ("REDIS_KEY_PREFIX", prefix.as_str()),
        ("KAFKA_BOOTSTRAP_SERVERS", brokers.as_str()),
        ("KAFKA_TOPIC_PREFIX", prefix.as_str()),
        ("KAFKA_PARTITIONS", "3"),
        ("EVENT_CONSUMER_GROUP", prefix.as_str()),
        ("ENABLE_EVENT_SOURCING", "false"),
        ("EVENT_MAX_RETRIES", "3"),
        ("EVENT_RETRY_BASE_MS", "3600000"),
        ("EVENT_RETRY_MAX_MS", "3600000"),
        ("EVENT_SHUTDOWN_TIMEOUT_MS", "5000"),
    ];
    let settings = Settings::from_vars(vars)?;
    let runtime = tokio::runtime::Runtime::new()?;
    let handled: Handled = Arc::default();
    let on_redis = Arc::new(AtomicBool::new(true));

    // 1. Services live on Redis: the first batch, partly handled, some pending, some
    // dead-lettered.
    let flaky_from = BEFORE_STOP * 9 / 10;
    let first: Vec<Event> = (0..BEFORE_STOP)
        .map(|n| {
            let flaky = (flaky_from..flaky_from + FLAKY).contains(&n);
            let poison = POISON_AT.contains(&n);
            event(n, "redis", flaky, poison)
        })
        .collect::<Result<_, _>>()?;
    let (flaky, poison): (Vec<&Event>, Vec<&Event>) = (
        first
            .iter()
            .filter(|e| e.payload["flaky"] == true)
            .collect(),
        first
            .iter()
            .filter(|e| e.payload["poison"] == true)
            .collect(),
    );
    ensure!(flaky.len() == FLAKY && poison.len() == POISON_AT.len());
    let settled: Vec<Event> = first
        .iter()
        .filter(|e| e.payload["flaky"] == false && e.payload["poison"] == false)
        .cloned()
        .collect();
    let second: Vec<Event> = (BEFORE_STOP..BEFORE_STOP + WHILE_STOPPED)
        .map(|n| event(n, "backlog", false, false))
        .collect::<Result<_, _>>()?;
    runtime.block_on(async {
        let bus = RedisBus::connect(settings.redis.clone(), settings.bus.clone()).await?;
        subscribe_all(&bus, &handled, &on_redis).await?;
        publish(&bus, &first).await?;
        wait_for("the handlers on Redis", || {
            Ok(all_handled(&handled, &settled))
        })
        .await?;
        // Every handler of a poison event dead-lettered it.
        for (name, types) in handlers() {
            let expected = poison
                .iter()
                .filter(|e| types.contains(&e.event_type))
                .count();
            let start = Instant::now();
            loop {
                let letters = bus.dead_letters(name, 100).await?;
                if letters.len() == expected {
                    break;
                }
                ensure!(
                    start.elapsed() < WAIT,
                    "{name} has {} dead letters, not {expected}",
                    letters.len()
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        // 2. Stop the services (the flaky events stay pending), then a backlog arrives that
        // no handler sees on Redis.
        bus.shutdown().await?;
        let publisher = RedisBus::connect(settings.redis.clone(), settings.bus.clone()).await?;
        publish(&publisher, &second).await?;
        publisher.shutdown().await?;
        anyhow::Ok(())
    })?;
    let handled_on_redis = handled.lock().unwrap().clone();

    // 3. Copy: events, positions, dead letters.
    let from = url.clone();
    let to = format!("kafka://{brokers}");
    let started = Instant::now();
    let out = run(&vars, &["--json", "copy", "--from", &from, "--to", &to])?;
    eprintln!(
        "copy of {} events: {:?}",
        BEFORE_STOP + WHILE_STOPPED,
        started.elapsed()
    );
    ensure!(code(&out) == 0, "copy: {} {}", stdout(&out), stderr(&out));
    let report: Value = serde_json::from_str(&stdout(&out))?;
    let total = BEFORE_STOP + WHILE_STOPPED;
    ensure!(
        report["copied"] == total && report["failed"] == 0 && report["already_there"] == 0,
        "copy reported {report}"
    );
    let mut bounds = BTreeMap::new();
    for (name, types) in handlers() {
        let h = &report["handlers"][name];
        let flaky_of = if name == STEADY {
            0
        } else {
            flaky
                .iter()
                .filter(|e| types.contains(&e.event_type))
                .count()
        };
        // The flaky events are pending (the shutdown let everything else finish).
        ensure!(
            h["pending"].as_u64() == Some(flaky_of as u64),
            "{name}: pending {} not {flaky_of}: {h}",
            h["pending"]
        );
        let dead = poison
            .iter()
            .filter(|e| types.contains(&e.event_type))
            .count();
        ensure!(h["dead_letters_copied"] == dead, "{name}: {h}");
        ensure!(h["unfinished_redrives"] == 0, "{name}: {h}");
        bounds.insert(name, h["duplicate_bound"].as_u64().context("no bound")?);
    }

    // 4. Verify: the same events on both sides.
    let out = run(
        &vars,
        &["--json", "verify-copy", "--from", &from, "--to", &to],
    )?;
    ensure!(
        code(&out) == 0,
        "verify-copy: {} {}",
        stdout(&out),
        stderr(&out)
    );
    // A second copy stores nothing twice and moves no position.
    let out = run(&vars, &["--json", "copy", "--from", &from, "--to", &to])?;
    ensure!(
        code(&out) == 0,
        "second copy: {} {}",
        stdout(&out),
        stderr(&out)
    );
    let again: Value = serde_json::from_str(&stdout(&out))?;
    ensure!(
        again["copied"] == 0 && again["already_there"] == total,
        "second copy reported {again}"
    );
    for (name, _) in handlers() {
        ensure!(
            again["handlers"][name]["dead_letters_copied"] == 0,
            "second copy: {again}"
        );
    }

    // 5. The same handlers on Kafka; the publishers switch and publish more there.
    on_redis.store(false, Ordering::SeqCst);
    let third: Vec<Event> = (total..total + AFTER_SWITCH)
        .map(|n| event(n, "kafka", false, false))
        .collect::<Result<_, _>>()?;
    let mut kafka_config = settings.bus.clone();
    kafka_config.enable_event_sourcing = false;
    let letters = runtime.block_on(async {
        let bus = KafkaBus::connect(settings.kafka.clone(), kafka_config).await?;
        subscribe_all(&bus, &handled, &on_redis).await?;
        publish(&bus, &third).await?;
        let mut expected: Vec<Event> = settled.clone();
        expected.extend(flaky.iter().map(|e| (*e).clone()));
        expected.extend(second.iter().cloned());
        expected.extend(third.iter().cloned());
        wait_for("the handlers on Kafka", || {
            Ok(all_handled(&handled, &expected))
        })
        .await?;
        let mut letters = BTreeMap::new();
        for (name, _) in handlers() {
            letters.insert(name, bus.dead_letters(name, 100).await?);
        }
        // Drains what is in flight: a repeat still on its way is counted.
        bus.shutdown().await?;
        anyhow::Ok(letters)
    })?;

    // Every event handled by every handler of its type, none skipped; repeats within the
    // bound the copy stated.
    let handled = handled.lock().unwrap().clone();
    let mut all: Vec<&Event> = first.iter().chain(&second).chain(&third).collect();
    all.retain(|e| e.payload["poison"] == false);
    for (name, types) in handlers() {
        let mut repeats = 0u64;
        for e in all.iter().filter(|e| types.contains(&e.event_type)) {
            let times = handled.get(&(name.to_string(), e.id)).copied().unwrap_or(0);
            ensure!(
                times >= 1,
                "{name} never handled {} ({:?})",
                e.id,
                e.payload
            );
            repeats += u64::from(times - 1);
        }
        ensure!(
            repeats <= bounds[name],
            "{name} handled {repeats} events twice, over the bound {}",
            bounds[name]
        );
        // Nothing pending: the bound is 0, every event handled exactly once.
        ensure!(
            name != STEADY || (bounds[name] == 0 && repeats == 0),
            "{name} had nothing pending, yet bound {} and {repeats} repeats",
            bounds[name]
        );
        // The backlog and the Kafka events were handled exactly once.
        for e in second
            .iter()
            .chain(&third)
            .filter(|e| types.contains(&e.event_type))
        {
            ensure!(
                handled[&(name.to_string(), e.id)] == 1,
                "{name} handled {} twice",
                e.id
            );
        }
        // Nothing the handler had finished on Redis came back beyond the bound: most of
        // it (before the pending events) was skipped.
        let finished_on_redis = handled_on_redis.keys().filter(|(h, _)| h == name).count() as u64;
        ensure!(
            finished_on_redis > bounds[name],
            "{name}: the bound covers everything"
        );
        // The dead letters came across with their provenance.
        let expected: Vec<EventId> = poison
            .iter()
            .filter(|e| types.contains(&e.event_type))
            .map(|e| e.id)
            .collect();
        let found = &letters[name];
        for id in &expected {
            let letter = found
                .iter()
                .find(|l| l.event.as_ref().is_some_and(|e| e.id == *id))
                .with_context(|| format!("{name}: dead letter of {id} missing on Kafka"))?;
            ensure!(
                letter.handler == name
                    && letter.last_error.contains("poison")
                    && letter.attempts >= 1
                    && letter.first_failed_at <= letter.dead_lettered_at,
                "{name}: dead letter without its provenance: {letter:?}"
            );
        }
        eprintln!(
            "{name}: {repeats} repeats (bound {}), {} dead letters",
            bounds[name],
            found.len()
        );
    }

    // 6. The target now holds events the source does not: verify-copy says so.
    let out = run(
        &vars,
        &["--json", "verify-copy", "--from", &from, "--to", &to],
    )?;
    ensure!(
        code(&out) == 8,
        "verify-copy after the switch: {}",
        stderr(&out)
    );
    let diff: Value = serde_json::from_str(&stdout(&out))?;
    let extra: usize = diff["types"]
        .as_object()
        .context("no types")?
        .values()
        .map(|t| t["extra"].as_array().map_or(0, Vec::len))
        .sum();
    ensure!(
        extra == AFTER_SWITCH && diff["equal"] == false,
        "verify-copy: {diff}"
    );

    // 7. The rollback's copy back: the events published on Kafka, and nothing twice.
    let out = run(&vars, &["--json", "copy", "--from", &to, "--to", &from])?;
    ensure!(
        code(&out) == 0,
        "copy back: {} {}",
        stdout(&out),
        stderr(&out)
    );
    let back: Value = serde_json::from_str(&stdout(&out))?;
    ensure!(
        back["copied"] == AFTER_SWITCH && back["already_there"] == total,
        "copy back reported {back}"
    );
    let out = run(&vars, &["verify-copy", "--from", &to, "--to", &from])?;
    ensure!(
        code(&out) == 0,
        "verify-copy back: {} {}",
        stdout(&out),
        stderr(&out)
    );
    Ok(())
}

#[test]
fn copy_to_kafka_refuses_aggregates_and_names_the_alternative() -> anyhow::Result<()> {
    let (Some(url), Some(brokers)) = (
        test_server("EVENTBUS_TEST_REDIS_URL", "redis")?,
        test_server("EVENTBUS_TEST_KAFKA_BROKERS", "kafka")?,
    ) else {
        return Ok(());
    };
    let prefix = event_testkit::unique("copy-aggregates");
    let vars = [
        ("EVENT_BUS_TYPE", "redis"),
        ("REDIS_URL", url.as_str()),
        ("REDIS_KEY_PREFIX", prefix.as_str()),
        ("KAFKA_TOPIC_PREFIX", prefix.as_str()),
        ("ENABLE_EVENT_SOURCING", "true"),
    ];
    let settings = Settings::from_vars(vars)?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let bus = RedisBus::connect(settings.redis.clone(), settings.bus.clone()).await?;
        let events = (0..3)
            .map(|n| {
                Event::builder(EventType::OPPORTUNITY_UPDATED, "copy-test")
                    .payload(json!({"n": n}))
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()?;
        bus.append_to_aggregate(AggregateAppend::new(
            "opportunity",
            "opp-1",
            ExpectedVersion::Exact(0),
            events,
        ))
        .await?;
        bus.shutdown().await?;
        anyhow::Ok(())
    })?;
    let to = format!("kafka://{brokers}");
    let out = run(&vars, &["copy", "--from", &url, "--to", &to])?;
    ensure!(code(&out) == 3, "copy: {} {}", stdout(&out), stderr(&out));
    let message = stderr(&out);
    ensure!(
        message.contains("aggregate")
            && message.contains("EVENT_BUS_TYPE=redis")
            && message.contains("docs/outbox.md")
            && message.contains("nothing was copied"),
        "{message}"
    );
    // The events alone, on request.
    let out = run(
        &vars,
        &[
            "--json",
            "copy",
            "--from",
            &url,
            "--to",
            &to,
            "--skip-aggregates",
        ],
    )?;
    ensure!(code(&out) == 0, "copy: {} {}", stdout(&out), stderr(&out));
    let report: Value = serde_json::from_str(&stdout(&out))?;
    ensure!(report["copied"] == 3, "{report}");
    let out = run(&vars, &["verify-copy", "--from", &url, "--to", &to])?;
    ensure!(code(&out) == 0, "{} {}", stdout(&out), stderr(&out));
    ensure!(stdout(&out).contains("the same events"), "{}", stdout(&out));
    Ok(())
}
