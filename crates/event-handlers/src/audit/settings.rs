//! [`AuditSettings`]: where the audit trail goes, from the `EVENT_AUDIT_*` variables.

use std::path::PathBuf;

use event_core::config::table::{Reader, Rule, Secret, Variable};
use event_core::encryption::EncryptionKeys;
use event_core::{EnvSettings, EventType};

/// Where the audit trail is written.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuditSink {
    /// JSON Lines files in `dir`: `audit.jsonl` is appended to; when the next line would take
    /// it past `max_file_bytes` it becomes `audit.1.jsonl` (the older ones shift to
    /// `audit.2.jsonl`, ...) and a new `audit.jsonl` starts; at most `max_files` files are
    /// kept, the current one included.
    JsonLines {
        /// The directory (`EVENT_AUDIT_DIR`, default `{temp dir}/eventbus-audit`).
        dir: PathBuf,
        /// Rotation size (`EVENT_AUDIT_MAX_FILE_BYTES`, default 67108864 = 64 MiB).
        max_file_bytes: u64,
        /// Files kept (`EVENT_AUDIT_MAX_FILES`, default 10, at least 1).
        max_files: usize,
    },
    /// A Redis stream (cargo feature `redis`): one `XADD` entry per event with the fields
    /// `id`, `type`, `audited_at` and `event` (the envelope JSON), trimmed with `MAXLEN ~`.
    #[cfg(feature = "redis")]
    RedisStream {
        /// The server (`EVENT_AUDIT_REDIS_URL`, default `REDIS_URL`, else
        /// `redis://localhost:6379/0`). Never shown with its password.
        url: String,
        /// The stream's key (`EVENT_AUDIT_REDIS_STREAM`, default `eventbus:audit`).
        stream: String,
        /// About how many entries are kept (`EVENT_AUDIT_REDIS_MAXLEN`, default 1000000).
        max_len: u64,
    },
}

impl std::fmt::Debug for AuditSink {
    // By hand: the Redis URL may hold a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuditSink::JsonLines {
                dir,
                max_file_bytes,
                max_files,
            } => f
                .debug_struct("JsonLines")
                .field("dir", dir)
                .field("max_file_bytes", max_file_bytes)
                .field("max_files", max_files)
                .finish(),
            #[cfg(feature = "redis")]
            AuditSink::RedisStream {
                url,
                stream,
                max_len,
            } => f
                .debug_struct("RedisStream")
                .field("url", &event_core::redact_url(url))
                .field("stream", stream)
                .field("max_len", max_len)
                .finish(),
        }
    }
}

/// The audit trail's settings.
///
/// ```
/// use event_core::EnvSettings;
/// use event_handlers::{AuditSettings, AuditSink};
///
/// let settings = AuditSettings::from_vars([("EVENT_AUDIT_DIR", "/var/log/eventbus"), ("EVENT_AUDIT_MAX_FILES", "3")])?;
/// let AuditSink::JsonLines { dir, max_files, .. } = &settings.sink else { unreachable!() };
/// assert_eq!(dir.to_str(), Some("/var/log/eventbus"));
/// assert_eq!(*max_files, 3);
/// # Ok::<(), event_core::ConfigError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuditSettings {
    /// The sink.
    pub sink: AuditSink,
    /// Custom event types to audit besides the standard ones (`EVENT_AUDIT_EXTRA_TYPES`,
    /// comma-separated; default none).
    pub extra_event_types: Vec<EventType>,
    /// Keys that seal each entry's payload as the bus seals it at rest (the first key
    /// encrypts); `None` writes entries as handled. The manager sets it from
    /// `ENABLE_EVENT_ENCRYPTION` and `EVENT_ENCRYPTION_KEYS`, so that the audit trail holds no
    /// more plaintext than the streams and topics do.
    pub encryption: Option<EncryptionKeys>,
}

/// Default rotation size: 64 MiB.
const DEFAULT_MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;
/// Default number of files kept.
const DEFAULT_MAX_FILES: usize = 10;

const EVENT_AUDIT_SINK: Variable = Variable {
    name: "EVENT_AUDIT_SINK",
    default: Some("jsonl"),
    default_note: "",
    rule: Rule::OneOf(&["jsonl", "redis"]),
    secret: Secret::No,
    original: false,
    doc: "where the `audit` domain handler writes: rotated JSON Lines files, or a Redis stream (`redis` needs the `redis` cargo feature of `event-handlers`, on by default).",
};
const EVENT_AUDIT_DIR: Variable = Variable {
    name: "EVENT_AUDIT_DIR",
    default: None,
    default_note: "`{temp dir}/eventbus-audit`",
    rule: Rule::Text("a directory path (created if missing)"),
    secret: Secret::No,
    original: false,
    doc: "with `EVENT_AUDIT_SINK=jsonl`: where the `audit` domain handler writes its JSON Lines files (see [operations.md](operations.md#the-audit-trail)).",
};
const EVENT_AUDIT_MAX_FILE_BYTES: Variable = Variable {
    name: "EVENT_AUDIT_MAX_FILE_BYTES",
    default: Some("67108864"),
    default_note: "64 MiB",
    rule: Rule::Whole {
        min: 1024,
        max: u64::MAX,
    },
    secret: Secret::No,
    original: false,
    doc: "the audit file is rotated when the next line would pass this size.",
};
const EVENT_AUDIT_MAX_FILES: Variable = Variable {
    name: "EVENT_AUDIT_MAX_FILES",
    default: Some("10"),
    default_note: "",
    rule: Rule::Whole { min: 1, max: 1000 },
    secret: Secret::No,
    original: false,
    doc: "audit files kept, the current one included; the oldest is deleted on rotation.",
};
const EVENT_AUDIT_REDIS_URL: Variable = Variable {
    name: "EVENT_AUDIT_REDIS_URL",
    default: None,
    default_note: "`REDIS_URL`, else `redis://localhost:6379/0`",
    rule: Rule::Text("a Redis URL (`redis://`, `rediss://`, `redis+unix://`, `unix://`)"),
    secret: Secret::UrlPassword,
    original: false,
    doc: "with `EVENT_AUDIT_SINK=redis`: the server of the audit stream. Checked when the handler is built, connected to by the first event; the password never appears in messages or `Debug` output.",
};
/// The fallback of `EVENT_AUDIT_REDIS_URL`: the bus's own server. Declared in `event-redis`'s
/// table; read here only as the default.
const REDIS_URL: Variable = Variable {
    name: "REDIS_URL",
    default: Some("redis://localhost:6379/0"),
    ..EVENT_AUDIT_REDIS_URL
};
const EVENT_AUDIT_REDIS_STREAM: Variable = Variable {
    name: "EVENT_AUDIT_REDIS_STREAM",
    default: Some("eventbus:audit"),
    default_note: "",
    rule: Rule::Text("a Redis key"),
    secret: Secret::No,
    original: false,
    doc: "with `EVENT_AUDIT_SINK=redis`: the stream's key.",
};
const EVENT_AUDIT_REDIS_MAXLEN: Variable = Variable {
    name: "EVENT_AUDIT_REDIS_MAXLEN",
    default: Some("1000000"),
    default_note: "",
    rule: Rule::Whole {
        min: 1,
        max: u64::MAX,
    },
    secret: Secret::No,
    original: false,
    doc: "with `EVENT_AUDIT_SINK=redis`: the stream is trimmed to about this many entries (`XADD ... MAXLEN ~`).",
};
const EVENT_AUDIT_EXTRA_TYPES: Variable = Variable {
    name: "EVENT_AUDIT_EXTRA_TYPES",
    default: None,
    default_note: "none",
    rule: Rule::Text("comma-separated event types such as `billing.invoice_paid`"),
    secret: Secret::No,
    original: false,
    doc: "custom types the `audit` handler subscribes to besides the 20 standard ones, `agent.task_started` and `opportunity.reanalysis_requested`.",
};

impl Default for AuditSettings {
    /// JSON Lines under `{temp dir}/eventbus-audit`, rotated at 64 MiB, 10 files kept.
    fn default() -> Self {
        Self::json_lines(std::env::temp_dir().join("eventbus-audit"))
    }
}

impl AuditSettings {
    /// JSON Lines files in `dir`, rotated at 64 MiB, 10 files kept.
    pub fn json_lines(dir: impl Into<PathBuf>) -> Self {
        Self {
            sink: AuditSink::JsonLines {
                dir: dir.into(),
                max_file_bytes: DEFAULT_MAX_FILE_BYTES,
                max_files: DEFAULT_MAX_FILES,
            },
            extra_event_types: Vec::new(),
            encryption: None,
        }
    }

    /// Sets the rotation size and the number of files kept (at least 1 byte and 1 file) of a
    /// JSON Lines sink; other sinks are left as they are.
    pub fn rotation(mut self, max_file_bytes: u64, max_files: usize) -> Self {
        #[allow(irrefutable_let_patterns)] // irrefutable without the `redis` feature
        if let AuditSink::JsonLines {
            max_file_bytes: bytes,
            max_files: files,
            ..
        } = &mut self.sink
        {
            *bytes = max_file_bytes.max(1);
            *files = max_files.max(1);
        }
        self
    }

    /// A Redis stream sink (cargo feature `redis`): `stream` at `url`, trimmed to about
    /// `max_len` entries.
    #[cfg(feature = "redis")]
    pub fn redis_stream(url: impl Into<String>, stream: impl Into<String>, max_len: u64) -> Self {
        Self {
            sink: AuditSink::RedisStream {
                url: url.into(),
                stream: stream.into(),
                max_len: max_len.max(1),
            },
            extra_event_types: Vec::new(),
            encryption: None,
        }
    }

    /// Seals each entry's payload with `keys` (the first encrypts), as the bus does at rest.
    pub fn sealed_with(mut self, keys: Option<EncryptionKeys>) -> Self {
        self.encryption = keys;
        self
    }

    fn read_sink(r: &mut Reader<'_>) -> Self {
        let sink = r.text(&EVENT_AUDIT_SINK);
        match sink.to_ascii_lowercase().as_str() {
            "jsonl" => {
                let settings = match r.path(&EVENT_AUDIT_DIR) {
                    Some(dir) => Self::json_lines(dir),
                    None => Self::default(),
                };
                let bytes = r.whole(&EVENT_AUDIT_MAX_FILE_BYTES);
                settings.rotation(bytes, r.whole(&EVENT_AUDIT_MAX_FILES))
            }
            #[cfg(feature = "redis")]
            "redis" => {
                let url = match r.optional(&EVENT_AUDIT_REDIS_URL) {
                    Some(url) => url,
                    None => r.text(&REDIS_URL),
                };
                let stream = r.text(&EVENT_AUDIT_REDIS_STREAM);
                Self::redis_stream(url, stream, r.whole(&EVENT_AUDIT_REDIS_MAXLEN))
            }
            #[cfg(not(feature = "redis"))]
            "redis" => {
                r.problem(
                    &EVENT_AUDIT_SINK,
                    &sink,
                    "`jsonl` (`redis` needs the cargo feature `redis` of event-handlers)",
                );
                Self::default()
            }
            _ => {
                r.invalid(&EVENT_AUDIT_SINK, &sink);
                Self::default()
            }
        }
    }
}

/// The `EVENT_AUDIT_*` variables: read them with [`EnvSettings::from_env`] (or `from_vars`);
/// unset ones keep their defaults, and one [`ConfigError`](event_core::ConfigError) names
/// every variable with a bad value.
impl EnvSettings for AuditSettings {
    const VARIABLES: &'static [Variable] = &[
        EVENT_AUDIT_SINK,
        EVENT_AUDIT_DIR,
        EVENT_AUDIT_MAX_FILE_BYTES,
        EVENT_AUDIT_MAX_FILES,
        EVENT_AUDIT_REDIS_URL,
        EVENT_AUDIT_REDIS_STREAM,
        EVENT_AUDIT_REDIS_MAXLEN,
        EVENT_AUDIT_EXTRA_TYPES,
    ];

    fn read(r: &mut Reader<'_>) -> Self {
        let mut settings = Self::read_sink(r);
        if let Some(list) = r.optional(&EVENT_AUDIT_EXTRA_TYPES) {
            for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                match EventType::new(name) {
                    Ok(event_type) => settings.extra_event_types.push(event_type),
                    Err(_) => r.invalid(&EVENT_AUDIT_EXTRA_TYPES, &list),
                }
            }
        }
        settings
    }

    fn write(&self, name: &str) -> Option<String> {
        let unset = String::new;
        let value = match (&self.sink, name) {
            (_, "EVENT_AUDIT_EXTRA_TYPES") => self
                .extra_event_types
                .iter()
                .map(EventType::as_str)
                .collect::<Vec<_>>()
                .join(","),
            (AuditSink::JsonLines { .. }, "EVENT_AUDIT_SINK") => "jsonl".into(),
            (AuditSink::JsonLines { dir, .. }, "EVENT_AUDIT_DIR") => dir.display().to_string(),
            (AuditSink::JsonLines { max_file_bytes, .. }, "EVENT_AUDIT_MAX_FILE_BYTES") => {
                max_file_bytes.to_string()
            }
            (AuditSink::JsonLines { max_files, .. }, "EVENT_AUDIT_MAX_FILES") => {
                max_files.to_string()
            }
            #[cfg(feature = "redis")]
            (AuditSink::RedisStream { .. }, "EVENT_AUDIT_SINK") => "redis".into(),
            #[cfg(feature = "redis")]
            (AuditSink::RedisStream { url, .. }, "EVENT_AUDIT_REDIS_URL") => url.clone(),
            #[cfg(feature = "redis")]
            (AuditSink::RedisStream { stream, .. }, "EVENT_AUDIT_REDIS_STREAM") => stream.clone(),
            #[cfg(feature = "redis")]
            (AuditSink::RedisStream { max_len, .. }, "EVENT_AUDIT_REDIS_MAXLEN") => {
                max_len.to_string()
            }
            _ if Self::VARIABLES.iter().any(|var| var.name == name) => unset(),
            _ => return None,
        };
        Some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_bad_values() {
        let s = AuditSettings::from_vars(Vec::<(&str, &str)>::new()).unwrap();
        assert_eq!(s, AuditSettings::default());
        let err = AuditSettings::from_vars([("EVENT_AUDIT_MAX_FILES", "0")]).unwrap_err();
        assert!(err.to_string().contains("EVENT_AUDIT_MAX_FILES"), "{err}");
        let err = AuditSettings::from_vars([("EVENT_AUDIT_MAX_FILE_BYTES", "ten")]).unwrap_err();
        assert!(
            err.to_string().contains("EVENT_AUDIT_MAX_FILE_BYTES"),
            "{err}"
        );
        let err = AuditSettings::from_vars([("EVENT_AUDIT_SINK", "kafka")]).unwrap_err();
        assert!(err.to_string().contains("EVENT_AUDIT_SINK"), "{err}");
        let err = AuditSettings::from_vars([("EVENT_AUDIT_EXTRA_TYPES", "Bad Type")]).unwrap_err();
        assert!(err.to_string().contains("EVENT_AUDIT_EXTRA_TYPES"), "{err}");
        // Every bad value is named at once.
        let err = AuditSettings::from_vars([
            ("EVENT_AUDIT_MAX_FILES", "0"),
            ("EVENT_AUDIT_MAX_FILE_BYTES", "ten"),
        ])
        .unwrap_err();
        assert_eq!(err.problems().len(), 2, "{err}");
        let s = AuditSettings::from_vars([(
            "EVENT_AUDIT_EXTRA_TYPES",
            "billing.paid, api.request_started",
        )])
        .unwrap();
        assert_eq!(s.extra_event_types.len(), 2);
        // What is written reads back the same.
        assert_eq!(AuditSettings::from_vars(s.to_vars()).unwrap(), s);
        s.validate().unwrap();
    }

    #[cfg(feature = "redis")]
    #[test]
    fn redis_sink_from_variables_never_shows_the_password() {
        let s = AuditSettings::from_vars([
            ("EVENT_AUDIT_SINK", "redis"),
            ("REDIS_URL", "redis://app:s3cret@cache:6379/2"),
            ("EVENT_AUDIT_REDIS_MAXLEN", "500"),
        ])
        .unwrap();
        let AuditSink::RedisStream {
            url,
            stream,
            max_len,
        } = &s.sink
        else {
            panic!("{s:?}");
        };
        assert_eq!(url, "redis://app:s3cret@cache:6379/2");
        assert_eq!((stream.as_str(), *max_len), ("eventbus:audit", 500));
        assert!(!format!("{s:?}").contains("s3cret"));
        assert!(!format!("{:?}", s.redacted()).contains("s3cret"));
        assert_eq!(AuditSettings::from_vars(s.to_vars()).unwrap(), s);
        let err = AuditSettings::from_vars([
            ("EVENT_AUDIT_SINK", "redis"),
            ("EVENT_AUDIT_REDIS_MAXLEN", "0"),
        ])
        .unwrap_err();
        assert!(
            err.to_string().contains("EVENT_AUDIT_REDIS_MAXLEN"),
            "{err}"
        );
    }
}
