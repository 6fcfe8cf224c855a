//! What an import did, per timeline of the original: the closing table (or JSON), and the
//! report file of every body that was not imported, one JSON line each.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::path::Path;

use anyhow::Context as _;
use serde::Serialize;
use serde_json::json;

use super::decode::Problem;
use crate::output;

/// The counts of one timeline (`timeline:{type}` of the original).
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct TypeCounts {
    /// The dotted type its events get here; `None` when its name maps to none.
    pub(crate) event_type: Option<String>,
    /// Ids read from the timeline.
    pub(crate) read: u64,
    /// Events stored in the target bus by this run (in a dry run: that would be).
    pub(crate) imported: u64,
    /// Events the target already held (an earlier run), or read twice in this run.
    pub(crate) duplicates: u64,
    /// Ids whose `event:{id}` body has expired.
    pub(crate) expired: u64,
    /// Bodies not imported: not JSON, not an envelope, unknown type, or a payload failing its
    /// schema (each in the report file).
    pub(crate) undecodable: u64,
    /// Events the target bus refused (each in the report file).
    pub(crate) failed: u64,
}

impl TypeCounts {
    fn add(&mut self, other: &TypeCounts) {
        self.read += other.read;
        self.imported += other.imported;
        self.duplicates += other.duplicates;
        self.expired += other.expired;
        self.undecodable += other.undecodable;
        self.failed += other.failed;
    }
}

/// The report of a run: counts by timeline key (or topic), and the report file.
pub(crate) struct ImportReport {
    pub(crate) timelines: BTreeMap<String, TypeCounts>,
    /// What a row is: `timeline` (Redis) or `topic` (Kafka).
    unit: &'static str,
    file: Option<BufWriter<File>>,
    /// Report lines written.
    pub(crate) listed: u64,
}

impl ImportReport {
    /// A report whose rows are `unit`s (`timeline` or `topic`) that lists its problems in
    /// `path` (JSON lines), if given.
    pub(crate) fn new(unit: &'static str, path: Option<&Path>) -> anyhow::Result<Self> {
        let file = path
            .map(|p| {
                File::create(p)
                    .map(BufWriter::new)
                    .with_context(|| format!("cannot create the report file {}", p.display()))
            })
            .transpose()?;
        Ok(Self {
            timelines: BTreeMap::new(),
            unit,
            file,
            listed: 0,
        })
    }

    /// [`new`](Self::new), but a report file that exists is appended to (the bridge, run
    /// again).
    pub(crate) fn appending(unit: &'static str, path: Option<&Path>) -> anyhow::Result<Self> {
        let file = path
            .map(|p| {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map(BufWriter::new)
                    .with_context(|| format!("cannot open the report file {}", p.display()))
            })
            .transpose()?;
        Ok(Self {
            timelines: BTreeMap::new(),
            unit,
            file,
            listed: 0,
        })
    }

    /// The counts of `timeline`.
    pub(crate) fn of(&mut self, timeline: &str) -> &mut TypeCounts {
        self.timelines.entry(timeline.to_string()).or_default()
    }

    /// Counts a body that was not imported and lists it in the report file; `record_key` is a
    /// Kafka record's own key.
    pub(crate) fn problem(
        &mut self,
        timeline: &str,
        key: &str,
        record_key: Option<&str>,
        problem: Problem,
        reason: &str,
    ) -> anyhow::Result<()> {
        let counts = self.of(timeline);
        match problem {
            Problem::PublishFailed => counts.failed += 1,
            _ => counts.undecodable += 1,
        }
        if let Some(file) = &mut self.file {
            let mut line = json!({
                "key": key,
                (self.unit): timeline,
                "kind": problem.as_str(),
                "reason": reason,
            });
            if let Some(record_key) = record_key {
                line["record_key"] = record_key.into();
            }
            writeln!(file, "{line}").context("writing the report file")?;
            self.listed += 1;
        }
        Ok(())
    }

    /// The sum over every timeline.
    pub(crate) fn total(&self) -> TypeCounts {
        let mut total = TypeCounts::default();
        for counts in self.timelines.values() {
            total.add(counts);
        }
        total
    }

    /// Flushes the report file.
    pub(crate) fn finish(&mut self) -> anyhow::Result<()> {
        if let Some(file) = &mut self.file {
            file.flush().context("writing the report file")?;
        }
        Ok(())
    }

    /// Prints the closing report: a table per timeline, or one JSON object.
    pub(crate) fn print(&self, json: bool, dry_run: bool, report_file: Option<&Path>) {
        let total = self.total();
        if json {
            let rows = if self.unit == "topic" {
                "topics"
            } else {
                "timelines"
            };
            let value = json!({
                "dry_run": dry_run,
                (rows): self.timelines,
                "total": total,
                "report_file": report_file.map(|p| p.display().to_string()),
                "listed": self.listed,
            });
            // A value built here always serializes.
            let _ = output::json(&value);
            return;
        }
        let title = if dry_run {
            "plan (dry run: nothing written; duplicates are not looked up)"
        } else {
            "imported from the original system"
        };
        out!("{title}");
        let row = |name: &str, c: &TypeCounts| {
            vec![
                name.to_string(),
                c.event_type.clone().unwrap_or_else(|| "(unknown)".into()),
                c.read.to_string(),
                c.imported.to_string(),
                c.duplicates.to_string(),
                c.expired.to_string(),
                c.undecodable.to_string(),
                c.failed.to_string(),
            ]
        };
        let mut rows: Vec<Vec<String>> = self
            .timelines
            .iter()
            .map(|(name, counts)| row(name, counts))
            .collect();
        let mut all = total.clone();
        all.event_type = Some(String::new());
        rows.push(row("total", &all));
        let imported = if dry_run { "to import" } else { "imported" };
        output::table(
            &[
                self.unit,
                "type",
                "read",
                imported,
                "duplicates",
                "expired",
                "undecodable",
                "failed",
            ],
            &rows,
        );
        if let Some(path) = report_file {
            out!("{} problem(s) listed in {}", self.listed, path.display());
        } else if total.undecodable + total.failed > 0 {
            out!(
                "give --report FILE to list each body that was not imported, with its key and reason"
            );
        }
    }
}
