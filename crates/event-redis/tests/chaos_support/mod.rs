//! What the Redis chaos targets share: the foreign entries they write into the streams.

use event_core::EventType;
use event_testkit::chaos::ForeignEntry;
use fred::bytes::Bytes;
use fred::prelude::{Client, ClientLike};
use fred::types::Value;

/// Writes entries another producer could have written into the stream of `event_type` under
/// `key_prefix`, with raw `XADD`: missing, extra, binary and non-UTF-8 fields, each marked
/// with `marker` so the run can find its dead letter.
pub(crate) async fn write_foreign(
    admin: &Client,
    key_prefix: &str,
    event_type: &EventType,
    marker: &str,
) -> anyhow::Result<Vec<ForeignEntry>> {
    let stream = format!("{key_prefix}:stream:{event_type}");
    let m = |i: usize| format!("{marker}v{i}e");
    let shapes: Vec<(String, Vec<(Value, Value)>)> = vec![
        (
            "no event field".into(),
            vec![
                ("note".into(), m(0).into()),
                ("payload".into(), "hello".into()),
            ],
        ),
        (
            "an event field that is not JSON, and extra fields".into(),
            vec![
                ("id".into(), "not-an-id".into()),
                ("type".into(), event_type.as_str().into()),
                ("event".into(), format!("{{not json {}", m(1)).into()),
                ("extra".into(), "x".into()),
            ],
        ),
        (
            "an event field of binary, non-UTF-8 bytes".into(),
            vec![(
                "event".into(),
                bytes(&[b"\xff\xfe\x00", m(2).as_bytes(), b"\x80"]),
            )],
        ),
        (
            "JSON that is not an envelope".into(),
            vec![("event".into(), format!("{{\"id\":\"{}\"}}", m(3)).into())],
        ),
        (
            "a non-UTF-8 field name".into(),
            vec![
                (bytes(&[b"\xc3\x28name"]), m(4).into()),
                ("event".into(), bytes(&[b"\xff", m(4).as_bytes()])),
            ],
        ),
    ];
    let mut written = Vec::new();
    for (i, (shape, fields)) in shapes.into_iter().enumerate() {
        xadd(admin, &stream, fields).await?;
        written.push(ForeignEntry::new(m(i), shape));
    }
    Ok(written)
}

async fn xadd(admin: &Client, stream: &str, fields: Vec<(Value, Value)>) -> anyhow::Result<()> {
    let mut args = vec![Value::from(stream), Value::from("*")];
    for (name, value) in fields {
        args.push(name);
        args.push(value);
    }
    let _: Value = admin.custom(fred::cmd!("XADD"), args).await?;
    Ok(())
}

fn bytes(parts: &[&[u8]]) -> Value {
    Value::Bytes(Bytes::from(parts.concat()))
}
