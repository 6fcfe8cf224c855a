//! The `fred` client both Redis users of this crate share the settings of (the idempotency
//! store and the audit stream): a reconnect policy and command timeouts always set, URLs
//! checked, passwords never in messages. No `fred` type leaves the crate.

use std::time::Duration;

use event_core::config::table::{REDIS_SCHEMES, URL_ENCODING_HINT, redis_client_url};
use event_core::{Error, redact_url};
use fred::prelude::{Builder, Client, ReconnectPolicy};

/// How long one command may take.
pub(crate) const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// How long connecting may take.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A client for `url`, not connected yet; `what` names its user in messages.
pub(crate) fn build(url: &str, what: &str) -> Result<Client, Error> {
    if !REDIS_SCHEMES.iter().any(|scheme| url.starts_with(scheme)) {
        return Err(Error::InvalidArgument(format!(
            "{what} URL {} is not a Redis URL such as redis://host:6379/0: it must start with one of {}",
            redact_url(url),
            REDIS_SCHEMES.join(", ")
        )));
    }
    // A cluster's nodes listed with commas become the client's `?node=` form.
    let config = fred::types::config::Config::from_url(&redis_client_url(url)).map_err(|e| {
        Error::InvalidArgument(format!(
            "{what} URL {} is not a Redis URL such as redis://host:6379/0: {}; {URL_ENCODING_HINT}",
            redact_url(url),
            e.details()
        ))
    })?;
    Builder::from_config(config)
        .with_connection_config(|c| {
            c.connection_timeout = CONNECT_TIMEOUT;
            c.internal_command_timeout = CONNECT_TIMEOUT;
            c.max_command_attempts = 3;
        })
        .with_performance_config(|p| p.default_command_timeout = COMMAND_TIMEOUT)
        // Retry forever, 100 ms to 5 s apart: a restarted server is picked up again.
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2))
        .build()
        .map_err(|e| backend(url, what, "building the Redis client", &e))
}

/// Connects `client`, failing with a clear message when the server cannot be reached.
pub(crate) async fn connect(client: &Client, url: &str, what: &str) -> Result<(), Error> {
    use fred::prelude::ClientLike as _;
    match tokio::time::timeout(CONNECT_TIMEOUT * 2, client.init()).await {
        Ok(Ok(_task)) => Ok(()),
        Ok(Err(e)) => Err(backend(url, what, "connecting", &e)),
        Err(_) => {
            let _ = client.quit().await;
            Err(Error::backend(
                "redis",
                format!(
                    "{what}: cannot connect to Redis at {} within {:?}",
                    redact_url(url),
                    CONNECT_TIMEOUT * 2
                ),
                true,
            ))
        }
    }
}

/// A client error as a transient backend error naming the server without its password.
pub(crate) fn backend(url: &str, what: &str, context: &str, e: &fred::error::Error) -> Error {
    Error::backend(
        "redis",
        format!("{what} at {}: {context}: {}", redact_url(url), e.details()),
        true,
    )
}
