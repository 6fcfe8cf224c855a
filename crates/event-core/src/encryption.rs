//! Payload encryption at rest: AES-256-GCM over an envelope's `payload`, with the key's id in
//! its `metadata` so that keys can rotate.
//!
//! [`EncryptionKeys`] holds named 256-bit keys (`EVENT_ENCRYPTION_KEYS`); the first one
//! encrypts, all of them decrypt. The [codec](crate::JsonCodec) seals an event's payload as it
//! encodes the event and opens it as it decodes, so handlers, replay, dead letters and `copy`
//! see the plaintext while Redis and Kafka hold only ciphertext. The routing fields (id, type,
//! timestamp, source, correlation and partition keys, aggregate fields) stay readable, so
//! streams, partitions and ordering work as before.
//!
//! A sealed envelope, as a foreign reader sees it:
//!
//! ```json
//! {"id": "…", "event_type": "user.registered", "source": "user_service", "timestamp": "…",
//!  "payload": {"ciphertext": "<base64 of nonce (12 bytes) | ciphertext | tag (16 bytes)>"},
//!  "metadata": {"encryption_key_id": "2026-12", "encryption_algorithm": "AES-256-GCM", …}, …}
//! ```
//!
//! The event's id and type are authenticated with the payload (the AEAD's associated data): a
//! ciphertext moved into another event does not decrypt.
//!
//! ```
//! use event_core::{Event, EventType, JsonCodec, encryption::EncryptionKeys};
//!
//! let keys = EncryptionKeys::parse("2026-12:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")?;
//! let codec = JsonCodec::default().with_encryption(Some(keys), true);
//! let event = Event::builder(EventType::USER_REGISTERED, "user_service")
//!     .field("email", "ada@example.com")
//!     .build()?;
//! let bytes = codec.encode(&event)?;
//! assert!(!String::from_utf8_lossy(&bytes).contains("ada@example.com"));
//! assert_eq!(codec.decode(&bytes)?, event);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::Value;

use crate::{Error, Event, JsonObject};

/// The metadata field naming the key a payload is encrypted with.
pub const KEY_ID_FIELD: &str = "encryption_key_id";
/// The metadata field naming the algorithm ([`ALGORITHM`]).
pub const ALGORITHM_FIELD: &str = "encryption_algorithm";
/// The only algorithm: AES-256 in Galois/Counter Mode, 96-bit random nonces, 128-bit tags.
pub const ALGORITHM: &str = "AES-256-GCM";
/// The field of a sealed payload holding the base64 of nonce, ciphertext and tag.
pub const CIPHERTEXT_FIELD: &str = "ciphertext";
/// The length of a key, in bytes.
pub const KEY_LEN: usize = 32;
/// How to make a key, for messages.
const KEY_HINT: &str =
    "a key is 32 random bytes in base64, such as `openssl rand -base64 32` prints";
const TAG_LEN: usize = 16;

/// Named AES-256 keys: the first encrypts, every one decrypts (`EVENT_ENCRYPTION_KEYS`).
///
/// Written as comma-separated `id:key` pairs, each key 32 bytes in base64:
/// `2026-12:8Jm…=,2026-06:Qk1…=`. To rotate, put a new key first and keep the old ones for as
/// long as events encrypted with them are kept (`EVENT_TTL_SECONDS`, the Kafka retention).
/// `Debug` shows the ids only, never the keys.
#[derive(Clone)]
pub struct EncryptionKeys {
    keys: Arc<[Key]>,
}

struct Key {
    id: String,
    secret: [u8; KEY_LEN],
    aead: LessSafeKey,
}

impl EncryptionKeys {
    /// Keys from their text: comma-separated `id:key` pairs, each key 32 bytes in base64; ids
    /// are 1 to 64 characters of `a-z A-Z 0-9 . _ -`, each used once.
    ///
    /// # Errors
    /// What is wrong, without any key's bytes: an empty list, a pair without `:`, a bad or
    /// repeated id, a key that is not base64 or not 32 bytes long.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut keys = Vec::new();
        for (n, pair) in text.split(',').map(str::trim).enumerate() {
            if pair.is_empty() {
                continue;
            }
            let Some((id, key)) = pair.split_once(':') else {
                return Err(format!(
                    "entry {} is not `id:key` ({KEY_HINT}, after a key id such as `2026-12:`)",
                    n + 1
                ));
            };
            let (id, key) = (id.trim(), key.trim());
            let bytes = STANDARD
                .decode(key)
                .or_else(|_| STANDARD_NO_PAD.decode(key))
                .map_err(|_| format!("the key of {id:?} is not base64 ({KEY_HINT})"))?;
            let secret: [u8; KEY_LEN] = bytes.try_into().map_err(|b: Vec<u8>| {
                format!(
                    "the key of {id:?} is {} bytes, not {KEY_LEN} ({KEY_HINT})",
                    b.len()
                )
            })?;
            keys.push((id.to_string(), secret));
        }
        Self::new(keys)
    }

    /// Keys from ids and key bytes; the first encrypts.
    ///
    /// # Errors
    /// An empty list, or an id that is empty, too long, holds characters other than
    /// `a-z A-Z 0-9 . _ -`, or is used twice.
    pub fn new(keys: impl IntoIterator<Item = (String, [u8; KEY_LEN])>) -> Result<Self, String> {
        let mut out: Vec<Key> = Vec::new();
        for (id, secret) in keys {
            let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
            if id.is_empty() || id.len() > 64 || !id.chars().all(allowed) {
                return Err(format!(
                    "key id {id:?} must be 1 to 64 characters of a-z, A-Z, 0-9, '.', '_' or '-'"
                ));
            }
            if out.iter().any(|k| k.id == id) {
                return Err(format!("key id {id:?} is used twice"));
            }
            let unbound =
                UnboundKey::new(&AES_256_GCM, &secret).map_err(|_| "not an AES-256 key")?;
            out.push(Key {
                id,
                secret,
                aead: LessSafeKey::new(unbound),
            });
        }
        if out.is_empty() {
            return Err(format!("no key given: write `id:key` pairs ({KEY_HINT})"));
        }
        Ok(Self { keys: out.into() })
    }

    /// The id of the key that encrypts: the first.
    pub fn active_id(&self) -> &str {
        &self.keys[0].id
    }

    /// The ids of every key, the active one first.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.id.as_str())
    }

    /// The keys written as [`parse`](Self::parse) reads them, secrets included: to hand the
    /// settings to a child process. Never log it.
    pub fn to_text(&self) -> String {
        self.keys
            .iter()
            .map(|k| format!("{}:{}", k.id, STANDARD.encode(k.secret)))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The event with its payload encrypted by the active key and the key's id in its
    /// metadata. An event already sealed comes back unchanged, so sealing twice (redriving a
    /// dead letter whose key is unknown, copying between buses) never nests ciphertexts.
    ///
    /// # Errors
    /// [`Error::InvalidEvent`] if the payload cannot be written as JSON, or the system's random
    /// source fails.
    pub fn seal(&self, event: &Event) -> Result<Event, Error> {
        let mut sealed = event.clone();
        if is_sealed(event) {
            return Ok(sealed);
        }
        let key = &self.keys[0];
        let mut data = serde_json::to_vec(&event.payload).map_err(|e| Error::InvalidEvent {
            reason: format!("event {} cannot be encoded as JSON: {e}", event.id),
        })?;
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| Error::InvalidEvent {
                reason: "the system's random source failed; nothing was encrypted".into(),
            })?;
        key.aead
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(associated_data(event)),
                &mut data,
            )
            .map_err(|_| Error::InvalidEvent {
                reason: format!("event {} is too large to encrypt", event.id),
            })?;
        let mut blob = Vec::with_capacity(NONCE_LEN + data.len());
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&data);
        sealed.payload = JsonObject::from_iter([(
            CIPHERTEXT_FIELD.to_string(),
            Value::String(STANDARD.encode(blob)),
        )]);
        sealed
            .metadata
            .insert(KEY_ID_FIELD.into(), Value::String(key.id.clone()));
        sealed
            .metadata
            .insert(ALGORITHM_FIELD.into(), Value::String(ALGORITHM.into()));
        Ok(sealed)
    }

    /// The sealed event with its payload decrypted and the encryption fields removed from its
    /// metadata: the event as it was published.
    ///
    /// # Errors
    /// [`Error::Undecryptable`], holding the sealed event, when the key id is not one of these
    /// keys, the algorithm is not [`ALGORITHM`], or the ciphertext does not authenticate (a
    /// wrong key under a known id, or bytes changed at rest).
    pub fn open(&self, event: Event) -> Result<Event, Error> {
        let Some(key_id) = event.metadata.get(KEY_ID_FIELD).and_then(Value::as_str) else {
            let reason = format!("its metadata names no `{KEY_ID_FIELD}` string");
            return Err(undecryptable(event, reason));
        };
        let Some(key) = self.keys.iter().find(|k| k.id == key_id) else {
            let reason = format!(
                "its payload is encrypted with key {key_id:?}, which EVENT_ENCRYPTION_KEYS does not hold (it holds {}); add that key to read it, then redrive the dead letter",
                self.ids().collect::<Vec<_>>().join(", ")
            );
            return Err(undecryptable(event, reason));
        };
        match decrypt(&key.aead, &event) {
            Ok(payload) => {
                let mut open = event;
                open.payload = payload;
                open.metadata.remove(KEY_ID_FIELD);
                open.metadata.remove(ALGORITHM_FIELD);
                Ok(open)
            }
            Err(why) => Err(undecryptable(event, why)),
        }
    }
}

/// Whether the event's payload is sealed: its metadata names an encryption key or algorithm.
/// (An envelope with only one of the two is taken as sealed, and fails to open, rather than
/// handing its ciphertext to a handler as if it were the payload.)
pub fn is_sealed(event: &Event) -> bool {
    event.metadata.contains_key(KEY_ID_FIELD) || event.metadata.contains_key(ALGORITHM_FIELD)
}

/// The error for a sealed event that cannot be opened: the event as it is, and why.
pub(crate) fn undecryptable(event: Event, reason: String) -> Error {
    Error::Undecryptable {
        event: Box::new(event),
        reason,
    }
}

fn decrypt(key: &LessSafeKey, event: &Event) -> Result<JsonObject, String> {
    let algorithm = event.metadata.get(ALGORITHM_FIELD).and_then(Value::as_str);
    if algorithm != Some(ALGORITHM) {
        return Err(format!(
            "its metadata names the algorithm {algorithm:?}, not {ALGORITHM:?}"
        ));
    }
    let text = match (event.payload.len(), event.payload.get(CIPHERTEXT_FIELD)) {
        (1, Some(Value::String(text))) => text,
        _ => {
            return Err(format!(
                "its payload is not a sealed payload (an object with only a base64 `{CIPHERTEXT_FIELD}` string)"
            ));
        }
    };
    let mut blob = STANDARD
        .decode(text)
        .map_err(|e| format!("its `{CIPHERTEXT_FIELD}` is not base64: {e}"))?;
    if blob.len() < NONCE_LEN + TAG_LEN {
        return Err(format!(
            "its `{CIPHERTEXT_FIELD}` is {} bytes, shorter than a nonce and a tag",
            blob.len()
        ));
    }
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&blob[..NONCE_LEN]);
    let plain = key
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(associated_data(event)),
            &mut blob[NONCE_LEN..],
        )
        .map_err(|_| {
            "its payload does not authenticate under that key: the key under this id is not the one that encrypted it, or the record was changed".to_string()
        })?;
    serde_json::from_slice(plain)
        .map_err(|e| format!("its decrypted payload is not a JSON object: {e}"))
}

/// What the tag authenticates besides the payload: the event's id and type.
fn associated_data(event: &Event) -> Vec<u8> {
    format!("{}\n{}", event.id, event.event_type).into_bytes()
}

impl fmt::Debug for EncryptionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncryptionKeys")
            .field("ids", &self.ids().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl PartialEq for EncryptionKeys {
    fn eq(&self, other: &Self) -> bool {
        self.keys.len() == other.keys.len()
            && self
                .keys
                .iter()
                .zip(other.keys.iter())
                .all(|(a, b)| a.id == b.id && a.secret == b.secret)
    }
}

impl Eq for EncryptionKeys {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EventType;
    use serde_json::json;

    const K1: &str = "one:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const K2: &str = "two:HxwdHBsaGRgXFhUUExIREA8ODQwLCgkIBwYFBAMCAQA=";

    fn event() -> Event {
        Event::builder(EventType::USER_REGISTERED, "user_service")
            .payload(json!({"email": "ada@example.com", "plan": {"tier": 2}}))
            .partition_key("user-1")
            .metadata("origin", "test")
            .build()
            .unwrap()
    }

    #[test]
    fn sealing_hides_the_payload_and_keeps_the_routing_fields() {
        let keys = EncryptionKeys::parse(K1).unwrap();
        let event = event();
        let sealed = keys.seal(&event).unwrap();
        let text = serde_json::to_string(&sealed).unwrap();
        assert!(!text.contains("ada@example.com"), "{text}");
        assert_eq!(sealed.metadata[KEY_ID_FIELD], "one");
        assert_eq!(sealed.metadata["origin"], "test");
        assert_eq!(
            (sealed.id, &sealed.event_type, &sealed.partition_key),
            (event.id, &event.event_type, &event.partition_key)
        );
        assert_eq!(keys.seal(&sealed).unwrap(), sealed, "sealing twice nests");
        assert_eq!(keys.open(sealed).unwrap(), event);
    }

    #[test]
    fn rotation_decrypts_with_old_keys_and_encrypts_with_the_first() {
        let old = EncryptionKeys::parse(K1).unwrap();
        let rotated = EncryptionKeys::parse(&format!("{K2}, {K1}")).unwrap();
        let event = event();
        let sealed = old.seal(&event).unwrap();
        assert_eq!(rotated.open(sealed).unwrap(), event);
        assert_eq!(rotated.seal(&event).unwrap().metadata[KEY_ID_FIELD], "two");
        let err = old.open(rotated.seal(&event).unwrap()).unwrap_err();
        assert!(err.to_string().contains("\"two\""), "{err}");
        assert!(matches!(err, Error::Undecryptable { .. }));
    }

    #[test]
    fn tampering_and_moved_ciphertexts_do_not_open() {
        let keys = EncryptionKeys::parse(K1).unwrap();
        let sealed = keys.seal(&event()).unwrap();
        // Another event: the ciphertext is bound to the first one's id.
        let mut moved = keys.seal(&event()).unwrap();
        moved.payload = sealed.payload.clone();
        assert!(
            keys.open(moved)
                .unwrap_err()
                .to_string()
                .contains("does not authenticate")
        );
        let mut retyped = sealed.clone();
        retyped.event_type = EventType::USER_PROFILE_UPDATED;
        assert!(keys.open(retyped).is_err());
        let mut short = sealed.clone();
        short.payload[CIPHERTEXT_FIELD] = json!("AAAA");
        assert!(
            keys.open(short)
                .unwrap_err()
                .to_string()
                .contains("shorter")
        );
        // A key id removed at rest does not turn the ciphertext into a plaintext payload.
        let mut stripped = sealed.clone();
        stripped.metadata.remove(KEY_ID_FIELD);
        assert!(is_sealed(&stripped));
        assert!(
            keys.open(stripped)
                .unwrap_err()
                .to_string()
                .contains("names no")
        );
        let same_id_other_key = EncryptionKeys::parse(&K2.replacen("two", "one", 1)).unwrap();
        assert!(same_id_other_key.open(sealed).is_err());
    }

    #[test]
    fn bad_key_text_says_what_is_wrong_without_the_key() {
        for (text, expected) in [
            ("", "no key given"),
            ("justakey", "not `id:key`"),
            ("a:not base64!", "not base64"),
            ("a:AAEC", "3 bytes, not 32"),
            (
                "bad id:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
                "key id",
            ),
            (&format!("{K1},{K1}"), "used twice"),
        ] {
            let err = EncryptionKeys::parse(text).unwrap_err();
            assert!(err.contains(expected), "{text:?}: {err}");
            assert!(!err.contains("AAECAwQF"), "{err}");
        }
        let keys = EncryptionKeys::parse(&format!("{K1},{K2}")).unwrap();
        assert_eq!(
            format!("{keys:?}"),
            r#"EncryptionKeys { ids: ["one", "two"], .. }"#
        );
        assert_eq!(EncryptionKeys::parse(&keys.to_text()).unwrap(), keys);
    }
}
