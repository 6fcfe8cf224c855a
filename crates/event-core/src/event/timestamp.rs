//! The envelope's timestamp format: UTC, RFC 3339, exactly six fractional digits.

use serde::{Deserialize, Deserializer, Serializer};
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, UtcOffset};

/// `2026-11-26T22:00:00.123456Z`.
const WIRE: &[time::format_description::BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");

/// The current time, truncated to the microseconds the wire format keeps, so an event compares
/// equal to itself after a round trip.
pub(crate) fn now() -> OffsetDateTime {
    truncate(OffsetDateTime::now_utc())
}

/// Converts to UTC and drops sub-microsecond precision.
pub(crate) fn truncate(t: OffsetDateTime) -> OffsetDateTime {
    let t = t.to_offset(UtcOffset::UTC);
    let micros = t.microsecond();
    t.replace_microsecond(micros).unwrap_or(t)
}

/// Formats a timestamp the way the envelope writes it.
pub fn format(t: OffsetDateTime) -> String {
    // Formatting a UTC time with a fixed description cannot fail for years 0..=9999; the
    // fallback keeps the function total for the rest.
    truncate(t)
        .format(WIRE)
        .unwrap_or_else(|_| t.format(&Rfc3339).unwrap_or_default())
}

/// Parses any RFC 3339 timestamp (`Z` or an offset such as Python's `+00:00`) into UTC.
pub fn parse(s: &str) -> Result<OffsetDateTime, time::error::Parse> {
    OffsetDateTime::parse(s, &Rfc3339).map(truncate)
}

pub(crate) fn serialize<S: Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format(*t))
}

pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
    let raw = std::borrow::Cow::<'de, str>::deserialize(d)?;
    parse(&raw)
        .map_err(|e| serde::de::Error::custom(format!("timestamp {raw:?} is not RFC 3339: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn writes_six_digits_in_utc() {
        let t = datetime!(2026-11-26 22:00:00.123456789 +02:00);
        assert_eq!(format(t), "2026-11-26T20:00:00.123456Z");
        assert_eq!(
            format(datetime!(2026-01-01 00:00 UTC)),
            "2026-01-01T00:00:00.000000Z"
        );
    }

    #[test]
    fn reads_python_isoformat() {
        let t = parse("2026-11-26T21:46:01.285034+00:00").unwrap();
        assert_eq!(format(t), "2026-11-26T21:46:01.285034Z");
        let t = parse("2026-11-26T21:46:01+01:00").unwrap();
        assert_eq!(format(t), "2026-11-26T20:46:01.000000Z");
        assert!(parse("yesterday").is_err());
    }
}
