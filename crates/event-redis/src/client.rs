//! The Redis connection: built from `REDIS_URL` with a reconnect policy and command timeouts
//! always set, and errors mapped to [`event_core::Error`] without secrets.

use std::time::Duration;

use event_core::{Config, ConfigError, Error, redact_url};
use fred::prelude::{Builder, Client, ClientLike, ErrorKind, ReconnectPolicy};

/// How long one command may take before it fails (blocking reads block for less).
pub(crate) const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long connecting (TCP, TLS, `AUTH`, `SELECT`) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Builds a client for `REDIS_URL` (`redis://`, `rediss://` for TLS, `user:password@`).
pub(crate) fn build(config: &Config) -> Result<Client, Error> {
    let fred_config = fred::types::config::Config::from_url(&config.redis_url).map_err(|e| {
        Error::Config(ConfigError::single(
            "REDIS_URL",
            redact_url(&config.redis_url),
            format!(
                "a Redis URL such as redis://user:password@host:6379/0 ({})",
                e.details()
            ),
        ))
    })?;
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

/// Connects a client, failing with a clear message when the server cannot be reached.
pub(crate) async fn connect(client: &Client, config: &Config) -> Result<(), Error> {
    // The first connection must succeed; after that the reconnect policy takes over.
    match tokio::time::timeout(CONNECT_TIMEOUT * 2, client.init()).await {
        Ok(Ok(_task)) => Ok(()),
        Ok(Err(e)) => Err(Error::Backend {
            backend: "redis",
            message: format!(
                "cannot connect to Redis at {}: {}",
                redact_url(&config.redis_url),
                e.details()
            ),
            transient: true,
            source: Some(Box::new(e)),
        }),
        Err(_) => {
            let _ = client.quit().await;
            Err(Error::backend(
                "redis",
                format!(
                    "cannot connect to Redis at {} within {:?}: is the server running and the URL right?",
                    redact_url(&config.redis_url),
                    CONNECT_TIMEOUT * 2
                ),
                true,
            ))
        }
    }
}

/// Maps a client error; connection problems and timeouts are transient.
pub(crate) fn error(context: &str, e: fred::error::Error) -> Error {
    let transient = matches!(
        e.kind(),
        ErrorKind::IO
            | ErrorKind::Timeout
            | ErrorKind::Canceled
            | ErrorKind::Routing
            | ErrorKind::Cluster
            | ErrorKind::Sentinel
            | ErrorKind::Backpressure
    );
    Error::Backend {
        backend: "redis",
        message: format!("{context}: {}", e.details()),
        transient,
        source: Some(Box::new(e)),
    }
}
