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

/// A throwaway CA and a server certificate it signed, for `127.0.0.1` and `localhost`.
pub(crate) struct Certificates {
    pub(crate) ca: PathBuf,
    pub(crate) server_cert: PathBuf,
    pub(crate) server_key: PathBuf,
}

impl Certificates {
    pub(crate) fn create(openssl: &Path, dir: &Path) -> anyhow::Result<Self> {
        let certificates = Self {
            ca: dir.join("ca.crt"),
            server_cert: dir.join("server.crt"),
            server_key: dir.join("server.key"),
        };
        let (ca_key, csr, extensions) = (
            dir.join("ca.key"),
            dir.join("server.csr"),
            dir.join("server.ext"),
        );
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
        run(Command::new(openssl)
            .args(["req", "-x509", "-nodes", "-days", "1"])
            .args(ec)
            .args(["-subj", "/CN=eventbus test CA"])
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
            .arg("-keyout")
            .arg(&ca_key)
            .arg("-out")
            .arg(&certificates.ca))?;
        run(Command::new(openssl)
            .args(["req", "-new", "-nodes"])
            .args(ec)
            .args(["-subj", "/CN=localhost"])
            .arg("-keyout")
            .arg(&certificates.server_key)
            .arg("-out")
            .arg(&csr))?;
        std::fs::write(
            &extensions,
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n\
             basicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature\n\
             extendedKeyUsage=serverAuth\n",
        )?;
        run(Command::new(openssl)
            .args(["x509", "-req", "-days", "1", "-set_serial"])
            .arg(fastrand::u32(1..).to_string())
            .arg("-in")
            .arg(&csr)
            .arg("-CA")
            .arg(&certificates.ca)
            .arg("-CAkey")
            .arg(&ca_key)
            .arg("-extfile")
            .arg(&extensions)
            .arg("-out")
            .arg(&certificates.server_cert))?;
        Ok(certificates)
    }
}

fn run(command: &mut Command) -> anyhow::Result<()> {
    let output = command
        .output()
        .with_context(|| format!("cannot run {command:?}"))?;
    ensure!(
        output.status.success(),
        "{command:?} failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// A temporary directory, removed when dropped. Declare it before the server that uses it, so
/// the server is killed first.
pub(crate) struct Scratch(pub(crate) PathBuf);

impl Scratch {
    pub(crate) fn new(label: &str) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "eventbus-security-{label}-{}-{:016x}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
