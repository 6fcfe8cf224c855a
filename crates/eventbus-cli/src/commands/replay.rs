//! `eventbus replay`: retained events of a time window, in timestamp order, page by page.

use clap::Args;
use event_core::{EventType, ReplayQuery};
use event_manager::replay_page;
use indicatif::{ProgressBar, ProgressStyle};
use time::OffsetDateTime;

use crate::context::Context;
use crate::exit::Exit;
use crate::output;

/// Arguments of `replay`.
#[derive(Args, Debug)]
pub(crate) struct ReplayArgs {
    /// Only this type (repeat for several); default every type.
    #[arg(long = "type", short = 't', value_name = "TYPE")]
    types: Vec<String>,
    /// From this time: an age (`1h`, `30m`, `2d`) or an RFC 3339 timestamp.
    #[arg(long)]
    since: String,
    /// Up to (not including) this time; default now.
    #[arg(long)]
    until: Option<String>,
    /// At most this many events.
    #[arg(long)]
    limit: Option<u64>,
}

/// Events read per page.
const PAGE: usize = 1000;

pub(crate) async fn run(ctx: &Context, args: ReplayArgs) -> anyhow::Result<Exit> {
    let now = OffsetDateTime::now_utc();
    let from = crate::args::parse_time("--since", &args.since, now)?;
    let until = args
        .until
        .as_deref()
        .map(|u| crate::args::parse_time("--until", u, now))
        .transpose()?;
    let types = args
        .types
        .iter()
        .map(|t| EventType::new(t.clone()))
        .collect::<Result<Vec<_>, _>>()?;
    let mut query = ReplayQuery::new(types, from);
    if let Some(until) = until {
        query = query.to(until);
    }
    query.validate()?;
    let manager = ctx.open().await?;
    let bus = manager.bus()?;
    let progress = match args.limit {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::no_length(),
    };
    progress.set_style(
        ProgressStyle::with_template("{spinner} replayed {pos} events {wide_bar} {per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    if !ctx.json {
        out!("{}", output::EVENT_HEADERS.join("  "));
    }
    let mut cursor = None;
    let mut total = 0u64;
    loop {
        let left = args
            .limit
            .map_or(PAGE, |l| (l - total).min(PAGE as u64) as usize);
        if left == 0 {
            break;
        }
        let page = replay_page(bus.as_ref(), query.clone(), cursor, left).await?;
        for event in &page.events {
            progress.suspend(|| {
                if ctx.json {
                    output::json_line(event)
                } else {
                    out!("{}", output::event_row(event).join("  "));
                    Ok(())
                }
            })?;
        }
        total += page.events.len() as u64;
        progress.set_position(total);
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    progress.finish_and_clear();
    if !ctx.json {
        eprintln!("{total} events replayed");
    }
    manager.stop().await?;
    Ok(Exit::Ok)
}
