//! The harness of the security tests: finding `redis-server` and `openssl`, private servers
//! killed on drop, throwaway certificates and scratch directories.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

use crate::USER;

/// The programs the tests run.
pub(crate) struct Tools {
    pub(crate) redis_server: PathBuf,
    pub(crate) openssl: Option<PathBuf>,
}

/// Finds `redis-server` (and `openssl` when `need_openssl`); `None` means skip the test, and an
/// error means they are missing although `EVENTBUS_REQUIRE_INTEGRATION=1` asks for them.
pub(crate) fn tools(need_openssl: bool) -> anyhow::Result<Option<Tools>> {
    let redis_server = match std::env::var_os("EVENTBUS_TEST_REDIS_SERVER") {
        Some(path) if !path.is_empty() => {
            let path = PathBuf::from(path);
            ensure!(
                path.is_file(),
                "EVENTBUS_TEST_REDIS_SERVER={} is not a file: point it at a redis-server binary",
                path.display()
            );
            Some(path)
        }
        _ => on_path("redis-server"),
    };
    let openssl = on_path("openssl");
    let mut missing = Vec::new();
    if redis_server.is_none() {
        missing.push("redis-server (on PATH or in EVENTBUS_TEST_REDIS_SERVER)");
    }
    if need_openssl && openssl.is_none() {
        missing.push("openssl (on PATH)");
    }
    match redis_server {
        Some(redis_server) if missing.is_empty() => Ok(Some(Tools {
            redis_server,
            openssl,
        })),
        _ if event_testkit::integration_required() => bail!(
            "{} not found, and EVENTBUS_REQUIRE_INTEGRATION=1 requires the Redis security tests: \
             install what is missing (Debian/Ubuntu: `sudo apt-get install redis-server openssl`; macOS: \
             `brew install redis openssl`) or set EVENTBUS_TEST_REDIS_SERVER to a redis-server \
             built with TLS",
            missing.join(" and ")
        ),
        _ => {
            eprintln!(
                "SKIPPED: {} not found (Debian/Ubuntu: `apt-get install redis-server openssl`)",
                missing.join(" and ")
            );
            Ok(None)
        }
    }
}

fn on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// A private `redis-server`, killed when dropped (also when a test fails).
pub(crate) struct RedisServer {
    child: Child,
    pub(crate) port: u16,
    output: [PathBuf; 2],
}

impl RedisServer {
    /// Starts `binary` on a free loopback port with `args(port)` added, and waits until it
    /// accepts connections. `args` must listen on the port it is given.
    pub(crate) fn start(
        binary: &Path,
        dir: &Path,
        args: impl Fn(u16) -> Vec<String>,
    ) -> anyhow::Result<Self> {
        // Another process may take the free port before the server binds it: try another.
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            let output = [
                dir.join(format!("redis-{port}.log")),
                dir.join(format!("redis-{port}.stderr")),
            ];
            let child = Command::new(binary)
                .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(dir)
                .arg("--logfile")
                .arg(&output[0])
                .args(args(port))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(File::create(&output[1])?)
                .spawn()
                .with_context(|| format!("cannot start {}", binary.display()))?;
            let mut server = Self {
                child,
                port,
                output,
            };
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let text = server.output();
                if text.contains("Ready to accept connections") {
                    return Ok(server);
                }
                if let Some(status) = server.child.try_wait()? {
                    if text.contains("Address already in use") {
                        break;
                    }
                    bail!("redis-server exited ({status}) before accepting connections:\n{text}");
                }
                ensure!(
                    Instant::now() < deadline,
                    "redis-server did not accept connections within 10 s:\n{text}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        bail!("redis-server found no free port in 5 attempts")
    }

    /// What the server logged so far.
    fn output(&self) -> String {
        self.output
            .iter()
            .filter_map(|path| std::fs::read_to_string(path).ok())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Server arguments that switch the `default` user off and allow only [`USER`] with `password`.
pub(crate) fn acl_args(password: &str) -> Vec<String> {
    ["--user", "default", "off", "--user", USER, "on"]
        .into_iter()
        .map(String::from)
        .chain([format!(">{password}")])
        .chain(["~*", "&*", "+@all"].map(String::from))
        .collect()
}

pub(crate) use event_testkit::tls::{Certificates, Scratch};
