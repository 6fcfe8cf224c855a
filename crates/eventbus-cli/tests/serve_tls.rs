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
    let Some(openssl) = event_testkit::tls::openssl()? else {
        return Ok(());
    };
    let scratch = event_testkit::tls::Scratch::new("cli-serve")?;
    let certificate = event_testkit::tls::Certificates::create(&openssl, &scratch.0, "serve")?;
    let mut child = eventbus(&[
        ("EVENT_API_TLS_CERT", path(&certificate.server_cert)),
        ("EVENT_API_TLS_KEY", path(&certificate.server_key)),
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
                .arg(&certificate.ca)
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
