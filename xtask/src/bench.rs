//! `cargo xtask bench [backend]`: runs a backend's benchmark in release mode and writes its
//! figures into `docs/benchmarks.md`.
//!
//! A benchmark prints what it measures for people, plus machine-readable lines, tab-separated:
//!
//! ```text
//! RESULT <TAB> bus|reference <TAB> id <TAB> value <TAB> unit <TAB> target <TAB> label
//! RESULT <TAB> note <TAB> text
//! ```
//!
//! `target` is `-` (none) or a comparison with a number: `>=1000000`, `<200`. Only the
//! backend's section of the document, between `<!-- bench:{backend}:start -->` and
//! `<!-- bench:{backend}:end -->`, is replaced, so other backends' figures survive.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};

use crate::services::{RunningServices, Service, browser};
use crate::shell::{cargo, project_root, read_output, run_tee};

/// One backend's benchmark: a bench target of a package, and the servers it runs against
/// (started for the run, their addresses passed in the environment, stopped after).
struct Benchmark {
    backend: &'static str,
    package: &'static str,
    bench_target: &'static str,
    services: &'static [Service],
    /// Variables set for the benchmark beside the servers' addresses.
    env: &'static [(&'static str, &'static str)],
    /// Drives a headless Chromium (found, or installed when missing); it also needs the
    /// package's `http` feature.
    browser: bool,
}

const BENCHMARKS: &[Benchmark] = &[
    Benchmark {
        backend: "memory",
        package: "event-core",
        bench_target: "memory",
        services: &[],
        env: &[],
        browser: false,
    },
    Benchmark {
        backend: "redis",
        package: "event-redis",
        bench_target: "redis",
        services: &[Service::Redis],
        env: &[],
        browser: false,
    },
    // The Redis benchmark again, on three masters with a replica each.
    Benchmark {
        backend: "redis-cluster",
        package: "event-redis",
        bench_target: "redis",
        services: &[Service::RedisCluster],
        env: &[("EVENTBUS_BENCH_REDIS_CLUSTER", "1")],
        browser: false,
    },
    Benchmark {
        backend: "publishers",
        package: "event-publishers",
        bench_target: "publishers",
        services: &[Service::Redis, Service::Kafka],
        env: &[],
        browser: false,
    },
    Benchmark {
        backend: "kafka",
        package: "event-kafka",
        bench_target: "kafka",
        services: &[Service::Kafka],
        env: &[],
        browser: false,
    },
    // The Kafka benchmark again, on three nodes with replication factor 3.
    Benchmark {
        backend: "kafka-cluster",
        package: "event-kafka",
        bench_target: "kafka",
        services: &[Service::KafkaCluster],
        env: &[("EVENTBUS_BENCH_KAFKA_CLUSTER", "1")],
        browser: false,
    },
    // The PostgreSQL outbox's relay and inbox against the bus's raw `publish_batch`.
    Benchmark {
        backend: "outbox",
        package: "event-outbox",
        bench_target: "outbox",
        services: &[Service::Postgres, Service::Redis, Service::Kafka],
        env: &[],
        browser: false,
    },
    // The dashboard in a headless Chromium, 100 handlers and 10,000 events/s on a memory bus.
    Benchmark {
        backend: "dashboard",
        package: "event-manager",
        bench_target: "dashboard",
        services: &[],
        env: &[],
        browser: true,
    },
];

const DOCUMENT: &str = "docs/benchmarks.md";

const HEADER: &str = "\
# Benchmarks

`cargo xtask bench <backend>` runs a backend's benchmark in release mode and rewrites that
backend's section below (between its `bench:` markers; text outside them is kept). Figures
depend on the machine: compare runs made on the same machine, and compare the bus with the raw
reference measured in the same run, which shows what the hardware gives without the bus.
";

/// Runs every benchmark, or only the named backend's.
pub(crate) fn run(args: &[&str]) -> anyhow::Result<()> {
    let selected: Vec<&Benchmark> = match args {
        [] => BENCHMARKS.iter().collect(),
        [backend] => match BENCHMARKS.iter().find(|b| b.backend == *backend) {
            Some(b) => vec![b],
            None => bail!(
                "unknown backend {backend:?} for `cargo xtask bench`; known backends: {}",
                known()
            ),
        },
        _ => bail!(
            "`cargo xtask bench` takes at most one backend, found {args:?}; known backends: {}",
            known()
        ),
    };
    let machine = Machine::describe();
    for benchmark in selected {
        run_one(benchmark, &machine)?;
    }
    Ok(())
}

/// Runs one benchmark and rewrites its section of the document.
fn run_one(benchmark: &Benchmark, machine: &Machine) -> anyhow::Result<()> {
    let services = RunningServices::start(benchmark.services)?;
    let mut command = cargo([
        "bench",
        "-p",
        benchmark.package,
        "--bench",
        benchmark.bench_target,
    ]);
    command.envs(services.env());
    command.envs(benchmark.env.iter().copied());
    if benchmark.browser {
        command.args(["--features", "http"]);
        let (name, value) = browser::env(&browser::find_or_install()?);
        command.env(name, value);
    }
    let output = run_tee(&format!("{} benchmark", benchmark.backend), &mut command)?;
    drop(services);
    let report = Report::parse(&output)?;
    let section = render(benchmark, &report, machine);

    let path = project_root().join(DOCUMENT);
    let current = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => HEADER.to_string(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let updated = replace_section(&current, benchmark.backend, &section)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&path, updated).with_context(|| format!("writing {}", path.display()))?;
    let missed = report
        .rows
        .iter()
        .filter(|r| r.met() == Some(false))
        .count();
    println!(
        "xtask bench: wrote the {} section of {DOCUMENT}; {} targets, {missed} not met",
        benchmark.backend,
        report.rows.iter().filter(|r| r.target.is_some()).count(),
    );
    Ok(())
}

fn known() -> String {
    BENCHMARKS
        .iter()
        .map(|b| b.backend)
        .collect::<Vec<_>>()
        .join(", ")
}

/// One measurement, as the benchmark reported it.
struct Row {
    reference: bool,
    value: f64,
    unit: String,
    /// The comparison and the bound: (`>=`, 1e6).
    target: Option<(String, f64)>,
    label: String,
}

impl Row {
    fn met(&self) -> Option<bool> {
        let (op, bound) = self.target.as_ref()?;
        Some(match op.as_str() {
            ">=" => self.value >= *bound,
            ">" => self.value > *bound,
            "<=" => self.value <= *bound,
            _ => self.value < *bound,
        })
    }
}

/// Everything the machine-readable lines said.
struct Report {
    rows: Vec<Row>,
    notes: Vec<String>,
}

impl Report {
    fn parse(output: &str) -> anyhow::Result<Self> {
        let mut report = Report {
            rows: Vec::new(),
            notes: Vec::new(),
        };
        for line in output.lines() {
            let Some(rest) = line.strip_prefix("RESULT\t") else {
                continue;
            };
            let fields: Vec<&str> = rest.split('\t').collect();
            match fields.as_slice() {
                ["note", text] => report.notes.push((*text).to_string()),
                [
                    group @ ("bus" | "reference"),
                    _id,
                    value,
                    unit,
                    target,
                    label,
                ] => {
                    report.rows.push(Row {
                        reference: *group == "reference",
                        value: value
                            .parse()
                            .with_context(|| format!("bad value in benchmark line {line:?}"))?,
                        unit: (*unit).to_string(),
                        target: parse_target(target)
                            .with_context(|| format!("bad target in benchmark line {line:?}"))?,
                        label: (*label).to_string(),
                    });
                }
                _ => bail!("benchmark line not understood: {line:?}"),
            }
        }
        if report.rows.is_empty() {
            bail!("the benchmark printed no `RESULT` lines: nothing to report");
        }
        Ok(report)
    }
}

fn parse_target(text: &str) -> anyhow::Result<Option<(String, f64)>> {
    if text == "-" {
        return Ok(None);
    }
    let split = text
        .find(|c: char| c.is_ascii_digit() || c == '.')
        .context("a target is `-` or a comparison followed by a number")?;
    let (op, bound) = text.split_at(split);
    if !matches!(op, ">=" | ">" | "<=" | "<") {
        bail!("comparison {op:?} is not one of >=, >, <=, <");
    }
    Ok(Some((op.to_string(), bound.parse()?)))
}

/// What the figures were measured on.
struct Machine {
    cpu: String,
    cores: String,
    memory: String,
    rustc: String,
}

impl Machine {
    fn describe() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
            .map_or_else(|| "unknown CPU".to_string(), |(_, v)| v.trim().to_string());
        let listed = cpuinfo
            .lines()
            .filter(|l| l.starts_with("processor"))
            .count();
        let usable = std::thread::available_parallelism().map_or(0, usize::from);
        let cores = if listed > 0 && listed != usable {
            format!("{usable} cores usable ({listed} listed)")
        } else {
            format!("{usable} cores")
        };
        let memory = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                let kib: f64 = m
                    .lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))?
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse()
                    .ok()?;
                Some(format!("{:.1} GiB memory", kib / 1024.0 / 1024.0))
            })
            .unwrap_or_else(|| "unknown memory".to_string());
        let rustc_program = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_string());
        let rustc = read_output(&rustc_program, &["--version"])
            .unwrap_or_else(|| "rustc (version unknown)".to_string());
        Machine {
            cpu,
            cores,
            memory,
            rustc,
        }
    }
}

fn render(benchmark: &Benchmark, report: &Report, machine: &Machine) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "## {}\n", benchmark.backend);
    let _ = writeln!(
        s,
        "Measured {} by `cargo xtask bench {}` (`cargo bench -p {} --bench {}`, release mode).\n",
        utc_now(),
        benchmark.backend,
        benchmark.package,
        benchmark.bench_target
    );
    let _ = writeln!(
        s,
        "Machine: {}, {}, {}; {}.\n",
        machine.cpu, machine.cores, machine.memory, machine.rustc
    );
    if !report.notes.is_empty() {
        let _ = writeln!(s, "Settings:\n");
        for note in &report.notes {
            let _ = writeln!(s, "- {note}");
        }
        s.push('\n');
    }
    let _ = writeln!(s, "| Measurement | Result | Target | Met |");
    let _ = writeln!(s, "|---|---:|---:|---|");
    for row in report.rows.iter().filter(|r| !r.reference) {
        let (target, met) = match (&row.target, row.met()) {
            (Some((op, bound)), Some(met)) => (
                format!("{op} {}", number(*bound, &row.unit)),
                if met { "met" } else { "**not met**" },
            ),
            _ => ("-".to_string(), ""),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {target} | {met} |",
            row.label,
            number(row.value, &row.unit)
        );
    }
    let references: Vec<&Row> = report.rows.iter().filter(|r| r.reference).collect();
    if !references.is_empty() {
        let _ = writeln!(s, "\nRaw reference, measured in the same run:\n");
        let _ = writeln!(s, "| Measurement | Result |");
        let _ = writeln!(s, "|---|---:|");
        for row in references {
            let _ = writeln!(s, "| {} | {} |", row.label, number(row.value, &row.unit));
        }
    }
    s
}

/// A value with its unit, rounded for reading: integers with thousands separators.
fn number(value: f64, unit: &str) -> String {
    let text = if value.abs() >= 1000.0 {
        let digits = format!("{:.0}", value.abs());
        let mut grouped = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                grouped.push(',');
            }
            grouped.push(c);
        }
        if value < 0.0 {
            format!("-{grouped}")
        } else {
            grouped
        }
    } else if value.abs() >= 100.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    };
    match unit {
        "" | "-" => text,
        "x" => format!("{text}x"),
        _ => format!("{text} {unit}"),
    }
}

/// Replaces the backend's section (markers included), or appends it when the document has
/// none yet.
fn replace_section(document: &str, backend: &str, section: &str) -> anyhow::Result<String> {
    let start = format!("<!-- bench:{backend}:start -->");
    let end = format!("<!-- bench:{backend}:end -->");
    let block = format!("{start}\n{}\n{end}", section.trim_end());
    match (document.find(&start), document.find(&end)) {
        (Some(a), Some(b)) if a < b => Ok(format!(
            "{}{block}{}",
            &document[..a],
            &document[b + end.len()..]
        )),
        (None, None) => {
            let mut out = document.trim_end().to_string();
            out.push_str("\n\n");
            out.push_str(&block);
            out.push('\n');
            Ok(out)
        }
        _ => bail!(
            "{DOCUMENT} has a broken `{backend}` section: `{start}` must come once, before `{end}`; fix or remove the markers"
        ),
    }
}

/// Now, in UTC, as `YYYY-MM-DD HH:MM UTC`, without a date crate.
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil-from-days, for days since 1970-01-01.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_are_replaced_in_place_and_appended_when_new() {
        let doc = "# B\n\n<!-- bench:redis:start -->\nR\n<!-- bench:redis:end -->\n";
        let with_memory = replace_section(doc, "memory", "M1\n").unwrap();
        assert!(with_memory.contains("R\n<!-- bench:redis:end -->"));
        assert!(
            with_memory.ends_with("<!-- bench:memory:start -->\nM1\n<!-- bench:memory:end -->\n")
        );
        let again = replace_section(&with_memory, "memory", "M2").unwrap();
        assert!(again.contains("M2") && !again.contains("M1"));
        assert!(again.contains("R\n<!-- bench:redis:end -->"));
        assert!(replace_section("<!-- bench:memory:end -->", "memory", "x").is_err());
    }

    #[test]
    fn results_and_targets_are_read() {
        let out = "noise\nRESULT\tbus\tt1\t1500000\tevents/s\t>=1000000\tone handler\n\
                   RESULT\tbus\tp99\t250.5\tus\t<200\tp99\n\
                   RESULT\treference\traw\t9000000\tevents/s\t-\traw\n\
                   RESULT\tnote\tdefault config\n";
        let report = Report::parse(out).unwrap();
        assert_eq!(report.rows.len(), 3);
        assert_eq!(report.rows[0].met(), Some(true));
        assert_eq!(report.rows[1].met(), Some(false));
        assert_eq!(report.rows[2].met(), None);
        assert_eq!(report.notes, ["default config"]);
        assert!(Report::parse("RESULT\tbus\tx\tnan?\n").is_err());
        assert_eq!(number(1_234_567.4, "events/s"), "1,234,567 events/s");
        assert_eq!(number(12.34, "us"), "12.3 us");
    }
}
