//! [`AuditSettings`]: where the audit trail goes, from the `EVENT_AUDIT_*` variables.

use std::path::PathBuf;

use event_core::EventType;

use crate::Error;

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
/// use event_handlers::{AuditSettings, AuditSink};
///
/// let settings = AuditSettings::from_vars([("EVENT_AUDIT_DIR", "/var/log/eventbus"), ("EVENT_AUDIT_MAX_FILES", "3")])?;
/// let AuditSink::JsonLines { dir, max_files, .. } = &settings.sink else { unreachable!() };
/// assert_eq!(dir.to_str(), Some("/var/log/eventbus"));
/// assert_eq!(*max_files, 3);
/// # Ok::<(), event_handlers::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuditSettings {
    /// The sink.
    pub sink: AuditSink,
    /// Custom event types to audit besides the standard ones (`EVENT_AUDIT_EXTRA_TYPES`,
    /// comma-separated; default none).
    pub extra_event_types: Vec<EventType>,
}

/// Default rotation size: 64 MiB.
const DEFAULT_MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;
/// Default number of files kept.
const DEFAULT_MAX_FILES: usize = 10;
/// Default length of the Redis stream.
#[cfg(feature = "redis")]
const DEFAULT_STREAM_MAX_LEN: u64 = 1_000_000;

impl Default for AuditSettings {
    /// JSON Lines under `{temp dir}/eventbus-audit`, rotated at 64 MiB, 10 files kept.
    fn default() -> Self {
        Self::json_lines(std::env::temp_dir().join("eventbus-audit"))
    }
}

impl AuditSettings {
    fn json_lines_from(get: &impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let settings = match get("EVENT_AUDIT_DIR") {
            Some(dir) => Self::json_lines(dir),
            None => Self::default(),
        };
        let bytes = match get("EVENT_AUDIT_MAX_FILE_BYTES") {
            Some(v) => {
                v.trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n >= 1024)
                    .ok_or(Error::Setting {
                        variable: "EVENT_AUDIT_MAX_FILE_BYTES",
                        value: v,
                        expected: "a whole number of bytes, at least 1024",
                    })?
            }
            None => DEFAULT_MAX_FILE_BYTES,
        };
        let files = match get("EVENT_AUDIT_MAX_FILES") {
            Some(v) => v
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=1000).contains(n))
                .ok_or(Error::Setting {
                    variable: "EVENT_AUDIT_MAX_FILES",
                    value: v,
                    expected: "a whole number from 1 to 1000",
                })?,
            None => DEFAULT_MAX_FILES,
        };
        Ok(settings.rotation(bytes, files))
    }

    /// JSON Lines files in `dir`, rotated at 64 MiB, 10 files kept.
    pub fn json_lines(dir: impl Into<PathBuf>) -> Self {
        Self {
            sink: AuditSink::JsonLines {
                dir: dir.into(),
                max_file_bytes: DEFAULT_MAX_FILE_BYTES,
                max_files: DEFAULT_MAX_FILES,
            },
            extra_event_types: Vec::new(),
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
        }
    }

    /// Reads `EVENT_AUDIT_SINK` (`jsonl`, the default, or `redis`), `EVENT_AUDIT_DIR`,
    /// `EVENT_AUDIT_MAX_FILE_BYTES`, `EVENT_AUDIT_MAX_FILES`, `EVENT_AUDIT_REDIS_URL` (default
    /// `REDIS_URL`), `EVENT_AUDIT_REDIS_STREAM`, `EVENT_AUDIT_REDIS_MAXLEN` and
    /// `EVENT_AUDIT_EXTRA_TYPES` from the environment; unset ones keep their defaults.
    ///
    /// # Errors
    /// [`Error::Setting`] naming the variable with a bad value.
    pub fn from_env() -> Result<Self, Error> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// As [`from_env`](Self::from_env), from the given variables only.
    ///
    /// # Errors
    /// [`Error::Setting`] naming the variable with a bad value.
    pub fn from_vars<K: AsRef<str>, V: Into<String>>(
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self, Error> {
        let vars: Vec<(String, String)> = vars
            .into_iter()
            .map(|(k, v)| (k.as_ref().to_owned(), v.into()))
            .collect();
        Self::from_lookup(|name| {
            vars.iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        })
    }

    fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let get = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        let sink = get("EVENT_AUDIT_SINK").unwrap_or_else(|| "jsonl".into());
        let mut settings = match sink.trim().to_ascii_lowercase().as_str() {
            "jsonl" => Self::json_lines_from(&get)?,
            #[cfg(feature = "redis")]
            "redis" => {
                let url = get("EVENT_AUDIT_REDIS_URL")
                    .or_else(|| get("REDIS_URL"))
                    .unwrap_or_else(|| "redis://localhost:6379/0".into());
                let stream =
                    get("EVENT_AUDIT_REDIS_STREAM").unwrap_or_else(|| "eventbus:audit".into());
                let max_len =
                    match get("EVENT_AUDIT_REDIS_MAXLEN") {
                        Some(v) => v.trim().parse::<u64>().ok().filter(|n| *n >= 1).ok_or(
                            Error::Setting {
                                variable: "EVENT_AUDIT_REDIS_MAXLEN",
                                value: v,
                                expected: "a whole number of entries, at least 1",
                            },
                        )?,
                        None => DEFAULT_STREAM_MAX_LEN,
                    };
                Self::redis_stream(url, stream, max_len)
            }
            _ => {
                return Err(Error::Setting {
                    variable: "EVENT_AUDIT_SINK",
                    value: sink,
                    expected: if cfg!(feature = "redis") {
                        "`jsonl` or `redis`"
                    } else {
                        "`jsonl` (`redis` needs the cargo feature `redis` of event-handlers)"
                    },
                });
            }
        };
        if let Some(list) = get("EVENT_AUDIT_EXTRA_TYPES") {
            for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                let event_type = EventType::new(name).map_err(|_| Error::Setting {
                    variable: "EVENT_AUDIT_EXTRA_TYPES",
                    value: list.clone(),
                    expected: "comma-separated event types such as `billing.invoice_paid`",
                })?;
                settings.extra_event_types.push(event_type);
            }
        }
        Ok(settings)
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
        let s = AuditSettings::from_vars([(
            "EVENT_AUDIT_EXTRA_TYPES",
            "billing.paid, api.request_started",
        )])
        .unwrap();
        assert_eq!(s.extra_event_types.len(), 2);
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
