//! `eventbus tail`: follow events live by reading the log, without joining any consumer
//! group (nothing is acknowledged, no group is created).

use std::time::Duration;

use clap::Args;
use event_core::{EventType, ReplayQuery};
use event_manager::{ReplayCursor, replay_page};
use time::OffsetDateTime;

use crate::context::Context;
use crate::exit::Exit;
use crate::output;

/// Arguments of `tail`.
#[derive(Args, Debug)]
pub(crate) struct TailArgs {
    /// Only this type (repeat for several); default every type.
    #[arg(long = "type", short = 't', value_name = "TYPE")]
    types: Vec<String>,
    /// Start this far back (`10m`, a timestamp); default now.
    #[arg(long, default_value = "now")]
    since: String,
    /// Stop after this many events.
    #[arg(long)]
    count: Option<u64>,
    /// How often to look for new events, in milliseconds.
    #[arg(long, default_value_t = 250)]
    poll_ms: u64,
}

pub(crate) async fn run(ctx: &Context, args: TailArgs) -> anyhow::Result<Exit> {
    let types = args
        .types
        .iter()
        .map(|t| EventType::new(t.clone()))
        .collect::<Result<Vec<_>, _>>()?;
    let from = crate::args::parse_time("--since", &args.since, OffsetDateTime::now_utc())?;
    let shutdown = event_manager::listen_for_shutdown()?;
    let manager = ctx.open().await?;
    let bus = manager.bus()?;
    let follow = async {
        let mut cursor: Option<ReplayCursor> = None;
        let mut printed = 0u64;
        if !ctx.json {
            out!("{}", output::EVENT_HEADERS.join("  "));
        }
        loop {
            let page = replay_page(
                bus.as_ref(),
                ReplayQuery::new(types.clone(), from),
                cursor,
                1000,
            )
            .await?;
            for event in &page.events {
                if ctx.json {
                    output::json_line(event)?;
                } else {
                    out!("{}", output::event_row(event).join("  "));
                }
                printed += 1;
                if args.count.is_some_and(|n| printed >= n) {
                    return Ok::<(), anyhow::Error>(());
                }
            }
            if let Some(last) = page.events.last() {
                cursor = Some(ReplayCursor::after(last));
            }
            if page.next_cursor.is_none() {
                tokio::time::sleep(Duration::from_millis(args.poll_ms.max(10))).await;
            }
        }
    };
    tokio::select! {
        r = follow => r?,
        r = shutdown => r?,
    }
    manager.stop().await?;
    Ok(Exit::Ok)
}
