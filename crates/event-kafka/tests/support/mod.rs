//! What the Kafka test binaries share: consumer processes that write the id of each event they
//! handle to a file, and Kafka's own `kafka-consumer-groups` tool (`ConsumerGroupCommand` in
//! the broker's jars, on `EVENTBUS_TEST_KAFKA_CLASSPATH`), run on a group and read back: what an
//! operator sees.

#![allow(
    dead_code,
    unreachable_pub,
    reason = "each test binary uses part of it"
)]

use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, ensure};
use event_core::{Event, EventHandler, EventId, EventType, HandlerError, handler_fn};
#[allow(unused_imports)] // each test binary uses its own part of the support
pub use event_testkit::load::{all_handled, recorder};

pub mod brokers;

/// A handler that takes `delay` per event and appends each event's id to `file`, flushed at
/// once, so that a process killed with SIGKILL leaves behind exactly what it handled.
pub fn id_writer(
    name: &str,
    file: &Path,
    delay: Duration,
) -> anyhow::Result<Arc<dyn EventHandler>> {
    let out = Arc::new(Mutex::new(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(file)?,
    ));
    Ok(handler_fn(name.to_string(), move |event: Arc<Event>| {
        let out = out.clone();
        async move {
            tokio::time::sleep(delay).await;
            let mut out = out.lock().unwrap();
            writeln!(out, "{}", event.id).map_err(HandlerError::transient)?;
            out.flush().map_err(HandlerError::transient)?;
            Ok::<(), HandlerError>(())
        }
    }))
}

/// `n` events of `event_type` from `source`, keyed `key-{i % keys}`: spread over a topic's
/// partitions, each key's events in order.
pub fn keyed_events(
    event_type: &EventType,
    source: &str,
    n: usize,
    keys: usize,
) -> anyhow::Result<Vec<Event>> {
    (0..n)
        .map(|i| {
            Ok(Event::builder(event_type.clone(), source)
                .partition_key(format!("key-{}", i % keys))
                .build()?)
        })
        .collect()
}

/// The ids an [`id_writer`] wrote, in order.
pub fn read_ids(file: &Path) -> Vec<EventId> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.parse().ok())
        .collect()
}

/// The `java` of `JAVA_HOME`, or the one on the path.
pub fn java() -> PathBuf {
    match std::env::var_os("JAVA_HOME") {
        Some(home) if !home.is_empty() => PathBuf::from(home).join("bin").join("java"),
        _ => PathBuf::from("java"),
    }
}

/// Sends `lines` to `topic` with Kafka's `ConsoleProducer` (from the jars xtask fetched), with
/// its extra `args` (say a compression codec, or `--reader-property parse.key=true` for
/// `key\tvalue` lines); fails with the producer's error output when it fails or takes more than
/// 90 s.
pub async fn console_produce(
    classpath: &str,
    brokers: &str,
    topic: &str,
    args: &[&str],
    lines: &str,
) -> anyhow::Result<()> {
    let mut command = vec!["-cp", classpath, "org.apache.kafka.tools.ConsoleProducer"];
    command.extend(["--bootstrap-server", brokers, "--topic", topic]);
    command.extend(args);
    let what = format!("Kafka's ConsoleProducer {args:?}");
    java_with_input(&command, lines, Duration::from_secs(90), &what).await?;
    Ok(())
}

/// Runs `java` with `args`, `input` on its standard input (written while its output is read,
/// so neither side waits on a full pipe); its output, or an error naming `what` when it does
/// not start, fails, or takes longer than `within`.
async fn java_with_input(
    args: &[&str],
    input: &str,
    within: Duration,
    what: &str,
) -> anyhow::Result<std::process::Output> {
    use tokio::io::AsyncWriteExt as _;
    let mut child = tokio::process::Command::new(java())
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting java for {what}"))?;
    let mut stdin = child.stdin.take().context("java's stdin")?;
    let input = input.to_string();
    let writer = async move {
        stdin.write_all(input.as_bytes()).await?;
        stdin.shutdown().await
    };
    let (written, output) = tokio::time::timeout(within, async {
        tokio::join!(writer, child.wait_with_output())
    })
    .await
    .with_context(|| format!("{what} did not finish within {within:?}"))?;
    let output = output?;
    ensure!(
        output.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    written?;
    Ok(output)
}

/// Runs one of Kafka's command-line tools (`class` on the jars' class path, such as
/// `org.apache.kafka.tools.TopicCommand`) against `brokers` with `args`: its standard output
/// and error; an error when it fails or takes over a minute.
pub async fn kafka_tool(
    classpath: &str,
    class: &str,
    brokers: &str,
    args: &[&str],
) -> anyhow::Result<(String, String)> {
    let mut command = tokio::process::Command::new(java());
    command
        .args(["-cp", classpath, class])
        .args(["--bootstrap-server", brokers])
        .args(args)
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .with_context(|| format!("{class} did not finish within 60 s"))?
        .context("running java")?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    ensure!(
        output.status.success(),
        "{class} failed: {stdout}\n{stderr}"
    );
    Ok((stdout, stderr))
}

/// Runs `ConsumerGroupCommand` with `args`: its standard output and error.
async fn consumer_groups(
    classpath: &str,
    brokers: &str,
    args: &[&str],
) -> anyhow::Result<(String, String)> {
    kafka_tool(
        classpath,
        "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
        brokers,
        args,
    )
    .await
}

/// Runs `TopicCommand` (`kafka-topics`) with `args`: its standard output.
pub async fn topics_tool(classpath: &str, brokers: &str, args: &[&str]) -> anyhow::Result<String> {
    let (stdout, _) = kafka_tool(
        classpath,
        "org.apache.kafka.tools.TopicCommand",
        brokers,
        args,
    )
    .await?;
    Ok(stdout)
}

/// The tool's table: a header line of one-word column names, then rows of one-word fields.
struct Table<'a> {
    header: Vec<&'a str>,
    rows: Vec<Vec<&'a str>>,
    text: &'a str,
}

impl<'a> Table<'a> {
    fn parse(text: &'a str) -> anyhow::Result<Self> {
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let header = lines
            .next()
            .with_context(|| format!("no output: {text}"))?
            .split_whitespace()
            .collect();
        let rows = lines.map(|l| l.split_whitespace().collect()).collect();
        Ok(Self { header, rows, text })
    }

    fn column(&self, name: &str) -> anyhow::Result<usize> {
        self.header
            .iter()
            .position(|h| *h == name)
            .with_context(|| format!("no {name} column in {}", self.text))
    }

    fn field<'r>(&self, row: &'r [&'a str], column: usize) -> anyhow::Result<&'a str> {
        row.get(column)
            .copied()
            .with_context(|| format!("a short line {row:?} in {}", self.text))
    }
}

/// One member line of `kafka-consumer-groups --describe --members --verbose`.
#[derive(Debug)]
pub struct ToolMember {
    pub consumer_id: String,
    pub partitions: usize,
    pub assignment: String,
}

/// Runs Kafka's `ConsumerGroupCommand --describe --members --verbose` on `group` and reads
/// its member lines (`None`: the tool says the group has no active members).
pub async fn tool_members(
    classpath: &str,
    brokers: &str,
    group: &str,
) -> anyhow::Result<Option<Vec<ToolMember>>> {
    let (stdout, stderr) = consumer_groups(
        classpath,
        brokers,
        &["--describe", "--group", group, "--members", "--verbose"],
    )
    .await?;
    // Kafka 4 writes this to stderr, earlier releases to stdout.
    if stdout.contains("has no active members") || stderr.contains("has no active members") {
        return Ok(None);
    }
    // GROUP CONSUMER-ID HOST CLIENT-ID #PARTITIONS ... CURRENT-ASSIGNMENT, one line per member.
    let table = Table::parse(&stdout)?;
    let (id, count) = (table.column("CONSUMER-ID")?, table.column("#PARTITIONS")?);
    // Kafka 4 names it CURRENT-ASSIGNMENT (`topic:0,1`), earlier releases ASSIGNMENT
    // (`topic(0,1)`).
    let assignment = table
        .column("CURRENT-ASSIGNMENT")
        .or_else(|_| table.column("ASSIGNMENT"))?;
    let mut members = Vec::new();
    for row in &table.rows {
        ensure!(
            row.first() == Some(&group),
            "unexpected line {row:?} in {stdout}"
        );
        members.push(ToolMember {
            consumer_id: table.field(row, id)?.to_string(),
            partitions: table
                .field(row, count)?
                .parse()
                .with_context(|| format!("#PARTITIONS of {row:?}"))?,
            assignment: table.field(row, assignment)?.to_string(),
        });
    }
    Ok(Some(members))
}

/// One partition line of `kafka-consumer-groups --describe` (the offsets view).
#[derive(Debug)]
pub struct ToolOffset {
    pub topic: String,
    pub partition: i32,
    /// `None` where the tool prints `-` (nothing committed).
    pub lag: Option<i64>,
    /// `-` for a partition no member owns.
    pub consumer_id: String,
}

/// Runs `ConsumerGroupCommand --describe` on `group` and reads its partition lines: topic,
/// partition, lag and owner.
pub async fn tool_offsets(
    classpath: &str,
    brokers: &str,
    group: &str,
) -> anyhow::Result<Vec<ToolOffset>> {
    let (stdout, _) =
        consumer_groups(classpath, brokers, &["--describe", "--group", group]).await?;
    let table = Table::parse(&stdout)?;
    let (topic, partition, lag, consumer) = (
        table.column("TOPIC")?,
        table.column("PARTITION")?,
        table.column("LAG")?,
        table.column("CONSUMER-ID")?,
    );
    table
        .rows
        .iter()
        .map(|row| {
            Ok(ToolOffset {
                topic: table.field(row, topic)?.to_string(),
                partition: table
                    .field(row, partition)?
                    .parse()
                    .with_context(|| format!("PARTITION of {row:?}"))?,
                lag: table.field(row, lag)?.parse().ok(),
                consumer_id: table.field(row, consumer)?.to_string(),
            })
        })
        .collect()
}

/// Runs `tests/java/KafkaScript.java` (what another Kafka application writes: transactions,
/// foreign records, topic configs) on `script`, one command a line, fields separated by tabs.
pub async fn kafka_script(classpath: &str, brokers: &str, script: &str) -> anyhow::Result<()> {
    let source = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/java/KafkaScript.java");
    let source = source.to_string_lossy();
    let args = ["-cp", classpath, source.as_ref(), brokers];
    let output =
        java_with_input(&args, script, Duration::from_secs(120), "KafkaScript.java").await?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    ensure!(
        stdout.contains("done"),
        "KafkaScript.java did not say it was done: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// A `SEND` line of a [`kafka_script`] for an event, its envelope as the value.
pub fn send_event(topic: &str, partition: i32, event: &Event) -> anyhow::Result<String> {
    let json = String::from_utf8(event_core::JsonCodec::default().encode(event)?)?;
    Ok(format!(
        "SEND\t{topic}\t{partition}\t{}\t{json}\n",
        event.ordering_key()
    ))
}

/// Bytes as a [`kafka_script`] field.
pub fn hex_field(bytes: &[u8]) -> String {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("hex:{hex}")
}

/// Waits until `handler` has nothing pending and its committed offsets reach the end of every
/// partition (the bus's stats: lag 0).
pub async fn quiescent(
    bus: &dyn event_core::EventBus,
    handler: &str,
    within: Duration,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let stats = bus.stats().await?;
        let h = stats.handlers.get(handler);
        if h.is_some_and(|h| h.lag == 0 && h.pending == 0) {
            return Ok(());
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "{handler} never caught up: {h:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every id in `expected` handled exactly once, and nothing else.
pub fn exactly(handled: &[EventId], expected: &HashSet<EventId>) -> anyhow::Result<()> {
    let mut counts: HashMap<EventId, usize> = HashMap::new();
    for id in handled {
        *counts.entry(*id).or_default() += 1;
    }
    let twice = counts.values().filter(|c| **c > 1).count();
    let missing = expected
        .iter()
        .filter(|id| !counts.contains_key(id))
        .count();
    let foreign = counts.keys().filter(|id| !expected.contains(id)).count();
    ensure!(
        twice == 0 && missing == 0 && foreign == 0,
        "{} handled: {twice} more than once, {missing} of {} never, {foreign} not expected",
        handled.len(),
        expected.len()
    );
    Ok(())
}

/// Waits until Kafka's own tool shows `group` committed at the end of at least `partitions`
/// partitions (lag 0 on every line): the commits go out a moment after the events finish.
pub async fn committed_to_the_end(
    classpath: &str,
    brokers: &str,
    group: &str,
    partitions: usize,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let lags: Vec<Option<i64>> = tool_offsets(classpath, brokers, group)
            .await?
            .into_iter()
            .map(|o| o.lag)
            .collect();
        if lags.len() >= partitions && lags.iter().all(|l| *l == Some(0)) {
            return Ok(());
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "group {group} is not committed at the end: lags {lags:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The two halves of a Kafka bus's settings, as the tests change them: the Kafka backend's own
/// and the shared ones.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    /// `KAFKA_*`.
    pub kafka: event_kafka::KafkaConfig,
    /// The settings every backend shares.
    pub bus: event_core::Config,
}

impl Settings {
    /// The defaults, on the brokers of `servers` (comma-separated `host:port`).
    pub fn on(servers: &str) -> Self {
        let mut settings = Self::default();
        settings.kafka.bootstrap_servers =
            servers.split(',').map(|s| s.trim().to_string()).collect();
        settings
    }

    /// A bus with these settings.
    pub async fn connect(&self) -> Result<event_kafka::KafkaBus, event_core::Error> {
        event_kafka::KafkaBus::connect(self.kafka.clone(), self.bus.clone()).await
    }
}
