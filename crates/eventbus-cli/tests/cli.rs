//! The `eventbus` binary run as real processes against the test servers
//! (`EVENTBUS_TEST_REDIS_URL`, `EVENTBUS_TEST_KAFKA_BROKERS`, as `cargo xtask test` sets them):
//! publish, replay, tail, stats, health, dead letters, schema, serve and `copy` from Redis to
//! Kafka, with their exit codes.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use anyhow::{Context as _, ensure};
use event_core::{EventBus, ReplayQuery};
use event_manager::Settings;
use event_testkit::test_server;
use futures::TryStreamExt as _;
use serde_json::Value;

mod common;

use common::{code, eventbus, run, stderr, stdout};

fn json_lines(output: &Output) -> anyhow::Result<Vec<Value>> {
    stdout(output)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).with_context(|| format!("not JSON: {l}")))
        .collect()
}

#[test]
fn a_redis_password_never_shows_whatever_it_holds() -> anyhow::Result<()> {
    // Unencoded `/` and `@` make the URL unparsable (invalid input); percent-encoded, it
    // parses and the connection to a closed port fails (backend unreachable). In neither
    // case does any part of the password show, from the environment or from the flag, and
    // the flag draws a warning about the process list.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    for (url, exit) in [
        (format!("redis://:s3cr3t/pa55word@127.0.0.1:{closed}/0"), 3),
        (
            format!("redis://app:s3cr3t@pa55word@127.0.0.1:{closed}/0"),
            4,
        ),
        (
            format!("redis://:s3cr3t%2Fpa55word@127.0.0.1:{closed}/0"),
            4,
        ),
    ] {
        for from_flag in [false, true] {
            let out = if from_flag {
                run(
                    &[("EVENT_BUS_TYPE", "redis")],
                    &["--redis-url", &url, "stats"],
                )?
            } else {
                run(
                    &[("EVENT_BUS_TYPE", "redis"), ("REDIS_URL", &url)],
                    &["stats"],
                )?
            };
            let shown = format!("{}{}", stdout(&out), stderr(&out));
            assert_eq!(code(&out), exit, "{url}: {shown}");
            for part in ["s3cr3t", "pa55word"] {
                assert!(!shown.contains(part), "{url}: {shown}");
            }
            assert_eq!(shown.contains("process list"), from_flag, "{url}: {shown}");
            if exit == 3 {
                assert!(shown.contains("percent-encoded"), "{url}: {shown}");
            }
        }
    }
    Ok(())
}

#[test]
fn publish_replay_stats_health_and_exit_codes_on_redis() -> anyhow::Result<()> {
    let Some(url) = test_server("EVENTBUS_TEST_REDIS_URL", "redis")? else {
        return Ok(());
    };
    let prefix = event_testkit::unique("cli-redis");
    let vars = [
        ("EVENT_BUS_TYPE", "redis"),
        ("REDIS_URL", url.as_str()),
        ("REDIS_KEY_PREFIX", prefix.as_str()),
    ];
    let mut ids = Vec::new();
    for n in 0..4 {
        let payload = format!(r#"{{"user_id":"u-{n}","email":"u{n}@example.com"}}"#);
        let out = run(
            &vars,
            &[
                "--json",
                "publish",
                "user.registered",
                "--payload",
                &payload,
                "--source",
                "user_service",
            ],
        )?;
        ensure!(code(&out) == 0, "publish: {}", stderr(&out));
        let reply: Value = serde_json::from_str(&stdout(&out))?;
        ids.push(reply["event_id"].as_str().context("no id")?.to_string());
    }
    let out = run(
        &vars,
        &[
            "publish",
            "system.health_check",
            "--payload",
            r#"{"component":"db","status":"healthy"}"#,
        ],
    )?;
    ensure!(code(&out) == 0, "{}", stderr(&out));

    // An invalid typed payload: exit 3, the field named, nothing published.
    let out = run(
        &vars,
        &[
            "publish",
            "user.registered",
            "--payload",
            r#"{"user_id":"u-9"}"#,
        ],
    )?;
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(stderr(&out).contains("`email`"), "{}", stderr(&out));
    assert_eq!(
        code(&run(
            &vars,
            &["publish", "user.registered", "--payload", "not json"]
        )?),
        3
    );

    // Replay by type and window, as JSON lines, in publish order; with a limit.
    let out = run(
        &vars,
        &[
            "--json",
            "replay",
            "--type",
            "user.registered",
            "--since",
            "1h",
        ],
    )?;
    ensure!(code(&out) == 0, "replay: {}", stderr(&out));
    let events = json_lines(&out)?;
    let replayed: Vec<&str> = events.iter().filter_map(|e| e["id"].as_str()).collect();
    assert_eq!(replayed, ids);
    assert_eq!(events[0]["source"], "user_service");
    let out = run(
        &vars,
        &["--json", "replay", "--since", "1h", "--limit", "2"],
    )?;
    assert_eq!(json_lines(&out)?.len(), 2);
    let out = run(
        &vars,
        &["--json", "replay", "--since", "1h", "--until", "2h"],
    )?;
    assert_eq!(
        code(&out),
        3,
        "a window that ends before it starts: {}",
        stderr(&out)
    );
    let out = run(&vars, &["replay", "--since", "yesterday"])?;
    assert_eq!(code(&out), 3);
    assert!(stderr(&out).contains("--since"));
    // The table form has a header and one row per event.
    let out = run(&vars, &["replay", "--since", "1h"])?;
    assert_eq!(stdout(&out).lines().count(), 1 + 5, "{}", stdout(&out));

    // tail from a minute back stops after --count events.
    let out = run(
        &vars,
        &[
            "--json",
            "tail",
            "--since",
            "1m",
            "--type",
            "system.health_check",
            "--count",
            "1",
        ],
    )?;
    ensure!(code(&out) == 0, "tail: {}", stderr(&out));
    assert_eq!(json_lines(&out)?[0]["payload"]["component"], "db");

    let out = run(&vars, &["--json", "stats"])?;
    ensure!(code(&out) == 0, "stats: {}", stderr(&out));
    let stats: Value = serde_json::from_str(&stdout(&out))?;
    assert_eq!(stats["total_events"], 5);
    assert_eq!(stats["events_by_type"]["user.registered"], 4);
    assert_eq!(stats["config"]["REDIS_KEY_PREFIX"], prefix.as_str());

    let out = run(&vars, &["health"])?;
    assert_eq!(code(&out), 0, "{}", stdout(&out));
    assert!(stdout(&out).starts_with("healthy"));

    // Exit codes scripts rely on.
    assert_eq!(
        code(&run(
            &vars,
            &["dead-letters", "list", "--handler", "nobody"]
        )?),
        5
    );
    assert_eq!(
        code(&run(
            &vars,
            &["dead-letters", "purge", "--handler", "nobody"]
        )?),
        3,
        "--all or --id is required"
    );
    let dead = [
        ("EVENT_BUS_TYPE", "redis"),
        ("REDIS_URL", "redis://127.0.0.1:1/0"),
    ];
    let out = run(&dead, &["--json", "health"])?;
    assert_eq!(code(&out), 7, "{}", stdout(&out));
    assert_eq!(
        serde_json::from_str::<Value>(&stdout(&out))?["status"],
        "unhealthy"
    );
    assert_eq!(code(&run(&dead, &["stats"])?), 4, "unreachable backend");
    assert_eq!(code(&run(&[("EVENT_BUS_TYPE", "rabbit")], &["stats"])?), 3);
    assert_eq!(code(&run(&vars, &["no-such-command"])?), 2);

    let out = run(&[], &["--json", "schema"])?;
    assert_eq!(
        serde_json::from_str::<Value>(&stdout(&out))?
            .as_array()
            .map(Vec::len),
        Some(21)
    );
    assert_eq!(code(&run(&[], &["schema", "billing.paid"])?), 5);
    Ok(())
}

#[test]
fn copy_from_redis_to_kafka_keeps_ids_and_timestamps() -> anyhow::Result<()> {
    let (Some(url), Some(brokers)) = (
        test_server("EVENTBUS_TEST_REDIS_URL", "redis")?,
        test_server("EVENTBUS_TEST_KAFKA_BROKERS", "kafka")?,
    ) else {
        return Ok(());
    };
    let prefix = event_testkit::unique("cli-copy");
    let vars = [
        ("EVENT_BUS_TYPE", "redis"),
        ("REDIS_URL", url.as_str()),
        ("REDIS_KEY_PREFIX", prefix.as_str()),
        ("KAFKA_TOPIC_PREFIX", prefix.as_str()),
        ("EVENT_BATCH_SIZE", "7"),
    ];
    let runtime = tokio::runtime::Runtime::new()?;
    let settings = Settings::from_vars(vars)?;
    // 25 events of two types, published with the library.
    let published = runtime.block_on(async {
        let bus =
            event_redis::RedisBus::connect(settings.redis.clone(), settings.bus.clone()).await?;
        let mut events = Vec::new();
        for n in 0..25 {
            let event_type = if n % 5 == 0 {
                event_core::EventType::AGENT_STARTED
            } else {
                event_core::EventType::SIGNAL_DETECTED
            };
            events.push(
                event_core::Event::builder(event_type, "copy-test")
                    .field("n", n)
                    .partition_key(format!("k-{}", n % 3))
                    .correlation_id("migration")
                    .build()?,
            );
        }
        for r in bus.publish_batch(events.clone()).await {
            r?;
        }
        bus.shutdown().await?;
        anyhow::Ok(events)
    })?;

    let to = format!("kafka://{brokers}");
    let out = run(
        &vars,
        &[
            "--json", "copy", "--from", &url, "--to", &to, "--since", "1h",
        ],
    )?;
    ensure!(code(&out) == 0, "copy: {} {}", stdout(&out), stderr(&out));
    let report: Value = serde_json::from_str(&stdout(&out))?;
    assert_eq!(report["copied"], 25);
    assert_eq!(report["failed"], 0);

    // Kafka holds the same events: ids, timestamps, keys, payloads.
    let mut kafka = settings.kafka.clone();
    kafka.bootstrap_servers = brokers.split(',').map(str::to_string).collect();
    let mut config = settings.bus.clone();
    config.enable_event_sourcing = false;
    let copied = runtime.block_on(async {
        let bus = event_kafka::KafkaBus::connect(kafka, config).await?;
        let from = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
        let events: Vec<event_core::Event> = bus
            .replay(ReplayQuery::new(
                [
                    event_core::EventType::AGENT_STARTED,
                    event_core::EventType::SIGNAL_DETECTED,
                ],
                from,
            ))
            .await?
            .try_collect()
            .await?;
        bus.shutdown().await?;
        anyhow::Ok(events)
    })?;
    let key = |e: &event_core::Event| {
        (
            e.id,
            e.timestamp,
            e.partition_key.clone(),
            e.payload.clone(),
            e.correlation_id.clone(),
        )
    };
    let mut expected: Vec<_> = published.iter().map(key).collect();
    let mut found: Vec<_> = copied.iter().map(key).collect();
    expected.sort_by_key(|e| e.0);
    found.sort_by_key(|e| e.0);
    assert_eq!(found, expected);

    // Copying events older than the target's retention warns that Kafka may delete them.
    let out = run(
        &vars,
        &[
            "copy",
            "--from",
            &url,
            "--to",
            &to,
            "--since",
            "30d",
            "--type",
            "agent.started",
        ],
    )?;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("KAFKA_RETENTION_MS"),
        "{}",
        stderr(&out)
    );
    // The first copy stored them: a second stores nothing twice.
    assert!(
        stdout(&out).contains("copied 0 events, 5 already there"),
        "{}",
        stdout(&out)
    );

    // A bad URL is an input error that does not echo a password.
    let out = run(
        &vars,
        &[
            "copy",
            "--from",
            "http://user:hunter2@host",
            "--to",
            &to,
            "--since",
            "1h",
        ],
    )?;
    assert_eq!(code(&out), 3);
    assert!(!stderr(&out).contains("hunter2"), "{}", stderr(&out));
    Ok(())
}

#[test]
fn serve_answers_and_stops_cleanly_on_sigterm() -> anyhow::Result<()> {
    let token = "admin-token-for-the-serve-test";
    let tokens = format!("admin:{token}");
    let vars = [
        ("EVENT_API_TOKENS", tokens.as_str()),
        ("EVENT_API_ADDR", "127.0.0.1:0"),
    ];
    // Without tokens it refuses to start.
    let out = run(&[("EVENT_API_ADDR", "127.0.0.1:0")], &["serve"])?;
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(stderr(&out).contains("EVENT_API_TOKENS"));

    let mut child = eventbus(&vars, &["serve"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut lines = BufReader::new(child.stderr.take().context("no stderr")?).lines();
    let addr = loop {
        let line = lines.next().context("serve ended before listening")??;
        if let Some(rest) = line.split("http://").nth(1) {
            break rest.split('/').next().context("no address")?.to_string();
        }
    };
    let mut stream = TcpStream::connect(&addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    write!(
        stream,
        "GET /api/v1/events/stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {token}\r\n\r\n"
    )?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    // The domain handlers run under serve.
    assert!(reply.contains("registered_handlers"), "{reply}");

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()?;
    ensure!(status.success());
    let exit = child.wait()?;
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert_eq!(exit.code(), Some(0), "{rest:?}");
    assert!(rest.iter().any(|l| l.contains("shutting down")), "{rest:?}");
    Ok(())
}

/// Checks the JSON summary of a demo run.
fn check_demo(out: &Output, backend: &str, signals: u64) -> anyhow::Result<()> {
    ensure!(code(out) == 0, "demo on {backend}: {}", stderr(out));
    let summary: Value = serde_json::from_str(&stdout(out)).with_context(|| stdout(out))?;
    assert_eq!(summary["backend"], backend);
    let handlers = summary["handlers"].as_array().context("no handlers")?;
    for name in [
        "agent",
        "audit",
        "market_signal",
        "opportunity",
        "pager",
        "system",
        "user",
    ] {
        assert!(
            handlers.iter().any(|h| h == name),
            "{name} missing: {summary}"
        );
    }
    let views = &summary["views"];
    assert_eq!(views["opportunity"]["active"], 2, "{summary}");
    assert_eq!(views["opportunity"]["reanalysis_requests"], 1, "{summary}");
    assert_eq!(views["user"]["registered"], 3);
    assert_eq!(
        views["agent"]["alerts_raised"], 1,
        "the alert fires once: {summary}"
    );
    assert_eq!(
        views["agent"]["analyzer_failures"], 5,
        "at the policy's fifth failure"
    );
    assert_eq!(views["market_signal"]["detected"], signals);
    assert_eq!(views["market_signal"]["clusters"], 2);
    assert_eq!(views["system"]["degraded"], serde_json::json!(["database"]));
    assert_eq!(summary["dead_letters"]["redriven"], 1);
    assert_eq!(
        summary["dead_letters"]["paged"], 1,
        "the redriven alert was handled"
    );
    assert!(summary["replayed_by_type"]["signal.detected"].as_u64() >= Some(signals));
    Ok(())
}

#[test]
fn demo_on_memory() -> anyhow::Result<()> {
    let out = run(&[], &["--json", "demo"])?;
    check_demo(&out, "memory", 3000)?;
    // The table form tells the story step by step and ends with the summary.
    let out = run(&[], &["demo", "--signals", "200"])?;
    ensure!(code(&out) == 0, "{}", stderr(&out));
    let text = stdout(&out);
    for step in [
        "1. starting",
        "4. agents",
        "5. the pager is offline",
        "8. replay of the last minute",
        "9. stats",
        "summary:",
    ] {
        assert!(text.contains(step), "{step} missing:\n{text}");
    }
    Ok(())
}

#[test]
fn demo_on_redis() -> anyhow::Result<()> {
    let Some(url) = test_server("EVENTBUS_TEST_REDIS_URL", "redis")? else {
        return Ok(());
    };
    let prefix = event_testkit::unique("cli-demo");
    let vars = [
        ("EVENT_BUS_TYPE", "redis"),
        ("REDIS_URL", url.as_str()),
        ("REDIS_KEY_PREFIX", prefix.as_str()),
    ];
    let out = run(&vars, &["--json", "demo", "--signals", "1000"])?;
    check_demo(&out, "redis", 1000)
}

#[test]
fn demo_on_kafka() -> anyhow::Result<()> {
    let Some(brokers) = test_server("EVENTBUS_TEST_KAFKA_BROKERS", "kafka")? else {
        return Ok(());
    };
    let prefix = event_testkit::unique("cli-demo");
    let vars = [
        ("EVENT_BUS_TYPE", "kafka"),
        ("KAFKA_BOOTSTRAP_SERVERS", brokers.as_str()),
        ("KAFKA_TOPIC_PREFIX", prefix.as_str()),
    ];
    let out = run(&vars, &["--json", "demo", "--signals", "500"])?;
    check_demo(&out, "kafka", 500)
}
