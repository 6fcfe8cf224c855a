//! `eventbus publish`: one event, validated like the typed publishers do.

use std::io::Read as _;

use anyhow::Context as _;
use clap::Args;
use event_core::{EventType, timestamp};
use event_publishers::EventPublisher;
use serde_json::{Value, json};

use crate::context::Context;
use crate::exit::Exit;
use crate::output;

/// Arguments of `publish`.
#[derive(Args, Debug)]
pub(crate) struct PublishArgs {
    /// The event type, such as opportunity.created.
    event_type: String,
    /// The payload: a JSON object, `@file` to read it from a file, or `-` for stdin.
    #[arg(long, short, default_value = "{}")]
    payload: String,
    /// The publishing service.
    #[arg(long, default_value = "eventbus-cli")]
    source: String,
    /// The correlation id (default: a new one).
    #[arg(long)]
    correlation_id: Option<String>,
    /// The partition key (default: the catalog's key field of a typed event).
    #[arg(long)]
    partition_key: Option<String>,
}

pub(crate) async fn run(ctx: &Context, args: PublishArgs) -> anyhow::Result<Exit> {
    let text = match args.payload.as_str() {
        "-" => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s)?;
            s
        }
        p if p.starts_with('@') => std::fs::read_to_string(&p[1..])
            .with_context(|| format!("cannot read the payload file {}", &p[1..]))?,
        p => p.to_string(),
    };
    let payload: Value = serde_json::from_str(&text)
        .map_err(|e| crate::args::ArgError(format!("--payload is not valid JSON: {e}")))?;
    let Value::Object(payload) = payload else {
        return Err(crate::args::ArgError("--payload must be a JSON object".into()).into());
    };
    let event_type = EventType::new(args.event_type)?;
    let manager = ctx.open().await?;
    let mut publisher = EventPublisher::new(manager.bus()?, args.source);
    if let Some(id) = args.correlation_id {
        publisher = publisher.for_request(id);
    }
    let event = publisher.json_event(event_type, payload, args.partition_key)?;
    let (event_type, at) = (event.event_type.to_string(), event.timestamp);
    let id = manager.bus()?.publish(event).await?;
    manager.stop().await?;
    if ctx.json {
        output::json(
            &json!({"event_id": id.to_string(), "event_type": event_type, "timestamp": timestamp::format(at)}),
        )?;
    } else {
        out!("published {id} ({event_type})");
    }
    Ok(Exit::Ok)
}
