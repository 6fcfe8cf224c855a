//! `eventbus doctor` finds each fault it claims to find: each test plants one on a real server
//! (or in the environment), runs the real binary with `--json`, and checks the finding, its
//! status and the exit code (0 all ok, 6 warnings, 7 failures).

mod common;

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use event_core::{Event, EventBus, EventType, HandlerError, SubscriptionSpec, handler_fn};
use event_manager::Settings;
use event_redis::RedisBus;
use event_testkit::{test_server, unique};
use serde_json::{Value, json};

use common::{code, run, stderr};

#[path = "doctor/kafka.rs"]
mod kafka;

#[path = "doctor/clock.rs"]
mod clock;

/// The deadline of each wait.
const WAIT: Duration = Duration::from_secs(120);

/// Events published per type: more than one read (the Redis consumer reads up to 1000).
const PER_TYPE: usize = 1200;

/// `eventbus doctor --json` with only `vars`: its exit code and findings.
fn doctor(vars: &[(&str, &str)]) -> anyhow::Result<(i32, Vec<Value>)> {
    let output = run(vars, &["doctor", "--json", "--timeout", "20"])?;
    let findings: Vec<Value> = serde_json::from_slice(&output.stdout).with_context(|| {
        format!(
            "doctor's output is not a JSON array: {}{}",
            String::from_utf8_lossy(&output.stdout),
            stderr(&output)
        )
    })?;
    for f in &findings {
        for field in ["check", "status", "message", "fix"] {
            ensure!(f.get(field).is_some(), "a finding without {field}: {f}");
        }
        let status = f["status"].as_str().unwrap_or_default();
        ensure!(
            ["ok", "warn", "fail", "skip"].contains(&status),
            "unknown status: {f}"
        );
        ensure!(
            (status == "warn" || status == "fail") == f["fix"].is_string(),
            "a fix goes with warn and fail only: {f}"
        );
    }
    Ok((code(&output), findings))
}

/// The findings of `check` with `status`.
fn found<'a>(findings: &'a [Value], check: &str, status: &str) -> Vec<&'a Value> {
    findings
        .iter()
        .filter(|f| f["check"] == check && f["status"] == status)
        .collect()
}

/// The one finding of `check` with `status` whose message holds `text`, or a failure showing
/// every finding.
fn expect<'a>(
    findings: &'a [Value],
    check: &str,
    status: &str,
    text: &str,
) -> anyhow::Result<&'a Value> {
    found(findings, check, status)
        .into_iter()
        .find(|f| f["message"].as_str().is_some_and(|m| m.contains(text)))
        .with_context(|| {
            format!(
                "no {status} {check} finding with {text:?} in {}",
                serde_json::to_string_pretty(findings).unwrap_or_default()
            )
        })
}

/// A loopback port nothing listens on.
fn closed_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

#[test]
fn an_unreachable_redis_fails_and_the_configuration_is_still_checked() -> anyhow::Result<()> {
    let url = format!("redis://127.0.0.1:{}/0", closed_port()?);
    let start = Instant::now();
    let (code, findings) = doctor(&[
        ("EVENT_BUS_TYPE", "redis"),
        ("REDIS_URL", &url),
        ("EVENT_MAX_RETRIS", "5"),
    ])?;
    ensure!(code == 7, "exit {code}: {findings:#?}");
    let failure = expect(&findings, "connection", "fail", "cannot connect to Redis")?;
    ensure!(
        failure["fix"]
            .as_str()
            .unwrap_or_default()
            .contains("start Redis"),
        "{failure}"
    );
    expect(
        &findings,
        "config.unknown_variable",
        "warn",
        "unknown variable EVENT_MAX_RETRIS; did you mean EVENT_MAX_RETRIES?",
    )?;
    ensure!(
        start.elapsed() < WAIT,
        "doctor took {:?} on a closed port",
        start.elapsed()
    );
    Ok(())
}

/// A `redis-server` of the test's own, with a password.
struct PrivateRedis {
    child: Child,
    port: u16,
}

impl PrivateRedis {
    /// A server with `password` and `args` (more settings).
    fn start(binary: &str, password: &str, args: &[&str]) -> anyhow::Result<Self> {
        let port = closed_port()?;
        let child = Command::new(binary)
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args([
                "--requirepass",
                password,
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {binary}"))?;
        let server = Self { child, port };
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            ensure!(
                start.elapsed() < WAIT,
                "redis-server did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(server)
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_wrong_redis_password_is_an_authentication_failure() -> anyhow::Result<()> {
    let Some(binary) = test_server("EVENTBUS_TEST_REDIS_SERVER", "redis")? else {
        return Ok(());
    };
    let server = PrivateRedis::start(&binary, "right-password", &[])?;
    let wrong = format!("redis://:wrong-password@127.0.0.1:{}/0", server.port);
    let (code, findings) = doctor(&[("EVENT_BUS_TYPE", "redis"), ("REDIS_URL", &wrong)])?;
    ensure!(code == 7, "exit {code}: {findings:#?}");
    let failure = expect(&findings, "connection", "fail", "cannot connect to Redis")?;
    let message = failure["message"].as_str().unwrap_or_default();
    ensure!(
        !message.contains("wrong-password"),
        "the password is shown: {message}"
    );
    ensure!(
        failure["fix"]
            .as_str()
            .unwrap_or_default()
            .contains("password in REDIS_URL"),
        "{failure}"
    );
    // The same server with the right password: the password was the fault.
    let right = format!("redis://:right-password@127.0.0.1:{}/0", server.port);
    let (_, findings) = doctor(&[("EVENT_BUS_TYPE", "redis"), ("REDIS_URL", &right)])?;
    expect(&findings, "connection", "ok", "connected to redis")?;
    expect(&findings, "server.version", "ok", "Redis ")?;
    Ok(())
}

#[test]
fn eviction_missing_replicas_and_a_tls_url_to_a_plain_port() -> anyhow::Result<()> {
    let Some(binary) = test_server("EVENTBUS_TEST_REDIS_SERVER", "redis")? else {
        return Ok(());
    };
    let server = PrivateRedis::start(
        &binary,
        "pw",
        &["--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru"],
    )?;
    let url = format!("redis://:pw@127.0.0.1:{}/0", server.port);
    let (code, findings) = doctor(&[
        ("EVENT_BUS_TYPE", "redis"),
        ("REDIS_URL", &url),
        ("REDIS_WAIT_REPLICAS", "1"),
    ])?;
    ensure!(code == 7, "exit {code}: {findings:#?}");
    expect(
        &findings,
        "server.eviction",
        "warn",
        "maxmemory-policy allkeys-lru",
    )?;
    expect(
        &findings,
        "server.replicas",
        "fail",
        "REDIS_WAIT_REPLICAS=1 but the server has 0 connected replica(s)",
    )?;
    // A TLS URL to a port that speaks plain Redis.
    let tls = format!("rediss://:pw@127.0.0.1:{}/0", server.port);
    let (code, findings) = doctor(&[("EVENT_BUS_TYPE", "redis"), ("REDIS_URL", &tls)])?;
    ensure!(code == 7, "exit {code}: {findings:#?}");
    let failure = expect(&findings, "connection", "fail", "cannot connect to Redis")?;
    ensure!(
        failure["fix"].as_str().unwrap_or_default().contains("TLS"),
        "{failure}"
    );
    Ok(())
}

#[test]
fn a_typo_names_the_variable_meant() -> anyhow::Result<()> {
    let (code, findings) = doctor(&[("EVENT_BUS_TPYE", "redis"), ("KAFKA_PARTITONS", "6")])?;
    ensure!(code == 6, "exit {code}: {findings:#?}");
    expect(
        &findings,
        "config.unknown_variable",
        "warn",
        "unknown variable EVENT_BUS_TPYE; did you mean EVENT_BUS_TYPE?",
    )?;
    expect(
        &findings,
        "config.unknown_variable",
        "warn",
        "unknown variable KAFKA_PARTITONS; did you mean KAFKA_PARTITIONS?",
    )?;
    // The typo left the backend at its default.
    expect(&findings, "connection", "ok", "EVENT_BUS_TYPE=memory")?;
    Ok(())
}

#[test]
fn contradictory_and_bad_values_are_found() -> anyhow::Result<()> {
    // Kafka chosen, only Redis configured.
    let (code, findings) = doctor(&[
        ("EVENT_BUS_TYPE", "kafka"),
        ("REDIS_URL", "redis://cache:6379/0"),
        (
            "KAFKA_BOOTSTRAP_SERVERS",
            &format!("127.0.0.1:{}", closed_port()?),
        ),
        ("ENABLE_EVENT_HANDLERS", "false"),
        ("ENABLED_EVENT_HANDLERS", "opportunity"),
    ])?;
    ensure!(code == 7, "exit {code}: {findings:#?}");
    expect(
        &findings,
        "config.contradiction",
        "warn",
        "REDIS_URL has no effect with EVENT_BUS_TYPE=kafka",
    )?;
    expect(
        &findings,
        "config.contradiction",
        "warn",
        "ENABLED_EVENT_HANDLERS is set but ENABLE_EVENT_HANDLERS=false",
    )?;
    expect(&findings, "connection", "fail", "")?;
    // Redis configured, the backend left at its default.
    let (code, findings) = doctor(&[("REDIS_URL", "redis://cache:6379/0")])?;
    ensure!(code == 6, "exit {code}: {findings:#?}");
    let f = expect(
        &findings,
        "config.contradiction",
        "warn",
        "REDIS_URL set but EVENT_BUS_TYPE is not",
    )?;
    ensure!(f["fix"] == "set EVENT_BUS_TYPE=redis", "{f}");
    // Kafka chosen and only Redis's server given.
    let (code, findings) = doctor(&[
        ("EVENT_BUS_TYPE", "kafka"),
        ("REDIS_URL", "redis://cache:6379/0"),
    ])?;
    ensure!(code == 7, "exit {code}: {findings:#?}");
    expect(
        &findings,
        "config.contradiction",
        "warn",
        "EVENT_BUS_TYPE=kafka but only redis's settings are set (REDIS_URL)",
    )?;
    // Values that do not load: each is a failure, and the backend is not checked.
    let (code, findings) = doctor(&[
        ("EVENT_MAX_RETRIES", "three"),
        ("ENABLE_EVENT_ENCRYPTION", "true"),
    ])?;
    ensure!(code == 7, "exit {code}: {findings:#?}");
    expect(
        &findings,
        "config.value",
        "fail",
        "EVENT_MAX_RETRIES=\"three\"",
    )?;
    expect(&findings, "config.value", "fail", "ENABLE_EVENT_ENCRYPTION")?;
    expect(
        &findings,
        "connection",
        "skip",
        "configuration does not load",
    )?;
    Ok(())
}

fn redis_vars<'a>(url: &'a str, prefix: &'a str) -> Vec<(&'static str, &'a str)> {
    vec![
        ("EVENT_BUS_TYPE", "redis"),
        ("REDIS_URL", url),
        ("REDIS_KEY_PREFIX", prefix),
        ("EVENT_CONSUMER_GROUP", prefix),
        ("EVENT_SHUTDOWN_TIMEOUT_MS", "2000"),
        ("EVENT_STALL_TIMEOUT_MS", "2000"),
        ("EVENT_CLAIM_IDLE_MS", "3600000"),
        ("EVENT_MAX_RETRIES", "0"),
    ]
}

fn events(types: &[EventType], per_type: usize) -> anyhow::Result<Vec<Event>> {
    let mut out = Vec::new();
    for n in 0..per_type {
        for t in types {
            out.push(
                Event::builder(t.clone(), "doctor-test")
                    .payload(json!({"n": n}))
                    .partition_key(format!("k-{}", n % 50))
                    .build()?,
            );
        }
    }
    Ok(out)
}

async fn publish(bus: &dyn EventBus, events: Vec<Event>) -> anyhow::Result<()> {
    for chunk in events.chunks(500) {
        for r in bus.publish_batch(chunk.to_vec()).await {
            r?;
        }
    }
    Ok(())
}

/// Waits until `handler`'s stats satisfy `done`.
async fn wait_stats(
    bus: &dyn EventBus,
    handler: &str,
    done: impl Fn(&event_core::HandlerStats) -> bool,
) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let stats = bus.stats().await?;
        if stats.handlers.get(handler).is_some_and(&done) {
            return Ok(());
        }
        if start.elapsed() > WAIT {
            bail!(
                "{handler}'s stats did not get there: {:?}",
                stats.handlers.get(handler)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[test]
fn lag_stalled_consumers_and_dead_letters_on_redis() -> anyhow::Result<()> {
    let Some(url) = test_server("EVENTBUS_TEST_REDIS_URL", "redis")? else {
        return Ok(());
    };
    let prefix = unique("doctor");
    let vars = redis_vars(&url, &prefix);
    let settings = Settings::from_vars(vars.clone())?;
    let types = [EventType::OPPORTUNITY_CREATED, EventType::USER_REGISTERED];
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let connect = || RedisBus::connect(settings.redis.clone(), settings.bus.clone());
        // `laggard` subscribes (its group starts at the end) and stops: what is published
        // next is its lag.
        let bus = connect().await?;
        let ok = handler_fn("laggard", |_| async { Ok(()) });
        bus.subscribe(SubscriptionSpec::new("laggard", types.to_vec()), ok)
            .await?;
        bus.shutdown().await?;
        // `refuser` dead-letters every event of one type; `stuck` never finishes one.
        let bus = connect().await?;
        let refuse = handler_fn("refuser", |_| async {
            Err(HandlerError::permanent("refused for good"))
        });
        bus.subscribe(
            SubscriptionSpec::new("refuser", vec![EventType::USER_REGISTERED]),
            refuse,
        )
        .await?;
        let stuck = handler_fn("stuck", |_| std::future::pending());
        bus.subscribe(
            SubscriptionSpec::new("stuck", vec![EventType::OPPORTUNITY_CREATED]).concurrency(4),
            stuck,
        )
        .await?;
        publish(&bus, events(&types, PER_TYPE)?).await?;
        wait_stats(&bus, "refuser", |h| h.dead_letter_depth == PER_TYPE as u64).await?;
        wait_stats(&bus, "stuck", |h| h.pending > 0).await?;
        // Stopping gives up on the stuck events after EVENT_SHUTDOWN_TIMEOUT_MS: they stay
        // pending with a consumer that no longer reads.
        let _ = bus.shutdown().await;
        anyhow::Ok(())
    })?;
    // The stuck handlers' futures go with the runtime.
    runtime.shutdown_background();
    // The stuck consumer is stalled once idle past EVENT_STALL_TIMEOUT_MS (2 s).
    let start = Instant::now();
    let findings = loop {
        let (code, findings) = doctor(&vars)?;
        if !found(&findings, "group.stalled", "warn").is_empty() {
            ensure!(code == 6, "exit {code}: {findings:#?}");
            break findings;
        }
        ensure!(
            start.elapsed() < WAIT,
            "no stalled consumer found: {findings:#?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let group = |h: &str| format!("{prefix}.{h}");
    let stalled = expect(&findings, "group.stalled", "warn", &group("stuck"))?;
    ensure!(
        stalled["fix"]
            .as_str()
            .unwrap_or_default()
            .contains("EVENT_CLAIM_IDLE_MS"),
        "{stalled}"
    );
    expect(
        &findings,
        "group.lag",
        "warn",
        &format!(
            "group {} (handler laggard) is {} events behind",
            group("laggard"),
            2 * PER_TYPE
        ),
    )?;
    let letters = expect(
        &findings,
        "group.dead_letters",
        "warn",
        &format!("handler refuser has {PER_TYPE} dead letters"),
    )?;
    ensure!(
        letters["fix"]
            .as_str()
            .unwrap_or_default()
            .contains("eventbus dead-letters list --handler refuser"),
        "{letters}"
    );
    expect(&findings, "group.stalled", "ok", &group("refuser"))?;
    expect(&findings, "group.lag", "ok", &group("refuser"))?;
    expect(&findings, "streams", "ok", "2 event stream(s)")?;
    Ok(())
}

#[test]
fn a_healthy_redis_setup_exits_0() -> anyhow::Result<()> {
    let Some(url) = test_server("EVENTBUS_TEST_REDIS_URL", "redis")? else {
        return Ok(());
    };
    let prefix = unique("doctor-healthy");
    let vars = redis_vars(&url, &prefix);
    let settings = Settings::from_vars(vars.clone())?;
    let types = [EventType::OPPORTUNITY_CREATED, EventType::USER_REGISTERED];
    tokio::runtime::Runtime::new()?.block_on(async {
        let bus = RedisBus::connect(settings.redis.clone(), settings.bus.clone()).await?;
        bus.subscribe(
            SubscriptionSpec::new("keeper", types.to_vec()),
            handler_fn("keeper", |_| async { Ok(()) }),
        )
        .await?;
        publish(&bus, events(&types, PER_TYPE)?).await?;
        wait_stats(&bus, "keeper", |h| h.processed == 2 * PER_TYPE as u64).await?;
        wait_stats(&bus, "keeper", |h| h.lag == 0 && h.pending == 0).await?;
        bus.shutdown().await?;
        anyhow::Ok(())
    })?;
    let (code, findings) = doctor(&vars)?;
    let not_ok: Vec<&Value> = findings.iter().filter(|f| f["status"] != "ok").collect();
    ensure!(code == 0 && not_ok.is_empty(), "exit {code}: {not_ok:#?}");
    for check in [
        "connection",
        "server.version",
        "server.clock",
        "server.eviction",
        "server.replicas",
        "streams",
        "group.lag",
        "group.stalled",
        "group.dead_letters",
    ] {
        ensure!(
            !found(&findings, check, "ok").is_empty(),
            "no {check}: {findings:#?}"
        );
    }
    // Text output: one line per finding and the summary.
    let output = run(&vars, &["doctor"])?;
    let text = common::stdout(&output);
    ensure!(text.contains("ok    server.version: Redis "), "{text}");
    ensure!(text.contains(" 0 warnings, 0 failures"), "{text}");
    Ok(())
}
