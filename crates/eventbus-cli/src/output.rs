//! Output: aligned tables for people, JSON for scripts.

use serde::Serialize;

/// Prints rows under headers, each column as wide as its widest cell.
pub(crate) fn table(headers: &[&str], rows: &[Vec<String>]) {
    table_indented("", headers, rows);
}

/// [`table`], every line starting with `indent`.
pub(crate) fn table_indented(indent: &str, headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let text: Vec<String> = cells
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out!("{indent}{}", text.join("  ").trim_end());
    };
    line(&mut headers.iter().copied());
    line(
        &mut widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str),
    );
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
}

/// Prints a value as pretty JSON.
pub(crate) fn json(value: &impl Serialize) -> anyhow::Result<()> {
    out!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Prints a value as one line of JSON (for streams of events).
pub(crate) fn json_line(value: &impl Serialize) -> anyhow::Result<()> {
    out!("{}", serde_json::to_string(value)?);
    Ok(())
}

/// An event as a table row: time, type, id, key, source, payload (shortened).
pub(crate) fn event_row(event: &event_core::Event) -> Vec<String> {
    let payload = serde_json::to_string(&event.payload).unwrap_or_default();
    let payload = if payload.chars().count() > 60 {
        format!("{}...", payload.chars().take(57).collect::<String>())
    } else {
        payload
    };
    vec![
        event_core::timestamp::format(event.timestamp),
        event.event_type.to_string(),
        event.id.to_string(),
        event.partition_key.clone().unwrap_or_default(),
        event.source.clone(),
        payload,
    ]
}

/// The headers of [`event_row`].
pub(crate) const EVENT_HEADERS: &[&str] = &["timestamp", "type", "id", "key", "source", "payload"];
