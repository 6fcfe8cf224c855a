//! The codec's decoding fed what a foreign producer, a bug or an attacker may store: arbitrary
//! bytes, and valid envelopes mutated field by field (a field dropped, retyped, made huge or
//! deeply nested, duplicated, its text cut; raw text no JSON value holds put in its place:
//! invalid UTF-8 inside a string, lone surrogates, numbers beyond every numeric type, nesting
//! past the parser's limit), plain and sealed (ciphertext flipped, key ids changed). Decoding never panics; it returns an event that encodes and decodes to itself, or
//! an error that says what is wrong.

use event_core::encryption::EncryptionKeys;
use event_core::{Error, Event, EventType, JsonCodec};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

const KEYS: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

fn codecs() -> [JsonCodec; 2] {
    let keys = EncryptionKeys::parse(KEYS).expect("test keys");
    [
        JsonCodec::default(),
        JsonCodec::default().with_encryption(Some(keys), true),
    ]
}

/// A valid envelope, as a JSON object.
fn envelope(sealed: bool) -> Map<String, Value> {
    let event = Event::builder(EventType::USER_REGISTERED, "fuzz")
        .payload(json!({"email": "a@example.com", "n": 1, "nested": {"list": [1, 2.5, "x"]}}))
        .partition_key("user-1")
        .correlation_id("req-1")
        .metadata("tenant", "acme")
        .build()
        .expect("a valid event");
    let codec = &codecs()[usize::from(sealed)];
    match serde_json::from_slice(&codec.encode(&event).expect("encodes")) {
        Ok(Value::Object(map)) => map,
        other => panic!("not an object: {other:?}"),
    }
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "\\PC{0,30}".prop_map(Value::String),
        "[0-9a-f-]{0,40}".prop_map(Value::String),
        "[A-Za-z0-9+/=]{0,80}".prop_map(Value::String),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map("\\PC{0,10}", inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// The envelope's fields and the metadata and payload fields that encryption reads.
const FIELDS: [&str; 14] = [
    "id",
    "event_type",
    "payload",
    "timestamp",
    "source",
    "correlation_id",
    "causation_id",
    "partition_key",
    "metadata",
    "schema_version",
    "aggregate_id",
    "aggregate_version",
    "metadata.encryption_key_id",
    "payload.ciphertext",
];

#[derive(Debug, Clone)]
enum Mutation {
    Drop(usize),
    Replace(usize, Value),
    Nest(usize, usize),
    Long(usize, usize),
    FlipCiphertext(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (0..FIELDS.len()).prop_map(Mutation::Drop),
        (0..FIELDS.len(), json_value()).prop_map(|(f, v)| Mutation::Replace(f, v)),
        (0..FIELDS.len(), 1usize..200).prop_map(|(f, d)| Mutation::Nest(f, d)),
        (0..FIELDS.len(), 0usize..100_000).prop_map(|(f, n)| Mutation::Long(f, n)),
        (0usize..64).prop_map(Mutation::FlipCiphertext),
    ]
}

/// The object holding `field` (`metadata.x` lives in the metadata) and the key in it.
fn place<'a>(
    map: &'a mut Map<String, Value>,
    field: &'static str,
) -> Option<(&'a mut Map<String, Value>, &'static str)> {
    match field.split_once('.') {
        Some((outer, inner)) => match map.get_mut(outer) {
            Some(Value::Object(inner_map)) => Some((inner_map, inner)),
            _ => None,
        },
        None => Some((map, field)),
    }
}

fn apply(map: &mut Map<String, Value>, mutation: &Mutation) {
    match mutation {
        Mutation::Drop(f) => {
            if let Some((m, k)) = place(map, FIELDS[*f]) {
                m.remove(k);
            }
        }
        Mutation::Replace(f, v) => {
            if let Some((m, k)) = place(map, FIELDS[*f]) {
                m.insert(k.to_string(), v.clone());
            }
        }
        Mutation::Nest(f, depth) => {
            let mut v = json!("deep");
            for _ in 0..*depth {
                v = json!([v]);
            }
            if let Some((m, k)) = place(map, FIELDS[*f]) {
                m.insert(k.to_string(), v);
            }
        }
        Mutation::Long(f, n) => {
            if let Some((m, k)) = place(map, FIELDS[*f]) {
                m.insert(k.to_string(), Value::String("é".repeat(*n)));
            }
        }
        Mutation::FlipCiphertext(at) => {
            if let Some(Value::Object(payload)) = map.get_mut("payload")
                && let Some(Value::String(text)) = payload.get_mut("ciphertext")
                && !text.is_empty()
            {
                let mut chars: Vec<char> = text.chars().collect();
                let i = at % chars.len();
                chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
                *text = chars.into_iter().collect();
            }
        }
    }
}

/// Stands where a field's value goes until the raw text replaces it.
const PLACEHOLDER: &str = "@@raw-placeholder@@";

/// JSON text no `Value` holds: invalid UTF-8 inside a string, lone surrogates and odd escapes,
/// numbers beyond every integer and float type, nesting past the parser's limit, broken
/// structure.
fn raw_text() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        (
            "[a-z]{0,6}",
            prop::collection::vec(0x80u8..=0xff, 1..4),
            "[a-z]{0,6}"
        )
            .prop_map(|(a, bad, b)| [b"\"", a.as_bytes(), &bad, b.as_bytes(), b"\""].concat()),
        prop::sample::select(vec![
            r#""\ud800""#,
            r#""\udfff\ud800x""#,
            r#""\u0000""#,
            r#""\x41""#,
            r#""\uZZZZ""#,
            r#""\"#,
            "\"\u{feff}\u{202e}\u{200d}\u{10ffff}\"",
            "\"\t\n\"",
            "-0",
            "1e999",
            "-1e-999",
            "NaN",
            "Infinity",
            "01",
            "+1",
            ".5",
            "true false",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
        "-?[1-9][0-9]{19,400}".prop_map(String::into_bytes),
        "-?[0-9]\\.[0-9]{1,20}[eE][+-]?[0-9]{3,6}".prop_map(String::into_bytes),
        (100usize..400).prop_map(|d| ["[".repeat(d), "]".repeat(d)].concat().into_bytes()),
        "[\\[\\]{}:,\"]{1,10}".prop_map(String::into_bytes),
    ]
}

/// `text` with the first placeholder (as JSON, quoted) replaced by `raw`.
fn inject(text: &[u8], raw: &[u8]) -> Vec<u8> {
    let quoted = format!("\"{PLACEHOLDER}\"");
    let needle = quoted.as_bytes();
    match text.windows(needle.len()).position(|w| w == needle) {
        Some(at) => [&text[..at], raw, &text[at + needle.len()..]].concat(),
        None => text.to_vec(),
    }
}

/// What decoding must give for any input.
fn check(codec: &JsonCodec, bytes: &[u8]) -> Result<(), TestCaseError> {
    match codec.decode(bytes) {
        Ok(event) => {
            let again = codec.encode(&event).map_err(|e| {
                TestCaseError::fail(format!("a decoded event does not encode: {e}"))
            })?;
            prop_assert_eq!(codec.decode(&again).ok(), Some(event));
        }
        Err(Error::InvalidEvent { reason }) => prop_assert!(!reason.is_empty()),
        Err(Error::Undecryptable { reason, .. }) => prop_assert!(!reason.is_empty()),
        Err(other) => prop_assert!(false, "an unexpected error: {other}"),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 1_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        for codec in codecs() {
            check(&codec, &bytes)?;
        }
    }

    #[test]
    fn arbitrary_json_never_panics(value in json_value()) {
        let bytes = serde_json::to_vec(&value).expect("serializable");
        for codec in codecs() {
            check(&codec, &bytes)?;
        }
    }

    #[test]
    fn mutated_envelopes_never_panic(
        sealed in any::<bool>(),
        mutations in prop::collection::vec(mutation(), 1..4),
        cut in proptest::option::of(0usize..2000),
        duplicate in proptest::option::of(0..FIELDS.len() - 2),
        raw in proptest::option::of((0..FIELDS.len(), raw_text())),
        bom in any::<bool>(),
    ) {
        let mut map = envelope(sealed);
        for m in &mutations {
            apply(&mut map, m);
        }
        if let Some((f, _)) = &raw
            && let Some((m, k)) = place(&mut map, FIELDS[*f])
        {
            m.insert(k.to_string(), json!(PLACEHOLDER));
        }
        let mut text = serde_json::to_string(&Value::Object(map)).expect("serializable");
        // A key written twice (serde_json keeps the last) and text cut short.
        if let Some(f) = duplicate {
            text.insert_str(1, &format!("\"{}\":\"dup\",", FIELDS[f]));
        }
        if let Some(at) = cut {
            let at = text.char_indices().map(|(i, _)| i).nth(at).unwrap_or(text.len());
            text.truncate(at);
        }
        let mut bytes = match &raw {
            Some((_, raw)) => inject(text.as_bytes(), raw),
            None => text.into_bytes(),
        };
        // A byte order mark before the document.
        if bom {
            bytes.splice(0..0, [0xef, 0xbb, 0xbf]);
        }
        for codec in codecs() {
            check(&codec, &bytes)?;
        }
    }
}

#[test]
fn a_flipped_ciphertext_is_undecryptable_not_a_guess() {
    let codec = &codecs()[1];
    let mut map = envelope(true);
    apply(&mut map, &Mutation::FlipCiphertext(20));
    let bytes = serde_json::to_vec(&Value::Object(map)).expect("serializable");
    match codec.decode(&bytes) {
        Err(Error::Undecryptable { reason, .. }) => {
            assert!(reason.contains("does not authenticate"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn raw_text_in_a_field_is_refused_with_a_reason() {
    for raw in [
        &b"\"a\xff\xfeb\""[..],
        b"\"\\ud800\"",
        b"1e999",
        b"\"\\uZZZZ\"",
    ] {
        let mut map = envelope(false);
        map.insert("source".into(), json!(PLACEHOLDER));
        let text = serde_json::to_vec(&Value::Object(map)).expect("serializable");
        let bytes = inject(&text, raw);
        assert_ne!(bytes, text, "the placeholder was not replaced");
        match JsonCodec::default().decode(&bytes) {
            Err(Error::InvalidEvent { reason }) => {
                assert!(reason.contains("not a valid event envelope"), "{reason}");
            }
            other => panic!("{}: {other:?}", String::from_utf8_lossy(raw)),
        }
    }
}
