//! [`Summary`]: what a run did and what the checker found, printed at the end of every run.

use std::fmt::Write as _;

use super::checker::Verdict;

/// The outcome of a chaos run that passed.
#[derive(Clone, Debug)]
pub struct Summary {
    /// The backend's name.
    pub backend: String,
    /// The run's seed.
    pub seed: u64,
    /// Events whose publish returned `Ok`.
    pub stored: usize,
    /// Events lost (always 0 in a summary of a passed run).
    pub lost: usize,
    /// Duplicate successful handler calls, all handlers.
    pub duplicates: u64,
    /// Faults injected.
    pub faults: usize,
    /// The summary as printed.
    pub text: String,
}

/// The summary table and the list of faults, as text.
pub(crate) fn render(backend: &str, seed: u64, seconds: u64, verdict: &Verdict) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "chaos summary: backend {backend}, seed {seed}, {seconds} s; publishes: {} stored, {} refused, {} ambiguous; {} foreign entries",
        verdict.stored, verdict.refused, verdict.ambiguous, verdict.foreign
    );
    let _ = writeln!(
        s,
        "  {:<4} {:>7} {:>7} {:>6} {:>6} {:>7} {:>9} {:>8} {:>7} {:>9} {:>9}",
        "",
        "owed",
        "handled",
        "dead",
        "purged",
        "missing",
        "dups",
        "bound",
        "order",
        "foreign",
        "calls"
    );
    for t in &verdict.tallies {
        let _ = writeln!(
            s,
            "  {:<4} {:>7} {:>7} {:>6} {:>6} {:>7} {:>9} {:>8} {:>7} {:>9} {:>9}",
            t.name,
            t.owed,
            t.handled,
            t.dead_lettered,
            t.purged,
            t.missing.len(),
            t.duplicates,
            t.duplicate_bound,
            if t.order_checked {
                t.inversions.to_string()
            } else {
                "-".into()
            },
            format!("{}/{}", t.foreign_dead_lettered, t.foreign_owed),
            t.calls
        );
    }
    let faults: Vec<String> = verdict
        .faults
        .iter()
        .map(|(fault, (n, failed))| {
            if *failed > 0 {
                format!("{fault:?} x{n} ({failed} not injected)")
            } else {
                format!("{fault:?} x{n}")
            }
        })
        .collect();
    let _ = writeln!(
        s,
        "  faults injected: {}",
        if faults.is_empty() {
            "none".to_string()
        } else {
            faults.join(", ")
        }
    );
    let _ = writeln!(s, "  lost = {}", verdict.lost());
    // One machine-readable line for `cargo xtask soak`.
    let _ = write!(
        s,
        "CHAOS\t{backend}\t{seed}\t{seconds}\t{}\t{}\t{}\t{}\t{}",
        verdict.stored,
        verdict
            .faults
            .values()
            .map(|(n, failed)| n - failed)
            .sum::<usize>(),
        verdict.lost(),
        verdict.tallies.iter().map(|t| t.duplicates).sum::<u64>(),
        if verdict.failures.is_empty() {
            "pass"
        } else {
            "fail"
        }
    );
    s
}
