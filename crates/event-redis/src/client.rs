//! The Redis connection: built from `REDIS_URL` (and `REDIS_TLS_CA_FILE`) with a reconnect
//! policy and command timeouts always set, and errors mapped to [`event_core::Error`] without
//! secrets.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use event_core::config::table::{URL_ENCODING_HINT, redis_client_url};
use event_core::{ConfigError, Error, redact_url};

use crate::config::RedisConfig;
use fred::prelude::{
    Builder, Client, ClientLike, ClusterInterface, ErrorKind, EventInterface, Options,
    ReconnectPolicy, Server,
};
use fred::rustls::pki_types::CertificateDer;
use fred::rustls::pki_types::pem::PemObject;
use fred::rustls::{ClientConfig, RootCertStore};
use fred::types::config::{TlsConfig, TlsConnector};

/// How long one command may take before it fails (blocking reads block for less).
pub(crate) const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long connecting (TCP, TLS, `AUTH`, `SELECT`) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Builds a client for `REDIS_URL` (`redis://`, `rediss://` for TLS, `user:password@`; a
/// clustered client for `redis-cluster://`).
pub(crate) fn build(config: &RedisConfig) -> Result<Client, Error> {
    // For `rediss://`, fred's `from_url` builds a rustls connector trusting the system's roots
    // (rustls-native-certs: the OS store, or `SSL_CERT_FILE`/`SSL_CERT_DIR`), and fails when
    // any of them cannot be read. With our own CA those roots are not used, so the URL is
    // parsed as plain `redis://` and the TLS connector set below.
    let tls = config.tls_ca_file.as_deref().map(tls_config).transpose()?;
    let url = redis_client_url(&config.url);
    let url = match tls {
        Some(_) if url.starts_with("rediss") => url.replacen("rediss", "redis", 1),
        _ => url,
    };
    let mut fred_config = fred::types::config::Config::from_url(&url).map_err(|e| {
        Error::Config(ConfigError::single(
            "REDIS_URL",
            redact_url(&config.url),
            format!(
                "a Redis URL such as redis://user:password@host:6379/0 ({}; {URL_ENCODING_HINT})",
                e.details()
            ),
        ))
    })?;
    if let Some(tls) = tls {
        fred_config.tls = Some(tls);
    }
    Builder::from_config(fred_config)
        .with_connection_config(|c| {
            c.connection_timeout = CONNECT_TIMEOUT;
            c.internal_command_timeout = CONNECT_TIMEOUT;
            c.max_command_attempts = 3;
        })
        .with_performance_config(|p| {
            p.default_command_timeout = COMMAND_TIMEOUT;
        })
        // Retry forever, from 100 ms up to 5 s apart: a restarted server is picked up again
        // without restarting the application.
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2))
        .build()
        .map_err(|e| error("building the Redis client", e))
}

/// A TLS configuration trusting only the CA certificates in the PEM file at `path`, as
/// `redis-cli --cacert` does; the server's certificate must name the URL's host.
fn tls_config(path: &Path) -> Result<TlsConfig, Error> {
    let problem = |why: String| {
        Error::Config(ConfigError::single(
            "REDIS_TLS_CA_FILE",
            path.display().to_string(),
            format!(
                "a readable PEM file with the certificate of the CA that signed the Redis server's certificate ({why})"
            ),
        ))
    };
    let certificates = CertificateDer::pem_file_iter(path)
        .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
        .map_err(|e| problem(e.to_string()))?;
    if certificates.is_empty() {
        return Err(problem("it holds no CERTIFICATE block".into()));
    }
    let mut roots = RootCertStore::empty();
    for certificate in certificates {
        roots
            .add(certificate)
            .map_err(|e| problem(format!("a certificate cannot be used as a root: {e}")))?;
    }
    // The provider is named rather than taken from the process default, which rustls cannot
    // choose when another crate of the build enables a second provider.
    let provider = Arc::new(fred::rustls::crypto::ring::default_provider());
    let client_config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| problem(format!("TLS setup failed: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(client_config).into())
}

/// The metric of connections to Redis made again after one was lost.
pub(crate) const RECONNECTS_METRIC: &str = "eventbus_redis_reconnects_total";

/// Connects a client, failing with a clear message when the server cannot be reached.
pub(crate) async fn connect(client: &Client, config: &RedisConfig) -> Result<(), Error> {
    // The first connection must succeed; after that the reconnect policy takes over.
    match tokio::time::timeout(CONNECT_TIMEOUT * 2, client.init()).await {
        Ok(Ok(_task)) => {
            // Counted from now on: the first connection is not a reconnection.
            let _counting = client.on_reconnect(|server| async move {
                tracing::info!(%server, "reconnected to Redis");
                metrics::counter!(RECONNECTS_METRIC).increment(1);
                Ok(())
            });
            Ok(())
        }
        Ok(Err(e)) => Err(Error::Backend {
            backend: "redis",
            message: format!(
                "cannot connect to Redis at {}: {}{}",
                redact_url(&config.url),
                e.details(),
                hint(&config.url, &e)
            ),
            // A refused password or certificate stays refused; retrying cannot help.
            transient: is_transient(&e),
            source: Some(Box::new(e)),
        }),
        Err(_) => {
            let _ = client.quit().await;
            Err(Error::backend(
                "redis",
                format!(
                    "cannot connect to Redis at {} within {:?}: is the server running and the URL right?",
                    redact_url(&config.url),
                    CONNECT_TIMEOUT * 2
                ),
                true,
            ))
        }
    }
}

/// What to do about a connection failure whose client error says little.
fn hint(url: &str, e: &fred::error::Error) -> &'static str {
    // fred passes rustls and socket errors on as the `Debug` text of an `io::Error`.
    let details = e.details();
    if details.contains("InvalidCertificate") {
        " (the server's TLS certificate is not trusted or does not name this host: set \
         REDIS_TLS_CA_FILE to the certificate of the CA that signed it)"
    } else if url.starts_with("redis://")
        && ["ConnectionReset", "UnexpectedEof", "BrokenPipe"]
            .iter()
            .any(|kind| details.contains(kind))
    {
        // A TLS port drops a plain client as soon as its first bytes are not a TLS handshake.
        " (the server closed the connection: if it accepts only TLS, use a rediss:// URL)"
    } else {
        ""
    }
}

/// Whether a client error may go away by itself: connection problems and timeouts, but not a
/// refused password (`ErrorKind::Auth`) or an untrusted certificate.
fn is_transient(e: &fred::error::Error) -> bool {
    match e.kind() {
        ErrorKind::IO => !e.details().contains("InvalidCertificate"),
        ErrorKind::Timeout
        | ErrorKind::Canceled
        | ErrorKind::Routing
        | ErrorKind::Cluster
        | ErrorKind::Sentinel
        | ErrorKind::Backpressure => true,
        _ => false,
    }
}

/// Maps a client error; connection problems and timeouts are transient.
pub(crate) fn error(context: &str, e: fred::error::Error) -> Error {
    Error::Backend {
        backend: "redis",
        message: format!("{context}: {}", e.details()),
        transient: is_transient(&e),
        source: Some(Box::new(e)),
    }
}

/// Options that send a command to `node` (a cluster's primary), or wherever it goes by
/// default for `None`.
pub(crate) fn on_node(node: &Option<Server>) -> Options {
    Options {
        cluster_node: node.clone(),
        ..Options::default()
    }
}

/// Where a command must go to see every key: each primary of a Redis Cluster, as the client
/// knows them (`Some`), or the one server (`None`).
pub(crate) fn every_primary(client: &Client) -> Vec<Option<Server>> {
    match client.cached_cluster_state() {
        Some(state) if client.is_clustered() => {
            state.unique_primary_nodes().into_iter().map(Some).collect()
        }
        _ => vec![None],
    }
}

/// One page of `SCAN cursor MATCH pattern COUNT 1000 TYPE kind` on `node`: the next cursor
/// (`"0"` at the end) and the keys found.
pub(crate) async fn scan_page(
    client: &Client,
    node: &Option<Server>,
    cursor: &str,
    pattern: &str,
    kind: &str,
) -> Result<(String, Vec<fred::types::Value>), Error> {
    use fred::types::Value;
    let reply: Value = client
        .with_options(&on_node(node))
        .custom(
            fred::cmd!("SCAN"),
            vec![
                Value::from(cursor),
                Value::from("MATCH"),
                Value::from(pattern),
                Value::from("COUNT"),
                Value::from(1000),
                Value::from("TYPE"),
                Value::from(kind),
            ],
        )
        .await
        .map_err(|e| error("SCAN", e))?;
    let mut parts = reply.into_array().into_iter();
    let next = parts
        .next()
        .and_then(|v| v.as_string())
        .unwrap_or_else(|| "0".into());
    Ok((
        next,
        parts.next().map(Value::into_array).unwrap_or_default(),
    ))
}

/// The primary that holds `key` on a Redis Cluster, as the client knows it (`None` off a
/// cluster, or while the client knows no slot map).
pub(crate) fn node_of(client: &Client, key: &str) -> Option<Server> {
    if !client.is_clustered() {
        return None;
    }
    let slot = fred::util::redis_keyslot(key.as_bytes());
    client.cached_cluster_state()?.get_server(slot).cloned()
}

/// `PING`s every primary (the one server, but on a cluster); the error names the node that
/// does not answer, and why.
pub(crate) async fn ping_every_primary(client: &Client) -> Result<(), String> {
    let nodes = every_primary(client);
    let pings = nodes.iter().map(|node| async move {
        let answer: Result<fred::types::Value, _> =
            client.with_options(&on_node(node)).ping(None).await;
        answer.map_err(|e| match node {
            Some(node) => format!("node {node}: {}", e.details()),
            None => e.details().to_string(),
        })
    });
    futures::future::join_all(pings)
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .map(drop)
}

/// Whether the server `client` is connected to is a node of a Redis Cluster
/// (`INFO cluster` says `cluster_enabled:1`).
pub(crate) async fn is_cluster_node(client: &Client) -> bool {
    let info: Result<String, _> = client.custom(fred::cmd!("INFO"), vec!["cluster"]).await;
    info.is_ok_and(|info| info.contains("cluster_enabled:1"))
}

/// The cluster form of a single server's URL: `redis://u:p@host:port/0` becomes
/// `redis-cluster://u:p@host:port` (a cluster has one database).
pub(crate) fn as_cluster_url(url: &str) -> String {
    let (scheme, rest) = match url.strip_prefix("rediss://") {
        Some(rest) => ("rediss-cluster://", rest),
        None => (
            "redis-cluster://",
            url.strip_prefix("redis://").unwrap_or(url),
        ),
    };
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    format!("{scheme}{authority}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_url_becomes_a_cluster_url() {
        assert_eq!(
            as_cluster_url("redis://app:pw@10.0.0.1:7000/0"),
            "redis-cluster://app:pw@10.0.0.1:7000"
        );
        assert_eq!(
            as_cluster_url("rediss://10.0.0.1:7000"),
            "rediss-cluster://10.0.0.1:7000"
        );
    }
}
