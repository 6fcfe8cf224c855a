//! The Redis server's clock, the one reference for retention.
//!
//! Stream ids are the server's time (`XADD ... *`), so the retention cutoff (`MINID` on
//! publish, expiry in consumers, stats, replay) is computed from the server's time too. With
//! each host's own wall clock, one host whose clock ran days ahead would trim every retained
//! entry of each stream it publishes to. The server's time is read with `TIME` and carried
//! forward on this host's monotonic clock, which a wall-clock jump does not move; it is read
//! again every [`REFRESH`].

use std::sync::Mutex;
use std::time::{Duration, Instant};

use fred::prelude::{Client, ClientLike};
use fred::types::Value;

/// Replay and `StartFrom::Time` look this far before the asked time in stream ids, since an
/// entry's id (when Redis stored it) can be a little earlier than the event's timestamp when
/// clocks differ.
pub(crate) const CLOCK_SKEW_MS: i64 = 60_000;

/// How long a reading of the server's time is carried forward before it is read again.
const REFRESH: Duration = Duration::from_secs(30);

/// The server's time as last read.
#[derive(Clone, Copy, Debug)]
struct Reading {
    /// Unix milliseconds on the server.
    server_ms: i64,
    /// When, on this host's monotonic clock.
    at: Instant,
}

impl Reading {
    fn now_ms(self) -> i64 {
        let elapsed = i64::try_from(self.at.elapsed().as_millis()).unwrap_or(i64::MAX);
        self.server_ms.saturating_add(elapsed)
    }
}

/// The server's clock as this bus knows it.
#[derive(Debug, Default)]
pub(crate) struct ServerClock {
    reading: Mutex<Option<Reading>>,
}

impl ServerClock {
    fn last(&self) -> Option<Reading> {
        *self
            .reading
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The server's time now, in Unix milliseconds: the last reading carried forward, read
    /// again when older than [`REFRESH`]. When `TIME` fails, the last reading carried forward;
    /// `None` only if the server's time was never read (then nothing is trimmed or expired:
    /// keeping an event too long is harmless, dropping it is not).
    pub(crate) async fn now_ms(&self, client: &Client) -> Option<i64> {
        let last = self.last();
        if let Some(reading) = last.filter(|r| r.at.elapsed() < REFRESH) {
            return Some(reading.now_ms());
        }
        match read_time(client).await {
            Ok(server_ms) => {
                let reading = Reading {
                    server_ms,
                    at: Instant::now(),
                };
                *self
                    .reading
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(reading);
                Some(server_ms)
            }
            Err(e) => {
                tracing::debug!("reading the Redis server's time failed: {e}");
                last.map(Reading::now_ms)
            }
        }
    }
}

/// `TIME`: seconds and microseconds since the Unix epoch, on the server.
async fn read_time(client: &Client) -> Result<i64, String> {
    let reply: Value = client
        .custom(fred::cmd!("TIME"), Vec::<Value>::new())
        .await
        .map_err(|e| e.details().to_string())?;
    parse_time(reply)
}

fn parse_time(reply: Value) -> Result<i64, String> {
    let parts = reply.into_array();
    let number = |i: usize| {
        parts
            .get(i)
            .and_then(|v| v.as_i64().or_else(|| v.as_str()?.parse().ok()))
    };
    match (number(0), number(1)) {
        (Some(secs), Some(micros)) if secs >= 0 && (0..1_000_000).contains(&micros) => secs
            .checked_mul(1000)
            .map(|ms| ms + micros / 1000)
            .ok_or_else(|| format!("TIME answered {secs} s")),
        _ => Err(format!("TIME answered {parts:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_replies() {
        let reply = Value::Array(vec![Value::from("1732660000"), Value::from("123456")]);
        assert_eq!(parse_time(reply), Ok(1_732_660_000_123));
        assert!(parse_time(Value::Array(vec![Value::from("x")])).is_err());
        assert!(parse_time(Value::Array(vec![Value::from(1), Value::from(2_000_000)])).is_err());
        assert!(parse_time(Value::Null).is_err());
    }

    #[test]
    fn a_reading_moves_with_the_monotonic_clock() {
        let reading = Reading {
            server_ms: 1000,
            at: Instant::now() - Duration::from_millis(250),
        };
        assert!(reading.now_ms() >= 1250);
    }
}
