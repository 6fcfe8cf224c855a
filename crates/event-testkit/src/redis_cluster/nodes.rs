//! The nodes of a Redis Cluster on the wire: free ports for them, one RESP request to one,
//! what `CLUSTER NODES` says, and the checks that the nodes form a whole cluster and that
//! replicas have caught up; and Redis's key hash.
//!
//! Standard library and `anyhow` only: `xtask` compiles this same file for its
//! `redis-cluster` service (`#[path]` in `xtask/src/services/redis_cluster.rs`), so the tests'
//! clusters and xtask's are checked by one copy.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use anyhow::{Context as _, ensure};

/// The hash slots of a Redis Cluster.
pub(super) const SLOTS: usize = 16384;
/// Connecting to a node, and each read or write of one request.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// Redis's cluster bus listens on the client port plus this (`redis-server` before 7.0 has
/// no `cluster-port` setting to choose it).
const BUS_PORT_OFFSET: u16 = 10_000;

/// `count` client ports on 127.0.0.1, each at most 55535 and with its cluster bus port (plus
/// 10000) free too. All listeners are held until every port is picked, so no two overlap.
pub(super) fn free_cluster_ports(count: usize) -> anyhow::Result<Vec<u16>> {
    let mut held: Vec<TcpListener> = Vec::new();
    let mut ports = Vec::with_capacity(count);
    for _ in 0..count * 200 {
        if ports.len() == count {
            break;
        }
        let listener = TcpListener::bind(("127.0.0.1", 0)).context("binding 127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let Some(bus) = port.checked_add(BUS_PORT_OFFSET) else {
            continue;
        };
        if let Ok(bus_listener) = TcpListener::bind(("127.0.0.1", bus)) {
            held.push(listener);
            held.push(bus_listener);
            ports.push(port);
        }
    }
    ensure!(
        ports.len() == count,
        "found only {} of {count} free loopback ports whose port + 10000 is free too",
        ports.len()
    );
    Ok(ports)
}

/// One request to the node on `port`, in RESP, with short timeouts: the reply as text
/// (a status, an integer or a bulk string), `Err` for an error reply or an I/O failure.
pub(super) fn request(port: u16, args: &[&str]) -> Result<String, String> {
    let exchange = || -> std::io::Result<Result<String, String>> {
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        let mut stream = TcpStream::connect_timeout(&address, IO_TIMEOUT)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        let mut message = format!("*{}\r\n", args.len());
        for arg in args {
            message.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        stream.write_all(message.as_bytes())?;
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end_matches(['\r', '\n']);
        let (kind, rest) = line.split_at(line.len().min(1));
        Ok(match kind {
            "+" | ":" => Ok(rest.to_string()),
            "-" => Err(rest.to_string()),
            "$" => match rest.parse::<i64>() {
                Ok(length) if length >= 0 => {
                    let mut body = vec![0; length as usize + 2];
                    reader.read_exact(&mut body)?;
                    body.truncate(length as usize);
                    Ok(String::from_utf8_lossy(&body).into_owned())
                }
                _ => Err("a nil reply".to_string()),
            },
            _ => Err(format!("an unexpected reply {line:?}")),
        })
    };
    match exchange() {
        Ok(reply) => reply.map_err(|e| format!("port {port}: {e}")),
        Err(e) => Err(format!("port {port}: {e}")),
    }
}

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ClusterNode {
    id: String,
    pub(super) port: u16,
    flags: Vec<String>,
    /// The id of its master, for a replica.
    master: Option<String>,
    /// Slot ranges it serves, inclusive.
    ranges: Vec<(u16, u16)>,
    slots: usize,
    connected: bool,
}

impl ClusterNode {
    fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    fn is_master(&self) -> bool {
        self.has_flag("master")
    }

    fn is_replica(&self) -> bool {
        self.has_flag("slave")
    }

    /// Failed, or suspected of it (`fail?`) by this node.
    fn is_failing(&self) -> bool {
        self.has_flag("fail") || self.has_flag("fail?")
    }

    /// A master that serves slots and is not failing.
    pub(super) fn is_serving(&self) -> bool {
        self.is_master() && !self.is_failing() && self.slots > 0
    }

    pub(super) fn serves(&self, slot: u16) -> bool {
        self.ranges
            .iter()
            .any(|&(first, last)| (first..=last).contains(&slot))
    }
}

/// What xtask's `redis-cluster` service shows of a node (it compiles this file too).
#[allow(dead_code)]
impl ClusterNode {
    /// Its node id.
    pub(super) fn id(&self) -> &str {
        &self.id
    }

    /// The id of its master, for a replica.
    pub(super) fn master_id(&self) -> Option<&str> {
        self.master.as_deref()
    }

    /// A master, whether it serves slots or not.
    pub(super) fn is_a_master(&self) -> bool {
        self.is_master()
    }

    /// Failed, or suspected of it, by the node that answered.
    pub(super) fn is_down(&self) -> bool {
        self.is_failing()
    }

    /// The slots it serves as `CLUSTER NODES` lists them: `0-5460 5461`.
    pub(super) fn slot_text(&self) -> String {
        self.ranges
            .iter()
            .map(|&(a, b)| {
                if a == b {
                    a.to_string()
                } else {
                    format!("{a}-{b}")
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Reads `CLUSTER NODES`: `<id> <ip:port@cport[,hostname]> <flags> <master> <ping-sent>
/// <pong-recv> <config-epoch> <link-state> <slot> <slot> ...`, where a slot is `n` or `a-b`
/// (slots being imported or migrated, `[n->-id]`, are skipped).
pub(super) fn parse_nodes(text: &str) -> Vec<ClusterNode> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 8 {
                return None;
            }
            let port = fields[1]
                .split(['@', ','])
                .next()?
                .rsplit_once(':')?
                .1
                .parse()
                .ok()?;
            let ranges: Vec<(u16, u16)> = fields[8..]
                .iter()
                .filter(|slot| !slot.starts_with('['))
                .filter_map(|slot| match slot.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => slot.parse().ok().map(|s| (s, s)),
                })
                .collect();
            Some(ClusterNode {
                id: fields[0].to_string(),
                port,
                flags: fields[2].split(',').map(str::to_string).collect(),
                master: (fields[3] != "-").then(|| fields[3].to_string()),
                slots: ranges
                    .iter()
                    .map(|&(a, b)| usize::from(b.saturating_sub(a)) + 1)
                    .sum(),
                ranges,
                connected: fields[7] == "connected",
            })
        })
        .collect()
}

/// Whether the nodes on `running` form a whole cluster (see
/// `RedisCluster::wait_until_ok`); with `expected` `(masters, replicas_per_master)`, also
/// that shape. `Err` says the first thing that is not right yet.
pub(super) fn check(running: &[u16], expected: Option<(usize, usize)>) -> Result<(), String> {
    let mut replicas_to_check = Vec::new();
    for &port in running {
        let info = request(port, &["CLUSTER", "INFO"])?;
        for wanted in ["cluster_state:ok", &format!("cluster_slots_ok:{SLOTS}")] {
            if !info.lines().any(|l| l.trim() == wanted) {
                return Err(format!("node {port} does not say {wanted}"));
            }
        }
        let view = parse_nodes(&request(port, &["CLUSTER", "NODES"])?);
        for other in running {
            match view.iter().find(|n| n.port == *other) {
                None => return Err(format!("node {port} does not know node {other}")),
                Some(n) if n.is_failing() => {
                    return Err(format!("node {port} sees node {other} as failing"));
                }
                Some(n) if !n.connected && n.port != port => {
                    return Err(format!("node {port} has no link to node {other}"));
                }
                Some(_) => {}
            }
        }
        let served: usize = view
            .iter()
            .filter(|n| n.is_master() && running.contains(&n.port))
            .map(|n| n.slots)
            .sum();
        if served != SLOTS {
            return Err(format!(
                "node {port} sees {served} of {SLOTS} slots served by running masters"
            ));
        }
        if let Some((masters, per_master)) = expected {
            let serving: Vec<&ClusterNode> = view
                .iter()
                .filter(|n| n.is_master() && n.slots > 0)
                .collect();
            if serving.len() != masters {
                return Err(format!(
                    "node {port} sees {} masters with slots, not {masters}",
                    serving.len()
                ));
            }
            for master in serving {
                let replicas = view
                    .iter()
                    .filter(|n| n.is_replica() && n.master.as_deref() == Some(&master.id))
                    .count();
                if replicas != per_master {
                    return Err(format!(
                        "node {port} sees {replicas} replicas of master {}, not {per_master}",
                        master.port
                    ));
                }
            }
        }
        let me = view.iter().find(|n| n.has_flag("myself"));
        if let Some(me) = me.filter(|n| n.is_replica()) {
            let master_runs = view
                .iter()
                .find(|n| Some(&n.id) == me.master.as_ref())
                .is_some_and(|m| running.contains(&m.port));
            if master_runs {
                replicas_to_check.push(port);
            }
        }
    }
    for port in replicas_to_check {
        let info = request(port, &["INFO", "replication"])?;
        if !info.lines().any(|l| l.trim() == "master_link_status:up") {
            return Err(format!(
                "replica {port}'s replication link to its master is not up"
            ));
        }
    }
    Ok(())
}

/// Whether every master among `running` has each of its running replicas online and caught
/// up with its `master_repl_offset`; `Err` names the first that is not.
pub(super) fn replicated(running: &[u16]) -> Result<(), String> {
    for &port in running {
        let info = request(port, &["INFO", "replication"])?;
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.trim().strip_prefix(name)?.strip_prefix(':'))
                .map(str::to_string)
        };
        if field("role").as_deref() != Some("master") {
            continue;
        }
        let written: u64 = field("master_repl_offset")
            .and_then(|o| o.parse().ok())
            .ok_or_else(|| format!("node {port}: no master_repl_offset"))?;
        // `slave0:ip=127.0.0.1,port=7004,state=online,offset=1234,lag=0`
        for replica in info.lines().filter(|l| l.starts_with("slave")) {
            let Some((_, fields)) = replica.trim().split_once(':') else {
                continue;
            };
            let value = |name: &str| {
                fields
                    .split(',')
                    .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))
            };
            let Some(replica_port) = value("port").and_then(|p| p.parse::<u16>().ok()) else {
                continue;
            };
            if !running.contains(&replica_port) {
                continue;
            }
            let acked: u64 = value("offset").and_then(|o| o.parse().ok()).unwrap_or(0);
            if value("state") != Some("online") || acked < written {
                return Err(format!(
                    "replica {replica_port} of master {port} is at {replica:?}, the master at \
                     offset {written}"
                ));
            }
        }
    }
    Ok(())
}

/// CRC16-CCITT (XMODEM), Redis Cluster's key hash.
pub(super) fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in bytes {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_hash_is_crc16_xmodem() {
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(crc16(b""), 0);
    }

    #[test]
    fn cluster_nodes_lines_are_parsed() {
        let text = "\
07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@31004,host slave e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected
67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 127.0.0.1:30002@31002 master - 0 1426238316232 2 connected 5461-10922
292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 127.0.0.1:30003@31003 master - 0 1426238318243 3 connected 10923-16383 [42->-abc]
e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:30001@31001 myself,master - 0 0 1 connected 0-5459 5460
824fe116063bc5fcf9f4ffd895bc17aee7731ac3 127.0.0.1:30006@31006 master,fail - 1426238316232 1426238316232 5 disconnected
";
        let nodes = parse_nodes(text);
        assert_eq!(nodes.len(), 5);
        assert_eq!(nodes[0].port, 30004);
        assert!(nodes[0].is_replica());
        assert_eq!(
            nodes[0].master.as_deref(),
            Some("e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca")
        );
        assert_eq!(nodes[1].slots, 5462);
        assert_eq!(nodes[2].slots, 5461);
        assert_eq!(nodes[3].slots, 5461);
        assert!(nodes[3].serves(5460) && nodes[3].serves(0) && !nodes[3].serves(5461));
        assert!(nodes[3].has_flag("myself"));
        assert!(nodes[4].is_failing() && !nodes[4].connected && nodes[4].slots == 0);
        assert_eq!(nodes.iter().map(|n| n.slots).sum::<usize>(), SLOTS);
    }

    #[test]
    fn cluster_ports_leave_room_for_the_bus() {
        let ports = free_cluster_ports(4).unwrap();
        assert_eq!(ports.len(), 4);
        for &port in &ports {
            assert!(port <= u16::MAX - BUS_PORT_OFFSET);
            assert!(!ports.contains(&(port + BUS_PORT_OFFSET)));
        }
    }

    #[test]
    fn a_node_that_does_not_answer_is_reported() {
        let port = free_cluster_ports(1).unwrap()[0];
        assert!(
            request(port, &["PING"])
                .unwrap_err()
                .contains(&port.to_string())
        );
        assert!(check(&[port], None).is_err());
        assert!(replicated(&[port]).is_err());
    }
}
