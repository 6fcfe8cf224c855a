//! A throwaway PostgreSQL server on a free loopback port: a fresh cluster made with `initdb`
//! under the xtask cache, run by Debian's `postgres` binary (the newest version found in
//! `/usr/lib/postgresql/<version>/bin`).
//!
//! PostgreSQL refuses to run as root. When xtask runs as root, `initdb`, `postgres` and
//! `pg_ctl` run as the `postgres` system user that Debian's package creates (created here when
//! missing), and the cluster's directory is handed to that user; otherwise they run as the
//! current user.
//!
//! The cluster trusts local connections (it listens on 127.0.0.1 only) for the role
//! `eventbus`, and runs with `fsync=off`: a server killed with SIGKILL keeps every committed
//! transaction (the WAL is written before a commit returns), only a machine crash could lose
//! them, which tests do not do.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

use super::cache_dir;
use super::ports::{Probe, free_loopback_ports, is_port_taken};
use super::process::{
    Lifetime, ServerProcess, display, install_with_apt, is_root, remove_work_dir,
};
use super::state::Record;

const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
const START_ATTEMPTS: usize = 3;
/// Where Debian puts each major version's programs: `<dir>/<version>/bin`.
const DEBIAN_DIR: &str = "/usr/lib/postgresql";
/// The system user that runs the server when xtask runs as root.
const SYSTEM_USER: &str = "postgres";
/// The database role the tests connect as (a superuser, trusted on loopback).
const ROLE: &str = "eventbus";
const NAME: &str = "postgres";
/// The postmaster's command line holds its program's path, `.../bin/postgres`.
const MARKER: &str = "bin/postgres";

const HOW_TO_INSTALL: &str = "\
PostgreSQL is needed for the outbox suite. Install it: `sudo apt-get install postgresql` \
(Debian, Ubuntu; `cargo xtask test` does this itself when run as root), `brew install \
postgresql` (macOS). Or run it with Docker (`docker compose -f docker/docker-compose.yml \
--profile postgres up -d postgres`) and run the outbox tests by hand with \
EVENTBUS_TEST_POSTGRES_URL=postgres://eventbus:eventbus@127.0.0.1:5432/eventbus \
(docs/testing.md)";

/// The operating-system identity the server runs under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct RunAs {
    uid: u32,
    gid: u32,
}

/// A PostgreSQL server that xtask started.
pub(crate) struct PostgresServer {
    /// `.../bin`, with `initdb`, `postgres`, `pg_ctl` and `pg_isready`.
    bin_dir: PathBuf,
    port: u16,
    /// `postgres.log` and the cluster in `data/`; its sockets too.
    dir: PathBuf,
    run_as: Option<RunAs>,
    lifetime: Lifetime,
    process: ServerProcess,
    /// Whether dropping the handle stops the server and deletes `dir`.
    owned: bool,
}

impl PostgresServer {
    /// Finds PostgreSQL (installing Debian's package when it is missing and xtask runs as
    /// root), makes a fresh cluster, starts it on a free port and waits until it accepts
    /// connections.
    pub(crate) fn start(lifetime: Lifetime) -> anyhow::Result<Self> {
        let bin_dir = find_or_install()?;
        let run_as = if is_root() {
            Some(system_user()?)
        } else {
            None
        };
        let dir = new_cluster_dir(run_as)?;
        if let Err(e) = init_cluster(&bin_dir, &dir, run_as) {
            remove_work_dir(&dir);
            return Err(e);
        }
        let mut attempt = 1;
        loop {
            let port = free_loopback_ports(1)?[0];
            match Self::launch(&bin_dir, port, &dir, run_as, lifetime) {
                Err(e) if attempt < START_ATTEMPTS && is_port_taken(&e) => {
                    eprintln!(
                        "xtask: port {port} was taken before postgres bound it; trying another"
                    );
                    attempt += 1;
                }
                Err(e) => {
                    remove_work_dir(&dir);
                    return Err(e);
                }
                Ok(server) => return Ok(server),
            }
        }
    }

    fn launch(
        bin_dir: &Path,
        port: u16,
        dir: &Path,
        run_as: Option<RunAs>,
        lifetime: Lifetime,
    ) -> anyhow::Result<Self> {
        let process = spawn(bin_dir, port, dir, run_as, lifetime)?;
        let mut server = PostgresServer {
            bin_dir: bin_dir.to_path_buf(),
            port,
            dir: dir.to_path_buf(),
            run_as,
            lifetime,
            process,
            // Not yet: a failed start must leave `dir` for the next attempt's port.
            owned: false,
        };
        if let Err(e) = server.wait_ready() {
            let _ = server.process.kill();
            return Err(e);
        }
        server.owned = true;
        eprintln!(
            "xtask: postgres up on 127.0.0.1:{port} (pid {}, files in {})",
            server.pid(),
            server.dir.display()
        );
        Ok(server)
    }

    /// `postgres://eventbus@127.0.0.1:<port>/postgres`.
    pub(crate) fn url(&self) -> String {
        format!("postgres://{ROLE}@127.0.0.1:{}/postgres", self.port)
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// `.../bin`, with `initdb`, `postgres`, `pg_ctl` and `pg_isready`.
    pub(crate) fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    pub(crate) fn pid(&self) -> u32 {
        self.process.pid()
    }

    pub(crate) fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    /// Kills the postmaster with SIGKILL, as a crash would; its backends notice and exit,
    /// and the data stays for [`Self::restart`], which recovers from the WAL.
    pub(crate) fn kill(&mut self) -> anyhow::Result<()> {
        self.process.kill()
    }

    /// Stops the server if it runs and starts it again on the same port with the same data;
    /// returns once it accepts connections.
    ///
    /// After a kill, the postmaster's lock file is left behind and may name a pid that is
    /// gone or a zombie (which PostgreSQL takes for a running server): such a file is
    /// removed. Its backends exit when they notice it died; until they have, PostgreSQL
    /// refuses to start ("pre-existing shared memory block is still in use"), so a start that
    /// fails that way is tried again, for up to [`START_TIMEOUT`].
    pub(crate) fn restart(&mut self) -> anyhow::Result<()> {
        self.stop()?;
        let deadline = std::time::Instant::now() + START_TIMEOUT;
        loop {
            self.remove_stale_lock_files();
            self.process = spawn(
                &self.bin_dir,
                self.port,
                &self.dir,
                self.run_as,
                self.lifetime,
            )?;
            match self.wait_ready() {
                Ok(_) => break,
                Err(e)
                    if std::time::Instant::now() < deadline && is_left_over(&format!("{e:#}")) =>
                {
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => return Err(e),
            }
        }
        eprintln!(
            "xtask: postgres restarted on 127.0.0.1:{} (pid {})",
            self.port,
            self.pid()
        );
        Ok(())
    }

    /// Leaves the server running after this handle is gone (`cargo xtask services up`).
    pub(crate) fn detach(mut self) {
        self.owned = false;
    }

    /// What the state file needs to find the server again.
    pub(crate) fn record(&self) -> Record {
        let mut record = Record::default();
        record
            .set("pid", self.pid())
            .set("port", self.port)
            .set("dir", self.dir.display())
            .set("bin_dir", self.bin_dir.display());
        if let Some(run_as) = self.run_as {
            record.set("uid", run_as.uid).set("gid", run_as.gid);
        }
        record
    }

    /// The detached server a state file record describes. Dropping it leaves it running.
    pub(crate) fn adopt(record: &Record) -> anyhow::Result<Self> {
        let run_as = match (record.parse("uid"), record.parse("gid")) {
            (Ok(uid), Ok(gid)) => Some(RunAs { uid, gid }),
            _ => None,
        };
        Ok(PostgresServer {
            bin_dir: record.get("bin_dir")?.into(),
            port: record.parse("port")?,
            dir: record.get("dir")?.into(),
            run_as,
            lifetime: Lifetime::Detached,
            process: ServerProcess::adopt(NAME, MARKER, record.parse("pid")?),
            owned: false,
        })
    }

    /// Stops the server and deletes its files (`cargo xtask services down`).
    pub(crate) fn shut_down(mut self) -> anyhow::Result<()> {
        self.stop()?;
        remove_work_dir(&self.dir);
        Ok(())
    }

    /// A fast shutdown (`pg_ctl stop -m fast`: open sessions are ended, unlike the smart
    /// shutdown that SIGTERM asks for), then SIGTERM and SIGKILL if it still runs.
    fn stop(&mut self) -> anyhow::Result<()> {
        if !self.process.is_running() {
            return Ok(());
        }
        let mut pg_ctl = Command::new(self.bin_dir.join("pg_ctl"));
        pg_ctl
            .arg("stop")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "fast", "-w", "-t"])
            .arg(STOP_TIMEOUT.as_secs().to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        run_as_user(&mut pg_ctl, self.run_as);
        if let Err(e) = pg_ctl.status() {
            eprintln!("xtask: `pg_ctl stop` failed to run ({e}); signalling postgres instead");
        }
        self.process.stop(STOP_TIMEOUT)
    }

    /// Removes the lock files (`postmaster.pid`, the socket's `.lock`) whose pid is not a
    /// live postmaster.
    fn remove_stale_lock_files(&self) {
        let locks = [
            self.dir.join("data").join("postmaster.pid"),
            self.dir.join(format!(".s.PGSQL.{}.lock", self.port)),
        ];
        for lock in locks {
            let Ok(text) = std::fs::read_to_string(&lock) else {
                continue;
            };
            let pid = text
                .lines()
                .next()
                .and_then(|l| l.trim().parse::<u32>().ok());
            let alive = pid.is_some_and(|pid| ServerProcess::adopt(NAME, MARKER, pid).is_running());
            if !alive && let Err(e) = std::fs::remove_file(&lock) {
                eprintln!("xtask: could not remove the stale {}: {e}", lock.display());
            }
        }
    }

    fn wait_ready(&mut self) -> anyhow::Result<Duration> {
        let log = self.dir.join("postgres.log");
        let mut is_ready = Command::new(self.bin_dir.join("pg_isready"));
        is_ready
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", ROLE, "-d", "postgres", "-t", "2"]);
        self.process.wait_ready(
            &format!("postgres on 127.0.0.1:{}", self.port),
            &log,
            START_TIMEOUT,
            Duration::from_millis(100),
            || match is_ready.output() {
                Ok(out) if out.status.success() => Probe::Ready,
                Ok(out) => Probe::NotYet(String::from_utf8_lossy(&out.stdout).trim().to_string()),
                Err(e) => Probe::NotYet(format!("running pg_isready: {e}")),
            },
        )
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        if let Err(e) = self.stop() {
            eprintln!("xtask: stopping postgres: {e:#}");
        }
        remove_work_dir(&self.dir);
    }
}

/// Whether a start failed on what a killed server left: its backends still attached to the
/// shared memory, or its lock files.
fn is_left_over(error: &str) -> bool {
    error.contains("still in use") || error.contains("Is another postmaster")
}

/// Runs `command` as `run_as` (from root: supplementary groups are dropped too).
fn run_as_user(command: &mut Command, run_as: Option<RunAs>) {
    if let Some(RunAs { uid, gid }) = run_as {
        command.gid(gid).uid(uid);
    }
}

/// A new directory under the xtask cache, owned by the server's user.
fn new_cluster_dir(run_as: Option<RunAs>) -> anyhow::Result<PathBuf> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir = cache_dir().join(format!("postgres-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    if let Some(RunAs { uid, gid }) = run_as {
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
            .with_context(|| format!("handing {} to uid {uid}", dir.display()))?;
    }
    Ok(dir)
}

/// `initdb` of a cluster in `dir/data` with the role [`ROLE`], trusted, in UTF-8.
fn init_cluster(bin_dir: &Path, dir: &Path, run_as: Option<RunAs>) -> anyhow::Result<()> {
    let mut initdb = Command::new(bin_dir.join("initdb"));
    initdb
        .arg("-D")
        .arg(dir.join("data"))
        .args([
            "-U",
            ROLE,
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ])
        .current_dir(dir);
    run_as_user(&mut initdb, run_as);
    let out = initdb
        .output()
        .with_context(|| format!("running `{}`", display(&initdb)))?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}):\n{}{}",
            display(&initdb),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Starts the postmaster on `port`, on loopback only, with its sockets in `dir`.
fn spawn(
    bin_dir: &Path,
    port: u16,
    dir: &Path,
    run_as: Option<RunAs>,
    lifetime: Lifetime,
) -> anyhow::Result<ServerProcess> {
    let log = dir.join("postgres.log");
    let mut command = Command::new(bin_dir.join("postgres"));
    command
        .arg("-D")
        .arg(dir.join("data"))
        .args(["-p", &port.to_string()])
        .args(["-c", "listen_addresses=127.0.0.1"])
        .arg("-c")
        .arg(format!("unix_socket_directories={}", dir.display()))
        // Test speed: no fsync (see the module docs), and room for many pools at once.
        .args(["-c", "fsync=off", "-c", "max_connections=300"])
        .current_dir(dir);
    run_as_user(&mut command, run_as);
    // A port taken meanwhile ("could not bind ...: Address already in use") shows in the
    // log, whose tail the start-up error carries for `is_port_taken`.
    ServerProcess::spawn(NAME, MARKER, &mut command, &log, lifetime)
}

/// The `bin` directory of the newest PostgreSQL in `/usr/lib/postgresql`, else the directory
/// of `pg_ctl` on `PATH`; when missing and xtask runs as root, Debian's package is installed
/// first.
fn find_or_install() -> anyhow::Result<PathBuf> {
    if let Some(found) = find_bin_dir() {
        return Ok(found);
    }
    if !is_root() {
        bail!(
            "PostgreSQL is not installed (looked in {DEBIAN_DIR}/<version>/bin and on PATH). {HOW_TO_INSTALL}"
        );
    }
    eprintln!(
        "xtask: PostgreSQL is not installed; installing Debian's `postgresql` package (running as root)"
    );
    install_with_apt(&["postgresql"])
        .with_context(|| format!("installing postgresql failed. {HOW_TO_INSTALL}"))?;
    find_bin_dir().with_context(|| {
        format!(
            "`apt-get install postgresql` succeeded but initdb is still not found. {HOW_TO_INSTALL}"
        )
    })
}

fn find_bin_dir() -> Option<PathBuf> {
    let has_programs = |dir: &Path| {
        ["initdb", "postgres", "pg_ctl", "pg_isready"]
            .iter()
            .all(|p| dir.join(p).is_file())
    };
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(DEBIAN_DIR)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, bin)| has_programs(bin))
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    super::process::find_program("pg_ctl", &[])
        .and_then(|pg_ctl| pg_ctl.parent().map(Path::to_path_buf))
        .filter(|dir| has_programs(dir))
}

/// The `postgres` system user's ids, from `/etc/passwd`; created (as a system user with a
/// group of its own) when missing.
fn system_user() -> anyhow::Result<RunAs> {
    if let Some(found) = lookup_user(SYSTEM_USER) {
        return Ok(found);
    }
    eprintln!("xtask: no `{SYSTEM_USER}` user to run PostgreSQL as; creating it");
    let mut useradd = Command::new("useradd");
    useradd.args(["--system", "--user-group", "--no-create-home", "--shell"]);
    useradd.args(["/usr/sbin/nologin", SYSTEM_USER]);
    crate::shell::run_to_stderr("useradd postgres", &mut useradd)?;
    lookup_user(SYSTEM_USER).with_context(|| {
        format!("`useradd {SYSTEM_USER}` succeeded but the user is not in /etc/passwd")
    })
}

fn lookup_user(name: &str) -> Option<RunAs> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    parse_passwd(&passwd, name)
}

fn parse_passwd(passwd: &str, name: &str) -> Option<RunAs> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != name {
            return None;
        }
        let _password = fields.next()?;
        Some(RunAs {
            uid: fields.next()?.parse().ok()?,
            gid: fields.next()?.parse().ok()?,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_read_from_passwd_lines() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\n\
                      postgres:x:101:104:PostgreSQL administrator,,,:/var/lib/postgresql:/bin/bash\n";
        assert_eq!(
            parse_passwd(passwd, "postgres"),
            Some(RunAs { uid: 101, gid: 104 })
        );
        assert_eq!(parse_passwd(passwd, "post"), None);
        assert_eq!(parse_passwd("postgres:x:bad:1:::\n", "postgres"), None);
    }

    #[test]
    fn a_record_round_trips() {
        let mut record = Record::default();
        record
            .set("pid", 7)
            .set("port", 5999)
            .set("dir", "/tmp/pg")
            .set("bin_dir", "/usr/lib/postgresql/15/bin")
            .set("uid", 101)
            .set("gid", 104);
        let server = PostgresServer::adopt(&record).unwrap();
        assert_eq!(server.record(), record);
        assert_eq!(server.url(), "postgres://eventbus@127.0.0.1:5999/postgres");
        assert_eq!(server.run_as, Some(RunAs { uid: 101, gid: 104 }));
    }
}
