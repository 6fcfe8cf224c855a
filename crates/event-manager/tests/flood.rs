//! A flood of junk requests (made-up methods, unknown and very long paths, bad, huge and
//! missing tokens, the read token on routes that do not exist, junk headers, bytes no parser
//! accepts; four connections at once, a quarter of the requests pipelined 25 to a keep-alive
//! connection) leaves the server's memory and `/metrics` flat: after a warm-up flood of
//! 10,000, two more floods of the same size grow the process's resident memory by less than
//! a bound far below what keeping anything per request would take, and add no metric series.
//! The junk is generated from each request's number, so every run sends the same requests.

#![cfg(target_os = "linux")]

mod http_client;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context as _, ensure};
use event_manager::http::{ApiConfig, ApiTokens, Role, router, serve};
use event_manager::{EventBusManager, Settings};
use http_client::exchange;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

const READER: &str = "read-token-flood-0123456789abcdef";
/// Requests per flood: a warm-up flood, then two more measured.
const FLOOD: usize = 10_000;
/// Connections sending at once.
const SENDERS: usize = 4;
/// Keeping 1 KiB per request would grow the process by 10 MiB a flood; two floods may add no
/// more than this together (allocator noise).
const GROWTH_BOUND: u64 = 4 * 1024 * 1024;

/// The resident set of this process, which also runs the server, in bytes.
fn resident() -> anyhow::Result<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm")?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .context("statm has no resident field")?
        .parse()?;
    Ok(pages * 4096)
}

/// The metric series the server shows, by name and labels.
async fn series(addr: SocketAddr) -> anyhow::Result<Vec<String>> {
    let reply = exchange(
        TcpStream::connect(addr).await?,
        "GET",
        "/metrics",
        Some(READER),
        None,
    )
    .await?;
    ensure!(reply.status == 200, "/metrics answered {}", reply.status);
    let mut series: Vec<String> = String::from_utf8(reply.body)?
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.rsplit_once(' ').map(|(name, _)| name.to_string()))
        .collect();
    series.sort();
    Ok(series)
}

/// A small generator (SplitMix64) seeded by the request's number: the same junk every run.
fn mix(n: usize, salt: u64) -> u64 {
    let mut z = (n as u64) ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The `n`th junk request: a method, a path, a token and headers nobody should send. On a
/// keep-alive connection it stays parseable, so that the server keeps the connection open
/// and answers the rest; alone on its connection it may be anything.
fn junk(n: usize, alone: bool, last: bool) -> Vec<u8> {
    let r = |salt| mix(n, salt) as usize;
    let methods = [
        "GET", "POST", "DELETE", "PUT", "BREW", "M", "PROPFIND", "OPTIONS",
    ];
    let method = match r(1) % 10 {
        8 => format!("X{}", r(2) % 100_000),
        _ => methods[r(3) % methods.len()].to_string(),
    };
    let path = match r(4) % 8 {
        0 => format!("/api/v1/events/x{}", r(5)),
        1 => format!("/{}", "a/".repeat(r(5) % 700)),
        2 => format!("/api/v1/events/views/v{}?q={}", r(5), r(6)),
        3 => "/api/v1/events/stats".to_string(),
        4 => format!("/api/v1/events/handlers/h{}", r(5)),
        5 => format!("/metrics?{}={}", r(5), r(6)),
        6 => format!("/api/v1/events/recent?limit={}&hours=-{}", r(5), r(6)),
        _ => format!("/%{:x}%zz/../{}", r(5), r(6)),
    };
    let token = match r(7) % 5 {
        0 => format!("Authorization: Bearer junk-{}\r\n", r(8)),
        1 => format!("Authorization: Basic {}\r\n", r(8)),
        2 => format!("Authorization: Bearer {READER}\r\n"),
        3 => format!("Authorization: Bearer {}\r\n", "t".repeat(r(8) % 4000)),
        _ => String::new(),
    };
    // The last request on a connection asks the server to close it. A client that shuts its
    // writing side down instead may lose answers: hyper (no half-close support by default)
    // drops the connection when it reads the end while a request is still being handled.
    let close = if last { "Connection: close\r\n" } else { "" };
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{token}{close}X-Junk-{}: {}\r\nContent-Length: 0\r\n\r\n",
        r(9) % 97,
        "z".repeat(r(10) % 300)
    )
    .into_bytes();
    if alone && r(11).is_multiple_of(4) {
        // Bytes no HTTP parser accepts, in the path or in a header.
        let at = if r(12).is_multiple_of(2) {
            method.len() + 2
        } else {
            request.len() - 4
        };
        request.splice(at..at, [0xff, 0x00, 0xc3, b'\n']);
    }
    request
}

/// Sends the requests numbered `from..to`: most on their own connection, one batch in four of
/// 25 pipelined on one keep-alive connection. Returns how many got an answer.
async fn send(addr: SocketAddr, from: usize, to: usize) -> anyhow::Result<usize> {
    let mut answered = 0;
    let mut n = from;
    while n < to {
        let mut stream = TcpStream::connect(addr).await?;
        let on_one = if (n / 25).is_multiple_of(4) { 25 } else { 1 }.min(to - n);
        for i in 0..on_one {
            let request = junk(n + i, on_one == 1, i + 1 == on_one);
            // The server may close first (a request it cannot parse): not an error.
            if stream.write_all(&request).await.is_err() {
                break;
            }
        }
        n += on_one;
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer).await;
        answered += answer
            .windows(9)
            .filter(|w| w.starts_with(b"HTTP/1.1 "))
            .count();
    }
    Ok(answered)
}

/// One flood of `FLOOD` junk requests over `SENDERS` connections at once. Returns how many
/// got an answer.
async fn flood(addr: SocketAddr, round: usize) -> anyhow::Result<usize> {
    let share = FLOOD / SENDERS;
    let mut senders = tokio::task::JoinSet::new();
    for i in 0..SENDERS {
        let from = round * FLOOD + i * share;
        senders.spawn(send(addr, from, from + share));
    }
    let mut answered = 0;
    while let Some(result) = senders.join_next().await {
        answered += result??;
    }
    Ok(answered)
}

#[tokio::test]
async fn junk_requests_leave_memory_and_metrics_flat() -> anyhow::Result<()> {
    let mut settings = Settings::default();
    settings.enable_event_handlers = false;
    let manager = Arc::new(EventBusManager::builder(settings.clone()).build()?);
    manager.start().await?;
    let tokens = ApiTokens::none().with(Role::Read, READER);
    let mut api = ApiConfig::new(&settings.bus, tokens);
    api.limits.rate_per_token = 1_000_000;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(listener, router(manager.clone(), api), async {
        let _ = stopped.await;
    }));

    let answered = flood(addr, 0).await?;
    ensure!(
        answered * 100 >= FLOOD * 95,
        "only {answered} of {FLOOD} junk requests were answered"
    );
    // A first scrape, so that the scrape's own series exists before the one compared.
    series(addr).await?;
    let series_before = series(addr).await?;
    ensure!(
        series_before
            .iter()
            .any(|s| s.starts_with("eventbus_http_requests_total{"))
            && series_before.contains(&"eventbus_http_unauthorized_total".to_string()),
        "the request counters are missing, so comparing the series would prove nothing: \
         {series_before:?}"
    );
    let before = resident()?;
    for round in 1..=2 {
        let answered = flood(addr, round).await?;
        ensure!(
            answered * 100 >= FLOOD * 95,
            "only {answered} of {FLOOD} junk requests of flood {round} were answered"
        );
    }
    let after = resident()?;
    eprintln!(
        "{answered} of {FLOOD} answered in the warm-up; resident after it {before} bytes, \
         after two more floods {after} bytes"
    );
    let series_after = series(addr).await?;
    ensure!(
        series_after == series_before,
        "the floods changed the metric series:\n before {series_before:?}\n after {series_after:?}"
    );
    ensure!(
        after.saturating_sub(before) < GROWTH_BOUND,
        "two floods of {FLOOD} junk requests grew the process from {before} to {after} bytes"
    );
    let _ = stop.send(());
    manager.stop().await?;
    Ok(())
}
