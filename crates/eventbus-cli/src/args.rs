//! Parsing of flag values: times (`1h`, `30m`, RFC 3339), backend URLs for `copy`.

use std::time::Duration;

use event_manager::BusType;
use time::OffsetDateTime;

/// A flag value that is not valid; the message says what is expected.
#[derive(Debug)]
pub(crate) struct ArgError(pub(crate) String);

impl std::fmt::Display for ArgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ArgError {}

/// A time: `now`, an age such as `90s`, `15m`, `1h`, `2d`, `1w` (that long before `now`), or
/// an RFC 3339 timestamp such as `2026-11-26T22:00:00Z`.
pub(crate) fn parse_time(
    flag: &str,
    value: &str,
    now: OffsetDateTime,
) -> Result<OffsetDateTime, ArgError> {
    let value = value.trim();
    if value == "now" {
        return Ok(now);
    }
    if let Some(age) = parse_age(value) {
        return Ok(now - age);
    }
    event_core::timestamp::parse(value).map_err(|_| {
        ArgError(format!(
            "{flag} {value:?} is not a time: use an age such as 90s, 15m, 1h, 2d, 1w, or an RFC 3339 timestamp such as 2026-11-26T22:00:00Z"
        ))
    })
}

fn parse_age(value: &str) -> Option<Duration> {
    let split = value.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = value.split_at(split);
    let n: u64 = number.parse().ok()?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return None,
    };
    n.checked_mul(secs).map(Duration::from_secs)
}

/// A backend's server, named by a URL of `copy`'s `--from` or `--to`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Backend {
    /// A Redis URL.
    Redis(String),
    /// Kafka brokers, `host:port` each.
    Kafka(Vec<String>),
}

/// The backend `--bus` names.
pub(crate) fn bus_type(name: &str) -> Result<BusType, ArgError> {
    [BusType::Memory, BusType::Redis, BusType::Kafka]
        .into_iter()
        .find(|bus| bus.as_str().eq_ignore_ascii_case(name.trim()))
        .ok_or_else(|| {
            ArgError(format!(
                "{name:?} is not a backend: use memory, redis or kafka"
            ))
        })
}

/// Where `copy` reads or writes.
pub(crate) fn backend_url(flag: &str, url: &str) -> Result<Backend, ArgError> {
    if url.starts_with("redis://")
        || url.starts_with("rediss://")
        || url.starts_with("redis+unix://")
        || url.starts_with("unix://")
    {
        return Ok(Backend::Redis(url.into()));
    }
    if let Some(brokers) = url.strip_prefix("kafka://") {
        let brokers = brokers.trim_end_matches('/');
        if brokers.is_empty() {
            return Err(ArgError(format!(
                "{flag} {url:?} names no broker: use kafka://host:port[,host:port]"
            )));
        }
        return Ok(Backend::Kafka(
            brokers.split(',').map(|s| s.trim().to_string()).collect(),
        ));
    }
    Err(ArgError(format!(
        "{flag} {:?} is not a backend URL: use redis://host:port/db, rediss://..., or kafka://host:port[,host:port]",
        event_core::redact_url(url)
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_timestamps_and_errors() {
        let now = time::macros::datetime!(2026-11-27 01:00 UTC);
        assert_eq!(
            parse_time("--since", "1h", now).unwrap(),
            time::macros::datetime!(2026-11-27 00:00 UTC)
        );
        assert_eq!(
            parse_time("--since", "90s", now).unwrap(),
            time::macros::datetime!(2026-11-27 00:58:30 UTC)
        );
        assert_eq!(parse_time("--since", "now", now).unwrap(), now);
        assert_eq!(
            parse_time("--since", "2026-11-26T22:00:00Z", now).unwrap(),
            time::macros::datetime!(2026-11-26 22:00 UTC)
        );
        for bad in ["1x", "h", "yesterday", "", "-1h"] {
            let err = parse_time("--since", bad, now).unwrap_err().to_string();
            assert!(err.contains("--since"), "{err}");
        }
    }

    #[test]
    fn backend_urls() {
        assert_eq!(
            backend_url("--to", "kafka://a:9092, b:9092").unwrap(),
            Backend::Kafka(vec!["a:9092".into(), "b:9092".into()])
        );
        assert_eq!(
            backend_url("--from", "redis://h:1/0").unwrap(),
            Backend::Redis("redis://h:1/0".into())
        );
        let err = backend_url("--from", "http://user:secret@h")
            .unwrap_err()
            .to_string();
        assert!(err.contains("--from") && !err.contains("secret"), "{err}");
        assert!(backend_url("--to", "kafka://").is_err());
    }
}
