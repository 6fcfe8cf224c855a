//! `eventbus demo --serve`: after the story, the demo's bus stays up with the API and the
//! dashboard, with a made-up admin token, until SIGINT (Ctrl-C).

use std::io::{BufRead as _, BufReader, Read as _};
use std::process::Stdio;

use anyhow::{Context as _, ensure};

mod common;

use common::{eventbus, get};

#[test]
fn demo_serve_keeps_the_bus_up_with_the_dashboard_until_ctrl_c() -> anyhow::Result<()> {
    let vars = [("EVENT_BUS_TYPE", "memory"), ("EVENT_API_TOKENS", "")];
    let args = [
        "demo",
        "--serve",
        "--addr",
        "127.0.0.1:0",
        "--signals",
        "50",
    ];
    let mut child = eventbus(&vars, &args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut lines = BufReader::new(child.stderr.take().context("no stderr")?).lines();
    let mut addr = None;
    let token = loop {
        let line = lines.next().context("the demo ended before serving")??;
        if let Some(rest) = line.split("dashboard at http://").nth(1) {
            addr = Some(rest.trim_end_matches('/').to_string());
        }
        if let Some(token) = line.split("paste it into the page): ").nth(1) {
            break token.trim().to_string();
        }
    };
    let addr = addr.context("no address before the token")?;
    ensure!(token.len() >= 32, "a short token: {token}");

    let page = get(&addr, "/", None)?;
    ensure!(page.starts_with("HTTP/1.1 200"), "{page}");
    ensure!(page.contains("id=\"login\""), "not the dashboard: {page}");
    let refused = get(
        &addr,
        "/api/v1/events/stats",
        Some("not-the-token-of-this-run"),
    )?;
    ensure!(refused.starts_with("HTTP/1.1 401"), "{refused}");
    // The story's events are on the bus the dashboard shows.
    let stats = get(&addr, "/api/v1/events/stats", Some(&token))?;
    ensure!(stats.starts_with("HTTP/1.1 200"), "{stats}");
    ensure!(stats.contains("\"signal.detected\":50"), "{stats}");

    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()?;
    ensure!(status.success());
    let exit = child.wait()?;
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    ensure!(exit.code() == Some(0), "exit {exit:?}: {rest:?}");
    ensure!(
        rest.iter().any(|l| l.contains("stopping the demo's bus")),
        "{rest:?}"
    );
    let mut out = String::new();
    child
        .stdout
        .take()
        .context("no stdout")?
        .read_to_string(&mut out)?;
    ensure!(out.contains("summary:") && out.contains("done in"), "{out}");
    Ok(())
}
