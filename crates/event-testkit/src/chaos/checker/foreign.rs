//! Foreign entries (written into the logs by something other than the bus): each must end in
//! the dead letters of every handler of its type, once, as an invalid envelope whose raw text
//! shows the entry's marker, unless the run purged it; those of an aborted transaction must
//! be in no dead letters at all.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use event_core::DeadLetterReason;

use super::CheckInput;
use super::accounts::{HandlerTally, report};
use crate::chaos::history::StartSpec;
use crate::chaos::workload::HandlerPlan;

/// Accounts for the foreign entries the handler is owed.
pub(crate) fn account(
    input: &CheckInput<'_>,
    handler: &HandlerPlan,
    tally: &mut HandlerTally,
    failures: &mut Vec<String>,
) {
    let records = input.records;
    let name = handler.name.as_str();
    let types: Vec<&str> = handler
        .types
        .iter()
        .map(|i| input.plan.types[*i].as_str())
        .collect();
    let first = records
        .subscriptions
        .iter()
        .filter(|s| s.handler == name && s.error.is_none())
        .min_by_key(|s| s.called_ms);
    let Some(first) = first else {
        return;
    };
    let letters = records
        .dead_letters
        .get(name)
        .map_or(&[][..], Vec::as_slice);
    let mut missing = Vec::new();
    let mut repeated = Vec::new();
    let mut seen_aborted = Vec::new();
    for f in records
        .foreign
        .iter()
        .filter(|f| types.contains(&f.event_type.as_str()))
    {
        if f.entry.aborted {
            let marker = f.entry.marker.as_str();
            if letters
                .iter()
                .any(|l| l.raw.as_deref().is_some_and(|raw| shows(raw, marker)))
            {
                seen_aborted.push(format!(
                    "{marker} ({}) written into {} at {}",
                    f.entry.shape, f.event_type, f.written_ms
                ));
            }
            continue;
        }
        let owed = first.start == StartSpec::Earliest || f.written_ms > first.returned_ms;
        if !owed {
            continue;
        }
        tally.foreign_owed += 1;
        let marker = f.entry.marker.as_str();
        let found = letters
            .iter()
            .filter(|l| l.raw.as_deref().is_some_and(|raw| shows(raw, marker)))
            .collect::<Vec<_>>();
        match found.as_slice() {
            [letter] if letter.reason == DeadLetterReason::InvalidEnvelope => {
                tally.foreign_dead_lettered += 1;
            }
            [letter] => repeated.push(format!(
                "{marker} ({}) was dead-lettered with reason {:?}",
                f.entry.shape, letter.reason
            )),
            [] => {
                let purged = records
                    .purges
                    .iter()
                    .any(|p| p.handler == name && p.raws.iter().any(|raw| shows(raw, marker)));
                if purged {
                    tally.foreign_dead_lettered += 1;
                } else {
                    tally.foreign_missing += 1;
                    missing.push(format!(
                        "{marker} ({}) written into {} at {}",
                        f.entry.shape, f.event_type, f.written_ms
                    ));
                }
            }
            more => repeated.push(format!(
                "{marker} ({}) is in the dead letters {} times",
                f.entry.shape,
                more.len()
            )),
        }
    }
    report(
        failures,
        name,
        "foreign entries neither dead-lettered nor purged",
        &missing,
    );
    report(
        failures,
        name,
        "foreign entries dead-lettered wrongly",
        &repeated,
    );
    report(
        failures,
        name,
        "records of aborted transactions delivered (found in the dead letters)",
        &seen_aborted,
    );
}

/// Whether a dead letter's raw text shows the marker: as text, or inside bytes a backend
/// wrote as `b64:...` because they are not UTF-8.
fn shows(raw: &str, marker: &str) -> bool {
    if raw.contains(marker) {
        return true;
    }
    raw.match_indices("b64:").any(|(at, _)| {
        let encoded: String = raw[at + 4..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '='))
            .collect();
        STANDARD
            .decode(encoded)
            .is_ok_and(|bytes| bytes.windows(marker.len()).any(|w| w == marker.as_bytes()))
    })
}

#[cfg(test)]
mod tests {
    use super::shows;

    #[test]
    fn markers_show_as_text_or_in_base64() {
        assert!(shows("note=cf1v0e payload=x", "cf1v0e"));
        // b"\xff\xfe\x00cf1v2e\x80" in base64.
        assert!(shows("event=b64://4AY2YxdjJlgA==", "cf1v2e"));
        assert!(!shows("event=b64://4AY2YxdjJlgA==", "cf1v3e"));
    }
}
