//! `eventbus schema`: the event catalog.

use clap::Args;

use crate::context::Context;
use crate::exit::Exit;
use crate::output;

/// Arguments of `schema`.
#[derive(Args, Debug)]
pub(crate) struct SchemaArgs {
    /// Only this event type, with its JSON Schema and an example.
    event_type: Option<String>,
}

pub(crate) fn run(ctx: &Context, args: SchemaArgs) -> anyhow::Result<Exit> {
    let catalog = event_manager::catalog_json();
    let entries = catalog.as_array().cloned().unwrap_or_default();
    if let Some(wanted) = args.event_type {
        let Some(entry) = entries.iter().find(|e| e["event_type"] == wanted.as_str()) else {
            eprintln!("error: {wanted:?} is not a typed event; `eventbus schema` lists them");
            return Ok(Exit::NotFound);
        };
        output::json(entry)?;
        return Ok(Exit::Ok);
    }
    if ctx.json {
        output::json(&catalog)?;
        return Ok(Exit::Ok);
    }
    let text = |v: &serde_json::Value| {
        v.as_str()
            .map(str::to_string)
            .unwrap_or_else(|| v.to_string())
    };
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                text(&e["event_type"]),
                text(&e["type_name"]),
                e["partition_key"].as_str().unwrap_or("-").to_string(),
                text(&e["schema_version"]),
                format!("{}.{}", text(&e["source"]), text(&e["publisher_method"])),
            ]
        })
        .collect();
    output::table(
        &["event type", "payload", "key", "version", "published by"],
        &rows,
    );
    Ok(Exit::Ok)
}
