//! [`Direct`]: a second connection to a single Redis server on which an awaited single
//! `publish` writes its `XADD` and reads the reply itself.
//!
//! fred runs each connection in a task of its own: a command crosses to that task, and its
//! reply crosses back, two task wake-ups per command. For a caller that publishes one event,
//! waits, and publishes the next, those hand-overs are most of the time spent outside the
//! server (`docs/benchmarks.md`, "Redis, single awaited publishes"). On this connection the
//! caller does the writing and the reading, as `redis-benchmark` does.
//!
//! It is only a fast path: whenever it cannot be used at once (another publish holds it, it
//! is not connected yet, or it broke) the publish goes through fred as before, so concurrent
//! publishers still share fred's pipelined connection and no publish ever waits for this
//! one. A server error reply (`WRONGTYPE`, `OOM`, `READONLY`...) also sends the command on
//! through fred, which applies its own handling and error kinds: a refused `XADD` wrote
//! nothing, so that second attempt adds nothing twice. Used on a single server over plain
//! TCP only (not on a cluster, Sentinel, TLS or Unix sockets), and not when
//! `REDIS_WAIT_REPLICAS` is set (`WAIT` counts only the writes of the connection it runs on).

use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::{Buf as _, BytesMut};
use event_core::Error;
use fred::prelude::{Client, ClientLike as _};
use fred::types::Value;
use fred::types::config::ServerConfig;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

use crate::client::COMMAND_TIMEOUT;

/// How long connecting and authenticating may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long after a failed connection the next is tried (publishes go through fred meanwhile).
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Where and as whom to connect.
#[derive(Clone)]
struct Target {
    address: String,
    /// `AUTH` arguments: the password, after the username when there is one.
    auth: Vec<String>,
    database: u8,
    /// `CLIENT SETNAME`: how operators tell the connection apart in `CLIENT LIST`.
    name: String,
}

/// The connection, with buffers kept between commands.
struct Connection {
    stream: TcpStream,
    out: Vec<u8>,
    input: BytesMut,
    /// A command was written and its reply not read: its caller gave up (the future was
    /// dropped), and the connection cannot be used again.
    in_flight: bool,
}

/// What a publish on the direct connection came to.
pub(crate) enum Outcome {
    /// The server added the entry.
    Added,
    /// Nothing was decided here: send the command through fred.
    Elsewhere,
}

/// The direct connection of one bus (see the module's documentation).
pub(crate) struct Direct {
    target: Target,
    connection: Mutex<Option<Connection>>,
    /// A connection is being made, or was refused less than [`RETRY_AFTER`] ago.
    connecting: AtomicBool,
    closed: AtomicBool,
}

impl Direct {
    /// A direct path to the server `client` talks to, when it is a single server reached
    /// over plain TCP; connects in the background. The connection is named
    /// `{key_prefix}:publish` (`CLIENT LIST`).
    pub(crate) fn for_client(client: &Client, key_prefix: &str) -> Option<Arc<Self>> {
        let config = client.client_config();
        let ServerConfig::Centralized { server } = &config.server else {
            return None;
        };
        if config.tls.is_some() {
            return None;
        }
        let auth = match (config.username, config.password) {
            (Some(user), Some(password)) => vec![user, password],
            (None, Some(password)) => vec![password],
            _ => Vec::new(),
        };
        let direct = Arc::new(Self {
            target: Target {
                address: format!("{}:{}", server.host, server.port),
                auth,
                database: config.database.unwrap_or(0),
                name: format!("{key_prefix}:publish")
                    .chars()
                    .map(|c| if c.is_ascii_graphic() { c } else { '_' })
                    .collect(),
            },
            connection: Mutex::new(None),
            connecting: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        });
        direct.reconnect();
        Some(direct)
    }

    /// `XADD key MINID ~ minid * fields...` on the direct connection, if it is free and up.
    ///
    /// # Errors
    /// A transient [`Error::Backend`] when the reply does not come within the command
    /// timeout (the entry may or may not have been added, as with fred).
    pub(crate) async fn xadd(
        self: &Arc<Self>,
        key: &str,
        minid: &str,
        fields: &[(&'static str, Value)],
    ) -> Result<Outcome, Error> {
        let Ok(mut slot) = self.connection.try_lock() else {
            return Ok(Outcome::Elsewhere);
        };
        let Some(connection) = slot.as_mut() else {
            drop(slot);
            self.reconnect();
            return Ok(Outcome::Elsewhere);
        };
        if connection.in_flight {
            *slot = None;
            drop(slot);
            self.reconnect();
            return Ok(Outcome::Elsewhere);
        }
        let mut args: Vec<&[u8]> = Vec::with_capacity(6 + 2 * fields.len());
        args.extend([
            &b"XADD"[..],
            key.as_bytes(),
            b"MINID",
            b"~",
            minid.as_bytes(),
            b"*",
        ]);
        for (name, value) in fields {
            let Some(value) = value.as_bytes() else {
                return Ok(Outcome::Elsewhere);
            };
            args.extend([name.as_bytes(), value]);
        }
        connection.in_flight = true;
        let reply = tokio::time::timeout(COMMAND_TIMEOUT, connection.call(&args)).await;
        if let Ok(Ok(Reply::Bulk | Reply::Error(_))) = &reply {
            connection.in_flight = false;
        } else {
            // Broken, confused or silent: the next publish connects again.
            *slot = None;
            drop(slot);
            self.reconnect();
        }
        match reply {
            Ok(Ok(Reply::Bulk)) => Ok(Outcome::Added),
            Ok(Ok(Reply::Error(text))) => {
                tracing::debug!(
                    "XADD on the direct connection refused ({text}); sending it through the client"
                );
                Ok(Outcome::Elsewhere)
            }
            Ok(Ok(other)) => {
                tracing::warn!("unexpected reply to XADD on the direct connection: {other:?}");
                Ok(Outcome::Elsewhere)
            }
            Ok(Err(e)) => {
                tracing::debug!(
                    "the direct Redis connection failed ({e}); sending the XADD through the client"
                );
                Ok(Outcome::Elsewhere)
            }
            Err(_) => Err(Error::Backend {
                backend: "redis",
                message: format!("XADD: no reply within {COMMAND_TIMEOUT:?}"),
                transient: true,
                source: None,
            }),
        }
    }

    /// Closes the connection for good (the bus shuts down).
    pub(crate) async fn close(&self) {
        self.closed.store(true, Ordering::Release);
        *self.connection.lock().await = None;
    }

    /// Connects in the background, unless that is under way or was refused just now.
    fn reconnect(self: &Arc<Self>) {
        if self.closed.load(Ordering::Relaxed) || self.connecting.swap(true, Ordering::AcqRel) {
            return;
        }
        let direct = self.clone();
        tokio::spawn(async move {
            let made =
                tokio::time::timeout(CONNECT_TIMEOUT, Connection::open(&direct.target)).await;
            match made {
                Ok(Ok(connection)) => {
                    let mut slot = direct.connection.lock().await;
                    // Looked at under the lock, which `close` takes after setting the flag:
                    // a connection made while the bus shut down is not kept.
                    if !direct.closed.load(Ordering::Acquire) {
                        *slot = Some(connection);
                    }
                }
                Ok(Err(e)) => {
                    tracing::debug!("the direct Redis connection could not be made: {e}");
                    tokio::time::sleep(RETRY_AFTER).await;
                }
                Err(_) => tracing::debug!("the direct Redis connection timed out"),
            }
            direct.connecting.store(false, Ordering::Release);
        });
    }
}

impl Connection {
    async fn open(target: &Target) -> std::io::Result<Self> {
        let stream = TcpStream::connect(&target.address).await?;
        stream.set_nodelay(true)?;
        let mut connection = Self {
            stream,
            out: Vec::with_capacity(1024),
            input: BytesMut::with_capacity(1024),
            in_flight: false,
        };
        if !target.auth.is_empty() {
            let mut args: Vec<&[u8]> = vec![b"AUTH"];
            args.extend(target.auth.iter().map(String::as_bytes));
            connection.expect_ok(&args).await?;
        }
        connection
            .expect_ok(&[b"CLIENT", b"SETNAME", target.name.as_bytes()])
            .await?;
        if target.database != 0 {
            let database = target.database.to_string();
            connection
                .expect_ok(&[b"SELECT", database.as_bytes()])
                .await?;
        }
        Ok(connection)
    }

    async fn expect_ok(&mut self, args: &[&[u8]]) -> std::io::Result<()> {
        match self.call(args).await? {
            Reply::Simple => Ok(()),
            Reply::Error(text) => Err(std::io::Error::other(text)),
            other => Err(std::io::Error::other(format!("unexpected reply {other:?}"))),
        }
    }

    /// Writes one command and reads its reply.
    async fn call(&mut self, args: &[&[u8]]) -> std::io::Result<Reply> {
        self.out.clear();
        encode(&mut self.out, args);
        self.stream.write_all(&self.out).await?;
        loop {
            if let Some((reply, used)) = parse(&self.input)? {
                self.input.advance(used);
                return Ok(reply);
            }
            if self.stream.read_buf(&mut self.input).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
    }
}

/// A reply, as much of it as the direct path needs.
#[derive(Debug, PartialEq, Eq)]
enum Reply {
    /// `+...`
    Simple,
    /// `$...` (the value is not needed).
    Bulk,
    /// `-...`
    Error(String),
    /// `:...`, `$-1` or anything else complete.
    Other,
}

/// Appends `args` as a RESP array of bulk strings.
fn encode(out: &mut Vec<u8>, args: &[&[u8]]) {
    // Writing to a `Vec` cannot fail.
    let _ = write!(out, "*{}\r\n", args.len());
    for arg in args {
        let _ = write!(out, "${}\r\n", arg.len());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// The first reply in `input` and the bytes it takes, or `None` while it is incomplete.
/// Arrays, maps and the other aggregate types never answer the commands sent here: they are
/// an error, and the connection is dropped.
fn parse(input: &[u8]) -> std::io::Result<Option<(Reply, usize)>> {
    let Some(end) = input.windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    let line = &input[1..end];
    let after = end + 2;
    let reply = match input[0] {
        b'+' => (Reply::Simple, after),
        b'-' => (
            Reply::Error(String::from_utf8_lossy(line).into_owned()),
            after,
        ),
        b':' => (Reply::Other, after),
        b'$' => {
            let length: i64 = std::str::from_utf8(line)
                .ok()
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| std::io::Error::other("bad bulk length"))?;
            let Ok(length) = usize::try_from(length) else {
                return Ok(Some((Reply::Other, after)));
            };
            if input.len() < after + length + 2 {
                return Ok(None);
            }
            (Reply::Bulk, after + length + 2)
        }
        kind => {
            return Err(std::io::Error::other(format!(
                "unexpected reply type {:?}",
                char::from(kind)
            )));
        }
    };
    Ok(Some(reply))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        encode(&mut out, &[b"XADD", b"s", b"*", b"f", b"\r\n"]);
        assert_eq!(
            out,
            b"*5\r\n$4\r\nXADD\r\n$1\r\ns\r\n$1\r\n*\r\n$1\r\nf\r\n$2\r\n\r\n\r\n"
        );
    }

    #[test]
    fn replies_are_read_only_when_complete() {
        assert_eq!(parse(b"").unwrap(), None);
        assert_eq!(parse(b"$15\r\n1700000000000-0").unwrap(), None);
        assert_eq!(
            parse(b"$15\r\n1700000000000-0\r\n+OK\r\n").unwrap(),
            Some((Reply::Bulk, 22))
        );
        assert_eq!(parse(b"+OK\r\n").unwrap(), Some((Reply::Simple, 5)));
        assert_eq!(
            parse(b"-WRONGTYPE Operation\r\n").unwrap(),
            Some((Reply::Error("WRONGTYPE Operation".into()), 22))
        );
        assert_eq!(parse(b"$-1\r\n").unwrap(), Some((Reply::Other, 5)));
        assert!(parse(b"*2\r\n").is_err());
        assert!(parse(b"$x\r\n").is_err());
    }
}
