//! `eventbus bridge from-original` during a rolling migration: a Python service keeps
//! publishing on the original's topics while the bridge carries them into a Redis bus; the
//! bridge is killed (SIGKILL, no chance to commit) part-way and started again, and in the end
//! every record has arrived at least once, with the original's id, and none is lost.

use std::io::{BufRead as _, BufReader};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::*;

/// The bridge's `eventbus` process, with its stderr kept for messages.
struct Running {
    child: Child,
    log: Arc<Mutex<String>>,
}

fn start_bridge(
    vars: &[(&str, &str)],
    brokers: &str,
    prefix: &str,
    group: &str,
    report: &str,
) -> anyhow::Result<Running> {
    let mut child = eventbus(
        vars,
        &[
            "bridge",
            "from-original",
            "--kafka-brokers",
            brokers,
            "--topic-prefix",
            prefix,
            "--group",
            group,
            "--refresh-secs",
            "1",
            "--report",
            report,
        ],
    )
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()?;
    let stderr = child.stderr.take().context("no stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    let log = Arc::new(Mutex::new(String::new()));
    loop {
        let line = lines
            .next()
            .context("eventbus bridge ended before bridging")??;
        log.lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .push_str(&line);
        if line.contains("bridging the original's topics") {
            break;
        }
    }
    let kept = log.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if let Ok(mut log) = kept.lock() {
                log.push_str(&line);
                log.push('\n');
            }
        }
    });
    Ok(Running { child, log })
}

impl Drop for Running {
    fn drop(&mut self) {
        // Not left running when the test fails; a no-op once it has exited and been waited for.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `done` holds, polling; fails after `limit` with `what`.
fn wait_for(
    limit: Duration,
    what: &str,
    mut done: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while !done()? {
        ensure!(
            Instant::now() < deadline,
            "timed out after {limit:?}: {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

/// The distinct ids the target holds, and how many events in all.
fn held(
    runtime: &tokio::runtime::Runtime,
    settings: &Settings,
) -> anyhow::Result<(BTreeMap<String, Json>, usize)> {
    let events = runtime.block_on(target_events(settings))?;
    let all = events.len();
    Ok((
        events
            .iter()
            .map(|e| (e.id.to_string(), comparable(e)))
            .collect(),
        all,
    ))
}

/// A Python service publishing the original's records, chunk after chunk, until told to stop.
struct Publisher {
    published: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<anyhow::Result<Vec<Made>>>,
}

/// Records the publisher writes at most.
const MOST: usize = 8_000;

fn start_publisher(brokers: &str, prefix: &str) -> Publisher {
    let published = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (brokers, prefix) = (brokers.to_string(), prefix.to_string());
    let (count, stopped) = (published.clone(), stop.clone());
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new()?;
        runtime.block_on(async {
            let client = original::client(&brokers).await?;
            let mut rng = fastrand::Rng::with_seed(4242);
            let mut made: Vec<Made> = Vec::new();
            // The bad records early, among the good ones.
            let mut pending = original::bad(&mut rng);
            while !stopped.load(Ordering::SeqCst) && made.len() < MOST {
                let n = made.len();
                let mut chunk: Vec<Made> =
                    (n..n + 40).map(|i| original::make(i, &mut rng)).collect();
                if n >= 200 {
                    chunk.append(&mut pending);
                }
                original::publish(&client, &prefix, &chunk).await?;
                made.extend(chunk);
                count.store(made.len(), Ordering::SeqCst);
                // A service's pace, not a synchronisation: the records keep coming while
                // the bridge runs, dies and comes back.
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            anyhow::Ok(made)
        })
    });
    Publisher {
        published,
        stop,
        thread,
    }
}

#[test]
fn the_bridge_carries_every_record_at_least_once_across_a_crash() -> anyhow::Result<()> {
    let Some((url, brokers)) = servers()? else {
        return Ok(());
    };
    let runtime = tokio::runtime::Runtime::new()?;
    let source_prefix = event_testkit::unique("original");
    let target_prefix = event_testkit::unique("cli-bridge");
    let group = event_testkit::unique("bridge");
    let vars = [
        ("EVENT_BUS_TYPE", "redis"),
        ("REDIS_URL", url.as_str()),
        ("REDIS_KEY_PREFIX", target_prefix.as_str()),
    ];
    let settings = Settings::from_vars(vars)?;
    // The bridge reaches the target through a proxy that can stop forwarding: a publish then
    // hangs, and the bridge is killed with records fetched and not yet in the bus.
    let (server, db) = url
        .strip_prefix("redis://")
        .and_then(|rest| rest.split_once('/'))
        .context("EVENTBUS_TEST_REDIS_URL is not redis://host:port/db")?;
    let server: std::net::SocketAddr = server.parse()?;
    let proxy = runtime.block_on(event_testkit::chaos::TcpProxy::start(server))?;
    let proxied = format!("redis://127.0.0.1:{}/{db}", proxy.port());
    let bridge_vars = [
        ("EVENT_BUS_TYPE", "redis"),
        ("REDIS_URL", proxied.as_str()),
        ("REDIS_KEY_PREFIX", target_prefix.as_str()),
    ];
    let client = runtime.block_on(async {
        let client = original::client(&brokers).await?;
        // The enum topics exist from the start (the original's admin client made them); the
        // string ones appear with their first record, after the bridge started.
        let mut rng = fastrand::Rng::with_seed(1);
        let mut types: BTreeSet<String> = (0..8)
            .map(|n| original::make(n, &mut rng).type_name)
            .collect();
        types.extend(original::bad(&mut rng).into_iter().map(|m| m.type_name));
        for t in types.iter().filter(|t| t.starts_with("EventType.")) {
            original::create_topic(&client, &source_prefix, t).await?;
        }
        anyhow::Ok((client, types))
    })?;
    let (client, types) = client;
    let report = report_path("bridge");
    let check = || -> anyhow::Result<()> {
        let mut bridge = start_bridge(&bridge_vars, &brokers, &source_prefix, &group, &report)?;
        // The string topics, created as the broker's auto-creation would on first publish.
        runtime.block_on(async {
            for t in types.iter().filter(|t| !t.starts_with("EventType.")) {
                original::create_topic(&client, &source_prefix, t).await?;
            }
            anyhow::Ok(())
        })?;
        let publisher = start_publisher(&brokers, &source_prefix);
        let published = || publisher.published.load(Ordering::SeqCst);
        wait_for(
            Duration::from_secs(120),
            "the bridge carried 500 events",
            || Ok(held(&runtime, &settings)?.0.len() >= 500),
        )?;
        // The bus stops answering while records keep coming: the bridge's round hangs in its
        // publish. Killed then, it must not have committed what it had not published.
        proxy.set_stalled(true);
        let at_stall = published();
        wait_for(
            Duration::from_secs(60),
            "200 records published while the bus hangs",
            || Ok(published() >= at_stall + 200),
        )?;
        bridge.child.kill()?;
        bridge.child.wait()?;
        proxy.drop_connections();
        proxy.set_stalled(false);
        let at_kill = published();
        wait_for(
            Duration::from_secs(60),
            "300 records published meanwhile",
            || Ok(published() >= at_kill + 300),
        )?;
        let carried_before = held(&runtime, &settings)?.0.len();
        let mut bridge = start_bridge(&bridge_vars, &brokers, &source_prefix, &group, &report)?;
        let at_restart = published();
        wait_for(
            Duration::from_secs(60),
            "300 records published after the restart",
            || Ok(published() >= at_restart + 300),
        )?;
        publisher.stop.store(true, Ordering::SeqCst);
        let made = publisher
            .thread
            .join()
            .map_err(|_| anyhow::anyhow!("the publisher panicked"))??;
        let expected: BTreeMap<String, Json> = made
            .iter()
            .filter_map(|m| Some((m.id.clone(), m.expected.clone()?)))
            .collect();
        ensure!(expected.len() >= 1_000, "{} published", expected.len());
        ensure!(
            carried_before < expected.len(),
            "the bridge had carried everything before it was killed"
        );
        let missing = || -> anyhow::Result<usize> {
            let (found, _) = held(&runtime, &settings)?;
            Ok(expected
                .keys()
                .filter(|id| !found.contains_key(*id))
                .count())
        };
        wait_for(Duration::from_secs(180), "every record carried", || {
            Ok(missing()? == 0)
        })
        .with_context(|| {
            format!(
                "{} of {} records never arrived (lost across the crash?)",
                missing().unwrap_or(usize::MAX),
                expected.len()
            )
        })?;

        // SIGTERM: it stops cleanly, with its report.
        let pid = bridge.child.id().to_string();
        let killed = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()?;
        ensure!(killed.success(), "kill -TERM {pid}");
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = bridge.child.try_wait()? {
                break status;
            }
            ensure!(
                Instant::now() < deadline,
                "the bridge did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        let log = bridge
            .log
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .clone();
        assert_eq!(status.code(), Some(0), "{log}");
        let mut out = String::new();
        if let Some(mut stdout) = bridge.child.stdout.take() {
            std::io::Read::read_to_string(&mut stdout, &mut out)?;
        }
        assert!(out.contains("bridge stopped"), "{out}");
        // Its table names each topic with the dotted type it maps to.
        let row = out
            .lines()
            .find(|l| {
                l.starts_with(&original::topic(
                    &source_prefix,
                    "EventType.USER_REGISTERED",
                ))
            })
            .with_context(|| format!("no row of the user topic: {out}"))?;
        assert!(row.contains("user.registered"), "{out}");

        // Every record, with the original's id and fields; copies only of what was carried
        // around the crash.
        let (found, all) = held(&runtime, &settings)?;
        for (id, want) in &expected {
            assert_eq!(found.get(id), Some(want), "event {id}");
        }
        assert_eq!(
            found.len(),
            expected.len(),
            "events that were never published"
        );
        let copies = all - found.len();
        eprintln!(
            "bridge: {} records, {} carried before the kill, {copies} carried twice",
            expected.len(),
            carried_before
        );
        assert!(copies < expected.len() / 2, "{copies} copies");

        // The bad records, each listed with its key and reason (again if read again).
        let listed = std::fs::read_to_string(&report)?;
        let mut kinds = BTreeMap::new();
        for line in listed.lines() {
            let line: Json = serde_json::from_str(line)?;
            ensure!(
                !line["reason"].as_str().unwrap_or_default().is_empty(),
                "{line}"
            );
            kinds.insert(
                line["key"].as_str().unwrap_or_default().to_string(),
                line["kind"].as_str().unwrap_or_default().to_string(),
            );
        }
        let mut kinds: Vec<&str> = kinds.values().map(String::as_str).collect();
        kinds.sort_unstable();
        assert_eq!(
            kinds,
            ["not_json", "schema", "unknown_type", "unknown_type"],
            "{listed}"
        );
        Ok(())
    };
    let result = unwinding(check);
    runtime.block_on(async {
        original::delete_topics(&client, &source_prefix).await?;
        remove_target(&url, &target_prefix).await
    })?;
    let _ = std::fs::remove_file(&report);
    result.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}
