//! `eventbus outbox`: the PostgreSQL outbox of `event-outbox`. `migrate` applies its schema,
//! `relay` publishes committed events to the configured bus until SIGTERM or Ctrl-C, `stats`
//! shows its rows by state and the parked events with their reasons.

use std::time::Duration;

use clap::{Args, Subcommand};
use event_outbox::{DEFAULT_CHANNEL, Outbox, Relay, RelayConfig, RelayStats};
use serde_json::json;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::context::Context;
use crate::exit::Exit;
use crate::output;

/// `eventbus outbox ...`.
#[derive(Subcommand, Debug)]
pub(crate) enum OutboxCommand {
    /// Create or update the outbox and inbox tables in the URL's schema (safe to run again, and
    /// from several processes at once).
    Migrate(DatabaseArgs),
    /// Publish committed outbox events to the configured bus until SIGTERM or Ctrl-C.
    Relay(RelayArgs),
    /// The outbox's rows by state, and the parked events with their reasons.
    Stats(StatsArgs),
}

/// Where the outbox lives.
#[derive(Args, Debug)]
pub(crate) struct DatabaseArgs {
    /// PostgreSQL URL, e.g. postgres://app@db:5432/app (a schema other than the first of the
    /// search path: `?options[search_path]=NAME`). Prefer DATABASE_URL: a password on the
    /// command line is visible in the process list.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
}

/// Arguments of `outbox relay`.
#[derive(Args, Debug)]
pub(crate) struct RelayArgs {
    #[command(flatten)]
    database: DatabaseArgs,
    /// The `LISTEN/NOTIFY` channel the application's `Outbox` notifies.
    #[arg(long, default_value = DEFAULT_CHANNEL)]
    channel: String,
    /// At most this many events per `publish_batch`; a round (one transaction) publishes up to
    /// four such batches of the keys it claimed.
    #[arg(long, default_value_t = 500)]
    batch_size: usize,
    /// Look for pending events this often when no notification comes (milliseconds).
    #[arg(long, default_value_t = 1000)]
    poll_interval_ms: u64,
    /// Keep delivered rows this long before deleting them (hours).
    #[arg(long, default_value_t = 24)]
    retention_hours: u64,
}

/// Arguments of `outbox stats`.
#[derive(Args, Debug)]
pub(crate) struct StatsArgs {
    #[command(flatten)]
    database: DatabaseArgs,
    /// Parked events listed, oldest first.
    #[arg(long, default_value_t = 20)]
    parked: u32,
}

pub(crate) async fn run(ctx: &Context, command: OutboxCommand) -> anyhow::Result<Exit> {
    match command {
        OutboxCommand::Migrate(args) => migrate(ctx, &args).await,
        OutboxCommand::Relay(args) => relay(ctx, args).await,
        OutboxCommand::Stats(args) => stats(ctx, &args).await,
    }
}

/// A small pool: enough for one relay (its `LISTEN` connection and its rounds) and the health
/// checks.
fn pool_options() -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(30))
}

async fn connect(args: &DatabaseArgs) -> anyhow::Result<PgPool> {
    let pool = pool_options()
        .connect(&args.database_url)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot connect to PostgreSQL at {}: {e}",
                event_core::redact_url(&args.database_url)
            )
        })?;
    Ok(pool)
}

async fn migrate(ctx: &Context, args: &DatabaseArgs) -> anyhow::Result<Exit> {
    let pool = connect(args).await?;
    let report = event_outbox::migrate(&pool).await?;
    pool.close().await;
    if ctx.json {
        output::json(&json!({"applied": report.applied, "version": report.version}))?;
    } else if report.applied.is_empty() {
        out!("the outbox schema is current (version {})", report.version);
    } else {
        out!(
            "applied outbox migrations {:?}; the schema is at version {}",
            report.applied,
            report.version
        );
    }
    Ok(Exit::Ok)
}

async fn relay(ctx: &Context, args: RelayArgs) -> anyhow::Result<Exit> {
    let pool = connect(&args.database).await?;
    let manager = ctx.open().await?;
    let mut config = RelayConfig::default();
    config.batch_size = args.batch_size.max(1);
    config.poll_interval = Duration::from_millis(args.poll_interval_ms.max(1));
    config.retention = Duration::from_secs(args.retention_hours * 3600);
    let relay = Relay::new(
        pool.clone(),
        Outbox::with_channel(args.channel.clone()),
        manager.bus()?,
        config,
    );
    let shutdown = event_manager::listen_for_shutdown()?;
    eprintln!(
        "eventbus: relaying the outbox of {} (channel {}) to the {} bus until SIGTERM or Ctrl-C",
        event_core::redact_url(&args.database.database_url),
        args.channel,
        ctx.settings.bus_type
    );
    let counters = relay.clone();
    let (signalled_tx, signalled_rx) = tokio::sync::oneshot::channel();
    let ran = relay
        .run(async move {
            let _ = signalled_tx.send(shutdown.await);
        })
        .await;
    let stats = counters.stats();
    pool.close().await;
    manager.stop().await?;
    ran?;
    if let Ok(signal) = signalled_rx.await {
        signal?;
    }
    report_relay(ctx, &stats)?;
    Ok(Exit::Ok)
}

fn report_relay(ctx: &Context, stats: &RelayStats) -> anyhow::Result<()> {
    if ctx.json {
        return output::json(&json!({
            "rounds": stats.rounds,
            "delivered": stats.delivered,
            "parked": stats.parked,
            "publish_failures": stats.publish_failures,
            "database_errors": stats.database_errors,
            "cleaned": stats.cleaned,
        }));
    }
    out!(
        "relayed {} events in {} rounds; {} parked, {} failed publishes retried, {} database errors, {} delivered rows cleaned up",
        stats.delivered,
        stats.rounds,
        stats.parked,
        stats.publish_failures,
        stats.database_errors,
        stats.cleaned
    );
    Ok(())
}

async fn stats(ctx: &Context, args: &StatsArgs) -> anyhow::Result<Exit> {
    let pool = connect(&args.database).await?;
    let stats = Outbox::stats(&pool).await?;
    let parked = Outbox::parked(&pool, args.parked).await?;
    pool.close().await;
    let oldest = stats.oldest_pending.map(event_core::timestamp::format);
    if ctx.json {
        let parked: Vec<_> = parked
            .iter()
            .map(|p| {
                json!({
                    "event_id": p.event_id.to_string(),
                    "event_type": p.event_type,
                    "ordering_key": p.ordering_key,
                    "reason": p.reason,
                    "attempts": p.attempts,
                    "parked_at": p.parked_at.map(event_core::timestamp::format),
                })
            })
            .collect();
        output::json(&json!({
            "pending": stats.pending,
            "parked": stats.parked,
            "delivered": stats.delivered,
            "oldest_pending": oldest,
            "parked_events": parked,
        }))?;
        return Ok(Exit::Ok);
    }
    out!(
        "outbox: {} pending (oldest {}), {} parked, {} delivered and kept",
        stats.pending,
        oldest.as_deref().unwrap_or("-"),
        stats.parked,
        stats.delivered
    );
    if !parked.is_empty() {
        out!("");
        let rows: Vec<Vec<String>> = parked
            .iter()
            .map(|p| {
                vec![
                    p.event_id.to_string(),
                    p.event_type.clone(),
                    p.attempts.to_string(),
                    p.reason.clone(),
                ]
            })
            .collect();
        output::table(&["parked event", "type", "attempts", "reason"], &rows);
    }
    Ok(Exit::Ok)
}
