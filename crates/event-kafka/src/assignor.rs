//! The Java consumer's embedded protocol, so a Java consumer could share a group with ours
//! and Kafka's tools can read our members: the subscription a member sends in JoinGroup and
//! the assignment the leader sends in SyncGroup (kafka-protocol's
//! `ConsumerProtocolSubscription` and `ConsumerProtocolAssignment`, after the 2-byte version
//! the Java `ConsumerProtocol` writes first), and the standard `range` and `roundrobin`
//! assignors with the Java client's rules.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ConsumerProtocolAssignment, ConsumerProtocolSubscription, TopicName,
    consumer_protocol_assignment, consumer_protocol_subscription,
};
use kafka_protocol::protocol::{Decodable, Encodable, Message, StrBytes};

/// The name of the range assignor, as members offer it in JoinGroup.
pub(crate) const RANGE: &str = "range";
/// The name of the round-robin assignor.
pub(crate) const ROUND_ROBIN: &str = "roundrobin";

/// The version written: the highest kafka-protocol implements, as the Java client writes
/// its highest. Readers that know fewer versions read the fields they know (every version
/// only appends fields), as Java's `ConsumerProtocol` does.
const SUBSCRIPTION_VERSION: i16 = ConsumerProtocolSubscription::VERSIONS.max;
const ASSIGNMENT_VERSION: i16 = ConsumerProtocolAssignment::VERSIONS.max;

/// Partitions by topic, each list ascending.
pub(crate) type TopicPartitions = BTreeMap<String, Vec<i32>>;

/// A member's subscription: its JoinGroup metadata for every `consumer` protocol.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Subscription {
    pub(crate) topics: Vec<String>,
    pub(crate) user_data: Option<Bytes>,
    /// The partitions the member owned in the last generation (version 1 on; the
    /// cooperative assignors use them).
    pub(crate) owned_partitions: TopicPartitions,
    /// The generation of those partitions (version 2 on; -1: none).
    pub(crate) generation_id: i32,
    /// The member's rack (version 3 on).
    pub(crate) rack_id: Option<String>,
}

impl Subscription {
    /// A subscription to `topics`, with nothing owned.
    pub(crate) fn to_topics(topics: &[&str]) -> Self {
        Self {
            topics: topics.iter().map(|t| (*t).to_string()).collect(),
            generation_id: -1,
            ..Self::default()
        }
    }

    /// The bytes Java's `ConsumerProtocol.serializeSubscription` would write: topics sorted
    /// as Java sorts them.
    pub(crate) fn encode(&self) -> Bytes {
        let mut topics: Vec<&String> = self.topics.iter().collect();
        topics.sort_by(|a, b| a.encode_utf16().cmp(b.encode_utf16()));
        let message = ConsumerProtocolSubscription::default()
            .with_topics(topics.into_iter().map(|t| text(t)).collect())
            .with_user_data(self.user_data.clone())
            .with_owned_partitions(
                self.owned_partitions
                    .iter()
                    .map(|(topic, partitions)| {
                        consumer_protocol_subscription::TopicPartition::default()
                            .with_topic(TopicName(text(topic)))
                            .with_partitions(partitions.clone())
                    })
                    .collect(),
            )
            .with_generation_id(self.generation_id)
            .with_rack_id(self.rack_id.as_deref().map(text));
        versioned(&message, SUBSCRIPTION_VERSION)
    }

    /// Reads a subscription of any version, as Java's `ConsumerProtocol` does.
    ///
    /// # Errors
    /// A description of what is wrong with the bytes.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, String> {
        let (version, mut body) = version_of(bytes, SUBSCRIPTION_VERSION, "subscription")?;
        let message = ConsumerProtocolSubscription::decode(&mut body, version)
            .map_err(|e| format!("a consumer subscription v{version} that cannot be read: {e}"))?;
        Ok(Self {
            topics: message.topics.iter().map(ToString::to_string).collect(),
            user_data: message.user_data,
            owned_partitions: message
                .owned_partitions
                .into_iter()
                .map(|tp| (tp.topic.0.to_string(), tp.partitions))
                .collect(),
            generation_id: message.generation_id,
            rack_id: message.rack_id.map(|r| r.to_string()),
        })
    }
}

/// A member's assignment: what the leader sends for it in SyncGroup.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Assignment {
    pub(crate) partitions: TopicPartitions,
    pub(crate) user_data: Option<Bytes>,
}

impl Assignment {
    /// The bytes Java's `ConsumerProtocol.serializeAssignment` would write.
    pub(crate) fn encode(&self) -> Bytes {
        let message = ConsumerProtocolAssignment::default()
            .with_assigned_partitions(
                self.partitions
                    .iter()
                    .map(|(topic, partitions)| {
                        consumer_protocol_assignment::TopicPartition::default()
                            .with_topic(TopicName(text(topic)))
                            .with_partitions(partitions.clone())
                    })
                    .collect(),
            )
            .with_user_data(self.user_data.clone());
        versioned(&message, ASSIGNMENT_VERSION)
    }

    /// Reads an assignment of any version. Empty bytes (what the coordinator gives a member
    /// the leader assigned nothing) are an empty assignment.
    ///
    /// # Errors
    /// A description of what is wrong with the bytes.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, String> {
        if bytes.is_empty() {
            return Ok(Self::default());
        }
        let (version, mut body) = version_of(bytes, ASSIGNMENT_VERSION, "assignment")?;
        let message = ConsumerProtocolAssignment::decode(&mut body, version)
            .map_err(|e| format!("a consumer assignment v{version} that cannot be read: {e}"))?;
        let mut partitions = TopicPartitions::new();
        for tp in message.assigned_partitions {
            partitions
                .entry(tp.topic.0.to_string())
                .or_default()
                .extend(tp.partitions);
        }
        for list in partitions.values_mut() {
            list.sort_unstable();
        }
        Ok(Self {
            partitions,
            user_data: message.user_data,
        })
    }
}

fn text(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_string())
}

/// The version, then the message.
fn versioned<M: Encodable>(message: &M, version: i16) -> Bytes {
    let mut buf = BytesMut::with_capacity(64);
    buf.put_i16(version);
    message
        .encode(&mut buf, version)
        .expect("the consumer protocol messages encode every field at their own versions");
    buf.freeze()
}

/// The version at the start of `bytes`, capped at `highest` as Java caps it, and the rest.
fn version_of(bytes: &[u8], highest: i16, what: &str) -> Result<(i16, Bytes), String> {
    let mut buf = Bytes::copy_from_slice(bytes);
    if buf.remaining() < 2 {
        return Err(format!(
            "a consumer {what} of {} bytes, too short for its version",
            bytes.len()
        ));
    }
    let version = buf.get_i16();
    if version < 0 {
        return Err(format!("a consumer {what} of version {version}"));
    }
    Ok((version.min(highest), buf))
}

/// A member as the assignors see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AssignorMember {
    pub(crate) member_id: String,
    pub(crate) group_instance_id: Option<String>,
    pub(crate) topics: Vec<String>,
}

/// Java's `MemberInfo` order: static members first, by instance id; then the others by
/// member id. Strings compare as Java's `String.compareTo` (UTF-16 code units).
fn member_order(a: &AssignorMember, b: &AssignorMember) -> Ordering {
    let java = |x: &str, y: &str| x.encode_utf16().cmp(y.encode_utf16());
    match (&a.group_instance_id, &b.group_instance_id) {
        (Some(x), Some(y)) => java(x, y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => java(&a.member_id, &b.member_id),
    }
}

/// Every member with an empty assignment: Java assigns every member, even to nothing.
fn empty(members: &[AssignorMember]) -> BTreeMap<String, TopicPartitions> {
    members
        .iter()
        .map(|m| (m.member_id.clone(), TopicPartitions::new()))
        .collect()
}

/// Runs the assignor named `protocol` (`range` or `roundrobin`); `None` for another name.
/// `partitions_per_topic` gives each topic's partition count; subscribed topics missing
/// from it are not assigned, as in Java.
pub(crate) fn assign(
    protocol: &str,
    members: &[AssignorMember],
    partitions_per_topic: &BTreeMap<String, i32>,
) -> Option<BTreeMap<String, TopicPartitions>> {
    match protocol {
        RANGE => Some(range(members, partitions_per_topic)),
        ROUND_ROBIN => Some(round_robin(members, partitions_per_topic)),
        _ => None,
    }
}

/// Java's `RangeAssignor`: for each topic, its subscribers in member order each take a
/// contiguous range of partitions; the first `partitions % subscribers` take one more.
pub(crate) fn range(
    members: &[AssignorMember],
    partitions_per_topic: &BTreeMap<String, i32>,
) -> BTreeMap<String, TopicPartitions> {
    let mut assignment = empty(members);
    let mut subscribers: BTreeMap<&str, Vec<&AssignorMember>> = BTreeMap::new();
    for member in members {
        for topic in &member.topics {
            let list = subscribers.entry(topic.as_str()).or_default();
            if !list.iter().any(|m| m.member_id == member.member_id) {
                list.push(member);
            }
        }
    }
    for (topic, mut consumers) in subscribers {
        let Some(&count) = partitions_per_topic.get(topic) else {
            continue;
        };
        let count = count.max(0);
        consumers.sort_by(|a, b| member_order(a, b));
        let n = i32::try_from(consumers.len()).unwrap_or(i32::MAX);
        let per_consumer = count / n;
        let with_extra = count % n;
        for (i, consumer) in (0..).zip(consumers) {
            let start = per_consumer * i + i.min(with_extra);
            let length = per_consumer + i32::from(i < with_extra);
            if length > 0 {
                assignment
                    .entry(consumer.member_id.clone())
                    .or_default()
                    .insert(topic.to_string(), (start..start + length).collect());
            }
        }
    }
    assignment
}

/// Java's `RoundRobinAssignor`: every partition of every subscribed topic, by topic then
/// partition, dealt to the members in member order, skipping those not subscribed to the
/// partition's topic.
pub(crate) fn round_robin(
    members: &[AssignorMember],
    partitions_per_topic: &BTreeMap<String, i32>,
) -> BTreeMap<String, TopicPartitions> {
    let mut assignment = empty(members);
    let mut sorted: Vec<&AssignorMember> = members.iter().collect();
    sorted.sort_by(|a, b| member_order(a, b));
    // Java's topic set is a `TreeSet<String>`: UTF-16 order.
    let mut topics: Vec<&str> = members
        .iter()
        .flat_map(|m| m.topics.iter().map(String::as_str))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    topics.sort_by(|a, b| a.encode_utf16().cmp(b.encode_utf16()));
    let mut next = 0;
    for topic in topics {
        let Some(&count) = partitions_per_topic.get(topic) else {
            continue;
        };
        for partition in 0..count.max(0) {
            // Some member subscribes to the topic (it came from a subscription): the search
            // ends within one turn.
            while !sorted[next].topics.iter().any(|t| t == topic) {
                next = (next + 1) % sorted.len();
            }
            assignment
                .entry(sorted[next].member_id.clone())
                .or_default()
                .entry(topic.to_string())
                .or_default()
                .push(partition);
            next = (next + 1) % sorted.len();
        }
    }
    assignment
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, topics: &[&str]) -> AssignorMember {
        AssignorMember {
            member_id: id.to_string(),
            group_instance_id: None,
            topics: topics.iter().map(|t| (*t).to_string()).collect(),
        }
    }

    fn counts(topics: &[(&str, i32)]) -> BTreeMap<String, i32> {
        topics.iter().map(|(t, n)| ((*t).to_string(), *n)).collect()
    }

    /// One member's expected topics and partitions.
    type Expected<'a> = (&'a str, &'a [(&'a str, &'a [i32])]);

    /// Assignments by member, e.g. `[("c0", &[("t0", &[0, 1])])]`.
    fn expected(list: &[Expected<'_>]) -> BTreeMap<String, TopicPartitions> {
        list.iter()
            .map(|(member, topics)| {
                (
                    (*member).to_string(),
                    topics
                        .iter()
                        .map(|(t, p)| ((*t).to_string(), p.to_vec()))
                        .collect(),
                )
            })
            .collect()
    }

    #[test]
    fn range_three_members_two_topics_three_partitions() {
        let members = [
            member("c2", &["t0", "t1"]),
            member("c0", &["t0", "t1"]),
            member("c1", &["t0", "t1"]),
        ];
        let got = range(&members, &counts(&[("t0", 3), ("t1", 3)]));
        assert_eq!(
            got,
            expected(&[
                ("c0", &[("t0", &[0]), ("t1", &[0])]),
                ("c1", &[("t0", &[1]), ("t1", &[1])]),
                ("c2", &[("t0", &[2]), ("t1", &[2])]),
            ])
        );
    }

    #[test]
    fn range_javadoc_example_two_members() {
        // RangeAssignor's javadoc: C0 [t0p0, t0p1, t1p0, t1p1], C1 [t0p2, t1p2].
        let members = [member("C1", &["t0", "t1"]), member("C0", &["t0", "t1"])];
        let got = range(&members, &counts(&[("t0", 3), ("t1", 3)]));
        assert_eq!(
            got,
            expected(&[
                ("C0", &[("t0", &[0, 1]), ("t1", &[0, 1])]),
                ("C1", &[("t0", &[2]), ("t1", &[2])]),
            ])
        );
    }

    #[test]
    fn range_uneven_counts() {
        // 5 partitions, 3 members: 1 each, the first 2 get one more.
        let members = [
            member("a", &["t"]),
            member("b", &["t"]),
            member("c", &["t"]),
        ];
        assert_eq!(
            range(&members, &counts(&[("t", 5)])),
            expected(&[
                ("a", &[("t", &[0, 1])]),
                ("b", &[("t", &[2, 3])]),
                ("c", &[("t", &[4])]),
            ])
        );
        // More members than partitions: the last one gets nothing.
        assert_eq!(
            range(&members, &counts(&[("t", 2)])),
            expected(&[("a", &[("t", &[0])]), ("b", &[("t", &[1])]), ("c", &[])])
        );
        // Per topic, only its subscribers; member ids compare as strings ("c10" < "c2").
        let members = [
            member("c2", &["x", "y"]),
            member("c10", &["x"]),
            member("c3", &["y"]),
        ];
        assert_eq!(
            range(&members, &counts(&[("x", 3), ("y", 4)])),
            expected(&[
                ("c10", &[("x", &[0, 1])]),
                ("c2", &[("x", &[2]), ("y", &[0, 1])]),
                ("c3", &[("y", &[2, 3])]),
            ])
        );
    }

    #[test]
    fn round_robin_three_members_two_topics_three_partitions() {
        let members = [
            member("c1", &["t0", "t1"]),
            member("c2", &["t0", "t1"]),
            member("c0", &["t0", "t1"]),
        ];
        assert_eq!(
            round_robin(&members, &counts(&[("t0", 3), ("t1", 3)])),
            expected(&[
                ("c0", &[("t0", &[0]), ("t1", &[0])]),
                ("c1", &[("t0", &[1]), ("t1", &[1])]),
                ("c2", &[("t0", &[2]), ("t1", &[2])]),
            ])
        );
    }

    #[test]
    fn round_robin_javadoc_examples() {
        // RoundRobinAssignor's javadoc, same subscriptions: C0 [t0p0, t0p2, t1p1],
        // C1 [t0p1, t1p0, t1p2].
        let members = [member("C0", &["t0", "t1"]), member("C1", &["t0", "t1"])];
        assert_eq!(
            round_robin(&members, &counts(&[("t0", 3), ("t1", 3)])),
            expected(&[
                ("C0", &[("t0", &[0, 2]), ("t1", &[1])]),
                ("C1", &[("t0", &[1]), ("t1", &[0, 2])]),
            ])
        );
        // Different subscriptions: C0 [t0p0], C1 [t1p0], C2 [t1p1, t2p0, t2p1, t2p2].
        let members = [
            member("C2", &["t0", "t1", "t2"]),
            member("C0", &["t0"]),
            member("C1", &["t0", "t1"]),
        ];
        assert_eq!(
            round_robin(&members, &counts(&[("t0", 1), ("t1", 2), ("t2", 3)])),
            expected(&[
                ("C0", &[("t0", &[0])]),
                ("C1", &[("t1", &[0])]),
                ("C2", &[("t1", &[1]), ("t2", &[0, 1, 2])]),
            ])
        );
    }

    #[test]
    fn round_robin_uneven_and_unknown_topics() {
        // 5 partitions over 2 members; a topic without metadata is skipped.
        let members = [member("b", &["t", "gone"]), member("a", &["t"])];
        assert_eq!(
            round_robin(&members, &counts(&[("t", 5)])),
            expected(&[("a", &[("t", &[0, 2, 4])]), ("b", &[("t", &[1, 3])])])
        );
        assert_eq!(assign("cooperative-sticky", &members, &counts(&[])), None);
        assert_eq!(
            assign(ROUND_ROBIN, &members, &counts(&[("t", 5)])),
            Some(round_robin(&members, &counts(&[("t", 5)])))
        );
    }

    #[test]
    fn static_members_come_first_by_instance_id() {
        let mut members = [
            member("a", &["t"]),
            member("b", &["t"]),
            member("c", &["t"]),
        ];
        members[2].group_instance_id = Some("i1".into());
        members[1].group_instance_id = Some("i2".into());
        assert_eq!(
            range(&members, &counts(&[("t", 3)])),
            expected(&[
                ("c", &[("t", &[0])]),
                ("b", &[("t", &[1])]),
                ("a", &[("t", &[2])]),
            ])
        );
        assert_eq!(
            assign(RANGE, &members, &counts(&[("t", 3)])).map(|a| a.len()),
            Some(3)
        );
    }

    #[test]
    fn subscription_v0_bytes_are_javas() {
        // What Java's ConsumerProtocol writes at version 0 for topics [a, bc], no user data:
        // version (2 bytes), array length (4), each topic (2-byte length, bytes), user data
        // null (-1 as 4 bytes).
        let java = [
            0, 0, 0, 0, 0, 2, 0, 1, b'a', 0, 2, b'b', b'c', 0xff, 0xff, 0xff, 0xff,
        ];
        let read = Subscription::decode(&java).unwrap();
        assert_eq!(read.topics, ["a", "bc"]);
        assert_eq!(read.user_data, None);
        assert_eq!(read.generation_id, -1);
        // Ours: version 3, then the same fields and the later versions' ones.
        let ours = Subscription::to_topics(&["a", "bc"]).encode();
        assert_eq!(&ours[..2], &[0, 3]);
        assert_eq!(&ours[2..java.len()], &java[2..]);
        // owned partitions (empty array), generation -1, rack null.
        assert_eq!(
            &ours[java.len()..],
            &[0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]
        );
        assert_eq!(
            Subscription::decode(&ours).unwrap(),
            Subscription::to_topics(&["a", "bc"])
        );
    }

    #[test]
    fn newer_versions_are_read_as_the_highest_known() {
        let mut bytes = BytesMut::new();
        bytes.put_slice(&Subscription::to_topics(&["t"]).encode());
        bytes[1] = 9; // version 9: read as 3, the trailing fields ignored
        bytes.put_slice(&[1, 2, 3]);
        assert_eq!(Subscription::decode(&bytes).unwrap().topics, ["t"]);
        assert!(Subscription::decode(&[0]).is_err());
        assert!(Subscription::decode(&[0xff, 0xff]).is_err());
    }

    #[test]
    fn assignments_round_trip_in_javas_layout() {
        let assignment = Assignment {
            partitions: [("t".to_string(), vec![0, 2])].into_iter().collect(),
            user_data: None,
        };
        let bytes = assignment.encode();
        // version 3; one topic "t" with partitions [0, 2]; user data null.
        assert_eq!(
            &bytes[..],
            &[
                0, 3, 0, 0, 0, 1, 0, 1, b't', 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 2, 0xff, 0xff, 0xff,
                0xff
            ]
        );
        assert_eq!(Assignment::decode(&bytes).unwrap(), assignment);
        // Version 0 (old Java clients) reads the same.
        let mut v0 = bytes.to_vec();
        v0[1] = 0;
        assert_eq!(Assignment::decode(&v0).unwrap(), assignment);
        assert_eq!(Assignment::decode(&[]).unwrap(), Assignment::default());
        let s = Subscription {
            topics: vec!["x".into()],
            user_data: Some(Bytes::from_static(b"u")),
            owned_partitions: [("x".to_string(), vec![1])].into_iter().collect(),
            generation_id: 4,
            rack_id: Some("r1".into()),
        };
        assert_eq!(Subscription::decode(&s.encode()).unwrap(), s);
    }
}
