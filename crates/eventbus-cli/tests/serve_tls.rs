//! `eventbus serve` with TLS (`EVENT_API_TLS_CERT`, `EVENT_API_TLS_KEY`), run as a real
//! process on the in-memory bus: one variable without the other is refused naming both, bad
//! files are refused naming the file, and with both it says `https://`, does not warn about
//! plaintext beyond loopback, answers `curl` (when installed) and stops cleanly on SIGTERM.
//!
//! Without `openssl` the tests that need a certificate are skipped, unless
//! `EVENTBUS_REQUIRE_INTEGRATION=1`.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{Context as _, bail, ensure};

const TOKEN: &str = "admin-token-for-the-tls-serve-test";

fn eventbus(vars: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_eventbus"));
    command.env_clear();
    if let Some(path) = std::env::var_os("PATH") {
        command.env("PATH", path);
    }
    let tokens = format!("admin:{TOKEN}");
    command
        .env("EVENT_API_TOKENS", tokens)
        .envs(vars.iter().copied())
        .arg("serve");
    command
}

fn run(vars: &[(&str, &str)]) -> anyhow::Result<Output> {
    Ok(eventbus(vars).stdin(Stdio::null()).output()?)
}

fn on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// A self-signed certificate for `127.0.0.1` and its key in a scratch directory, or `None`
/// to skip when `openssl` is missing (an error when `EVENTBUS_REQUIRE_INTEGRATION=1`).
struct Certificate {
    dir: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl Certificate {
    fn create(label: &str) -> anyhow::Result<Option<Self>> {
        let Some(openssl) = on_path("openssl") else {
            if event_testkit::integration_required() {
                bail!(
                    "openssl (on PATH) not found, and EVENTBUS_REQUIRE_INTEGRATION=1 requires the \
                     TLS tests of `eventbus serve`: install it (Debian/Ubuntu: \
                     `sudo apt-get install openssl`; macOS: `brew install openssl`)"
                );
            }
            eprintln!("SKIPPED: openssl not found (Debian/Ubuntu: `apt-get install openssl`)");
            return Ok(None);
        };
        let dir =
            std::env::temp_dir().join(format!("eventbus-cli-tls-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let certificate = Self {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            dir,
        };
        let output = Command::new(openssl)
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
            .args(["-subj", "/CN=localhost"])
            .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
            .arg("-keyout")
            .arg(&certificate.key)
            .arg("-out")
            .arg(&certificate.cert)
            .output()?;
        ensure!(
            output.status.success(),
            "openssl failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(Some(certificate))
    }
}

impl Drop for Certificate {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 temporary path")
}

#[test]
fn one_variable_without_the_other_or_a_bad_file_is_refused() -> anyhow::Result<()> {
    for (set, unset) in [
        ("EVENT_API_TLS_CERT", "EVENT_API_TLS_KEY"),
        ("EVENT_API_TLS_KEY", "EVENT_API_TLS_CERT"),
    ] {
        let out = run(&[
            (set, "/nowhere/file.pem"),
            ("EVENT_API_ADDR", "127.0.0.1:0"),
        ])?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{stderr}");
        assert!(
            stderr.contains(&format!("{unset} is not valid: it is unset while {set}=")),
            "{stderr}"
        );
        assert!(stderr.contains("set both EVENT_API_TLS_CERT"), "{stderr}");
    }
    let missing = std::env::temp_dir().join("eventbus-cli-tls-no-such-file.pem");
    let out = run(&[
        ("EVENT_API_TLS_CERT", path(&missing)),
        ("EVENT_API_TLS_KEY", path(&missing)),
        ("EVENT_API_ADDR", "127.0.0.1:0"),
    ])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "EVENT_API_TLS_CERT is not valid: {}: cannot be read",
            missing.display()
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("serving the"), "{stderr}");
    Ok(())
}

#[test]
fn serve_over_tls_says_https_and_does_not_warn_beyond_loopback() -> anyhow::Result<()> {
    let Some(certificate) = Certificate::create("serve")? else {
        return Ok(());
    };
    let mut child = eventbus(&[
        ("EVENT_API_TLS_CERT", path(&certificate.cert)),
        ("EVENT_API_TLS_KEY", path(&certificate.key)),
        // Beyond loopback: with TLS, no warning.
        ("EVENT_API_ADDR", "0.0.0.0:0"),
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()?;
    let mut lines = BufReader::new(child.stderr.take().context("no stderr")?).lines();
    let mut before = Vec::new();
    let port = loop {
        let Some(line) = lines.next() else {
            let _ = child.kill();
            bail!("serve ended before listening: {before:?}");
        };
        let line = line?;
        if let Some(rest) = line.split("https://").nth(1) {
            let addr = rest.split('/').next().context("no address")?;
            break addr.rsplit(':').next().context("no port")?.to_string();
        }
        before.push(line);
    };
    assert!(!before.iter().any(|l| l.contains("warning")), "{before:?}");
    let curl_out = on_path("curl")
        .map(|curl| {
            Command::new(curl)
                .args(["--silent", "--show-error", "--max-time", "60", "--cacert"])
                .arg(&certificate.cert)
                .args(["--header", &format!("Authorization: Bearer {TOKEN}")])
                .args(["--write-out", "\n%{http_code}"])
                .arg(format!("https://127.0.0.1:{port}/api/v1/events/health"))
                .output()
        })
        .transpose();
    let stopped = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()?;
    ensure!(stopped.success());
    let exit = child.wait()?;
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert_eq!(exit.code(), Some(0), "{rest:?}");
    assert!(rest.iter().any(|l| l.contains("shutting down")), "{rest:?}");
    match curl_out? {
        Some(out) => {
            let body = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{body} {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(body.ends_with("\n200"), "{body}");
        }
        None => eprintln!("curl not found: the HTTPS request was not made"),
    }
    Ok(())
}
