//! [`RedisIdempotencyStore`]: handled ids in Redis, shared by every instance of a handler in
//! every process (cargo feature `redis`, on by default).
//!
//! Keys (`{prefix}:{handler}:{event id}`) hold `pending:{token}` while claimed, with the
//! lease as expiry (`SET key pending:{token} NX PX lease`), and `done` once handled, with
//! `remember_for` as expiry. A release deletes the key only while it still holds the
//! caller's token (a two-line Lua script), so a slow instance whose lease expired cannot
//! delete the claim of the instance that took over.

use std::time::Duration;

use async_trait::async_trait;
use event_core::{Error, redact_url};
use fred::prelude::{Client, ClientLike, KeysInterface, LuaInterface};
use fred::types::{Expiration, SetOptions};

use super::{Claim, IdempotencyStore, StoreError};
use crate::redis_client;

const DONE: &str = "done";
const RELEASE: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";
/// Names the store in messages.
const WHAT: &str = "idempotency store";

/// An [`IdempotencyStore`] in Redis, for handlers running in several processes.
///
/// ```no_run
/// use std::sync::Arc;
/// use event_handlers::middleware::{IdempotencyLayer, RedisIdempotencyStore};
///
/// # async fn run() -> Result<(), event_core::Error> {
/// let store = RedisIdempotencyStore::connect("redis://localhost:6379/0").await?;
/// let layer = IdempotencyLayer::new(Arc::new(store));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisIdempotencyStore {
    client: Client,
    url: String,
}

impl std::fmt::Debug for RedisIdempotencyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisIdempotencyStore")
            .field("url", &redact_url(&self.url))
            .finish_non_exhaustive()
    }
}

impl RedisIdempotencyStore {
    /// Connects to the Redis at `url` (`redis://[user:password@]host:port/db`, or `rediss://`
    /// for TLS with the system's trusted roots). The client reconnects by itself afterwards;
    /// each command times out after 5 seconds.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a URL that is not a Redis URL, [`Error::Backend`] when
    /// the server cannot be reached; messages never show the password.
    pub async fn connect(url: &str) -> Result<Self, Error> {
        let client = redis_client::build(url, WHAT)?;
        redis_client::connect(&client, url, WHAT).await?;
        Ok(Self {
            client,
            url: url.to_owned(),
        })
    }

    /// Closes the connection.
    ///
    /// # Errors
    /// [`Error::Backend`] when the connection could not be closed cleanly.
    pub async fn close(&self) -> Result<(), Error> {
        self.client
            .quit()
            .await
            .map_err(|e| redis_client::backend(&self.url, WHAT, "closing", &e))
    }
}

fn failure(context: &str, e: &fred::error::Error) -> StoreError {
    StoreError::new("redis", format!("{context}: {}", e.details()))
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX).max(1)
}

#[async_trait]
impl IdempotencyStore for RedisIdempotencyStore {
    async fn claim(&self, key: &str, token: &str, lease: Duration) -> Result<Claim, StoreError> {
        let pending = format!("pending:{token}");
        // Two tries: the key can expire between a refused SET and the GET that reads it.
        for _ in 0..2 {
            let set: Option<String> = self
                .client
                .set(
                    key,
                    pending.as_str(),
                    Some(Expiration::PX(millis(lease))),
                    Some(SetOptions::NX),
                    false,
                )
                .await
                .map_err(|e| failure("SET NX", &e))?;
            if set.is_some() {
                return Ok(Claim::Claimed);
            }
            let current: Option<String> =
                self.client.get(key).await.map_err(|e| failure("GET", &e))?;
            match current.as_deref() {
                Some(DONE) => return Ok(Claim::Done),
                Some(_) => return Ok(Claim::InProgress),
                None => continue,
            }
        }
        Ok(Claim::InProgress)
    }

    async fn complete(&self, key: &str, remember_for: Duration) -> Result<(), StoreError> {
        let _: Option<String> = self
            .client
            .set(
                key,
                DONE,
                Some(Expiration::PX(millis(remember_for))),
                None,
                false,
            )
            .await
            .map_err(|e| failure("SET done", &e))?;
        Ok(())
    }

    async fn release(&self, key: &str, token: &str) -> Result<(), StoreError> {
        let _: i64 = self
            .client
            .eval(
                RELEASE,
                vec![key.to_owned()],
                vec![format!("pending:{token}")],
            )
            .await
            .map_err(|e| failure("releasing the claim", &e))?;
        Ok(())
    }
}
