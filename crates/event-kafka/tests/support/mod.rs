//! Kafka's own `kafka-consumer-groups` tool (`ConsumerGroupCommand` in the broker's jars, on
//! `EVENTBUS_TEST_KAFKA_CLASSPATH`), run on a group and read back: what an operator sees.

#![allow(
    dead_code,
    unreachable_pub,
    reason = "each test binary uses part of it"
)]

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, ensure};

/// The `java` of `JAVA_HOME`, or the one on the path.
pub fn java() -> PathBuf {
    match std::env::var_os("JAVA_HOME") {
        Some(home) if !home.is_empty() => PathBuf::from(home).join("bin").join("java"),
        _ => PathBuf::from("java"),
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
    let mut command = tokio::process::Command::new(java());
    command
        .args(["-cp", classpath])
        .arg("org.apache.kafka.tools.consumer.group.ConsumerGroupCommand")
        .args(["--bootstrap-server", brokers])
        .args(["--describe", "--group", group, "--members", "--verbose"])
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .context("kafka-consumer-groups did not finish within 60 s")?
        .context("running java")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(
        output.status.success(),
        "kafka-consumer-groups failed: {stdout}\n{stderr}"
    );
    // Kafka 4 writes this to stderr, earlier releases to stdout.
    if stdout.contains("has no active members") || stderr.contains("has no active members") {
        return Ok(None);
    }
    // A header line (GROUP CONSUMER-ID HOST CLIENT-ID #PARTITIONS ... CURRENT-ASSIGNMENT
    // ...), then one line per member; every column one word.
    let mut lines = stdout.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines
        .next()
        .with_context(|| format!("no output: {stdout}\n{stderr}"))?
        .split_whitespace()
        .collect();
    let column = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .with_context(|| format!("no {name} column in {stdout}"))
    };
    let (id, count) = (column("CONSUMER-ID")?, column("#PARTITIONS")?);
    // Kafka 4 names it CURRENT-ASSIGNMENT (`topic:0,1`), earlier releases ASSIGNMENT
    // (`topic(0,1)`).
    let assignment = column("CURRENT-ASSIGNMENT").or_else(|_| column("ASSIGNMENT"))?;
    let mut members = Vec::new();
    for line in lines {
        let fields: Vec<&str> = line.split_whitespace().collect();
        ensure!(
            fields.first() == Some(&group),
            "unexpected line {line:?} in {stdout}"
        );
        members.push(ToolMember {
            consumer_id: fields[id].to_string(),
            partitions: fields[count]
                .parse()
                .with_context(|| format!("#PARTITIONS of {line:?}"))?,
            assignment: fields
                .get(assignment)
                .with_context(|| format!("no assignment in {line:?}"))?
                .to_string(),
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
    let mut command = tokio::process::Command::new(java());
    command
        .args(["-cp", classpath])
        .arg("org.apache.kafka.tools.consumer.group.ConsumerGroupCommand")
        .args(["--bootstrap-server", brokers])
        .args(["--describe", "--group", group])
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .context("kafka-consumer-groups did not finish within 60 s")?
        .context("running java")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(
        output.status.success(),
        "kafka-consumer-groups failed: {stdout}\n{stderr}"
    );
    let mut lines = stdout.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines
        .next()
        .with_context(|| format!("no output: {stdout}\n{stderr}"))?
        .split_whitespace()
        .collect();
    let column = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .with_context(|| format!("no {name} column in {stdout}"))
    };
    let (topic, partition, lag, consumer) = (
        column("TOPIC")?,
        column("PARTITION")?,
        column("LAG")?,
        column("CONSUMER-ID")?,
    );
    let mut rows = Vec::new();
    for line in lines {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let field = |i: usize| {
            fields
                .get(i)
                .copied()
                .with_context(|| format!("a short line {line:?} in {stdout}"))
        };
        rows.push(ToolOffset {
            topic: field(topic)?.to_string(),
            partition: field(partition)?
                .parse()
                .with_context(|| format!("PARTITION of {line:?}"))?,
            lag: field(lag)?.parse().ok(),
            consumer_id: field(consumer)?.to_string(),
        });
    }
    Ok(rows)
}
