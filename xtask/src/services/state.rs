//! The state file of `cargo xtask services up`: which servers run detached, with what pid,
//! ports and directories, so `down`, `status`, `kill` and `restart` can find them again.
//!
//! A plain text file, one `service.field=value` a line (a value runs to the end of its line,
//! so paths may hold spaces); xtask needs no serde for it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, bail};

use super::cache_dir;

/// The fields one detached server was recorded with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Record(BTreeMap<String, String>);

impl Record {
    pub(crate) fn set(&mut self, field: &str, value: impl ToString) -> &mut Self {
        self.0.insert(field.to_string(), value.to_string());
        self
    }

    pub(crate) fn get(&self, field: &str) -> anyhow::Result<&str> {
        self.0.get(field).map(String::as_str).with_context(|| {
            format!(
                "the state file {} has no `{field}` for this service; stop the servers by hand and delete it",
                state_path().display()
            )
        })
    }

    /// Adds the fields of `other` under `{prefix}.`: one record of several servers (the
    /// nodes of a cluster).
    pub(crate) fn nest(&mut self, prefix: &str, other: &Record) -> &mut Self {
        for (field, value) in &other.0 {
            self.0.insert(format!("{prefix}.{field}"), value.clone());
        }
        self
    }

    /// The fields under `{prefix}.`, without the prefix: what [`nest`](Self::nest) added.
    pub(crate) fn nested(&self, prefix: &str) -> Record {
        let prefix = format!("{prefix}.");
        Record(
            self.0
                .iter()
                .filter_map(|(field, value)| {
                    Some((field.strip_prefix(&prefix)?.to_string(), value.clone()))
                })
                .collect(),
        )
    }

    pub(crate) fn parse<T: std::str::FromStr>(&self, field: &str) -> anyhow::Result<T>
    where
        T::Err: std::error::Error + Send + Sync + 'static,
    {
        let text = self.get(field)?;
        text.parse()
            .with_context(|| format!("state file: bad `{field}` value {text:?}"))
    }
}

/// Every detached server, by service name (`redis`, `kafka`).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct State {
    pub(crate) services: BTreeMap<String, Record>,
}

impl State {
    /// Reads the state file; no file is an empty state.
    pub(crate) fn load() -> anyhow::Result<Self> {
        let path = state_path();
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::parse(&text).with_context(|| format!("reading {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Writes the state file, or removes it when nothing is left.
    pub(crate) fn save(&self) -> anyhow::Result<()> {
        let path = state_path();
        if self.services.is_empty() {
            return match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(e).with_context(|| format!("removing {}", path.display()))
                }
                _ => Ok(()),
            };
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(&path, self.render()).with_context(|| format!("writing {}", path.display()))
    }

    fn parse(text: &str) -> anyhow::Result<Self> {
        let mut state = State::default();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim_start();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let parsed = line
                .split_once('=')
                .and_then(|(key, value)| Some((key.split_once('.')?, value)));
            let Some(((service, field), value)) = parsed else {
                bail!(
                    "line {}: expected `service.field=value`, found {line:?}",
                    number + 1
                );
            };
            state
                .services
                .entry(service.to_string())
                .or_default()
                .set(field, value);
        }
        Ok(state)
    }

    fn render(&self) -> String {
        let mut text = String::from(
            "# Servers started by `cargo xtask services up`; `cargo xtask services down` stops them.\n",
        );
        for (service, record) in &self.services {
            for (field, value) in &record.0 {
                text.push_str(&format!("{service}.{field}={value}\n"));
            }
        }
        text
    }
}

/// `target/xtask-cache/services.state`.
pub(crate) fn state_path() -> PathBuf {
    cache_dir().join("services.state")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_survives_a_round_trip_and_bad_lines_are_named() {
        let mut state = State::default();
        let mut redis = Record::default();
        redis
            .set("pid", 42)
            .set("port", 6390)
            .set("dir", "/tmp/a b=c");
        state.services.insert("redis".into(), redis);
        let text = state.render();
        let back = State::parse(&text).unwrap();
        assert_eq!(back, state);
        let redis = &back.services["redis"];
        assert_eq!(redis.parse::<u16>("port").unwrap(), 6390);
        assert_eq!(redis.get("dir").unwrap(), "/tmp/a b=c");
        assert!(redis.get("nope").is_err());
        assert!(redis.parse::<u16>("dir").is_err());
        let mut cluster = Record::default();
        cluster
            .set("nodes", 2)
            .nest("node1", redis)
            .nest("node2", redis);
        state.services.insert("kafka-cluster".into(), cluster);
        let back = State::parse(&state.render()).unwrap();
        let cluster = &back.services["kafka-cluster"];
        assert_eq!(cluster.get("node2.dir").unwrap(), "/tmp/a b=c");
        assert_eq!(&cluster.nested("node1"), redis);
        let bad = State::parse("redis.pid=1\nnonsense\n").unwrap_err();
        assert!(format!("{bad:#}").contains("line 2"));
    }
}
