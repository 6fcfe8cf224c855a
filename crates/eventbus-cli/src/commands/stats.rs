//! `eventbus stats`: events by type and each handler's counters, lag and rate.

use crate::context::Context;
use crate::exit::Exit;
use crate::output;

pub(crate) async fn run(ctx: &Context) -> anyhow::Result<Exit> {
    let manager = ctx.open().await?;
    let stats = manager.stats().await?;
    manager.stop().await?;
    if ctx.json {
        output::json(&stats)?;
        return Ok(Exit::Ok);
    }
    out!(
        "backend {}: {} retained events",
        stats.backend,
        stats.total_events
    );
    out!("");
    let rows: Vec<Vec<String>> = stats
        .events_by_type
        .iter()
        .map(|(t, n)| vec![t.clone(), n.to_string()])
        .collect();
    output::table(&["event type", "events"], &rows);
    out!("");
    let rows: Vec<Vec<String>> = stats
        .handlers
        .iter()
        .map(|(name, h)| {
            vec![
                name.clone(),
                h.processed.to_string(),
                h.failed.to_string(),
                h.retried.to_string(),
                h.dead_lettered.to_string(),
                h.dead_letter_depth.to_string(),
                h.lag.to_string(),
                h.pending.to_string(),
                format!("{:.1}", h.events_per_second),
                h.last_event_at
                    .map(event_core::timestamp::format)
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    output::table(
        &[
            "handler",
            "processed",
            "failed",
            "retried",
            "dead-lettered",
            "dlq",
            "lag",
            "pending",
            "ev/s",
            "last event",
        ],
        &rows,
    );
    for warning in &stats.warnings {
        eprintln!("warning: {warning}");
    }
    Ok(Exit::Ok)
}
