//! Server processes: spawned with their output in a log file, stopped with SIGTERM and then
//! SIGKILL, recognised again by pid from the state file of `cargo xtask services up`.
//!
//! Signals go through `sh -c 'kill ...'` (a shell builtin, present even where procps is not),
//! so xtask needs neither `libc` nor `unsafe`.

use std::fs::OpenOptions;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Whether a server lives and dies with this xtask run, or outlives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lifetime {
    /// Stopped when its handle drops, on success, error or panic. It stays in xtask's process
    /// group, so Ctrl-C in the terminal reaches it too.
    Scoped,
    /// `cargo xtask services up`: in a process group of its own, so it outlives xtask and the
    /// terminal's Ctrl-C; `cargo xtask services down` stops it.
    Detached,
}

/// A running (or exited) server process.
pub(crate) struct ServerProcess {
    /// For messages: `redis-server`, `Kafka broker`.
    name: &'static str,
    /// A word of its command line, to tell it from an unrelated process that got the same pid.
    marker: &'static str,
    pid: u32,
    /// `None` when adopted from the state file: it is not our child.
    child: Option<Child>,
}

impl ServerProcess {
    /// Spawns `command` with standard input closed and its output appended to `log`.
    pub(crate) fn spawn(
        name: &'static str,
        marker: &'static str,
        command: &mut Command,
        log: &Path,
        lifetime: Lifetime,
    ) -> anyhow::Result<Self> {
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {name}'s log file {}", log.display()))?;
        let err = out.try_clone()?;
        command.stdin(Stdio::null()).stdout(out).stderr(err);
        if lifetime == Lifetime::Detached {
            command.process_group(0);
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting {name}: `{}`", display(command)))?;
        Ok(ServerProcess {
            name,
            marker,
            pid: child.id(),
            child: Some(child),
        })
    }

    /// The process `pid` that an earlier xtask started (from the state file).
    pub(crate) fn adopt(name: &'static str, marker: &'static str, pid: u32) -> Self {
        ServerProcess {
            name,
            marker,
            pid,
            child: None,
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether it is still running; `Err` holds how it ended, for messages.
    /// Waits until `probe` finds the server ready while this process runs, and checks it
    /// still runs afterwards (an answer from someone else's server on the port would not do).
    /// A failure carries the tail of the server's `log`.
    pub(crate) fn wait_ready(
        &mut self,
        what: &str,
        log: &std::path::Path,
        timeout: std::time::Duration,
        interval: std::time::Duration,
        mut probe: impl FnMut() -> super::ports::Probe,
    ) -> anyhow::Result<std::time::Duration> {
        let waited = super::ports::wait_until_ready(what, timeout, interval, || {
            if let Err(how) = self.status() {
                anyhow::bail!("{what} exited during start-up ({how})");
            }
            Ok(probe())
        });
        let waited = waited.and_then(|took| match self.status() {
            Ok(()) => Ok(took),
            Err(how) => anyhow::bail!("{what} exited right after answering ({how})"),
        });
        waited.map_err(|e| anyhow::anyhow!("{e:#}; {}", log_tail(log, 50)))
    }

    pub(crate) fn status(&mut self) -> Result<(), String> {
        match &mut self.child {
            Some(child) => match child.try_wait() {
                Ok(None) => Ok(()),
                Ok(Some(status)) => Err(status.to_string()),
                Err(e) => Err(format!("unknown state ({e})")),
            },
            None if is_alive(self.pid, self.marker) => Ok(()),
            None => Err("not running".to_string()),
        }
    }

    pub(crate) fn is_running(&mut self) -> bool {
        self.status().is_ok()
    }

    /// Asks it to shut down (SIGTERM), waits up to `grace`, then kills it.
    pub(crate) fn stop(&mut self, grace: Duration) -> anyhow::Result<()> {
        if !self.is_running() {
            return Ok(());
        }
        signal(self.pid, "TERM")?;
        if self.wait_for_exit(grace) {
            return Ok(());
        }
        eprintln!(
            "xtask: {} (pid {}) still runs {}s after SIGTERM; killing it",
            self.name,
            self.pid,
            grace.as_secs()
        );
        self.kill()
    }

    /// Kills it outright (SIGKILL), as a crash would, and waits until it is gone.
    pub(crate) fn kill(&mut self) -> anyhow::Result<()> {
        if !self.is_running() {
            return Ok(());
        }
        signal(self.pid, "KILL")?;
        if self.wait_for_exit(Duration::from_secs(10)) {
            Ok(())
        } else {
            bail!(
                "{} (pid {}) is still there 10s after SIGKILL",
                self.name,
                self.pid
            )
        }
    }

    fn wait_for_exit(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if !self.is_running() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn signal(pid: u32, signal: &str) -> anyhow::Result<()> {
    // Both are ours: a number and a fixed signal name, so the script cannot be injected into.
    let status = Command::new("sh")
        .args(["-c", &format!("kill -s {signal} {pid}")])
        .stderr(Stdio::null())
        .status()
        .context("running `sh -c kill` to signal a server")?;
    // Failure means it exited meanwhile; the caller looks again.
    let _ = status;
    Ok(())
}

/// Whether `pid` is a live (not zombie) process whose command line contains `marker`.
fn is_alive(pid: u32, marker: &str) -> bool {
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    let Ok(stat) = std::fs::read_to_string(proc_dir.join("stat")) else {
        return false;
    };
    // The state letter follows the command name, which is in parentheses and may hold spaces.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    if matches!(state, None | Some("Z" | "X")) {
        return false;
    }
    std::fs::read(proc_dir.join("cmdline"))
        .map(|cmdline| String::from_utf8_lossy(&cmdline).replace('\0', " "))
        .is_ok_and(|cmdline| cmdline.contains(marker))
}

/// The command as one would type it (for messages).
pub(crate) fn display(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|a| {
            let a = a.to_string_lossy();
            if a.is_empty() || a.contains([' ', '*', '"']) {
                format!("'{a}'")
            } else {
                a.into_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The last `lines` lines of a log file, for a start-up failure's message.
pub(crate) fn log_tail(log: &Path, lines: usize) -> String {
    match std::fs::read(log) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            let tail = all[all.len().saturating_sub(lines)..].join("\n");
            format!(
                "last {} lines of {}:\n{tail}",
                lines.min(all.len()),
                log.display()
            )
        }
        Err(e) => format!("(no log: reading {} failed: {e})", log.display()),
    }
}

/// A new, empty directory for one server's files: `$TMPDIR/eventbus-xtask-<service>-<unique>`.
pub(crate) fn new_work_dir(service: &str) -> anyhow::Result<PathBuf> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!(
        "eventbus-xtask-{service}-{}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Removes a server's directory; a failure is reported, not fatal (it is in the temp dir).
pub(crate) fn remove_work_dir(dir: &Path) {
    if let Err(e) = std::fs::remove_dir_all(dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        eprintln!("xtask: could not remove {}: {e}", dir.display());
    }
}

/// Finds `program` on `PATH`, then in `extra_dirs`.
pub(crate) fn find_program(program: &str, extra_dirs: &[&str]) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(extra_dirs.iter().map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|candidate| {
            candidate
                .metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Whether xtask runs as root (effective uid 0), so it may install packages.
pub(crate) fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let uids = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
            Some(uids.split_whitespace().nth(1)? == "0")
        })
        .unwrap_or(false)
}

/// Installs Debian's `packages` with `apt-get` (after `apt-get update`); the caller checked
/// that xtask runs as root.
pub(crate) fn install_with_apt(packages: &[&str]) -> anyhow::Result<()> {
    let apt = |args: &[&str]| {
        let mut command = Command::new("apt-get");
        command.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        command
    };
    crate::shell::run_to_stderr("apt-get update", &mut apt(&["update"]))?;
    let mut install = apt(&["install", "-y", "--no-install-recommends"]);
    install.args(packages);
    crate::shell::run_to_stderr(
        &format!("apt-get install {}", packages.join(" ")),
        &mut install,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::ports::{Probe, wait_until_ready};
    use super::*;

    #[test]
    fn a_spawned_process_is_seen_running_then_stopped() {
        let dir = new_work_dir("process-test").unwrap();
        let log = dir.join("out.log");
        let mut process = ServerProcess::spawn(
            "sleeper",
            "sleep",
            Command::new("sh").args(["-c", "echo hello; exec sleep 30"]),
            &log,
            Lifetime::Scoped,
        )
        .unwrap();
        // Wait until the shell has written and become `sleep`, so that neither the check of
        // its command line nor the SIGTERM lands in the middle of its `exec`.
        let cmdline = format!("/proc/{}/cmdline", process.pid());
        wait_until_ready(
            "sleeper",
            Duration::from_secs(10),
            Duration::from_millis(10),
            || {
                let execed = std::fs::read(&cmdline).is_ok_and(|c| c == b"sleep\x0030\0");
                Ok(if execed && log_tail(&log, 1).ends_with("hello") {
                    Probe::Ready
                } else {
                    Probe::NotYet("not yet sleeping".into())
                })
            },
        )
        .unwrap();
        assert!(process.is_running());
        let mut adopted = ServerProcess::adopt("sleeper", "sleep", process.pid());
        assert!(adopted.is_running());
        assert!(!ServerProcess::adopt("sleeper", "no-such-marker", process.pid()).is_running());
        process.stop(Duration::from_secs(10)).unwrap();
        assert!(process.status().unwrap_err().contains("signal"));
        remove_work_dir(&dir);
        assert!(!dir.exists());
    }

    #[test]
    fn programs_are_found_on_path_and_commands_display_quoted() {
        assert!(find_program("sh", &[]).is_some());
        assert!(find_program("no-such-program-xtask", &["/nonexistent"]).is_none());
        let mut command = Command::new("redis-server");
        command.args(["--save", "", "--dir", "/tmp/a b"]);
        assert_eq!(display(&command), "redis-server --save '' --dir '/tmp/a b'");
    }
}
