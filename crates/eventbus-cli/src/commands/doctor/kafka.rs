//! The Kafka cluster's facts: the APIs the bus needs, the brokers against
//! `KAFKA_REPLICATION_FACTOR`, and the bus's topics under `KAFKA_TOPIC_PREFIX` (existence,
//! partitions, replication, `retention.ms`). The clock is not checked: Kafka has no request
//! that tells a broker's time without writing a record.

use std::time::Duration;

use event_kafka::{KafkaAdmin, KafkaCluster};
use event_manager::Settings;

use super::{Finding, bounded};

/// Topics listed in one finding at most.
const LISTED: usize = 5;

/// The Kafka checks, on the listener and with the credentials the bus uses (TLS, SASL).
pub(super) async fn check(settings: &Settings, timeout: Duration) -> Vec<Finding> {
    let kafka = &settings.kafka;
    let mut findings = vec![Finding::skip(
        "server.clock",
        "not available on Kafka: no request tells a broker's time without writing a record (only topics with message.timestamp.type=LogAppendTime stamp the broker's clock); check NTP on the hosts instead",
    )];
    let steps = async {
        let admin = KafkaAdmin::connect(kafka).await?;
        let mut found = vec![versions(&admin).await?];
        let cluster = admin.cluster().await?;
        found.extend(topics(settings, &cluster, &admin).await?);
        anyhow::Ok(found)
    };
    match bounded(timeout, steps).await {
        Some(Ok(found)) => findings.extend(found),
        Some(Err(e)) => findings.push(Finding::fail(
            "server.version",
            format!("cannot read the cluster's metadata: {e:#}"),
            "the bus connected, so the broker's listener works; check that the user may Describe the cluster and its topics (ACLs)",
        )),
        None => findings.push(Finding::fail(
            "server.version",
            format!("reading the cluster's metadata took longer than {timeout:?}"),
            "the broker is overloaded, or its advertised listener is not reachable from here; raise --timeout",
        )),
    }
    findings
}

/// Whether every broker implements every API the bus sends, at a version the bus speaks.
async fn versions(admin: &KafkaAdmin) -> anyhow::Result<Finding> {
    let missing = admin.missing_apis().await?;
    Ok(if missing.is_empty() {
        Finding::ok(
            "server.version",
            "every broker implements the APIs the bus sends, at versions it speaks",
        )
    } else {
        let missing: Vec<String> = missing.iter().map(ToString::to_string).collect();
        Finding::fail(
            "server.version",
            format!(
                "the brokers lack what the bus needs: {}",
                missing.join(", ")
            ),
            "use brokers that implement them (Apache Kafka 1.0 or newer; the project tests with 4.x); a partial Kafka-compatible server cannot run the bus",
        )
    })
}

/// A list of names, shortened.
fn listed(names: &[String]) -> String {
    let shown: Vec<&str> = names.iter().take(LISTED).map(String::as_str).collect();
    let more = names.len().saturating_sub(LISTED);
    if more > 0 {
        format!("{} and {more} more", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

/// What the cluster holds instead: the prefixes of other buses (known by their dead-letter
/// and redrive topics, `{prefix}.dlq.{group}`), else some topic names.
fn other_prefixes(cluster: &KafkaCluster) -> String {
    let names: Vec<String> = cluster
        .topics
        .iter()
        .filter(|t| !t.internal)
        .map(|t| t.name.clone())
        .collect();
    let mut prefixes: Vec<String> = names
        .iter()
        .filter_map(|t| t.split_once(".dlq.").or_else(|| t.split_once(".redrive.")))
        .map(|(p, _)| p.to_string())
        .collect();
    prefixes.dedup();
    if !prefixes.is_empty() {
        format!(
            "other buses' prefixes on the cluster: {}",
            listed(&prefixes)
        )
    } else if names.is_empty() {
        "the cluster has no topic".to_string()
    } else {
        format!("topics on the cluster: {}", listed(&names))
    }
}

/// The brokers, and the bus's topics: existence, partitions, replication, retention.
async fn topics(
    settings: &Settings,
    cluster: &KafkaCluster,
    admin: &KafkaAdmin,
) -> anyhow::Result<Vec<Finding>> {
    let kafka = &settings.kafka;
    let prefix = format!("{}.", kafka.topic_prefix);
    let factor = usize::from(kafka.replication_factor);
    let mut findings = vec![if factor > cluster.brokers {
        Finding::fail(
            "server.brokers",
            format!(
                "KAFKA_REPLICATION_FACTOR={factor} but the cluster has {} broker(s): creating a topic fails",
                cluster.brokers
            ),
            format!(
                "set KAFKA_REPLICATION_FACTOR to at most {}, or add brokers",
                cluster.brokers
            ),
        )
    } else {
        Finding::ok(
            "server.brokers",
            format!(
                "{} broker(s), KAFKA_REPLICATION_FACTOR={factor}",
                cluster.brokers
            ),
        )
    }];
    // Sorted by name, as the cluster lists them.
    let ours: Vec<String> = cluster
        .topics
        .iter()
        .filter(|t| !t.internal && t.name.starts_with(&prefix))
        .map(|t| t.name.clone())
        .collect();
    if ours.is_empty() {
        findings.push(Finding::warn(
            "topics",
            format!(
                "no topic starts with {prefix:?} (KAFKA_TOPIC_PREFIX={}): nothing was published or subscribed with this prefix ({})",
                kafka.topic_prefix,
                other_prefixes(cluster)
            ),
            "if publishers and handlers use another prefix, set KAFKA_TOPIC_PREFIX to theirs; the bus creates a topic when it first publishes or subscribes to its type (the user needs the Create ACL)",
        ));
        return Ok(findings);
    }
    // Event topics: not the dead-letter and redrive topics, which have one partition.
    let events: Vec<String> = ours
        .iter()
        .filter(|t| {
            let rest = &t[prefix.len()..];
            !rest.starts_with("dlq.") && !rest.starts_with("redrive.")
        })
        .cloned()
        .collect();
    findings.push(Finding::ok(
        "topics",
        format!(
            "{} topic(s) under {prefix:?}, {} of events",
            ours.len(),
            events.len()
        ),
    ));
    let partitions = kafka.partitions as usize;
    let other_count: Vec<String> = events
        .iter()
        .filter_map(|t| {
            let n = cluster.topic(t)?.partitions.len();
            (n != partitions).then(|| format!("{t} ({n})"))
        })
        .collect();
    findings.push(if other_count.is_empty() {
        Finding::ok("topic.partitions", format!("every event topic has KAFKA_PARTITIONS={partitions} partitions"))
    } else {
        Finding::warn(
            "topic.partitions",
            format!("event topics with another partition count than KAFKA_PARTITIONS={partitions}: {}", listed(&other_count)),
            format!("the bus uses a topic's partitions as they are: set KAFKA_PARTITIONS to match, or add partitions with `kafka-topics.sh --bootstrap-server {} --alter --topic TOPIC --partitions {partitions}` (keys then move to other partitions: per-key order holds again for events published after)", kafka.bootstrap_servers.join(",")),
        )
    });
    let mut few = Vec::new();
    let mut lagging = Vec::new();
    let mut leaderless = Vec::new();
    for topic in &ours {
        let partitions = cluster.topic(topic).map_or(&[][..], |t| &t.partitions);
        for p in partitions {
            let at = format!("{topic}/{}", p.partition);
            if p.leader.is_none() {
                leaderless.push(at.clone());
            }
            if p.in_sync < p.replicas {
                lagging.push(format!("{at} ({} of {} in sync)", p.in_sync, p.replicas));
            }
        }
        if let Some(p) = partitions.first()
            && p.replicas < factor
        {
            few.push(format!("{topic} ({})", p.replicas));
        }
    }
    findings.push(if !leaderless.is_empty() {
        Finding::fail(
            "topic.replication",
            format!("partitions without a leader (nothing can be written or read there): {}", listed(&leaderless)),
            "bring the brokers holding their replicas back; `kafka-topics.sh --describe --unavailable-partitions` lists them",
        )
    } else if !few.is_empty() {
        Finding::warn(
            "topic.replication",
            format!("topics with fewer replicas than KAFKA_REPLICATION_FACTOR={factor}: {}", listed(&few)),
            "the bus does not change existing topics: raise their replication with `kafka-reassign-partitions.sh`, or set KAFKA_REPLICATION_FACTOR to what they have",
        )
    } else if !lagging.is_empty() {
        Finding::warn(
            "topic.replication",
            format!("under-replicated partitions: {}", listed(&lagging)),
            "a broker is down or slow; `kafka-topics.sh --describe --under-replicated-partitions` lists them",
        )
    } else {
        Finding::ok("topic.replication", format!("every topic has {factor} or more replicas, all in sync"))
    });
    let wanted = kafka.retention.as_millis().to_string();
    let configs = admin.topic_configs(&events).await?;
    let other_retention: Vec<String> = events
        .iter()
        .filter_map(|t| {
            let value = configs.get(t)?.get("retention.ms")?;
            (*value != wanted).then(|| format!("{t} ({value} ms)"))
        })
        .collect();
    findings.push(if other_retention.is_empty() {
        Finding::ok("topic.retention", format!("every event topic keeps events KAFKA_RETENTION_MS={wanted} ms"))
    } else {
        Finding::warn(
            "topic.retention",
            format!("event topics whose retention.ms is not KAFKA_RETENTION_MS={wanted}: {}", listed(&other_retention)),
            format!("the bus does not change existing topics: `kafka-configs.sh --bootstrap-server {} --alter --entity-type topics --entity-name TOPIC --add-config retention.ms={wanted}`, or set KAFKA_RETENTION_MS to theirs", kafka.bootstrap_servers.join(",")),
        )
    });
    Ok(findings)
}
