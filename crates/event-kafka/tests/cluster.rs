//! The bus on a cluster of three KRaft nodes of this test alone (from the jars of
//! `EVENTBUS_TEST_KAFKA_CLASSPATH`), with topics of replication factor 3 and
//! `min.insync.replicas=2`, through the faults a cluster is for:
//!
//! 1. **a node down at start**: the first bootstrap server is dead when a service restarts; its
//!    bus starts on the others and delivers;
//! 2. **leader failover under load**: the node leading the most partitions is killed with
//!    SIGKILL while four publishers and a consumer group run; every publish that returned `Ok`
//!    is handled, none hangs, publishing resumes on the new leaders without a restart;
//! 3. **rolling restart**: each node in turn stopped and started again under load, waiting
//!    for its replicas to catch up before the next; nothing lost, the subscription lives on.
//!
//! One cluster serves the three in order (a cluster takes a while to start on two cores).

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use event_core::{EventBus, EventId, EventType, StartFrom, SubscriptionSpec};
use event_kafka::KafkaBus;
use event_testkit::load::{Load, LoadReport};
use support::brokers::{KafkaNodes, kafka_classpath};
use support::{Settings, all_handled, keyed_events, recorder, topics_tool};

const NODES: usize = 3;
const PARTITIONS: u32 = 6;

/// The bus's settings on the cluster: every node as a bootstrap server, topics replicated to
/// all three with two in sync.
fn settings(nodes: &KafkaNodes, prefix: &str) -> Settings {
    let mut settings = Settings::default();
    settings.kafka.bootstrap_servers = nodes.bootstrap_servers();
    settings.kafka.topic_prefix = prefix.to_string();
    settings.kafka.partitions = PARTITIONS;
    settings.kafka.replication_factor = 3;
    settings.kafka.min_insync_replicas = Some(2);
    settings.kafka.session_timeout = Duration::from_secs(6);
    settings.kafka.heartbeat_interval = Duration::from_secs(1);
    settings
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_node_cluster_keeps_every_promise() -> anyhow::Result<()> {
    let Some(classpath) = kafka_classpath()? else {
        return Ok(());
    };
    let started = Instant::now();
    let mut nodes = KafkaNodes::start(&classpath, NODES).await?;
    eprintln!(
        "cluster of {NODES} nodes up in {:.1}s on {:?}",
        started.elapsed().as_secs_f64(),
        nodes.bootstrap_servers()
    );
    a_node_down_at_start(&mut nodes, &classpath)
        .await
        .context("a node down at start")?;
    leader_failover_under_load(&mut nodes, &classpath)
        .await
        .context("leader failover under load")?;
    rolling_restart_under_load(&mut nodes, &classpath)
        .await
        .context("rolling restart under load")?;
    Ok(())
}

/// The first bootstrap server is dead when a service restarts: its bus connects through the
/// others and delivers. (Its topics exist from before; a topic with three replicas cannot be
/// created while only two brokers are registered, which is Kafka's rule, not the bus's.)
async fn a_node_down_at_start(nodes: &mut KafkaNodes, classpath: &str) -> anyhow::Result<()> {
    let settings = settings(nodes, &event_testkit::unique("down"));
    let event_type = EventType::new("cluster.started")?;
    let spec =
        SubscriptionSpec::new("starter", [event_type.clone()]).start_from(StartFrom::Earliest);
    let (handler, seen) = recorder("starter");
    let before = settings.connect().await?;
    before.subscribe(spec.clone(), handler.clone()).await?;
    before.shutdown().await?;

    // Down for a while, as a broker that failed before the restart: the cluster has fenced
    // it and moved its leaderships (the election window itself is the next scenario's).
    nodes.kill(1);
    let servers = nodes.bootstrap_servers().join(",");
    let topics = format!("{}\\..*", settings.kafka.topic_prefix);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while leaders(classpath, &servers, &topics)
        .await?
        .contains_key(&1)
    {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "node 1 still leads partitions a minute after it was killed"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let bus = settings.connect().await?;
    bus.subscribe(spec, handler).await?;
    let events = keyed_events(&event_type, "cluster_test", 500, 20)?;
    let expected: HashSet<EventId> = events.iter().map(|e| e.id).collect();
    for result in bus.publish_batch(events).await {
        result?;
    }
    all_handled(&[&seen], &expected, Duration::from_secs(60)).await?;
    bus.shutdown().await?;
    nodes.restart(1).await?;
    eprintln!("a node down at start: 500 events published and handled on the other two");
    Ok(())
}

/// A bus with a handler subscribed to two types, each with its own topic of six partitions.
async fn loaded_bus(
    nodes: &KafkaNodes,
    name: &str,
) -> anyhow::Result<(
    Arc<KafkaBus>,
    Vec<EventType>,
    Arc<Mutex<Vec<EventId>>>,
    String,
)> {
    let prefix = event_testkit::unique(name);
    let bus = Arc::new(settings(nodes, &prefix).connect().await?);
    let types = vec![
        EventType::new("cluster.first")?,
        EventType::new("cluster.second")?,
    ];
    let (handler, seen) = recorder(name);
    bus.subscribe(
        SubscriptionSpec::new(name, types.clone()).start_from(StartFrom::Earliest),
        handler,
    )
    .await?;
    Ok((bus, types, seen, prefix))
}

/// Kills the node that leads the most partitions of the bus's topics while it runs under
/// load, and checks that nothing acknowledged is lost.
async fn leader_failover_under_load(nodes: &mut KafkaNodes, classpath: &str) -> anyhow::Result<()> {
    let (bus, types, seen, prefix) = loaded_bus(nodes, "failover").await?;
    let load = Load::start(&(bus.clone() as Arc<dyn EventBus>), &types);
    load.until_published(0, 3_000, Duration::from_secs(120))
        .await?;
    let topics = format!("{prefix}\\..*");
    let leaders = leaders(classpath, &nodes.bootstrap_servers().join(","), &topics).await?;
    let (&victim, &led) = leaders
        .iter()
        .max_by_key(|(_, count)| **count)
        .context("no partition leaders")?;
    let before = load.published();
    let killed = Instant::now();
    nodes.kill(victim);
    load.until_published(before, 3_000, Duration::from_secs(120))
        .await?;
    let resumed = killed.elapsed();
    let LoadReport {
        published,
        failed,
        longest,
        ..
    } = load.stop().await?;
    all_handled(&[&seen], &published, Duration::from_secs(120)).await?;
    let duplicates = seen.lock().unwrap().len() - published.len();
    eprintln!(
        "leader failover: node {victim} (leader of {led} of {} partitions) killed; {} published events all handled ({} handled twice), {failed} publishes failed cleanly, the longest call took {:.1}s, 3,000 more published {:.1}s after the kill",
        2 * PARTITIONS,
        published.len(),
        duplicates,
        longest.as_secs_f64(),
        resumed.as_secs_f64()
    );
    ensure!(
        longest < Duration::from_secs(60),
        "a publish took {longest:?}: calls must end within their timeout"
    );
    bus.shutdown().await?;
    nodes.restart(victim).await?;
    Ok(())
}

/// Stops and starts each node in turn under load, waiting for the cluster to be fully
/// replicated again before the next.
async fn rolling_restart_under_load(nodes: &mut KafkaNodes, classpath: &str) -> anyhow::Result<()> {
    let (bus, types, seen, prefix) = loaded_bus(nodes, "rolling").await?;
    let servers = nodes.bootstrap_servers().join(",");
    let topics = format!("{prefix}\\..*");
    let load = Load::start(&(bus.clone() as Arc<dyn EventBus>), &types);
    load.until_published(0, 2_000, Duration::from_secs(120))
        .await?;
    for id in 1..=NODES as u32 {
        let began = Instant::now();
        nodes.stop(id).await?;
        let stopped = began.elapsed();
        let before = load.published();
        load.until_published(before, 1_000, Duration::from_secs(120))
            .await
            .with_context(|| format!("with node {id} stopped"))?;
        nodes.restart(id).await?;
        let restarted = began.elapsed();
        fully_replicated(classpath, &servers, &topics, Duration::from_secs(120)).await?;
        eprintln!(
            "rolling restart: node {id} stopped in {:.1}s, answering again after {:.1}s, in sync after {:.1}s",
            stopped.as_secs_f64(),
            restarted.as_secs_f64(),
            began.elapsed().as_secs_f64()
        );
    }
    let LoadReport {
        published,
        failed,
        longest,
        ..
    } = load.stop().await?;
    all_handled(&[&seen], &published, Duration::from_secs(120)).await?;
    let health = bus.health().await;
    eprintln!(
        "rolling restart: {} published events all handled, {failed} publishes failed cleanly, the longest call took {:.1}s; health {health:?}",
        published.len(),
        longest.as_secs_f64()
    );
    let stats = bus.stats().await?;
    ensure!(
        stats.handlers.contains_key("rolling"),
        "the subscription is gone after the rolling restart: {stats:?}"
    );
    bus.shutdown().await?;
    Ok(())
}

/// How many partitions of the topics matching `topics` (a regular expression) each node
/// leads, from `kafka-topics --describe`.
async fn leaders(
    classpath: &str,
    servers: &str,
    topics: &str,
) -> anyhow::Result<HashMap<u32, usize>> {
    let text = topics_tool(classpath, servers, &["--describe", "--topic", topics]).await?;
    let mut leaders = HashMap::new();
    for line in text.lines().filter(|l| l.contains("Partition:")) {
        let leader = line
            .split("Leader:")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|id| id.parse::<u32>().ok())
            .with_context(|| format!("no leader in {line:?}"))?;
        *leaders.entry(leader).or_default() += 1;
    }
    Ok(leaders)
}

/// Waits until no partition of the topics matching `topics` is under-replicated (every
/// replica back in sync).
async fn fully_replicated(
    classpath: &str,
    servers: &str,
    topics: &str,
    within: Duration,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let lagging = topics_tool(
            classpath,
            servers,
            &[
                "--describe",
                "--under-replicated-partitions",
                "--topic",
                topics,
            ],
        )
        .await?;
        if lagging.trim().is_empty() {
            return Ok(());
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "partitions still under-replicated after {within:?}:\n{lagging}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
