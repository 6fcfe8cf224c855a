//! [`AuditSettings`]: where the audit trail goes, from the `EVENT_AUDIT_*` variables.

use std::path::PathBuf;

use event_core::EventType;

use crate::HandlersError;

/// Where the audit trail is written.
#[derive(Clone, Debug, PartialEq, Eq)]
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
/// # Ok::<(), event_handlers::HandlersError>(())
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
        }
    }

    /// Sets the rotation size and the number of files kept (at least 1 byte and 1 file).
    pub fn rotation(mut self, max_file_bytes: u64, max_files: usize) -> Self {
        let AuditSink::JsonLines {
            max_file_bytes: bytes,
            max_files: files,
            ..
        } = &mut self.sink;
        *bytes = max_file_bytes.max(1);
        *files = max_files.max(1);
        self
    }

    /// Reads `EVENT_AUDIT_DIR`, `EVENT_AUDIT_MAX_FILE_BYTES`, `EVENT_AUDIT_MAX_FILES` and
    /// `EVENT_AUDIT_EXTRA_TYPES` from the environment; unset ones keep their defaults.
    ///
    /// # Errors
    /// [`HandlersError::Setting`] naming the variable with a bad value.
    pub fn from_env() -> Result<Self, HandlersError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// As [`from_env`](Self::from_env), from the given variables only.
    ///
    /// # Errors
    /// [`HandlersError::Setting`] naming the variable with a bad value.
    pub fn from_vars<K: AsRef<str>, V: Into<String>>(
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self, HandlersError> {
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

    fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, HandlersError> {
        let mut settings = match get("EVENT_AUDIT_DIR").filter(|d| !d.trim().is_empty()) {
            Some(dir) => Self::json_lines(dir),
            None => Self::default(),
        };
        let bytes = match get("EVENT_AUDIT_MAX_FILE_BYTES") {
            Some(v) => v.trim().parse::<u64>().ok().filter(|n| *n >= 1024).ok_or(
                HandlersError::Setting {
                    variable: "EVENT_AUDIT_MAX_FILE_BYTES",
                    value: v,
                    expected: "a whole number of bytes, at least 1024",
                },
            )?,
            None => DEFAULT_MAX_FILE_BYTES,
        };
        let files = match get("EVENT_AUDIT_MAX_FILES") {
            Some(v) => v
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=1000).contains(n))
                .ok_or(HandlersError::Setting {
                    variable: "EVENT_AUDIT_MAX_FILES",
                    value: v,
                    expected: "a whole number from 1 to 1000",
                })?,
            None => DEFAULT_MAX_FILES,
        };
        settings = settings.rotation(bytes, files);
        if let Some(list) = get("EVENT_AUDIT_EXTRA_TYPES") {
            for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                let event_type = EventType::new(name).map_err(|_| HandlersError::Setting {
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
        let err = AuditSettings::from_vars([("EVENT_AUDIT_EXTRA_TYPES", "Bad Type")]).unwrap_err();
        assert!(err.to_string().contains("EVENT_AUDIT_EXTRA_TYPES"), "{err}");
        let s = AuditSettings::from_vars([(
            "EVENT_AUDIT_EXTRA_TYPES",
            "billing.paid, api.request_started",
        )])
        .unwrap();
        assert_eq!(s.extra_event_types.len(), 2);
    }
}
