//! What `copy` and `verify-copy` both take: the two ends and the events between them.

use std::collections::BTreeSet;

use clap::Args;
use event_core::{EventType, ReplayQuery};
use event_manager::Settings;
use time::OffsetDateTime;

use crate::args::{backend_url, parse_time};
use crate::context::Context;

/// `--from`, `--to`, `--since`, `--until` and `--type`, flattened into both commands (the help
/// here is `copy`'s; `verify-copy` words it for itself with `mut_arg`).
#[derive(Args, Debug)]
pub(crate) struct Span {
    /// Where to read: redis://host:port/db, rediss://..., or kafka://host:port (several brokers comma-separated).
    #[arg(long)]
    from: String,
    /// Where to write, in the same forms.
    #[arg(long)]
    to: String,
    /// Copy events from this time: an age (`7d`, `1h`) or an RFC 3339 timestamp; default
    /// every retained event.
    #[arg(long)]
    since: Option<String>,
    /// Up to (not including) this time; default now.
    #[arg(long)]
    until: Option<String>,
    /// Only this type (repeat for several); default every type.
    #[arg(long = "type", short = 't', value_name = "TYPE")]
    types: Vec<String>,
}

/// The events a [`Span`] selects.
pub(crate) struct Selection {
    /// `--since` and `--until` as times.
    pub(crate) since: Option<OffsetDateTime>,
    pub(crate) until: Option<OffsetDateTime>,
    /// The replay that reads them, checked.
    pub(crate) query: ReplayQuery,
}

/// One end's settings and the variables set explicitly for it.
pub(crate) type End = (Settings, BTreeSet<String>);

impl Span {
    /// The types and times, parsed against `now` (an age is counted back from it), as a
    /// checked query.
    pub(crate) fn selection(&self, now: OffsetDateTime) -> anyhow::Result<Selection> {
        let types = self
            .types
            .iter()
            .map(|t| EventType::new(t.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        let since = self
            .since
            .as_deref()
            .map(|t| parse_time("--since", t, now))
            .transpose()?;
        let until = self
            .until
            .as_deref()
            .map(|t| parse_time("--until", t, now))
            .transpose()?;
        let mut query = ReplayQuery::new(types, since.unwrap_or(OffsetDateTime::UNIX_EPOCH));
        if let Some(until) = until {
            query = query.to(until);
        }
        query.validate()?;
        Ok(Selection {
            since,
            until,
            query,
        })
    }

    /// The settings of `--from` and of `--to`, in that order.
    pub(crate) fn ends(&self, ctx: &Context) -> anyhow::Result<(End, End)> {
        let from = ctx.on_backend(&backend_url("--from", &self.from)?)?;
        let to = ctx.on_backend(&backend_url("--to", &self.to)?)?;
        Ok((from, to))
    }
}
