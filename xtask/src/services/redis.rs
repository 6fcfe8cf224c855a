//! A throwaway `redis-server` on a free loopback port, with its data in a fresh directory:
//! alone, or as one node of a Redis Cluster ([`super::redis_cluster`]).
//!
//! It runs with the append-only file fsynced on every write (`--appendfsync always`) and no
//! snapshots, so a server killed with SIGKILL and restarted by [`RedisServer::restart`] comes
//! back with every acknowledged write: what fault tests need.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};

use super::ports::{free_loopback_ports, is_port_taken, loopback};
use super::probe::redis_ping;
use super::process::{
    Lifetime, ServerProcess, find_program, install_with_apt, is_root, new_work_dir, remove_work_dir,
};
use super::state::Record;

const START_TIMEOUT: Duration = Duration::from_secs(10);
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Tries with a new port when the picked one was taken before the server could bind it.
const START_ATTEMPTS: usize = 3;
/// Where Debian and the usual installs put it, when it is not on `PATH`.
const SEARCH_DIRS: &[&str] = &["/usr/bin", "/usr/sbin", "/usr/local/bin"];
const NAME: &str = "redis-server";
/// Its command line always holds this, even after Redis rewrites its process title.
const MARKER: &str = "redis-server";

const HOW_TO_INSTALL: &str = "\
redis-server is needed for the Redis suites. Install it: `sudo apt-get install redis-server` \
(Debian, Ubuntu; `cargo xtask test` does this itself when run as root), `brew install redis` \
(macOS). Or run Redis with Docker (`docker compose -f docker/docker-compose.yml up -d redis`) \
and run the Redis tests by hand with EVENTBUS_TEST_REDIS_URL=redis://127.0.0.1:6379/0 \
(docs/testing.md)";

/// A `redis-server` that xtask started.
pub(crate) struct RedisServer {
    binary: PathBuf,
    port: u16,
    /// Its working directory: the append-only files and `redis.log`.
    dir: PathBuf,
    lifetime: Lifetime,
    process: ServerProcess,
    /// Whether dropping the handle stops the server and deletes `dir`.
    owned: bool,
    /// A node of a Redis Cluster (`--cluster-enabled yes`, see [`spawn`]).
    cluster: bool,
}

impl RedisServer {
    /// Finds `redis-server` (installing Debian's package when it is missing and xtask runs as
    /// root), starts it on a free port and waits until it answers `PING`.
    pub(crate) fn start(lifetime: Lifetime) -> anyhow::Result<Self> {
        let binary = find_or_install()?;
        let mut attempt = 1;
        loop {
            let port = free_loopback_ports(1)?[0];
            match Self::launch(binary.clone(), port, lifetime, false) {
                Err(e) if attempt < START_ATTEMPTS && is_port_taken(&e) => {
                    eprintln!(
                        "xtask: port {port} was taken before redis-server bound it; trying another"
                    );
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    /// Starts a node of a Redis Cluster on `port` (its cluster bus on `port + 10000`) in a
    /// fresh directory, and waits until it answers `PING`; it has no slots until the cluster
    /// is created.
    pub(super) fn start_node(binary: &Path, port: u16, lifetime: Lifetime) -> anyhow::Result<Self> {
        Self::launch(binary.to_path_buf(), port, lifetime, true)
    }

    fn launch(
        binary: PathBuf,
        port: u16,
        lifetime: Lifetime,
        cluster: bool,
    ) -> anyhow::Result<Self> {
        let dir = new_work_dir(if cluster { "redis-cluster" } else { "redis" })?;
        let process = match spawn(&binary, port, &dir, lifetime, cluster) {
            Ok(process) => process,
            Err(e) => {
                remove_work_dir(&dir);
                return Err(e);
            }
        };
        // From here on, dropping `server` (on any error below) stops it and removes `dir`.
        let mut server = RedisServer {
            binary,
            port,
            dir,
            lifetime,
            process,
            owned: true,
            cluster,
        };
        let took = server.wait_ready()?;
        eprintln!(
            "xtask: redis-server{} up on 127.0.0.1:{port} in {:.2}s (pid {}, files in {})",
            if cluster { " (cluster node)" } else { "" },
            took.as_secs_f64(),
            server.pid(),
            server.dir.display()
        );
        Ok(server)
    }

    /// `redis://127.0.0.1:<port>/0`.
    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    pub(crate) fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Its working directory: data, `redis.log`, and for a cluster node `nodes.conf`.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The `redis-server` program it runs, for tests that start servers of their own.
    pub(crate) fn binary(&self) -> &Path {
        &self.binary
    }

    pub(crate) fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    /// Kills the server with SIGKILL, as a crash would; its data stays for [`Self::restart`].
    pub(crate) fn kill(&mut self) -> anyhow::Result<()> {
        self.process.kill()
    }

    /// Stops the server if it runs (SIGTERM, then SIGKILL after a grace period) and starts it
    /// again on the same port with the same data directory; returns once it answers `PING`.
    pub(crate) fn restart(&mut self) -> anyhow::Result<()> {
        self.process.stop(STOP_GRACE)?;
        self.process = spawn(
            &self.binary,
            self.port,
            &self.dir,
            self.lifetime,
            self.cluster,
        )?;
        let took = self.wait_ready()?;
        eprintln!(
            "xtask: redis-server restarted on 127.0.0.1:{} in {:.2}s (pid {})",
            self.port,
            took.as_secs_f64(),
            self.pid()
        );
        Ok(())
    }

    /// Leaves the server running after this handle is gone (`cargo xtask services up`).
    pub(crate) fn detach(mut self) {
        self.owned = false;
    }

    /// Whether dropping this handle stops the server (it was started here, not adopted).
    pub(crate) fn is_owned(&self) -> bool {
        self.owned
    }

    /// What the state file needs to find the server again.
    pub(crate) fn record(&self) -> Record {
        let mut record = Record::default();
        record
            .set("pid", self.pid())
            .set("port", self.port)
            .set("dir", self.dir.display())
            .set("binary", self.binary.display());
        if self.cluster {
            record.set("cluster", "yes");
        }
        record
    }

    /// The detached server a state file record describes. Dropping it leaves it running.
    pub(crate) fn adopt(record: &Record) -> anyhow::Result<Self> {
        Ok(RedisServer {
            binary: record.get("binary")?.into(),
            port: record.parse("port")?,
            dir: record.get("dir")?.into(),
            lifetime: Lifetime::Detached,
            process: ServerProcess::adopt(NAME, MARKER, record.parse("pid")?),
            owned: false,
            cluster: record.get("cluster").is_ok_and(|v| v == "yes"),
        })
    }

    /// Stops the server and deletes its files (`cargo xtask services down`).
    pub(crate) fn shut_down(mut self) -> anyhow::Result<()> {
        self.process.stop(STOP_GRACE)?;
        remove_work_dir(&self.dir);
        Ok(())
    }

    fn log(&self) -> PathBuf {
        self.dir.join("redis.log")
    }

    fn wait_ready(&mut self) -> anyhow::Result<Duration> {
        let log = self.log();
        let addr = loopback(self.port);
        self.process.wait_ready(
            &format!("redis-server on {addr}"),
            &log,
            START_TIMEOUT,
            Duration::from_millis(50),
            || redis_ping(addr),
        )
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        if let Err(e) = self.process.stop(STOP_GRACE) {
            eprintln!("xtask: stopping redis-server: {e:#}");
        }
        remove_work_dir(&self.dir);
    }
}

/// Starts `redis-server`; as a cluster node (`cluster`), with:
///
/// - `--cluster-config-file nodes.conf` in its directory, so a node restarted there rejoins
///   with its identity (an old master comes back as a replica of the one that replaced it);
/// - `--cluster-node-timeout 2000`: a master is marked failed 2 s after it stops answering,
///   and its replica promoted about a second later;
/// - `--cluster-replica-validity-factor 0`: a replica always tries to fail over, however long
///   it was cut off from its master;
/// - `--repl-diskless-sync-delay 0`: a replica's full synchronisation starts at once, not
///   after 5 s;
/// - `cluster-require-full-coverage` left at `yes`: while a slot has no master every node
///   answers `CLUSTERDOWN`, as a production cluster does, and `cluster_state:ok` means every
///   slot is served.
///
/// Its cluster bus listens on `port + 10000` (Redis's default, so any Redis from 5.0 works).
fn spawn(
    binary: &Path,
    port: u16,
    dir: &Path,
    lifetime: Lifetime,
    cluster: bool,
) -> anyhow::Result<ServerProcess> {
    let mut command = Command::new(binary);
    if cluster {
        command
            .args(["--cluster-enabled", "yes"])
            .args(["--cluster-config-file", "nodes.conf"])
            .args(["--cluster-node-timeout", "2000"])
            .args(["--cluster-replica-validity-factor", "0"])
            .args(["--repl-diskless-sync-delay", "0"]);
    }
    command
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        // No snapshots; every write fsynced to the append-only file before the reply.
        .args([
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
        ])
        .arg("--dir")
        .arg(dir)
        .args(["--daemonize", "no"])
        .current_dir(dir);
    ServerProcess::spawn(NAME, MARKER, &mut command, &dir.join("redis.log"), lifetime)
}

/// `redis-server` from `PATH` or the usual directories; when missing and xtask runs as root,
/// Debian's package is installed first.
pub(super) fn find_or_install() -> anyhow::Result<PathBuf> {
    if let Some(found) = find_program("redis-server", SEARCH_DIRS) {
        return Ok(found);
    }
    if !is_root() {
        bail!("redis-server is not installed (looked on PATH and in /usr/bin). {HOW_TO_INSTALL}");
    }
    eprintln!(
        "xtask: redis-server is not installed; installing Debian's `redis-server` package (running as root)"
    );
    install_with_apt(&["redis-server"])
        .with_context(|| format!("installing redis-server failed. {HOW_TO_INSTALL}"))?;
    find_program("redis-server", SEARCH_DIRS).with_context(|| {
        format!("`apt-get install redis-server` succeeded but redis-server is still not found. {HOW_TO_INSTALL}")
    })
}

/// `redis-cli` beside `binary` (Debian puts both in `/usr/bin`), else on `PATH` or in the
/// usual directories; when missing and xtask runs as root, Debian's `redis-tools` package
/// (which has it) is installed first.
pub(super) fn find_or_install_cli(binary: &Path) -> anyhow::Result<PathBuf> {
    let beside = binary.parent().map(|dir| dir.join("redis-cli"));
    if let Some(found) = beside.filter(|cli| cli.is_file()) {
        return Ok(found);
    }
    if let Some(found) = find_program("redis-cli", SEARCH_DIRS) {
        return Ok(found);
    }
    let how = "redis-cli creates the Redis Cluster. Install it: `sudo apt-get install \
               redis-tools` (Debian, Ubuntu; `redis-server` depends on it), `brew install redis` \
               (macOS)";
    if !is_root() {
        bail!(
            "redis-cli is not installed (looked next to {} and on PATH). {how}",
            binary.display()
        );
    }
    eprintln!(
        "xtask: redis-cli is not installed; installing Debian's `redis-tools` package (running as root)"
    );
    install_with_apt(&["redis-tools"])
        .with_context(|| format!("installing redis-cli failed. {how}"))?;
    find_program("redis-cli", SEARCH_DIRS).with_context(|| {
        format!("`apt-get install redis-tools` succeeded but redis-cli is still not found. {how}")
    })
}
