//! The classic group protocol of the control-plane client and the Java consumer protocol
//! encodings against a real broker (`EVENTBUS_TEST_KAFKA_BROKERS`), checked with Kafka's own
//! `kafka-consumer-groups` tool (`EVENTBUS_TEST_KAFKA_CLASSPATH`): if the tool lists our
//! members with their partitions, the encodings are what Java reads.
//!
//! The client is crate-private, so this black-box test compiles its module files itself.

#[path = "../src/control/mod.rs"]
mod control;

#[allow(
    dead_code,
    reason = "the test uses the range assignor and the encodings only"
)]
#[path = "../src/assignor.rs"]
mod assignor;
mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use assignor::{Assignment, AssignorMember, RANGE, Subscription};
use bytes::Bytes;
use control::{
    CONSUMER_PROTOCOL_TYPE, ControlClient, JoinOutcome, MembershipError, Security, TopicCreation,
    TopicSpec,
};
use support::{java, tool_members};

const TIMEOUT: Duration = Duration::from_secs(10);
/// The whole test, Java tool runs included.
const TEST_BOUND: Duration = Duration::from_secs(150);
const SESSION_TIMEOUT: Duration = Duration::from_secs(30);
const REBALANCE_TIMEOUT: Duration = Duration::from_secs(20);
/// The pause between heartbeats while waiting for the rebalance to show: the member's
/// heartbeat interval.
const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(200);
const PARTITIONS: i32 = 4;

/// A member's JoinGroup protocols: range, subscribed to `topic`.
fn protocols(topic: &str) -> Vec<(&'static str, Bytes)> {
    vec![(RANGE, Subscription::to_topics(&[topic]).encode())]
}

async fn join(
    client: &ControlClient,
    group: &str,
    member_id: &str,
    topic: &str,
) -> Result<JoinOutcome, MembershipError> {
    client
        .join_group(
            group,
            member_id,
            None,
            SESSION_TIMEOUT,
            REBALANCE_TIMEOUT,
            &protocols(topic),
        )
        .await
}

/// The leader's assignments: range over the members' decoded subscriptions.
fn leader_assignments(joined: &JoinOutcome, topic: &str) -> anyhow::Result<Vec<(String, Bytes)>> {
    ensure!(joined.is_leader(), "{joined:?} is not the leader's answer");
    ensure!(joined.protocol_name == RANGE, "{joined:?}");
    let mut members = Vec::new();
    for member in &joined.members {
        let subscription = Subscription::decode(&member.metadata)
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("the subscription of {}", member.member_id))?;
        members.push(AssignorMember {
            member_id: member.member_id.clone(),
            group_instance_id: member.group_instance_id.clone(),
            topics: subscription.topics,
        });
    }
    let counts: BTreeMap<String, i32> = [(topic.to_string(), PARTITIONS)].into_iter().collect();
    Ok(assignor::range(&members, &counts)
        .into_iter()
        .map(|(member, partitions)| {
            let bytes = Assignment {
                partitions,
                user_data: None,
            }
            .encode();
            (member, bytes)
        })
        .collect())
}

async fn sync(
    client: &ControlClient,
    group: &str,
    joined: &JoinOutcome,
    assignments: &[(String, Bytes)],
) -> anyhow::Result<Vec<i32>> {
    let bytes = client
        .sync_group(
            group,
            joined.generation_id,
            &joined.member_id,
            None,
            CONSUMER_PROTOCOL_TYPE,
            &joined.protocol_name,
            assignments,
        )
        .await
        .with_context(|| format!("syncing {}", joined.member_id))?;
    let assignment = Assignment::decode(&bytes).map_err(anyhow::Error::msg)?;
    ensure!(assignment.partitions.len() <= 1, "{assignment:?}");
    Ok(assignment
        .partitions
        .into_values()
        .next()
        .unwrap_or_default())
}

/// One member joins and leads, assigns, heartbeats; a second member's join shows in the first
/// one's heartbeat as a rebalance; both rejoin and sync a range assignment; Kafka's tool lists
/// both with their partitions; after both leave, the tool finds no members.
#[tokio::test]
async fn members_join_sync_rebalance_and_show_in_kafkas_tool() -> anyhow::Result<()> {
    let Some(brokers) = event_testkit::test_server("EVENTBUS_TEST_KAFKA_BROKERS", "kafka")? else {
        return Ok(());
    };
    let Some(classpath) = event_testkit::test_server("EVENTBUS_TEST_KAFKA_CLASSPATH", "kafka")?
    else {
        return Ok(());
    };
    tokio::time::timeout(TEST_BOUND, scenario(&brokers, &classpath))
        .await
        .with_context(|| format!("the test did not finish within {TEST_BOUND:?}"))?
}

async fn scenario(brokers: &str, classpath: &str) -> anyhow::Result<()> {
    let servers: Vec<String> = brokers.split(',').map(|s| s.trim().to_string()).collect();
    // One client per member, as two processes would have.
    let a = ControlClient::connect(&servers, &Security::default(), TIMEOUT).await?;
    let b = ControlClient::connect(&servers, &Security::default(), TIMEOUT).await?;
    let suffix = format!("{:016x}", fastrand::u64(..));
    let topic = format!("eventbus-membership-{suffix}");
    let group = format!("eventbus-membership-group-{suffix}");
    let created = a
        .create_topics(
            &[TopicSpec {
                name: topic.clone(),
                partitions: PARTITIONS,
                replication_factor: 1,
                configs: Vec::new(),
            }],
            TIMEOUT,
        )
        .await?;
    ensure!(
        created == vec![(topic.clone(), TopicCreation::Created)],
        "{created:?}"
    );

    // Alone: member A joins (through MEMBER_ID_REQUIRED), leads, takes every partition.
    let first = join(&a, &group, "", &topic).await?;
    ensure!(
        !first.member_id.is_empty() && first.is_leader(),
        "{first:?}"
    );
    ensure!(first.members.len() == 1, "{first:?}");
    let assignments = leader_assignments(&first, &topic)?;
    let mine = sync(&a, &group, &first, &assignments).await?;
    ensure!(mine == (0..PARTITIONS).collect::<Vec<_>>(), "{mine:?}");
    a.heartbeat(&group, first.generation_id, &first.member_id, None)
        .await
        .context("the first heartbeat")?;

    // Member B joins: its JoinGroup waits for A to rejoin; A learns it from its heartbeat.
    let b_join = {
        let (b, group, topic) = (b.clone(), group.clone(), topic.clone());
        tokio::spawn(async move { join(&b, &group, "", &topic).await })
    };
    let waiting_since = Instant::now();
    loop {
        match a
            .heartbeat(&group, first.generation_id, &first.member_id, None)
            .await
        {
            Ok(()) if waiting_since.elapsed() < REBALANCE_TIMEOUT => {
                tokio::time::sleep(HEARTBEAT_INTERVAL).await;
            }
            Ok(()) => bail!("no rebalance within {REBALANCE_TIMEOUT:?} of B joining"),
            Err(MembershipError::RebalanceInProgress) => break,
            Err(e) => bail!("the heartbeat during B's join: {e}"),
        }
    }
    let a_joined = join(&a, &group, &first.member_id, &topic).await?;
    let b_joined = b_join.await??;
    ensure!(a_joined.member_id == first.member_id, "{a_joined:?}");
    ensure!(a_joined.generation_id > first.generation_id, "{a_joined:?}");
    ensure!(
        b_joined.generation_id == a_joined.generation_id,
        "{b_joined:?}"
    );
    ensure!(
        a_joined.leader == b_joined.leader,
        "{a_joined:?} {b_joined:?}"
    );
    let (leader, follower, leader_client, follower_client) = if a_joined.is_leader() {
        (&a_joined, &b_joined, &a, &b)
    } else {
        (&b_joined, &a_joined, &b, &a)
    };
    ensure!(
        leader.members.len() == 2 && follower.members.is_empty(),
        "{leader:?} {follower:?}"
    );
    let assignments = leader_assignments(leader, &topic)?;
    // The follower's SyncGroup waits for the leader's.
    let (led, followed) = tokio::join!(
        sync(leader_client, &group, leader, &assignments),
        sync(follower_client, &group, follower, &[]),
    );
    let (led, followed) = (led?, followed?);
    // Range: the member with the smaller id takes partitions 0 and 1.
    let (smaller, larger) = if leader.member_id < follower.member_id {
        (&led, &followed)
    } else {
        (&followed, &led)
    };
    ensure!(
        smaller == &vec![0, 1] && larger == &vec![2, 3],
        "{led:?} {followed:?}"
    );
    for joined in [&a_joined, &b_joined] {
        let client = if joined.member_id == a_joined.member_id {
            &a
        } else {
            &b
        };
        client
            .heartbeat(&group, joined.generation_id, &joined.member_id, None)
            .await
            .with_context(|| format!("the heartbeat of {} after the sync", joined.member_id))?;
    }

    // Kafka's tool reads our subscriptions and assignments.
    let listed = tool_members(classpath, brokers, &group)
        .await?
        .context("the tool found no active members")?;
    ensure!(listed.len() == 2, "{listed:?}");
    for (joined, partitions) in [(leader, &led), (follower, &followed)] {
        let member = listed
            .iter()
            .find(|m| m.consumer_id == joined.member_id)
            .with_context(|| format!("{} not in {listed:?}", joined.member_id))?;
        ensure!(member.partitions == 2, "{member:?}");
        let (first, second) = (partitions[0], partitions[1]);
        let kafka_4 = format!("{topic}:{first},{second}");
        let earlier = format!("{topic}({first},{second})");
        ensure!(
            member.assignment == kafka_4 || member.assignment == earlier,
            "{member:?} was assigned {partitions:?}"
        );
    }

    // Both leave: the group is empty.
    a.leave_group(&group, &a_joined.member_id, None).await?;
    b.leave_group(&group, &b_joined.member_id, None).await?;
    let left = tool_members(classpath, brokers, &group).await?;
    ensure!(left.is_none(), "members after leaving: {left:?}");
    let described = a.describe_groups(std::slice::from_ref(&group)).await?;
    ensure!(described[0].state == "Empty", "{described:?}");

    a.delete_topics(&[topic]).await?;
    Ok(())
}

/// `topic:0,1;other:2`, as `tests/java/Assignors.java` writes partitions.
fn canonical(partitions: &assignor::TopicPartitions) -> String {
    partitions
        .iter()
        .filter(|(_, list)| !list.is_empty())
        .map(|(topic, list)| {
            let list: Vec<String> = list.iter().map(ToString::to_string).collect();
            format!("{topic}:{}", list.join(","))
        })
        .collect::<Vec<_>>()
        .join(";")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> anyhow::Result<Vec<u8>> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).context("hex from Java"))
        .collect()
}

/// Runs `tests/java/Assignors.java` on `requests`, one answer line per request.
async fn java_assignors(classpath: &str, requests: &[String]) -> anyhow::Result<Vec<String>> {
    use tokio::io::AsyncWriteExt;
    let source = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/java/Assignors.java");
    let mut child = tokio::process::Command::new(java())
        .args(["-cp", classpath])
        .arg(&source)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("running java")?;
    let mut stdin = child.stdin.take().context("java's stdin")?;
    let input = requests.join("\n") + "\n";
    let writer = async move {
        stdin.write_all(input.as_bytes()).await?;
        stdin.shutdown().await
    };
    let (written, output) = tokio::time::timeout(Duration::from_secs(60), async {
        tokio::join!(writer, child.wait_with_output())
    })
    .await
    .context("Assignors.java did not finish within 60 s")?;
    let output = output?;
    ensure!(
        output.status.success(),
        "Assignors.java failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    written?;
    let lines: Vec<String> = String::from_utf8(output.stdout)?
        .lines()
        .map(str::to_string)
        .collect();
    ensure!(lines.len() == requests.len(), "{lines:?}");
    Ok(lines)
}

/// Our range and roundrobin assignors give what the Java client's give, on random groups
/// (static and dynamic members, overlapping subscriptions, uneven partition counts); Java
/// reads our subscriptions and assignments, and we read Java's.
#[tokio::test]
async fn assignors_and_encodings_agree_with_the_java_client() -> anyhow::Result<()> {
    let Some(classpath) = event_testkit::test_server("EVENTBUS_TEST_KAFKA_CLASSPATH", "kafka")?
    else {
        return Ok(());
    };
    let mut rng = fastrand::Rng::with_seed(0x0067_726f_7570);
    let topic_names = ["a", "b", "t0", "t10", "t2", "orders"];
    let mut requests = Vec::new();
    let mut ours = Vec::new();
    for _ in 0..300 {
        let mut counts = BTreeMap::new();
        for topic in topic_names {
            if rng.bool() || counts.is_empty() {
                counts.insert(topic.to_string(), rng.i32(0..8));
            }
        }
        let topics: Vec<&String> = counts.keys().collect();
        let mut members: Vec<AssignorMember> = Vec::new();
        let mut ids: Vec<u32> = (0..40).collect();
        rng.shuffle(&mut ids);
        for &n in ids.iter().take(rng.usize(1..7)) {
            let mut subscribed: Vec<String> = topics
                .iter()
                .filter(|_| rng.u8(..) < 160)
                .map(|t| (*t).clone())
                .collect();
            if subscribed.is_empty() {
                subscribed.push(topics[rng.usize(..topics.len())].clone());
            }
            members.push(AssignorMember {
                member_id: format!("consumer-{n}-{:x}", rng.u16(..)),
                group_instance_id: (rng.u8(..) < 64).then(|| format!("instance-{}", 40 - n)),
                topics: subscribed,
            });
        }
        let count_list: Vec<String> = counts.iter().map(|(t, n)| format!("{t}:{n}")).collect();
        let member_list: Vec<String> = members
            .iter()
            .map(|m| {
                let instance = m.group_instance_id.as_deref().unwrap_or("-");
                format!("{}/{instance}/{}", m.member_id, m.topics.join(","))
            })
            .collect();
        requests.push(format!(
            "case {} {}",
            count_list.join(","),
            member_list.join(" ")
        ));
        let render = |assignment: BTreeMap<String, assignor::TopicPartitions>| {
            members
                .iter()
                .map(|m| format!("{}={}", m.member_id, canonical(&assignment[&m.member_id])))
                .collect::<Vec<_>>()
                .join(" ")
        };
        ours.push(format!(
            "{} | {}",
            render(assignor::range(&members, &counts)),
            render(assignor::round_robin(&members, &counts))
        ));
    }

    // Our encodings for Java to read, Java's for us.
    let subscription = Subscription {
        topics: vec!["orders".into(), "a".into()],
        user_data: Some(Bytes::from_static(&[1, 2, 0xff])),
        owned_partitions: [
            ("a".to_string(), vec![0, 3]),
            ("orders".to_string(), vec![1]),
        ]
        .into_iter()
        .collect(),
        generation_id: 7,
        rack_id: Some("rack-1".into()),
    };
    let assignment = Assignment {
        partitions: [
            ("a".to_string(), vec![0, 3]),
            ("orders".to_string(), vec![1, 2]),
        ]
        .into_iter()
        .collect(),
        user_data: Some(Bytes::from_static(&[9])),
    };
    let plain = Subscription::to_topics(&["orders"]);
    let cases = requests.len();
    requests.push(format!("sub {}", hex(&subscription.encode())));
    requests.push(format!("sub {}", hex(&plain.encode())));
    requests.push(format!("asg {}", hex(&assignment.encode())));
    requests.push(format!("asg {}", hex(&Assignment::default().encode())));
    requests.push("jsub orders,a 0102ff a:0,3;orders:1 7 rack-1".to_string());
    requests.push("jasg a:0,3;orders:1,2 09".to_string());

    let answers = java_assignors(&classpath, &requests).await?;
    for ((request, ours), java) in requests.iter().zip(&ours).zip(&answers[..cases]) {
        ensure!(ours == java, "{request}\n ours: {ours}\n java: {java}");
    }
    let extra = &answers[cases..];
    ensure!(
        extra[0] == "a,orders 0102ff a:0,3;orders:1 7 rack-1",
        "{}",
        extra[0]
    );
    ensure!(extra[1] == "orders -  -1 -", "{:?}", extra[1]);
    ensure!(extra[2] == "a:0,3;orders:1,2 09", "{}", extra[2]);
    ensure!(extra[3] == " -", "{:?}", extra[3]);
    // Java sorts the topics, as our encoding does: the bytes are the same.
    ensure!(extra[4] == hex(&subscription.encode()), "{}", extra[4]);
    ensure!(extra[5] == hex(&assignment.encode()), "{}", extra[5]);
    let java_subscription = Subscription::decode(&unhex(&extra[4])?).map_err(anyhow::Error::msg)?;
    let mut sorted = subscription.clone();
    sorted.topics.sort();
    ensure!(java_subscription == sorted, "{java_subscription:?}");
    let java_assignment = Assignment::decode(&unhex(&extra[5])?).map_err(anyhow::Error::msg)?;
    ensure!(java_assignment == assignment, "{java_assignment:?}");
    Ok(())
}

/// The answers that tell a member to rejoin or stop come back as matchable variants: a stale
/// generation, an unknown member, and a static member fenced by a new process with the same
/// `group.instance.id` (which takes its place without MEMBER_ID_REQUIRED).
#[tokio::test]
async fn rejoin_and_fencing_answers_are_distinct() -> anyhow::Result<()> {
    let Some(brokers) = event_testkit::test_server("EVENTBUS_TEST_KAFKA_BROKERS", "kafka")? else {
        return Ok(());
    };
    tokio::time::timeout(TEST_BOUND, fencing(&brokers))
        .await
        .with_context(|| format!("the test did not finish within {TEST_BOUND:?}"))?
}

async fn fencing(brokers: &str) -> anyhow::Result<()> {
    let servers: Vec<String> = brokers.split(',').map(|s| s.trim().to_string()).collect();
    let a = ControlClient::connect(&servers, &Security::default(), TIMEOUT).await?;
    let b = ControlClient::connect(&servers, &Security::default(), TIMEOUT).await?;
    let suffix = format!("{:016x}", fastrand::u64(..));
    let topic = format!("eventbus-fencing-{suffix}");
    let group = format!("eventbus-fencing-group-{suffix}");
    let instance = Some("instance-1");
    let static_join = |client: ControlClient| {
        let (group, topic) = (group.clone(), topic.clone());
        async move {
            client
                .join_group(
                    &group,
                    "",
                    instance,
                    SESSION_TIMEOUT,
                    REBALANCE_TIMEOUT,
                    &protocols(&topic),
                )
                .await
        }
    };

    let first = static_join(a.clone()).await?;
    ensure!(
        first.is_leader() && !first.member_id.is_empty(),
        "{first:?}"
    );
    ensure!(
        first.members[0].group_instance_id.as_deref() == instance,
        "{first:?}"
    );
    let assignments: Vec<(String, Bytes)> = vec![(
        first.member_id.clone(),
        Assignment {
            partitions: [(topic.clone(), vec![0])].into_iter().collect(),
            user_data: None,
        }
        .encode(),
    )];
    let bytes = a
        .sync_group(
            &group,
            first.generation_id,
            &first.member_id,
            instance,
            CONSUMER_PROTOCOL_TYPE,
            RANGE,
            &assignments,
        )
        .await?;
    ensure!(bytes == assignments[0].1, "{bytes:?}");
    a.heartbeat(&group, first.generation_id, &first.member_id, instance)
        .await?;

    let stale = a
        .heartbeat(&group, first.generation_id - 1, &first.member_id, instance)
        .await;
    ensure!(
        matches!(stale, Err(MembershipError::IllegalGeneration)),
        "{stale:?}"
    );
    let unknown = a
        .heartbeat(&group, first.generation_id, "nobody", None)
        .await;
    ensure!(
        matches!(unknown, Err(MembershipError::UnknownMemberId)),
        "{unknown:?}"
    );
    ensure!(unknown.is_err_and(|e| e.needs_rejoin()));

    // Another process with the same instance id takes the member's place.
    let second = static_join(b.clone()).await?;
    ensure!(second.member_id != first.member_id, "{second:?}");
    let fenced = a
        .heartbeat(&group, first.generation_id, &first.member_id, instance)
        .await;
    ensure!(
        matches!(fenced, Err(MembershipError::FencedInstanceId)),
        "{fenced:?}"
    );
    ensure!(fenced.is_err_and(|e| !e.needs_rejoin()));

    b.leave_group(&group, &second.member_id, instance).await?;
    let described = a.describe_groups(std::slice::from_ref(&group)).await?;
    ensure!(described[0].members.is_empty(), "{described:?}");
    Ok(())
}
