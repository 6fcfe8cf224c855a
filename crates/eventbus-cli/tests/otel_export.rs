//! `eventbus demo` on Redis with `OTEL_EXPORTER_OTLP_ENDPOINT` set exports its spans over
//! OTLP/HTTP: a collector stand-in on loopback receives the JSON export, and each handling
//! attempt's `process` span is a child of its event's `publish` span, in the same trace.

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use anyhow::{Context as _, ensure};
use event_testkit::test_server;
use serde_json::Value;

mod common;

use common::{code, run, stderr};

/// The export requests received, as JSON.
type Received = Arc<Mutex<Vec<Value>>>;

/// Answers OTLP/HTTP export requests on a loopback port with an empty success, keeping each
/// request body; returns the endpoint.
fn collector(received: Received) -> anyhow::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let endpoint = format!("http://{}", listener.local_addr()?);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let received = received.clone();
            std::thread::spawn(move || serve(stream, &received));
        }
    });
    Ok(endpoint)
}

/// One connection: requests with a `content-length`, one after another.
fn serve(stream: TcpStream, received: &Received) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let mut length = None;
        let mut first = true;
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let line = line.trim_end();
            if line.is_empty() && !first {
                break;
            }
            first = false;
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse::<usize>().ok();
            }
        }
        let mut body = vec![0; length.unwrap_or(0)];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        if let Ok(json) = serde_json::from_slice(&body) {
            received
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(json);
        }
        let reply =
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
        if writer.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

/// A span of the export: its name, kind, trace, id and parent.
#[derive(Debug)]
struct Span {
    name: String,
    kind: String,
    trace: String,
    id: String,
    parent: String,
}

fn spans(exports: &[Value]) -> Vec<Span> {
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    exports
        .iter()
        .flat_map(|e| e["resourceSpans"].as_array().cloned().unwrap_or_default())
        .flat_map(|r| r["scopeSpans"].as_array().cloned().unwrap_or_default())
        .flat_map(|s| s["spans"].as_array().cloned().unwrap_or_default())
        .map(|s| Span {
            name: text(&s["name"]),
            kind: text(&s["kind"]),
            trace: text(&s["traceId"]),
            id: text(&s["spanId"]),
            parent: text(&s["parentSpanId"]),
        })
        .collect()
}

#[test]
fn the_demo_exports_publish_and_process_spans_of_one_trace() -> anyhow::Result<()> {
    let Some(url) = test_server("EVENTBUS_TEST_REDIS_URL", "redis")? else {
        return Ok(());
    };
    let received = Received::default();
    let endpoint = collector(received.clone())?;
    let prefix = event_testkit::unique("cli-otel");
    let vars = [
        ("EVENT_BUS_TYPE", "redis"),
        ("REDIS_URL", url.as_str()),
        ("REDIS_KEY_PREFIX", prefix.as_str()),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ("OTEL_SERVICE_NAME", "otel-test"),
    ];
    let out = run(&vars, &["--json", "demo", "--signals", "50"])?;
    ensure!(code(&out) == 0, "the demo failed:\n{}", stderr(&out));

    // The process flushes its spans before it exits.
    let exports = received.lock().unwrap_or_else(|p| p.into_inner()).clone();
    ensure!(
        !exports.is_empty(),
        "nothing was exported:\n{}",
        stderr(&out)
    );
    let service = exports[0]["resourceSpans"][0]["resource"]["attributes"]
        .as_array()
        .and_then(|a| a.iter().find(|kv| kv["key"] == "service.name"))
        .map(|kv| kv["value"]["stringValue"].clone());
    ensure!(
        service == Some(Value::from("otel-test")),
        "service.name: {service:?}"
    );
    let spans = spans(&exports);
    let publishes: HashMap<(&str, &str), &Span> = spans
        .iter()
        .filter(|s| s.name.starts_with("publish"))
        .map(|s| ((s.trace.as_str(), s.id.as_str()), s))
        .collect();
    let processes: Vec<&Span> = spans
        .iter()
        .filter(|s| s.name.starts_with("process "))
        .collect();
    ensure!(
        !publishes.is_empty() && !processes.is_empty(),
        "{} publish and {} process spans among {} exported",
        publishes.len(),
        processes.len(),
        spans.len()
    );
    let children: Vec<&&Span> = processes
        .iter()
        .filter(|p| publishes.contains_key(&(p.trace.as_str(), p.parent.as_str())))
        .collect();
    ensure!(
        children.len() == processes.len(),
        "of {} process spans, {} are children of an exported publish span: {:?}",
        processes.len(),
        children.len(),
        processes.iter().take(3).collect::<Vec<_>>()
    );
    eprintln!(
        "exported: {} spans, {} publish, {} process, {} of them children of a publish span",
        spans.len(),
        publishes.len(),
        processes.len(),
        children.len()
    );
    let producer = publishes.values().next().context("a publish span")?;
    ensure!(
        ["4", "SPAN_KIND_PRODUCER"].contains(&producer.kind.as_str())
            && ["5", "SPAN_KIND_CONSUMER"].contains(&children[0].kind.as_str()),
        "span kinds: {producer:?} {:?}",
        children[0]
    );
    Ok(())
}
