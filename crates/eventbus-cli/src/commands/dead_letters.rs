//! `eventbus dead-letters list|redrive|purge`.

use clap::{Args, Subcommand};
use event_core::DeadLetterSelection;

use crate::args::ArgError;
use crate::context::Context;
use crate::exit::Exit;
use crate::output;

/// The dead-letter commands.
#[derive(Subcommand, Debug)]
pub(crate) enum DeadLettersCommand {
    /// A handler's dead letters, oldest first.
    List {
        /// The handler.
        #[arg(long)]
        handler: String,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Hand dead letters back to their handler (only that handler).
    Redrive(Selection),
    /// Delete dead letters.
    Purge(Selection),
}

/// Which dead letters: `--all`, or `--id` (repeatable).
#[derive(Args, Debug)]
pub(crate) struct Selection {
    /// The handler.
    #[arg(long)]
    handler: String,
    /// Every dead letter of the handler.
    #[arg(long, conflicts_with = "ids")]
    all: bool,
    /// One dead letter's id (repeat for several).
    #[arg(long = "id", value_name = "ID")]
    ids: Vec<String>,
}

impl Selection {
    fn selection(&self) -> Result<DeadLetterSelection, ArgError> {
        match (self.all, self.ids.is_empty()) {
            (true, _) => Ok(DeadLetterSelection::All),
            (false, false) => Ok(DeadLetterSelection::Ids(self.ids.clone())),
            (false, true) => Err(ArgError("give --all or at least one --id".into())),
        }
    }
}

pub(crate) async fn run(ctx: &Context, command: DeadLettersCommand) -> anyhow::Result<Exit> {
    let manager = ctx.open().await?;
    let bus = manager.bus()?;
    match command {
        DeadLettersCommand::List { handler, limit } => {
            let letters = bus.dead_letters(&handler, limit).await?;
            if ctx.json {
                output::json(&letters)?;
            } else {
                let rows: Vec<Vec<String>> = letters
                    .iter()
                    .map(|d| {
                        vec![
                            d.id.clone(),
                            d.event
                                .as_ref()
                                .map(|e| e.event_type.to_string())
                                .unwrap_or_else(|| "(invalid)".into()),
                            d.event
                                .as_ref()
                                .map(|e| e.id.to_string())
                                .unwrap_or_default(),
                            serde_json::to_value(d.reason)
                                .ok()
                                .and_then(|v| v.as_str().map(str::to_string))
                                .unwrap_or_default(),
                            d.attempts.to_string(),
                            d.last_error.clone(),
                        ]
                    })
                    .collect();
                output::table(
                    &["id", "type", "event id", "reason", "attempts", "last error"],
                    &rows,
                );
            }
        }
        DeadLettersCommand::Redrive(sel) => {
            let report = bus
                .redrive_dead_letters(&sel.handler, sel.selection()?)
                .await?;
            if ctx.json {
                output::json(&report)?;
            } else {
                out!(
                    "redriven {} dead letters to {}",
                    report.redriven,
                    sel.handler
                );
                for (id, why) in &report.skipped {
                    out!("  skipped {id}: {why}");
                }
            }
        }
        DeadLettersCommand::Purge(sel) => {
            let purged = bus
                .purge_dead_letters(&sel.handler, sel.selection()?)
                .await?;
            if ctx.json {
                output::json(&serde_json::json!({"purged": purged}))?;
            } else {
                out!("purged {purged} dead letters of {}", sel.handler);
            }
        }
    }
    manager.stop().await?;
    Ok(Exit::Ok)
}
