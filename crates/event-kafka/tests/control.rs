//! The Kafka control-plane client against a real broker (`EVENTBUS_TEST_KAFKA_BROKERS`), and
//! the murmur2 partitioner against the Java client's own (`EVENTBUS_TEST_KAFKA_CLASSPATH`).
//!
//! The client is crate-private, so this black-box test compiles its module files itself.

#[path = "../src/control/mod.rs"]
mod control;
#[path = "../src/partitioner.rs"]
mod partitioner;

use std::collections::HashMap;
use std::future::Future;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail, ensure};
use control::{ControlClient, OffsetSpec, Security, TopicCreation, TopicSpec};
use event_core::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const TIMEOUT: Duration = Duration::from_secs(10);

fn integration_required() -> bool {
    std::env::var("EVENTBUS_REQUIRE_INTEGRATION").is_ok_and(|v| v == "1")
}

/// A variable the test needs, or a failure that says how to get it. Outside an integration
/// run (`EVENTBUS_REQUIRE_INTEGRATION` unset) a missing one is reported and the test passes.
fn required_var(name: &str, what: &str) -> anyhow::Result<Option<String>> {
    match std::env::var(name) {
        Ok(value) if !value.is_empty() => Ok(Some(value)),
        _ if integration_required() => bail!(
            "{name} is not set: run `cargo xtask test`, or start a broker with \
             `eval \"$(cargo xtask services up kafka)\"` and run the tests again"
        ),
        _ => {
            eprintln!(
                "SKIPPED: no {what} (set {name}, or run `cargo xtask test`, which starts a Kafka broker)"
            );
            Ok(None)
        }
    }
}

fn brokers() -> anyhow::Result<Option<Vec<String>>> {
    Ok(required_var("EVENTBUS_TEST_KAFKA_BROKERS", "Kafka broker")?
        .map(|list| list.split(',').map(|s| s.trim().to_string()).collect()))
}

fn classpath() -> anyhow::Result<Option<String>> {
    required_var("EVENTBUS_TEST_KAFKA_CLASSPATH", "Kafka jars")
}

async fn client() -> anyhow::Result<Option<ControlClient>> {
    let Some(brokers) = brokers()? else {
        return Ok(None);
    };
    let client = ControlClient::connect(&brokers, &Security::default(), TIMEOUT)
        .await
        .with_context(|| format!("connecting to {brokers:?}"))?;
    Ok(Some(client))
}

fn unique(what: &str) -> String {
    format!("eventbus-control-{what}-{:016x}", fastrand::u64(..))
}

fn spec(name: &str, partitions: i32, configs: &[(&str, &str)]) -> TopicSpec {
    TopicSpec {
        name: name.to_string(),
        partitions,
        replication_factor: 1,
        configs: configs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

async fn create(client: &ControlClient, spec: TopicSpec) -> anyhow::Result<()> {
    let created = client
        .create_topics(std::slice::from_ref(&spec), TIMEOUT)
        .await?;
    ensure!(
        created == vec![(spec.name.clone(), TopicCreation::Created)],
        "{created:?}"
    );
    Ok(())
}

fn java() -> PathBuf {
    match std::env::var_os("JAVA_HOME") {
        Some(home) if !home.is_empty() => PathBuf::from(home).join("bin").join("java"),
        _ => PathBuf::from("java"),
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Topics with configs are created, their configs read back, and a second creation is
/// reported as existing, not as an error.
#[tokio::test]
async fn topics_are_created_with_their_configs() -> anyhow::Result<()> {
    let Some(client) = client().await? else {
        return Ok(());
    };
    let name = unique("configs");
    create(
        &client,
        spec(
            &name,
            3,
            &[("retention.ms", "3600000"), ("cleanup.policy", "delete")],
        ),
    )
    .await?;

    let configs = client
        .describe_topic_configs(std::slice::from_ref(&name))
        .await?;
    let topic = configs.get(&name).context("no configs for the topic")?;
    assert_eq!(
        topic.get("retention.ms").map(String::as_str),
        Some("3600000")
    );
    assert_eq!(
        topic.get("cleanup.policy").map(String::as_str),
        Some("delete")
    );
    // Defaults are listed too, so a topic made elsewhere can be compared.
    assert!(topic.contains_key("max.message.bytes"), "{topic:?}");

    let again = client
        .create_topics(&[spec(&name, 5, &[])], TIMEOUT)
        .await?;
    assert_eq!(again, vec![(name.clone(), TopicCreation::AlreadyExists)]);

    client.delete_topics(&[name]).await?;
    Ok(())
}

/// A topic Kafka refuses is a failed creation with Kafka's reason; the others of the call are
/// created.
#[tokio::test]
async fn refused_topics_carry_kafkas_reason() -> anyhow::Result<()> {
    let Some(client) = client().await? else {
        return Ok(());
    };
    let good = unique("good");
    let too_replicated = TopicSpec {
        replication_factor: 3,
        ..spec(&unique("replicated"), 1, &[])
    };
    let bad_config = spec(&unique("bad-config"), 1, &[("retention.ms", "soon")]);
    let results = client
        .create_topics(
            &[
                spec(&good, 1, &[]),
                too_replicated.clone(),
                bad_config.clone(),
            ],
            TIMEOUT,
        )
        .await?;
    assert_eq!(results[0], (good.clone(), TopicCreation::Created));
    match &results[1] {
        (name, TopicCreation::Failed(reason)) if *name == too_replicated.name => {
            assert!(reason.contains("INVALID_REPLICATION_FACTOR"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    match &results[2] {
        (name, TopicCreation::Failed(reason)) if *name == bad_config.name => {
            assert!(reason.contains("INVALID_CONFIG"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    client.delete_topics(&[good]).await?;
    Ok(())
}

/// Metadata names the brokers, a topic's partitions and their leaders, and reports a topic
/// that does not exist without creating it.
#[tokio::test]
async fn metadata_names_partitions_and_leaders() -> anyhow::Result<()> {
    let Some(client) = client().await? else {
        return Ok(());
    };
    let name = unique("metadata");
    let missing = unique("missing");
    create(&client, spec(&name, 4, &[])).await?;

    let metadata = client
        .metadata(Some(&[name.clone(), missing.clone()]))
        .await?;
    assert!(!metadata.brokers.is_empty());
    let broker_ids: Vec<i32> = metadata.brokers.iter().map(|b| b.id).collect();
    let topic = metadata.topic(&name).context("topic missing")?;
    assert_eq!(topic.error, None);
    assert_eq!(topic.partition_count(), 4);
    assert_eq!(
        topic
            .partitions
            .iter()
            .map(|p| p.partition)
            .collect::<Vec<_>>(),
        vec![0, 1, 2, 3]
    );
    for partition in &topic.partitions {
        let leader = partition.leader.context("a partition without leader")?;
        assert!(
            broker_ids.contains(&leader),
            "{leader} not in {broker_ids:?}"
        );
        assert_eq!(partition.replicas, vec![leader]);
    }
    let absent = metadata
        .topic(&missing)
        .context("missing topic not reported")?;
    assert_eq!(
        absent.error.map(|c| c.name()),
        Some("UNKNOWN_TOPIC_OR_PARTITION".into())
    );

    // Asking about it did not create it.
    let all = client.metadata(None).await?;
    assert!(all.topic(&name).is_some());
    assert!(all.topic(&missing).is_none());

    client.delete_topics(&[name]).await?;
    Ok(())
}

/// A fresh group has no offsets; what a standalone consumer commits comes back, for the
/// partitions asked for or for all of a topic's.
#[tokio::test]
async fn committed_offsets_come_back() -> anyhow::Result<()> {
    let Some(client) = client().await? else {
        return Ok(());
    };
    let topic = unique("commits");
    let group = unique("group");
    create(&client, spec(&topic, 2, &[])).await?;

    let coordinator = client.find_coordinator(&group).await?;
    let brokers = client.metadata(Some(&[])).await?.brokers;
    assert!(brokers.iter().any(|b| b.id == coordinator), "{coordinator}");

    let before = client
        .fetch_offsets(&group, &[(topic.clone(), vec![0, 1])])
        .await?;
    assert_eq!(
        before,
        HashMap::from([((topic.clone(), 0), None), ((topic.clone(), 1), None)])
    );

    client
        .commit_offsets(
            &group,
            -1,
            "",
            &[(topic.clone(), 0, 5), (topic.clone(), 1, 7)],
        )
        .await?;
    let after = client
        .fetch_offsets(&group, &[(topic.clone(), vec![])])
        .await?;
    assert_eq!(
        after,
        HashMap::from([((topic.clone(), 0), Some(5)), ((topic.clone(), 1), Some(7))])
    );

    // Committing again moves the offset; a commit for a partition that does not exist is
    // refused with the partition named.
    client
        .commit_offsets(&group, -1, "", &[(topic.clone(), 0, 9)])
        .await?;
    let moved = client
        .fetch_offsets(&group, &[(topic.clone(), vec![0])])
        .await?;
    assert_eq!(moved, HashMap::from([((topic.clone(), 0), Some(9))]));
    let refused = client
        .commit_offsets(&group, -1, "", &[(unique("nowhere"), 0, 1)])
        .await
        .unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("/0: UNKNOWN_TOPIC_OR_PARTITION"),
        "{refused}"
    );

    client.delete_topics(&[topic]).await?;
    Ok(())
}

/// A group that committed offsets is listed by every broker's ListGroups and described by
/// its coordinator; an unknown group is described as dead.
#[tokio::test]
async fn groups_are_listed_and_described() -> anyhow::Result<()> {
    let Some(client) = client().await? else {
        return Ok(());
    };
    let topic = unique("groups");
    let group = unique("group");
    let unknown = unique("unknown-group");
    create(&client, spec(&topic, 1, &[])).await?;
    client
        .commit_offsets(&group, -1, "", &[(topic.clone(), 0, 1)])
        .await?;

    let listed = client.list_groups().await?;
    let ours = listed
        .iter()
        .find(|g| g.group_id == group)
        .with_context(|| format!("{group} not in {listed:?}"))?;
    assert_eq!(ours.state.as_deref(), Some("Empty"));

    let described = client
        .describe_groups(&[group.clone(), unknown.clone()])
        .await?;
    assert_eq!(described.len(), 2);
    assert_eq!(described[0].group_id, group);
    assert_eq!(described[0].state, "Empty");
    assert!(described[0].members.is_empty());
    assert_eq!(described[1].group_id, unknown);
    assert_eq!(described[1].state, "Dead");

    client.delete_topics(&[topic]).await?;
    Ok(())
}

/// An empty topic's partitions start and end at offset 0 and have no record at any time.
#[tokio::test]
async fn offsets_of_an_empty_topic_are_zero() -> anyhow::Result<()> {
    let Some(client) = client().await? else {
        return Ok(());
    };
    let topic = unique("empty");
    create(&client, spec(&topic, 3, &[])).await?;

    let zeros = HashMap::from([(0, Some(0)), (1, Some(0)), (2, Some(0))]);
    assert_eq!(
        client
            .list_offsets(&topic, &[], OffsetSpec::Earliest)
            .await?,
        zeros
    );
    assert_eq!(
        client.list_offsets(&topic, &[], OffsetSpec::Latest).await?,
        zeros
    );
    assert_eq!(
        client
            .list_offsets(&topic, &[1], OffsetSpec::Timestamp(0))
            .await?,
        HashMap::from([(1, None)])
    );
    let bad = client
        .list_offsets(&topic, &[7], OffsetSpec::Latest)
        .await
        .unwrap_err();
    assert!(bad.to_string().contains("no partition 7"), "{bad}");
    assert!(!bad.is_transient());

    client.delete_topics(&[topic]).await?;
    Ok(())
}

/// Records produced with keys by Kafka's own console producer land where our partitioner
/// says, and ListOffsets finds them by position and by time.
#[tokio::test]
async fn offsets_follow_records_of_the_java_producer() -> anyhow::Result<()> {
    let Some(client) = client().await? else {
        return Ok(());
    };
    let Some(classpath) = classpath()? else {
        return Ok(());
    };
    let brokers = brokers()?.unwrap_or_default().join(",");
    let topic = unique("produced");
    let partitions = 4;
    create(&client, spec(&topic, partitions, &[])).await?;

    let keys: Vec<String> = (0..12).map(|i| format!("opp-{i}")).collect();
    let mut expected: HashMap<i32, Option<i64>> = (0..partitions).map(|p| (p, Some(0))).collect();
    for key in &keys {
        let p = partitioner::partition_for_key(key.as_bytes(), partitions);
        let count = expected.entry(p).or_insert(Some(0));
        *count = count.map(|n| n + 1);
    }

    let before = now_ms();
    let mut producer = Command::new(java())
        .args(["-cp", &classpath, "org.apache.kafka.tools.ConsoleProducer"])
        .args(["--bootstrap-server", &brokers, "--topic", &topic])
        .args([
            "--property",
            "parse.key=true",
            "--property",
            "key.separator=|",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting Kafka's console producer")?;
    {
        let mut stdin = producer.stdin.take().context("no stdin")?;
        for key in &keys {
            writeln!(stdin, "{key}|{{\"key\":\"{key}\"}}")?;
        }
    }
    let output = producer.wait_with_output()?;
    ensure!(
        output.status.success(),
        "the console producer failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    assert_eq!(
        client.list_offsets(&topic, &[], OffsetSpec::Latest).await?,
        expected
    );
    assert_eq!(
        client
            .list_offsets(&topic, &[], OffsetSpec::Earliest)
            .await?,
        (0..partitions).map(|p| (p, Some(0))).collect()
    );
    // From a time before the records: the first record of each partition that has any.
    let from_before = client
        .list_offsets(&topic, &[], OffsetSpec::Timestamp(before - 1_000))
        .await?;
    for p in 0..partitions {
        let has_records = expected[&p] != Some(0);
        assert_eq!(from_before[&p], has_records.then_some(0), "partition {p}");
    }
    // From a time after them: nothing.
    let from_after = client
        .list_offsets(&topic, &[], OffsetSpec::Timestamp(now_ms() + 60_000))
        .await?;
    assert!(from_after.values().all(Option::is_none), "{from_after:?}");

    client.delete_topics(&[topic]).await?;
    Ok(())
}

const MURMUR_JAVA: &str = r#"
import java.util.HexFormat;
import org.apache.kafka.common.utils.Utils;

public class Murmur {
    public static void main(String[] args) {
        int partitions = Integer.parseInt(args[0]);
        HexFormat hex = HexFormat.of();
        for (int i = 1; i < args.length; i++) {
            byte[] key = hex.parseHex(args[i].equals("-") ? "" : args[i]);
            int hash = Utils.murmur2(key);
            System.out.println(hash + " " + Utils.toPositive(hash) % partitions);
        }
    }
}
"#;

/// `murmur2` and `partition_for_key` agree with `Utils.murmur2` and the default partitioner's
/// formula in the Kafka jars, on text, every tail length, high bytes and random keys.
#[tokio::test]
async fn partitioner_agrees_with_the_java_client() -> anyhow::Result<()> {
    let Some(classpath) = classpath()? else {
        return Ok(());
    };
    let mut keys: Vec<Vec<u8>> = [
        "",
        "21",
        "foobar",
        "abc",
        "opp-123",
        "a-little-bit-longer-string",
        "clé-ü-日本",
    ]
    .iter()
    .map(|k| k.as_bytes().to_vec())
    .collect();
    keys.extend((0..=13).map(|n| (0..n).map(|i| 0x80 + i as u8 * 9).collect::<Vec<u8>>()));
    let mut rng = fastrand::Rng::with_seed(0x006b_6166_6b61);
    keys.extend((0..200).map(|_| {
        let len = rng.usize(0..40);
        (0..len).map(|_| rng.u8(..)).collect::<Vec<u8>>()
    }));
    let partitions = 7;

    let dir = std::env::temp_dir().join(format!(
        "eventbus-murmur-{}-{:x}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir)?;
    let source = dir.join("Murmur.java");
    std::fs::write(&source, MURMUR_JAVA)?;
    let hex: Vec<String> = keys
        .iter()
        .map(|k| {
            if k.is_empty() {
                "-".to_string()
            } else {
                k.iter().map(|b| format!("{b:02x}")).collect()
            }
        })
        .collect();
    let output = Command::new(java())
        .arg("-cp")
        .arg(&classpath)
        .arg(&source)
        .arg(partitions.to_string())
        .args(&hex)
        .output()
        .context("running java");
    let _ = std::fs::remove_dir_all(&dir);
    let output = output?;
    ensure!(
        output.status.success(),
        "java failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    let lines: Vec<String> = String::from_utf8(output.stdout)?
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(lines.len(), keys.len());
    for (key, line) in keys.iter().zip(&lines) {
        let ours = format!(
            "{} {}",
            partitioner::murmur2(key),
            partitioner::partition_for_key(key, partitions)
        );
        assert_eq!(&ours, line, "key {key:02x?}");
    }
    Ok(())
}

/// The version of every API the client uses, negotiated with the broker.
#[tokio::test]
async fn every_call_has_a_negotiated_version() -> anyhow::Result<()> {
    let Some(client) = client().await? else {
        return Ok(());
    };
    let versions = client.negotiated_versions();
    eprintln!("negotiated with the test broker: {versions:?}");
    for api in [
        "ApiVersions",
        "Metadata",
        "CreateTopics",
        "DeleteTopics",
        "DescribeConfigs",
        "ListOffsets",
        "FindCoordinator",
        "OffsetCommit",
        "OffsetFetch",
        "ListGroups",
        "DescribeGroups",
        "JoinGroup",
        "SyncGroup",
        "Heartbeat",
        "LeaveGroup",
    ] {
        let version = versions
            .iter()
            .find(|(name, _)| *name == api)
            .and_then(|(_, v)| *v);
        assert!(version.is_some(), "{api}: {versions:?}");
    }
    Ok(())
}

/// A topic that does not exist is an error naming it, returned at once rather than retried
/// until the timeout.
#[tokio::test]
async fn unknown_topics_are_reported() -> anyhow::Result<()> {
    let Some(client) = client().await? else {
        return Ok(());
    };
    let missing = unique("missing");
    let started = Instant::now();
    let e = client
        .list_offsets(&missing, &[], OffsetSpec::Latest)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("UNKNOWN_TOPIC_OR_PARTITION"), "{e}");
    assert!(e.to_string().contains(&missing), "{e}");
    // Retried until the timeout, it would take all of it.
    assert!(
        started.elapsed() < TIMEOUT * 9 / 10,
        "{:?}",
        started.elapsed()
    );
    let e = client
        .describe_topic_configs(std::slice::from_ref(&missing))
        .await
        .unwrap_err();
    assert!(e.to_string().contains(&missing), "{e}");
    Ok(())
}

/// A bootstrap address where nothing listens fails at once, saying which address and what
/// to check; the error is transient (the broker may come up).
#[tokio::test]
async fn an_unreachable_bootstrap_server_fails_fast() {
    // Bind and drop a listener: its port is free and refuses connections.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let address = format!("127.0.0.1:{port}");
    let started = Instant::now();
    let Err(e) = ControlClient::connect(
        std::slice::from_ref(&address),
        &Security::default(),
        Duration::from_secs(30),
    )
    .await
    else {
        panic!("connected to a closed port");
    };
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let text = e.to_string();
    assert!(text.contains(&address), "{text}");
    assert!(text.contains("KAFKA_BOOTSTRAP_SERVERS"), "{text}");
    assert!(e.is_transient(), "{text}");
}

/// A bootstrap list that is not `host:port` is a configuration error naming the variable.
#[tokio::test]
async fn a_malformed_bootstrap_list_is_a_config_error() {
    for servers in [
        vec![],
        vec!["localhost".to_string()],
        vec!["host:port".to_string()],
    ] {
        let Err(e) = ControlClient::connect(&servers, &Security::default(), TIMEOUT).await else {
            panic!("{servers:?} accepted");
        };
        assert!(matches!(e, Error::Config(_)), "{e:?}");
        assert!(e.to_string().contains("KAFKA_BOOTSTRAP_SERVERS"), "{e}");
    }
}

/// A server that answers like HTTP, not Kafka, is named as such, and is not retried.
#[tokio::test]
async fn a_server_that_is_not_kafka_is_reported() -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?.to_string();
    let server = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut request = [0u8; 64];
            let _ = socket.read(&mut request).await;
            let _ = socket
                .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                .await;
        }
    });
    let result = ControlClient::connect(
        std::slice::from_ref(&address),
        &Security::default(),
        TIMEOUT,
    )
    .await;
    server.abort();
    let Err(e) = result else {
        bail!("an HTTP server passed for a Kafka broker");
    };
    let text = e.to_string();
    assert!(
        text.contains(&address) && text.contains("Kafka broker"),
        "{text}"
    );
    assert!(!e.is_transient(), "{text}");
    Ok(())
}

/// A server that accepts but never answers makes the call time out within its timeout, as a
/// transient error that says what did not finish.
#[tokio::test]
async fn a_silent_server_times_out() -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?.to_string();
    let server = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let result = ControlClient::connect(
        std::slice::from_ref(&address),
        &Security::default(),
        Duration::from_millis(300),
    )
    .await;
    server.abort();
    let Err(e) = result else {
        bail!("a silent server passed for a Kafka broker");
    };
    let text = e.to_string();
    assert!(text.contains("did not finish within 300ms"), "{text}");
    assert!(text.contains(&address), "{text}");
    assert!(e.is_transient(), "{text}");
    Ok(())
}

/// A call abandoned mid-request (its future dropped by a caller's timeout) leaves no stale
/// response behind for the next call on the same connection.
#[tokio::test]
async fn abandoned_calls_do_not_spoil_the_connection() -> anyhow::Result<()> {
    let Some(client) = client().await? else {
        return Ok(());
    };
    let mut abandoned = 0;
    // Rounds until a few calls were abandoned: on a loaded machine the broker can run between
    // the request's write and the first read (the woken broker thread preempts the test's),
    // and most rounds abandon nothing.
    for _ in 0..1_000 {
        if abandoned == 5 {
            break;
        }
        {
            // One poll writes the request on the open connection and waits for the answer;
            // then the call is dropped, as a caller's timeout would. (When the answer is
            // already there at that poll's read, the round abandons nothing.)
            let mut call = std::pin::pin!(client.metadata(None));
            let mut context = std::task::Context::from_waker(std::task::Waker::noop());
            if call.as_mut().poll(&mut context).is_pending() {
                abandoned += 1;
            }
        }
        let metadata = client.metadata(Some(&[])).await?;
        ensure!(!metadata.brokers.is_empty());
    }
    ensure!(
        abandoned > 0,
        "no call was pending after its first poll, in 1,000 rounds"
    );
    Ok(())
}
