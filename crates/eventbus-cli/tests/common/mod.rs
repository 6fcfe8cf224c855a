//! Running the `eventbus` binary in the tests: a clean environment, exit codes and output.

#![allow(dead_code)]

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use anyhow::Context as _;

/// `eventbus` with only the given variables (the test's own environment is not passed on,
/// so a developer's settings cannot change the result).
pub(crate) fn eventbus(vars: &[(&str, &str)], args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_eventbus"));
    command.env_clear();
    if let Ok(path) = std::env::var("PATH") {
        command.env("PATH", path);
    }
    command.envs(vars.iter().copied()).args(args);
    command
}

pub(crate) fn run(vars: &[(&str, &str)], args: &[&str]) -> anyhow::Result<Output> {
    Ok(eventbus(vars, args).stdin(Stdio::null()).output()?)
}

pub(crate) fn code(output: &Output) -> i32 {
    output.status.code().unwrap_or(-1)
}

pub(crate) fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).to_string()
}

pub(crate) fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).to_string()
}

/// `eventbus serve --addr 127.0.0.1:0` and `args`, with `vars` (`EVENT_API_TOKENS` among
/// them), and the address it says it serves on.
pub(crate) fn serve(vars: &[(&str, &str)], args: &[&str]) -> anyhow::Result<(Child, SocketAddr)> {
    let mut all = vec!["serve", "--addr", "127.0.0.1:0"];
    all.extend_from_slice(args);
    let mut child = eventbus(vars, &all)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let stderr = child.stderr.take().context("no stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines
            .next()
            .context("eventbus serve ended before serving")??;
        if let Some(rest) = line.split("://").nth(1)
            && line.contains("serving the")
        {
            let addr = rest.split('/').next().unwrap_or_default();
            break addr.parse::<SocketAddr>()?;
        }
    };
    // Keep reading its log so it never blocks on a full pipe.
    std::thread::spawn(move || lines.map_while(Result::ok).for_each(drop));
    Ok((child, addr))
}

/// One `GET` on a fresh connection; the whole reply.
pub(crate) fn get(addr: &str, path: &str, token: Option<&str>) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}\r\n"
    )?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    Ok(reply)
}

/// One `GET` whose body is JSON: the body, parsed.
pub(crate) fn get_json(
    addr: &str,
    path: &str,
    token: Option<&str>,
) -> anyhow::Result<serde_json::Value> {
    let reply = get(addr, path, token)?;
    let body = reply.split("\r\n\r\n").nth(1).unwrap_or_default();
    serde_json::from_str(body).with_context(|| format!("GET {path}: {reply}"))
}
