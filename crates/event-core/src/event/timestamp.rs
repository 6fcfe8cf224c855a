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
    let mut buf = [0; WIRE_LEN];
    match write_wire(t, &mut buf) {
        Some(text) => text.to_string(),
        None => formatted(t),
    }
}

/// The length of the wire format: `2026-11-26T22:00:00.123456Z`.
const WIRE_LEN: usize = 27;

/// Writes `t` in the wire format into `buf`, digit by digit (every envelope encoded carries
/// one, and `time`'s general formatter took about 2 % of a Redis end-to-end run); `None` for
/// a year outside 0..=9999, which [`formatted`] handles.
fn write_wire(t: OffsetDateTime, buf: &mut [u8; WIRE_LEN]) -> Option<&str> {
    let t = truncate(t);
    let year = u32::try_from(t.year()).ok().filter(|y| *y <= 9999)?;
    let mut put = |at: usize, value: u32, digits: u32| {
        for i in 0..digits {
            let digit = value / 10u32.pow(digits - 1 - i) % 10;
            buf[at + i as usize] = b'0' + digit as u8;
        }
    };
    put(0, year, 4);
    put(5, u32::from(u8::from(t.month())), 2);
    put(8, u32::from(t.day()), 2);
    put(11, u32::from(t.hour()), 2);
    put(14, u32::from(t.minute()), 2);
    put(17, u32::from(t.second()), 2);
    put(20, t.microsecond(), 6);
    for (at, byte) in [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'.'),
    ] {
        buf[at] = byte;
    }
    buf[26] = b'Z';
    std::str::from_utf8(buf).ok()
}

/// [`format`] through `time`'s formatter, for any year: `WIRE` for years 0..=9999, RFC 3339
/// for the rest.
fn formatted(t: OffsetDateTime) -> String {
    truncate(t)
        .format(WIRE)
        .unwrap_or_else(|_| t.format(&Rfc3339).unwrap_or_default())
}

/// Parses any RFC 3339 timestamp (`Z` or an offset such as Python's `+00:00`) into UTC.
pub fn parse(s: &str) -> Result<OffsetDateTime, time::error::Parse> {
    OffsetDateTime::parse(s, &Rfc3339).map(truncate)
}

pub(crate) fn serialize<S: Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
    let mut buf = [0; WIRE_LEN];
    match write_wire(*t, &mut buf) {
        Some(text) => s.serialize_str(text),
        None => s.serialize_str(&formatted(*t)),
    }
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

    proptest::proptest! {
        #[test]
        fn the_digit_writer_agrees_with_time(
            seconds in -70_000_000_000i64..253_402_000_000i64,
            nanos in 0u32..1_000_000_000,
            offset in -86_399i32..86_400,
        ) {
            let t = OffsetDateTime::from_unix_timestamp(seconds).unwrap()
                + time::Duration::nanoseconds(i64::from(nanos));
            let t = t.to_offset(UtcOffset::from_whole_seconds(offset).unwrap());
            proptest::prop_assert_eq!(format(t), formatted(t));
        }
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
