//! `eventbus bridge from-original`: while some services still run the original Python code,
//! carry what they publish on Kafka into this bus, continuously, at least once.
//!
//! Each round fetches every partition of the original's topics under the prefix from the
//! group's position, decodes each record as `migrate from-original` does (ids, timestamps,
//! source, correlation id and metadata kept), publishes the events to the configured bus, and
//! only then commits the new positions to the group in the original's cluster. A crash between the publish and the commit publishes those records
//! again, with the same ids: handlers see a duplicate, never a gap. A record that cannot be
//! decoded is listed in the report file with its key and reason and passed over; a publish
//! that fails is tried again from the same record.
//!
//! One bridge per group: the group has no membership, so two bridges in one group would each
//! carry every record (still at least once, but twice the work and the duplicates).
//!
//! The group's offsets are kept by Kafka's group coordinator in the original's cluster
//! (`__consumer_offsets`), as a Java consumer with `assign()` and `commitSync()` keeps them
//! (`event_kafka::KafkaAdmin`: generation -1, no member), so `kafka-consumer-groups.sh
//! --describe --group NAME` shows its position and lag like any group's. The connection is
//! plaintext without SASL: the original's `KafkaEventBus` had no TLS or SASL settings.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};
use event_core::Event;
use event_kafka::{KafkaAdmin, KafkaConfig};
use tokio::sync::watch;

use super::decode::{Problem, Rejection, original_type};
use super::original_kafka::{DEFAULT_PREFIX, OriginalKafka, Partition, record_key, topic_type};
use super::report::ImportReport;
use super::{Source, decode_record, target_settings};
use crate::args::ArgError;
use crate::context::{Context, open_with};
use crate::exit::Exit;

/// The systems `bridge` carries events from.
#[derive(Subcommand, Debug)]
pub(crate) enum BridgeCommand {
    /// Carry what the original Python system publishes on Kafka into the bus configured by the
    /// environment (or `--to`), until SIGTERM or Ctrl-C: the original's topics under
    /// `--topic-prefix` on the global `--kafka-brokers` (the source here), read as a consumer
    /// group whose offsets are committed only after the publish succeeded.
    FromOriginal(BridgeArgs),
}

/// Where a partition the group has no offset for starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Start {
    /// The oldest record retained: the backlog too.
    Earliest,
    /// The end of the partition when the bridge first sees it: only what is published after.
    Latest,
}

/// Arguments of `bridge from-original`.
#[derive(Args, Debug)]
pub(crate) struct BridgeArgs {
    /// The original's KAFKA_TOPIC_PREFIX: its topics are `PREFIX.EventType-OPPORTUNITY_CREATED`
    /// and `PREFIX.opportunity-created`.
    #[arg(long, value_name = "PREFIX", default_value = DEFAULT_PREFIX)]
    topic_prefix: String,
    /// The consumer group in the original's cluster that holds the bridge's positions. Not one
    /// of the original's own groups (`ai-opportunity-consumers-*`).
    #[arg(long, value_name = "NAME", default_value = "eventbus-bridge")]
    group: String,
    /// Where a partition without a committed offset starts (the first run, a new topic).
    #[arg(long, value_enum, default_value = "earliest")]
    start: Start,
    /// The target bus instead of the configured one: redis://host:port/db or kafka://host:port.
    #[arg(long, value_name = "URL")]
    to: Option<String>,
    /// Append every record that was not carried (not JSON, unknown type, payload failing its
    /// schema) to FILE, one JSON object per line with its key and reason.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// How often to look for new topics and partitions, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    refresh_secs: u64,
}

/// How long to wait after a round that found nothing.
const IDLE: Duration = Duration::from_millis(200);
/// How long to wait after a round that failed.
const BACKOFF: Duration = Duration::from_secs(1);

/// Runs `bridge`; `source` holds the global `--kafka-brokers`, which names the source here.
pub(crate) async fn run(
    ctx: &Context,
    command: BridgeCommand,
    source: Source,
) -> anyhow::Result<Exit> {
    let BridgeCommand::FromOriginal(args) = command;
    let brokers = source.kafka_brokers.ok_or_else(|| {
        ArgError("bridge from-original needs --kafka-brokers HOST:PORT: the original system's Kafka (its KAFKA_BOOTSTRAP_SERVERS)".into())
    })?;
    anyhow::ensure!(
        !args.group.trim().is_empty(),
        ArgError("--group is empty".into())
    );
    let (settings, explicit) = target_settings(ctx, args.to.as_deref(), true)?;
    let (stop_tx, stop) = watch::channel(false);
    let signal = event_manager::listen_for_shutdown()?;
    tokio::spawn(async move {
        if let Err(e) = signal.await {
            tracing::error!("listening for SIGTERM and Ctrl-C: {e}");
        }
        let _ = stop_tx.send(true);
    });
    let manager = open_with(settings.clone(), explicit).await?;
    let bus = manager.bus()?;
    let mut report = ImportReport::appending("topic", args.report.as_deref())?;
    let source = OriginalKafka::connect(&brokers).await?;
    let original = KafkaConfig::builder()
        .bootstrap_servers(brokers.split(',').map(str::trim).filter(|s| !s.is_empty()))
        .build()
        .map_err(|e| ArgError(format!("--kafka-brokers {brokers}: {e}")))?;
    let mut bridge = Bridge {
        source,
        admin: KafkaAdmin::connect(&original).await?,
        group: args.group.clone(),
        prefix: args.topic_prefix.clone(),
        start: args.start,
        positions: BTreeMap::new(),
        names: BTreeMap::new(),
    };
    eprintln!(
        "eventbus: bridging the original's topics {}.* at {brokers} (group {}) to the {} bus until SIGTERM or Ctrl-C",
        args.topic_prefix, args.group, settings.bus_type
    );
    let refresh = Duration::from_secs(args.refresh_secs.max(1));
    let mut refreshed: Option<Instant> = None;
    let mut stop_rx = stop.clone();
    while !*stop.borrow() {
        if refreshed.is_none_or(|at| at.elapsed() >= refresh) {
            match bridge.refresh(&mut report).await {
                Ok(()) => refreshed = Some(Instant::now()),
                Err(e) => {
                    tracing::warn!("bridge: looking for the original's topics: {e:#}");
                    eprintln!("eventbus: bridge: {e:#}; trying again");
                    pause(&mut stop_rx, BACKOFF).await;
                    continue;
                }
            }
        }
        match bridge.round(bus.as_ref(), &mut report).await {
            Ok(0) => pause(&mut stop_rx, IDLE).await,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!("bridge: {e:#}");
                eprintln!("eventbus: bridge: {e:#}; trying again");
                pause(&mut stop_rx, BACKOFF).await;
            }
        }
        report.finish()?;
    }
    manager.stop().await?;
    report.finish()?;
    if !ctx.json {
        out!("bridge stopped; carried this run:");
    }
    report.print(ctx.json, false, args.report.as_deref());
    Ok(Exit::Ok)
}

/// Waits `how_long`, or less when asked to stop.
async fn pause(stop: &mut watch::Receiver<bool>, how_long: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(how_long) => {}
        _ = stop.changed() => {}
    }
}

struct Bridge {
    source: OriginalKafka,
    /// The original's cluster, where the group's offsets are.
    admin: KafkaAdmin,
    group: String,
    prefix: String,
    start: Start,
    /// The next offset to read of every partition carried.
    positions: BTreeMap<Partition, i64>,
    /// Each topic's type as the original spelled it.
    names: BTreeMap<String, String>,
}

impl Bridge {
    /// Finds the original's topics and partitions, and where new ones start: the group's
    /// committed offset, or `--start` (then committed at once, so that a restart before the
    /// first record resumes there).
    async fn refresh(&mut self, report: &mut ImportReport) -> anyhow::Result<()> {
        let mut new = Vec::new();
        let topics = self.source.topics(&self.prefix).await?;
        // A topic deleted (or a partition gone) is no longer read.
        self.positions.retain(|at, _| {
            topics
                .iter()
                .any(|(t, parts)| *t == at.topic && parts.contains(&at.partition))
        });
        for (topic, partitions) in topics {
            if let Some(name) = topic_type(&self.prefix, &topic) {
                report.of(&topic).event_type = original_type(&name).map(|t| t.to_string());
                self.names.insert(topic.clone(), name);
            }
            for partition in partitions {
                let at = Partition {
                    topic: topic.clone(),
                    partition,
                };
                if !self.positions.contains_key(&at) {
                    new.push(at);
                }
            }
        }
        if new.is_empty() {
            return Ok(());
        }
        let committed = self.committed(&new).await?;
        let mut started = BTreeMap::new();
        for at in new {
            let position = match committed.get(&at) {
                Some(offset) => *offset,
                None => {
                    let (earliest, latest) = self.source.bounds(&at).await?;
                    let offset = match self.start {
                        Start::Earliest => earliest,
                        Start::Latest => latest,
                    };
                    started.insert(at.clone(), offset);
                    offset
                }
            };
            tracing::info!(topic = %at.topic, partition = at.partition, position, "bridge: carrying");
            self.positions.insert(at, position);
        }
        self.commit(&started).await
    }

    /// The group's committed offset (the next one to read) of each of `partitions` that has
    /// one.
    async fn committed(
        &self,
        partitions: &[Partition],
    ) -> anyhow::Result<BTreeMap<Partition, i64>> {
        let wanted: Vec<(String, i32)> = partitions
            .iter()
            .map(|p| (p.topic.clone(), p.partition))
            .collect();
        let committed = self
            .admin
            .committed_offsets(&self.group, &wanted)
            .await
            .with_context(|| format!("reading the offsets of group {}", self.group))?;
        Ok(committed
            .into_iter()
            .map(|((topic, partition), offset)| (Partition { topic, partition }, offset))
            .collect())
    }

    /// Commits `offsets` (each the next offset to read) to the group.
    async fn commit(&self, offsets: &BTreeMap<Partition, i64>) -> anyhow::Result<()> {
        let offsets: Vec<(String, i32, i64)> = offsets
            .iter()
            .map(|(p, offset)| (p.topic.clone(), p.partition, *offset))
            .collect();
        self.admin
            .commit_offsets(&self.group, &offsets)
            .await
            .with_context(|| {
                format!(
                    "committing the bridge's positions to group {} (UNKNOWN_MEMBER_ID or ILLEGAL_GENERATION: the group has members; give the bridge a group of its own, --group)",
                    self.group
                )
            })
    }

    /// One round over every partition; the number of records read.
    async fn round(
        &mut self,
        bus: &dyn event_core::EventBus,
        report: &mut ImportReport,
    ) -> anyhow::Result<usize> {
        let mut read = 0;
        let mut unreadable = None;
        // The events to publish, in partition order, with where each came from.
        let mut events: Vec<(Event, Partition, i64)> = Vec::new();
        let mut moved: BTreeMap<Partition, i64> = BTreeMap::new();
        let partitions: Vec<(Partition, i64)> = self
            .positions
            .iter()
            .map(|(p, o)| (p.clone(), *o))
            .collect();
        for (at, position) in partitions {
            // One partition that cannot be read (its leader moving, its topic deleted) does
            // not hold back the others.
            let fetched = match self.source.fetch(&at, position, Duration::ZERO).await {
                Ok(fetched) => fetched,
                Err(e) => {
                    unreadable.get_or_insert(e);
                    continue;
                }
            };
            let name = self.names.get(&at.topic).cloned().unwrap_or_default();
            for u in &fetched.undecodable {
                read += 1;
                report.of(&at.topic).read += 1;
                let own_key = u.key.as_deref().map(String::from_utf8_lossy);
                let reason = format!("the record cannot be read from Kafka: {}", u.reason);
                problem(
                    report,
                    &at,
                    u.first_offset,
                    own_key.as_deref(),
                    Problem::NotJson,
                    &reason,
                )?;
            }
            for (offset, record) in fetched.records {
                read += 1;
                report.of(&at.topic).read += 1;
                let own_key = record.key.as_deref().map(String::from_utf8_lossy);
                match decode_record(&name, &record, own_key.as_deref()) {
                    Ok(event) => events.push((event, at.clone(), offset)),
                    Err(Rejection {
                        problem: kind,
                        reason,
                    }) => {
                        problem(report, &at, offset, own_key.as_deref(), kind, &reason)?;
                    }
                }
            }
            if fetched.next != position {
                moved.insert(at, fetched.next);
            }
        }
        // Publish, then commit: a partition is committed up to its first event that failed.
        let mut failed: BTreeMap<Partition, i64> = BTreeMap::new();
        if !events.is_empty() {
            let batch: Vec<Event> = events.iter().map(|(e, _, _)| e.clone()).collect();
            let results = bus.publish_batch(batch).await;
            let mut first_error = None;
            for (i, (_, at, offset)) in events.iter().enumerate() {
                match results.get(i) {
                    Some(Ok(_)) if !failed.contains_key(at) => {
                        report.of(&at.topic).imported += 1;
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        first_error.get_or_insert_with(|| e.to_string());
                        failed.entry(at.clone()).or_insert(*offset);
                    }
                    None => {
                        failed.entry(at.clone()).or_insert(*offset);
                    }
                }
            }
            if let Some(e) = first_error {
                eprintln!("eventbus: bridge: the bus refused an event ({e}); it is tried again");
            }
        }
        for (at, offset) in &failed {
            moved.insert(at.clone(), *offset);
        }
        let moved: BTreeMap<Partition, i64> = moved
            .into_iter()
            .filter(|(at, offset)| self.positions.get(at) != Some(offset))
            .collect();
        self.commit(&moved).await?;
        self.positions.extend(moved);
        if let Some(e) = unreadable {
            if read == 0 {
                return Err(e);
            }
            tracing::warn!("bridge: {e:#}");
        }
        anyhow::ensure!(
            failed.is_empty(),
            "publishing to the bus failed for {} partition(s); they resume at the first event not published",
            failed.len()
        );
        Ok(read)
    }
}

fn problem(
    report: &mut ImportReport,
    at: &Partition,
    offset: i64,
    own_key: Option<&str>,
    kind: Problem,
    reason: &str,
) -> anyhow::Result<()> {
    let key = record_key(at, offset);
    tracing::warn!(%key, "bridge: not carried: {reason}");
    report.problem(&at.topic, &key, own_key, kind, reason)
}
