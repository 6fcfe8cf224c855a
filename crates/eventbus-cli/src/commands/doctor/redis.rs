//! The Redis server's facts, read with a client of doctor's own: the version against what
//! `event-redis` needs, the eviction policy, the replicas `REDIS_WAIT_REPLICAS` waits for,
//! the clock, the event streams under `REDIS_KEY_PREFIX`, and each group's consumers
//! (`XINFO CONSUMERS`: one idle with entries pending is stalled).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use event_core::config::table::redis_client_url;
use event_manager::{ManagerStats, Settings};
use fred::prelude::{Builder, Client, ClientLike, ReconnectPolicy, StreamsInterface};
use fred::types::Value;
use fred::types::config::{Config, TlsConnector};

use super::{Finding, bounded};

/// The oldest Redis `event-redis` works with: `XAUTOCLAIM`, exclusive ranges and
/// `XPENDING ... IDLE` came in 6.2 (`docs/redis.md`).
const MIN_VERSION: (u32, u32) = (6, 2);

/// A clock this far from the server's is reported: events' timestamps (this host's clock)
/// and stream ids (the server's) disagree by that much.
const SKEW_WARN_MS: i64 = 5_000;
/// Replay by time reads stream ids from 60 s before the asked time (`CLOCK_SKEW_MS` in
/// `event-redis`); past that, events can be missed.
const SKEW_FAIL_MS: i64 = 60_000;

/// SCAN calls made when looking for streams under other prefixes.
const SCAN_ROUNDS: usize = 50;

/// The Redis checks. `stats` are the bus's, for the groups and their event types.
pub(super) async fn check(
    settings: &Settings,
    stats: Option<&ManagerStats>,
    timeout: Duration,
) -> Vec<Finding> {
    let client = match bounded(timeout, connect(settings, timeout)).await {
        Some(Ok(client)) => client,
        Some(Err(e)) => {
            return vec![Finding::skip(
                "server.version",
                format!(
                    "doctor's own Redis client could not connect ({e:#}); server checks skipped"
                ),
            )];
        }
        None => {
            return vec![Finding::skip(
                "server.version",
                format!(
                    "doctor's own Redis client did not connect within {timeout:?}; server checks skipped"
                ),
            )];
        }
    };
    let mut findings = Vec::new();
    let steps = async {
        findings.extend(version_and_memory(&client, settings).await?);
        findings.push(clock(&client).await?);
        findings.push(streams(&client, &settings.redis.key_prefix).await?);
        if let Some(stats) = stats {
            findings.extend(consumers(&client, settings, stats).await?);
        }
        anyhow::Ok(())
    };
    match bounded(timeout * 4, steps).await {
        Some(Ok(())) => {}
        Some(Err(e)) => findings.push(Finding::fail(
            "server.commands",
            format!("a Redis command failed: {e:#}"),
            "the user in REDIS_URL needs INFO, TIME, SCAN, XINFO and the stream commands (an ACL such as `+@read +@write +@stream +info +time +scan`)",
        )),
        None => findings.push(Finding::fail(
            "server.commands",
            format!("the server's checks took longer than {:?}", timeout * 4),
            "the server is overloaded or holds very many keys; raise --timeout",
        )),
    }
    let _ = client.quit().await;
    findings
}

/// A client for `REDIS_URL`, with `REDIS_TLS_CA_FILE` trusted when set.
async fn connect(settings: &Settings, timeout: Duration) -> anyhow::Result<Client> {
    let redis = &settings.redis;
    let mut url = redis_client_url(&redis.url);
    let tls = match &redis.tls_ca_file {
        Some(path) => {
            url = url.replacen("rediss", "redis", 1);
            Some(tls_connector(path)?)
        }
        None => None,
    };
    let mut config = Config::from_url(&url).context("REDIS_URL is not a Redis URL")?;
    if let Some(tls) = tls {
        config.tls = Some(tls.into());
    }
    let client = Builder::from_config(config)
        .with_connection_config(|c| {
            c.connection_timeout = timeout;
            c.internal_command_timeout = timeout;
            c.max_command_attempts = 1;
        })
        .with_performance_config(|p| p.default_command_timeout = timeout)
        .set_policy(ReconnectPolicy::new_constant(1, 100))
        .build()?;
    client.init().await?;
    Ok(client)
}

/// A TLS connector trusting the CA certificates of the PEM file at `path`.
fn tls_connector(path: &std::path::Path) -> anyhow::Result<TlsConnector> {
    use fred::rustls::pki_types::CertificateDer;
    use fred::rustls::pki_types::pem::PemObject;
    let mut roots = fred::rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(path)
        .with_context(|| format!("reading REDIS_TLS_CA_FILE {}", path.display()))?
    {
        roots.add(certificate?)?;
    }
    let provider = Arc::new(fred::rustls::crypto::ring::default_provider());
    let config = fred::rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(config))
}

async fn command(client: &Client, name: &'static str, args: Vec<Value>) -> anyhow::Result<Value> {
    client
        .custom(fred::cmd!(name), args)
        .await
        .with_context(|| format!("{name} on Redis"))
}

/// `INFO section` as its `field:value` lines.
async fn info(client: &Client, section: &str) -> anyhow::Result<HashMap<String, String>> {
    let text = command(client, "INFO", vec![Value::from(section)])
        .await?
        .as_string()
        .unwrap_or_default();
    Ok(text
        .lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect())
}

/// `major.minor.patch` of a version text.
fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    let mut parts = text.split('.').map(|p| p.parse::<u32>().ok());
    Some((
        parts.next()??,
        parts.next()??,
        parts.next().flatten().unwrap_or(0),
    ))
}

/// The version, the eviction policy and the replicas.
async fn version_and_memory(client: &Client, settings: &Settings) -> anyhow::Result<Vec<Finding>> {
    let mut findings = Vec::new();
    let server = info(client, "server").await?;
    let text = server.get("redis_version").cloned().unwrap_or_default();
    findings.push(match parse_version(&text) {
        Some((major, minor, _)) if (major, minor) >= MIN_VERSION => Finding::ok(
            "server.version",
            format!("Redis {text} (the bus needs {}.{} or newer)", MIN_VERSION.0, MIN_VERSION.1),
        ),
        Some(_) => Finding::fail(
            "server.version",
            format!("Redis {text} is too old: the bus needs {}.{} or newer (XAUTOCLAIM, exclusive stream ranges)", MIN_VERSION.0, MIN_VERSION.1),
            "upgrade Redis to 7.x",
        ),
        None => Finding::warn(
            "server.version",
            format!("the server reports no Redis version it can read ({text:?})"),
            "use Redis 6.2 or newer; a server that speaks the protocol but is not Redis may lack stream commands",
        ),
    });
    let memory = info(client, "memory").await?;
    let maxmemory: u64 = memory
        .get("maxmemory")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let policy = memory.get("maxmemory_policy").cloned().unwrap_or_default();
    findings.push(if maxmemory > 0 && policy != "noeviction" {
        Finding::warn(
            "server.eviction",
            format!("maxmemory is {maxmemory} bytes with maxmemory-policy {policy}: when memory runs out Redis deletes keys, event streams and dead letters among them"),
            "CONFIG SET maxmemory-policy noeviction (and in redis.conf), so a full Redis refuses writes instead of losing events",
        )
    } else {
        Finding::ok(
            "server.eviction",
            format!("no eviction of the bus's keys (maxmemory {maxmemory}, policy {policy})"),
        )
    });
    let replication = info(client, "replication").await?;
    let replicas: u32 = replication
        .get("connected_slaves")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let wanted = settings.redis.wait_replicas;
    findings.push(if wanted > replicas {
        Finding::fail(
            "server.replicas",
            format!("REDIS_WAIT_REPLICAS={wanted} but the server has {replicas} connected replica(s): every publish waits REDIS_WAIT_TIMEOUT_MS and then fails"),
            format!("set REDIS_WAIT_REPLICAS to at most {replicas}, or attach the replicas (`INFO replication` lists them)"),
        )
    } else {
        Finding::ok(
            "server.replicas",
            format!("{replicas} connected replica(s); publishes wait for {wanted}"),
        )
    });
    Ok(findings)
}

/// This host's clock against the server's `TIME`.
async fn clock(client: &Client) -> anyhow::Result<Finding> {
    let before = now_ms();
    let reply = command(client, "TIME", Vec::new()).await?.into_array();
    let after = now_ms();
    let part = |i: usize| {
        reply
            .get(i)
            .and_then(|v| v.as_string())
            .and_then(|s| s.parse::<i64>().ok())
            .unwrap_or(0)
    };
    let server_ms = part(0) * 1000 + part(1) / 1000;
    // The server read its clock somewhere in the round trip: its middle is the best guess.
    let skew = server_ms - (before + after) / 2;
    let round_trip = after - before;
    let message = format!(
        "this host's clock is {} ms {} the server's (round trip {round_trip} ms)",
        skew.abs(),
        if skew > 0 { "behind" } else { "ahead of" }
    );
    let fix =
        "synchronise the clocks with NTP (chrony, systemd-timesyncd) on this host and the server's";
    Ok(if skew.abs() > SKEW_FAIL_MS {
        Finding::fail(
            "server.clock",
            format!("{message}: replay by time can miss events"),
            fix,
        )
    } else if skew.abs() > SKEW_WARN_MS {
        Finding::warn(
            "server.clock",
            format!("{message}: events' timestamps and stream ids disagree"),
            fix,
        )
    } else {
        Finding::ok("server.clock", message)
    })
}

fn now_ms() -> i64 {
    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

/// One `SCAN` step over streams matching `pattern`: the next cursor and the keys.
async fn scan(
    client: &Client,
    cursor: &str,
    pattern: &str,
) -> anyhow::Result<(String, Vec<String>)> {
    let reply = command(
        client,
        "SCAN",
        vec![
            Value::from(cursor),
            Value::from("MATCH"),
            Value::from(pattern),
            Value::from("COUNT"),
            Value::from(1000),
            Value::from("TYPE"),
            Value::from("stream"),
        ],
    )
    .await?;
    let mut parts = reply.into_array().into_iter();
    let cursor = parts
        .next()
        .and_then(|v| v.as_string())
        .unwrap_or_else(|| "0".into());
    let keys = parts
        .next()
        .map(Value::into_array)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|k| k.as_string())
        .collect();
    Ok((cursor, keys))
}

/// Whether the prefix holds event streams; when not, the prefixes that do.
async fn streams(client: &Client, prefix: &str) -> anyhow::Result<Finding> {
    let mut count = 0usize;
    let mut cursor = "0".to_string();
    loop {
        let (next, keys) = scan(client, &cursor, &format!("{prefix}:stream:*")).await?;
        count += keys.len();
        cursor = next;
        if cursor == "0" {
            break;
        }
    }
    if count > 0 {
        return Ok(Finding::ok(
            "streams",
            format!(
                "{count} event stream(s) under REDIS_KEY_PREFIX={prefix} (trimmed to EVENT_TTL_SECONDS on publish)"
            ),
        ));
    }
    let mut others = BTreeSet::new();
    let mut cursor = "0".to_string();
    for _ in 0..SCAN_ROUNDS {
        let (next, keys) = scan(client, &cursor, "*:stream:*").await?;
        others.extend(
            keys.iter()
                .filter_map(|k| k.split_once(":stream:").map(|(p, _)| p.to_string())),
        );
        cursor = next;
        if cursor == "0" {
            break;
        }
    }
    let found = if others.is_empty() {
        "no event stream under any prefix either".to_string()
    } else {
        let shown: Vec<&str> = others.iter().take(5).map(String::as_str).collect();
        format!(
            "event streams exist under {}{}",
            shown.join(", "),
            if others.len() > 5 { ", ..." } else { "" }
        )
    };
    Ok(Finding::warn(
        "streams",
        format!(
            "no event stream under REDIS_KEY_PREFIX={prefix}: nothing was published with this prefix ({found})"
        ),
        "if publishers and handlers use another prefix, set REDIS_KEY_PREFIX to theirs; a stream appears with its first event",
    ))
}

/// Each group's consumers on its streams: members, and those stalled (entries pending, idle
/// past `EVENT_STALL_TIMEOUT_MS`).
async fn consumers(
    client: &Client,
    settings: &Settings,
    stats: &ManagerStats,
) -> anyhow::Result<Vec<Finding>> {
    let prefix = &settings.redis.key_prefix;
    let stall_ms = u64::try_from(settings.bus.stall_timeout.as_millis()).unwrap_or(u64::MAX);
    let mut findings = Vec::new();
    for (handler, report) in &stats.handlers {
        let group = &report.group;
        let streams = report
            .event_types
            .iter()
            .map(|t| format!("{prefix}:stream:{t}"))
            .chain(std::iter::once(format!("{prefix}:redrive:{group}")));
        let mut names = BTreeSet::new();
        let mut active = BTreeSet::new();
        let mut stalled = Vec::new();
        for stream in streams {
            let reply: Result<Value, _> = client
                .xinfo_consumers(stream.as_str(), group.as_str())
                .await;
            let reply = match reply {
                Ok(reply) => reply,
                // No such stream or group: nothing of this group there.
                Err(e)
                    if e.details().contains("no such key") || e.details().contains("NOGROUP") =>
                {
                    continue;
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("XINFO CONSUMERS {stream} {group}"));
                }
            };
            for consumer in reply.into_array() {
                let fields = fields_of(consumer);
                let name = fields
                    .get("name")
                    .and_then(Value::as_string)
                    .unwrap_or_default();
                let pending = fields.get("pending").and_then(Value::as_u64).unwrap_or(0);
                let idle = fields.get("idle").and_then(Value::as_u64).unwrap_or(0);
                names.insert(name.clone());
                if idle < stall_ms {
                    active.insert(name.clone());
                }
                if pending > 0 && idle >= stall_ms {
                    stalled.push(format!(
                        "{name} holds {pending} on {stream}, idle {} s",
                        idle / 1000
                    ));
                }
            }
        }
        findings.push(Finding::ok(
            "group.members",
            format!(
                "group {group}: {} consumer(s), {} active in the last {} s",
                names.len(),
                active.len(),
                stall_ms / 1000
            ),
        ));
        findings.push(if stalled.is_empty() {
            Finding::ok("group.stalled", format!("group {group}: no stalled consumer"))
        } else {
            Finding::warn(
                "group.stalled",
                format!("group {group} (handler {handler}) has stalled consumers: {}", stalled.join("; ")),
                format!("their process died or hangs: a running instance of {handler} takes the entries over once idle past EVENT_CLAIM_IDLE_MS; start one (do not XGROUP DELCONSUMER it: its pending entries would become unclaimable)"),
            )
        });
    }
    Ok(findings)
}

/// A flat `[name, value, ...]` array (RESP2) or a map (RESP3) as a map.
fn fields_of(value: Value) -> HashMap<String, Value> {
    match value {
        Value::Map(map) => map
            .inner()
            .into_iter()
            .filter_map(|(k, v)| Some((k.into_string()?, v)))
            .collect(),
        other => {
            let mut out = HashMap::new();
            let mut items = other.into_array().into_iter();
            while let (Some(k), Some(v)) = (items.next(), items.next()) {
                if let Some(k) = k.as_string() {
                    out.insert(k, v);
                }
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_read_as_numbers() {
        assert_eq!(parse_version("7.0.15"), Some((7, 0, 15)));
        assert_eq!(parse_version("6.2"), Some((6, 2, 0)));
        assert!(parse_version("x").is_none());
        assert!(parse_version("6.0.9").is_some_and(|(a, b, _)| (a, b) < MIN_VERSION));
    }
}
