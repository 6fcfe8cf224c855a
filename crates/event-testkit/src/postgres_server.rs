//! [`PostgresServer`]: a PostgreSQL server of a test's own, which the test can crash and start
//! again on the same port and data, from the programs in `EVENTBUS_TEST_POSTGRES_BIN`.
//!
//! PostgreSQL refuses to run as root: as root, the server runs as the `postgres` system user
//! (Debian's package creates it), and its directory is handed to that user.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// How long a start may take on a loaded machine.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// A PostgreSQL server on a free loopback port, in a scratch directory deleted on drop, with
/// the role `eventbus` trusted and `fsync=off` (a crash of the server, not of the machine,
/// keeps every commit: the WAL is written before a commit returns).
pub struct PostgresServer {
    bin_dir: PathBuf,
    dir: PathBuf,
    port: u16,
    run_as: Option<(u32, u32)>,
    child: Option<Child>,
}

impl PostgresServer {
    /// Makes a fresh cluster with the programs of `bin_dir` and starts it.
    ///
    /// # Errors
    /// When `initdb` or the server fail, or the server does not accept connections within two
    /// minutes.
    pub fn start(bin_dir: &Path) -> anyhow::Result<Self> {
        let run_as = system_user()?;
        let dir = std::env::temp_dir().join(format!(
            "eventbus-postgres-{}-{:016x}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir)?;
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
                .with_context(|| format!("handing {} to the postgres user", dir.display()))?;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut server = Self {
            bin_dir: bin_dir.to_path_buf(),
            dir,
            port,
            run_as,
            child: None,
        };
        let mut initdb = server.command("initdb");
        initdb.arg("-D").arg(server.dir.join("data")).args([
            "-U",
            "eventbus",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ]);
        let out = initdb.output().context("running initdb")?;
        if !out.status.success() {
            bail!(
                "initdb failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        server.start_again()?;
        Ok(server)
    }

    /// `postgres://eventbus@127.0.0.1:{port}/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://eventbus@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server as a crash would: an immediate shutdown (`SIGQUIT`), which ends every
    /// session at once, writes no checkpoint, and leaves the next start to recover from the WAL.
    ///
    /// # Errors
    /// When the signal cannot be sent.
    pub fn crash(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let status = Command::new("kill")
            .args(["-QUIT", &child.id().to_string()])
            .status()
            .context("running kill")?;
        if !status.success() {
            child.kill()?;
        }
        child.wait()?;
        Ok(())
    }

    /// Starts the server (again) on the same port and data, and waits until it accepts
    /// connections.
    ///
    /// # Errors
    /// When it does not start within two minutes.
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("postgres.log"))?;
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::fs::chown(self.dir.join("postgres.log"), Some(uid), Some(gid))?;
        }
        let mut postgres = self.command("postgres");
        postgres
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", self.dir.display()))
            .args(["-c", "fsync=off", "-c", "max_connections=100"])
            .stdout(Stdio::null())
            .stderr(log);
        self.child = Some(postgres.spawn().context("starting postgres")?);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let ready = Command::new(self.bin_dir.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q"])
                .status()
                .context("running pg_isready")?;
            if ready.success() {
                return Ok(());
            }
            if let Some(child) = &mut self.child
                && let Some(status) = child.try_wait()?
            {
                bail!(
                    "postgres exited ({status}) while starting; its log:\n{}",
                    self.log_tail()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "postgres did not accept connections within {START_TIMEOUT:?}; its log:\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin_dir.join(program));
        command.current_dir(&self.dir);
        if let Some((uid, gid)) = self.run_as {
            command.gid(gid).uid(uid);
        }
        command
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        let _ = self.crash();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The `postgres` user's ids when this process runs as root, else `None` (the server runs as
/// the current user).
fn system_user() -> anyhow::Result<Option<(u32, u32)>> {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .context("running id")?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Ok(None);
    }
    let passwd = std::fs::read_to_string("/etc/passwd")?;
    let entry = passwd
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.first() == Some(&"postgres") && fields.len() > 3)
                .then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
                .flatten()
        })
        .context(
            "running as root, PostgreSQL needs the `postgres` system user, which Debian's \
             `postgresql` package creates (`cargo xtask services up postgres` installs it)",
        )?;
    Ok(Some(entry))
}
