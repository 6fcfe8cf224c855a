//! A real Redis Cluster of one test alone: `redis-server` nodes in cluster mode on free
//! loopback ports, each with its own directory, created with `redis-cli --cluster create`,
//! killed and restarted node by node, and removed on drop.
//!
//! Tests that kill nodes start one of these rather than touching the shared cluster of
//! `cargo xtask services up redis --cluster`, which other tests use at the same time.

mod nodes;
mod reshard;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};

use nodes::{
    ClusterNode, SLOTS, check, crc16, free_cluster_ports, parse_nodes, replicated, request,
};

/// How long [`RedisCluster::start`] and [`RedisCluster::restart`] wait for the cluster to be
/// whole: generous, for a busy two-core machine running other tests.
const START_DEADLINE: Duration = Duration::from_secs(60);
/// How long a node may take to answer `PING` after it is spawned.
const PING_DEADLINE: Duration = Duration::from_secs(20);
/// How often a wait looks again.
const POLL: Duration = Duration::from_millis(100);
/// New ports when a picked one was taken before its node bound it.
const START_ATTEMPTS: usize = 3;

/// A Redis Cluster on `127.0.0.1`, for one test: `masters` masters with
/// `replicas_per_master` replicas each, every node a `redis-server` child of this process.
///
/// Each node runs as
///
/// ```text
/// redis-server --port P --bind 127.0.0.1 --cluster-enabled yes
///     --cluster-config-file nodes.conf --cluster-node-timeout 2000
///     --cluster-replica-validity-factor 0 --repl-diskless-sync-delay 0
///     --appendonly yes --appendfsync always --save "" --dir D --logfile D/redis.log
/// ```
///
/// - every write is fsynced to the append-only file before the reply, so a node killed with
///   SIGKILL and [restarted](Self::restart) keeps what it acknowledged (replication to its
///   replicas stays asynchronous, as in production: use `WAIT` for that);
/// - a master is marked failed 2 s after it stops answering, and its replica is promoted
///   about a second later;
/// - a replica's full synchronisation starts at once rather than after Redis's default 5 s
///   (which waits for more replicas to share one transfer), at creation and after a restart;
/// - `cluster-replica-validity-factor 0`: a replica always tries to fail over, however long
///   it was cut off from its master (by default a replica disconnected for longer than ten
///   node timeouts refuses, which would leave slots without a master after a long test);
/// - `cluster-require-full-coverage` keeps its default, `yes`: while a slot has no master
///   (between a master's failure and its replica's promotion) every node answers
///   `CLUSTERDOWN`, as a production cluster with default settings does, so the tests see that
///   window; and `cluster_state:ok` then means every slot is served, which the waits here rely
///   on (with `no`, a node reports `ok` with slots missing).
///
/// The cluster bus of a node on port `P` listens on `P + 10000`, Redis's default, so that
/// any `redis-server` from 5.0 on works; both ports are picked free.
///
/// Dropping it kills every node and removes their directories.
pub struct RedisCluster {
    binary: PathBuf,
    cli: PathBuf,
    /// One directory for the whole cluster, with a subdirectory per node named after its port.
    root: PathBuf,
    nodes: Vec<Node>,
    replicas_per_master: usize,
    /// The masters at creation, in node order: the seeds of [`Self::url`].
    seeds: Vec<u16>,
}

struct Node {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl RedisCluster {
    /// Starts `masters` masters (at least 3, as `redis-cli --cluster create` requires) with
    /// `replicas_per_master` replicas each, from the `redis-server` at `binary` and the
    /// `redis-cli` beside it (else on `PATH`), and waits until the cluster is whole: every
    /// node says `cluster_state:ok` with all 16384 slots assigned and served, knows every
    /// other node, sees `masters` masters each with `replicas_per_master` replicas, and every
    /// replica's link to its master is up. At most a minute.
    ///
    /// # Errors
    /// When `redis-server` or `redis-cli` is missing (naming the Debian packages), a node does
    /// not start (with the end of its log), creating the cluster fails (with `redis-cli`'s
    /// output), or the cluster is not whole within the deadline (saying what was not).
    pub async fn start(
        binary: &Path,
        masters: usize,
        replicas_per_master: usize,
    ) -> anyhow::Result<Self> {
        ensure!(
            masters >= 3,
            "a Redis Cluster needs at least 3 masters, not {masters}"
        );
        ensure!(
            binary.is_file(),
            "{} does not exist: install redis-server (Debian's `redis-server` package: \
             `apt-get install -y redis-server`)",
            binary.display()
        );
        let cli = find_cli(binary)?;
        let mut attempt = 1;
        loop {
            match Self::launch(binary, &cli, masters, replicas_per_master).await {
                Err(e) if attempt < START_ATTEMPTS && format!("{e:#}").contains("in use") => {
                    eprintln!("a port was taken before a Redis node bound it; trying others");
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    async fn launch(
        binary: &Path,
        cli: &Path,
        masters: usize,
        replicas_per_master: usize,
    ) -> anyhow::Result<Self> {
        let count = masters * (1 + replicas_per_master);
        let root = std::env::temp_dir().join(format!(
            "eventbus-redis-cluster-{}-{:08x}",
            std::process::id(),
            fastrand::u32(..)
        ));
        // From here on, dropping `cluster` (on any error) kills the nodes and removes `root`.
        let mut cluster = RedisCluster {
            binary: binary.to_path_buf(),
            cli: cli.to_path_buf(),
            root: root.clone(),
            nodes: Vec::with_capacity(count),
            replicas_per_master,
            seeds: Vec::new(),
        };
        for port in free_cluster_ports(count)? {
            let dir = root.join(port.to_string());
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            cluster.nodes.push(Node {
                port,
                dir,
                child: None,
            });
        }
        for index in 0..count {
            cluster.spawn(index)?;
        }
        for index in 0..count {
            cluster.wait_answering(index).await?;
        }
        cluster.create().await?;
        let expected = Some((masters, replicas_per_master));
        cluster.wait_whole(expected, START_DEADLINE).await?;
        let masters_now = cluster.masters();
        cluster.seeds = cluster
            .ports()
            .into_iter()
            .filter(|p| masters_now.contains(p))
            .collect();
        Ok(cluster)
    }

    /// `redis-cluster://127.0.0.1:<port>,127.0.0.1:<port>,...`: the masters at creation as
    /// seed nodes (a client finds every other node from any of them, also after a failover).
    pub fn url(&self) -> String {
        let seeds: Vec<String> = self
            .seeds
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect();
        format!("redis-cluster://{}", seeds.join(","))
    }

    /// Every node's port, in the order they were created (running or not).
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// The ports of the masters serving slots now, ascending, as the first running node that
    /// answers `CLUSTER NODES` sees them (empty when none answers). A blocking call of a few
    /// milliseconds.
    pub fn masters(&self) -> Vec<u16> {
        let Some(view) = self.view() else {
            return Vec::new();
        };
        let mut masters: Vec<u16> = view
            .iter()
            .filter(|n| n.is_serving())
            .map(|n| n.port)
            .collect();
        masters.sort_unstable();
        masters
    }

    /// The port of the master serving `slot` now (see [`Self::masters`]), `None` when no
    /// running node answers or none serves it. Slots of keys: [`Self::key_slot`].
    pub fn master_of_slot(&self, slot: u16) -> Option<u16> {
        self.view()?
            .iter()
            .find(|n| n.is_serving() && n.serves(slot))
            .map(|n| n.port)
    }

    /// The hash slot of `key` (CRC16 of the key, or of its `{hash tag}`, modulo 16384), as
    /// Redis computes it.
    pub fn key_slot(key: &[u8]) -> u16 {
        let tagged = key
            .iter()
            .position(|&b| b == b'{')
            .and_then(|open| {
                let rest = &key[open + 1..];
                let close = rest.iter().position(|&b| b == b'}')?;
                (close > 0).then(|| &rest[..close])
            })
            .unwrap_or(key);
        crc16(tagged) % SLOTS as u16
    }

    /// Kills the node on `port` with SIGKILL, as a crash would; its directory (append-only
    /// file, `nodes.conf`) stays for [`Self::restart`]. Nothing happens when it is not
    /// running. Killing a master makes its replica take over about 3 s later
    /// ([`Self::wait_until_ok`] waits for that).
    ///
    /// # Panics
    /// When no node of the cluster has that port (a bug in the test).
    pub fn kill(&mut self, port: u16) {
        let index = self.index(port);
        if let Some(mut child) = self.nodes[index].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the node on `port` again (killing it first if it runs) with its directory and
    /// `nodes.conf`, so it rejoins the cluster (an old master comes back as a replica of the
    /// replica that took over), and waits until it answers `PING` and then until the cluster
    /// is whole again ([`Self::wait_until_ok`], a minute at most).
    ///
    /// # Errors
    /// When the node does not start or the cluster does not become whole.
    ///
    /// # Panics
    /// When no node of the cluster has that port.
    pub async fn restart(&mut self, port: u16) -> anyhow::Result<()> {
        self.kill(port);
        let index = self.index(port);
        self.spawn(index)?;
        self.wait_answering(index).await?;
        self.wait_until_ok(START_DEADLINE).await
    }

    /// Waits, for at most `deadline`, until the running nodes form a whole cluster: each says
    /// `cluster_state:ok` and `cluster_slots_ok:16384`, sees every running node and none of
    /// them failing, and sees all 16384 slots served by running masters (after a master was
    /// killed: once its replica is promoted); and every replica of a running master has its
    /// replication link up.
    ///
    /// # Errors
    /// When the deadline passes, saying what was still wrong.
    pub async fn wait_until_ok(&self, deadline: Duration) -> anyhow::Result<()> {
        self.wait_whole(None, deadline).await
    }

    /// Waits, for at most `deadline`, until every running master's running replicas have
    /// acknowledged all it has written (the `offset` of each in its master's
    /// `INFO replication` has reached the master's `master_repl_offset`): then a master
    /// killed loses nothing it acknowledged. Replication is asynchronous, and `WAIT` only
    /// waits for the writes of its own connection (a fresh `redis-cli` has none).
    ///
    /// # Errors
    /// When the deadline passes, saying which master's replicas lag.
    pub async fn wait_replicated(&self, deadline: Duration) -> anyhow::Result<()> {
        let started = tokio::time::Instant::now();
        let running = self.running();
        loop {
            let ports = running.clone();
            let verdict = tokio::task::spawn_blocking(move || replicated(&ports))
                .await
                .context("a replication check panicked")?;
            let Err(problem) = verdict else {
                return Ok(());
            };
            if started.elapsed() > deadline {
                bail!(
                    "the Redis Cluster's replicas did not catch up within {deadline:?}: {problem}"
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Runs `redis-cli -c -h 127.0.0.1 -p <port> <args>` (cluster mode: it follows `MOVED`
    /// redirections to the key's master) and returns its output, trimmed: `cli(port, &["SET",
    /// "k", "v"])`.
    ///
    /// # Errors
    /// When `redis-cli` fails or prints an error reply, with its output.
    pub async fn cli(&self, port: u16, args: &[&str]) -> anyhow::Result<String> {
        let mut command = tokio::process::Command::new(&self.cli);
        command
            .args(["-c", "-h", "127.0.0.1", "-p", &port.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let output = tokio::time::timeout(Duration::from_secs(30), command.output())
            .await
            .with_context(|| format!("redis-cli -p {port} {args:?} did not end within 30 s"))?
            .with_context(|| format!("running {}", self.cli.display()))?;
        let stdout = String::from_utf8_lossy(&output.stdout).trim().to_string();
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
        ensure!(
            output.status.success() && !is_error_reply(&stdout),
            "redis-cli -p {port} {args:?} failed ({}): {stdout} {stderr}",
            output.status
        );
        Ok(stdout)
    }

    /// The ports of the nodes that run (not killed).
    fn running(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.port)
            .collect()
    }

    fn index(&self, port: u16) -> usize {
        self.nodes
            .iter()
            .position(|n| n.port == port)
            .unwrap_or_else(|| panic!("no node of the Redis Cluster has port {port}"))
    }

    fn spawn(&mut self, index: usize) -> anyhow::Result<()> {
        let node = &mut self.nodes[index];
        let child = Command::new(&self.binary)
            .args(["--port", &node.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--cluster-enabled", "yes"])
            .args(["--cluster-config-file", "nodes.conf"])
            .args(["--cluster-node-timeout", "2000"])
            .args(["--cluster-replica-validity-factor", "0"])
            .args(["--repl-diskless-sync-delay", "0"])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .args(["--save", ""])
            .args(["--daemonize", "no"])
            .arg("--dir")
            .arg(&node.dir)
            .arg("--logfile")
            .arg(node.dir.join("redis.log"))
            .current_dir(&node.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        node.child = Some(child);
        Ok(())
    }

    /// Waits until the node answers `PING`, failing at once when it exits.
    async fn wait_answering(&mut self, index: usize) -> anyhow::Result<()> {
        let started = tokio::time::Instant::now();
        loop {
            let port = self.nodes[index].port;
            let answer = tokio::task::spawn_blocking(move || request(port, &["PING"]))
                .await
                .context("a PING task panicked")?;
            if answer.as_deref() == Ok("PONG") {
                return Ok(());
            }
            let node = &mut self.nodes[index];
            let exited = match &mut node.child {
                Some(child) => child.try_wait()?,
                None => bail!("node {port} is not running"),
            };
            if let Some(status) = exited {
                node.child = None;
                bail!(
                    "redis-server on port {port} exited during start-up ({status}); {}",
                    log_tail(&node.dir.join("redis.log"))
                );
            }
            if started.elapsed() > PING_DEADLINE {
                bail!(
                    "redis-server on port {port} did not answer PING within {PING_DEADLINE:?} \
                     (last: {answer:?}); {}",
                    log_tail(&node.dir.join("redis.log"))
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// `redis-cli --cluster create` of every node: the first `masters` become masters.
    async fn create(&self) -> anyhow::Result<()> {
        let mut command = tokio::process::Command::new(&self.cli);
        command
            .args(["--cluster", "create"])
            .args(self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)))
            .args([
                "--cluster-replicas",
                &self.replicas_per_master.to_string(),
                "--cluster-yes",
            ])
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let output = tokio::time::timeout(START_DEADLINE, command.output())
            .await
            .context("redis-cli --cluster create did not end within a minute")?
            .with_context(|| format!("running {}", self.cli.display()))?;
        ensure!(
            output.status.success(),
            "redis-cli --cluster create failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(())
    }

    /// Polls [`check`] (off the async threads: it does blocking I/O) until it passes.
    async fn wait_whole(
        &self,
        expected: Option<(usize, usize)>,
        deadline: Duration,
    ) -> anyhow::Result<()> {
        let started = tokio::time::Instant::now();
        let running = self.running();
        loop {
            let ports = running.clone();
            let verdict = tokio::task::spawn_blocking(move || check(&ports, expected))
                .await
                .context("a cluster check panicked")?;
            let Err(problem) = verdict else {
                return Ok(());
            };
            if started.elapsed() > deadline {
                let logs: Vec<String> = self
                    .nodes
                    .iter()
                    .map(|n| n.dir.join("redis.log").display().to_string())
                    .collect();
                bail!(
                    "the Redis Cluster on ports {:?} (running: {running:?}) was not whole within \
                     {deadline:?}: {problem}; logs: {}",
                    self.ports(),
                    logs.join(" ")
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// `CLUSTER NODES` of the first running node that answers.
    fn view(&self) -> Option<Vec<ClusterNode>> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .find_map(|n| request(n.port, &["CLUSTER", "NODES"]).ok())
            .map(|text| parse_nodes(&text))
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// `redis-cli` beside `redis-server` (Debian puts both in `/usr/bin`), else on `PATH`.
fn find_cli(binary: &Path) -> anyhow::Result<PathBuf> {
    let beside = binary.parent().map(|dir| dir.join("redis-cli"));
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|dir| dir.join("redis-cli"));
    beside
        .into_iter()
        .chain(on_path)
        .find(|candidate| candidate.is_file())
        .with_context(|| {
            format!(
                "redis-cli is not next to {} nor on PATH: install it (Debian's `redis-tools` \
                 package, which `redis-server` depends on: `apt-get install -y redis-tools`)",
                binary.display()
            )
        })
}

/// Whether `redis-cli`'s output is an error reply (`ERR ...`, `MOVED`, `CLUSTERDOWN ...`).
fn is_error_reply(output: &str) -> bool {
    let first = output.split_whitespace().next().unwrap_or_default();
    [
        "(error)",
        "ERR",
        "WRONGTYPE",
        "MOVED",
        "ASK",
        "CLUSTERDOWN",
        "TRYAGAIN",
        "NOAUTH",
    ]
    .contains(&first)
}

/// The last 30 lines of a node's log, for a start-up failure.
fn log_tail(log: &Path) -> String {
    match std::fs::read_to_string(log) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            format!(
                "end of {}:\n{}",
                log.display(),
                lines[lines.len().saturating_sub(30)..].join("\n")
            )
        }
        Err(e) => format!("no log at {} ({e})", log.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_slots_are_redis_ones() {
        assert_eq!(RedisCluster::key_slot(b"foo"), 12182);
        assert_eq!(RedisCluster::key_slot(b"bar"), 5061);
        assert_eq!(
            RedisCluster::key_slot(b"{user1000}.following"),
            RedisCluster::key_slot(b"{user1000}.followers")
        );
        assert_eq!(
            RedisCluster::key_slot(b"{user1000}.following"),
            RedisCluster::key_slot(b"user1000")
        );
        // An empty tag hashes the whole key.
        assert_eq!(RedisCluster::key_slot(b"{}foo"), crc16(b"{}foo") % 16384);
    }

    #[test]
    fn error_replies_are_recognised() {
        assert!(is_error_reply("ERR unknown command 'NOPE'"));
        assert!(is_error_reply("CLUSTERDOWN The cluster is down"));
        assert!(is_error_reply("(error) ERR wrong number of arguments"));
        assert!(!is_error_reply("OK"));
        assert!(!is_error_reply("ERRAND boy"));
        assert!(!is_error_reply(""));
    }
}
