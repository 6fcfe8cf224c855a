//! `eventbus`: the event bus from the command line, configured by the same environment
//! variables as the library (`docs/configuration.md`) or by flags.

#![forbid(unsafe_code)]

/// `println!` that ends the process quietly when stdout is closed (`eventbus replay | head`)
/// instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut stdout = std::io::stdout().lock();
        if let Err(e) = writeln!(stdout, $($arg)*)
            && e.kind() == std::io::ErrorKind::BrokenPipe
        {
            std::process::exit(0);
        }
    }};
}

mod args;
mod commands;
mod context;
mod exit;
mod output;
mod telemetry;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::context::Context;
use crate::exit::Exit;

/// mimalloc: the bus allocates a few small buffers per event, and glibc's allocator spent
/// about half of a Kafka end-to-end run (`docs/benchmarks.md`, "Where the time goes").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The event bus from the command line. Configured by the environment (`EVENT_BUS_TYPE`,
/// `REDIS_URL`, `KAFKA_BOOTSTRAP_SERVERS`, ...) or the flags below, which override it.
///
/// Exit codes: 0 done (healthy), 1 failure, 2 bad usage, 3 invalid input (configuration,
/// flag or payload), 4 backend unreachable, 5 not found, 6 degraded (or some events failed),
/// 7 unhealthy, 8 `verify-copy`: the backends differ.
#[derive(Parser, Debug)]
#[command(name = "eventbus", version, about, long_about)]
struct Cli {
    /// Print JSON for scripts instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// The backend: memory, redis or kafka (sets EVENT_BUS_TYPE).
    #[arg(long, global = true, value_name = "BACKEND", value_parser = args::bus_type)]
    bus: Option<event_manager::BusType>,
    /// The Redis URL (sets REDIS_URL; for `migrate from-original`, the original system's Redis).
    #[arg(long, global = true, value_name = "URL")]
    redis_url: Option<String>,
    /// Kafka brokers, comma-separated host:port (sets KAFKA_BOOTSTRAP_SERVERS; for `migrate
    /// from-original` and `bridge from-original`, the original system's Kafka).
    #[arg(long, global = true, value_name = "SERVERS")]
    kafka_brokers: Option<String>,
    /// More log output on stderr (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the original system's scenarios end to end on the configured bus (memory by default).
    Demo(commands::demo::DemoArgs),
    /// Publish one event.
    Publish(commands::publish::PublishArgs),
    /// Follow events live.
    Tail(commands::tail::TailArgs),
    /// Read retained events of a time window again.
    Replay(commands::replay::ReplayArgs),
    /// The bus's counts and each handler's.
    Stats,
    /// Whether the bus works (exit 0 healthy, 6 degraded, 7 unhealthy).
    Health,
    /// List, redrive or purge a handler's dead letters.
    #[command(name = "dead-letters", subcommand)]
    DeadLetters(commands::dead_letters::DeadLettersCommand),
    /// The event catalog: every typed event, its key, version and schema.
    Schema(commands::schema::SchemaArgs),
    /// Run the domain handlers and the HTTP API until SIGTERM or Ctrl-C.
    Serve(commands::serve::ServeArgs),
    /// Copy retained events from one backend to another, keeping ids and timestamps.
    Copy(commands::copy::CopyArgs),
    /// Compare two backends' events by type and id after `copy` (exit 0 equal, 8 different).
    #[command(name = "verify-copy")]
    VerifyCopy(commands::verify_copy::VerifyCopyArgs),
    /// Import another system's events: `migrate from-original --redis-url URL` reads the
    /// original Python system's Redis, `--kafka-brokers HOST:PORT` its Kafka topics (here
    /// these flags name the source, not the target).
    #[command(subcommand)]
    Migrate(commands::migrate::MigrateCommand),
    /// Carry what another system still publishes into this bus while it runs:
    /// `bridge from-original --kafka-brokers HOST:PORT` follows the original Python system's
    /// Kafka topics as a consumer group, at least once, until SIGTERM or Ctrl-C.
    #[command(subcommand)]
    Bridge(commands::migrate::bridge::BridgeCommand),
    /// The PostgreSQL outbox (`DATABASE_URL`): apply its schema, relay committed events to the
    /// bus, show its rows.
    #[command(subcommand)]
    Outbox(commands::outbox::OutboxCommand),
    /// Check the configuration and the configured backend, and print each finding with its
    /// fix (exit 0 all ok, 6 warnings, 7 failures; docs/troubleshooting.md).
    Doctor(commands::doctor::DoctorArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo tells its own story; its handlers' warnings (the alert, the dead letter) are
    // part of it, so only errors are logged unless asked.
    let quiet = matches!(cli.command, Command::Demo(_));
    let telemetry = telemetry::init(cli.verbose, quiet);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return Exit::Failure.into();
        }
    };
    let outcome = runtime.block_on(run(cli));
    telemetry.shutdown();
    match outcome {
        Ok(exit) => exit.into(),
        Err(e) => {
            eprintln!("error: {e:#}");
            exit::classify(&e).into()
        }
    }
}

async fn run(mut cli: Cli) -> anyhow::Result<Exit> {
    // For `migrate`, --redis-url and --kafka-brokers name the system imported from, for
    // `bridge` --kafka-brokers; the target is configured as usual.
    let migrate_source = match cli.command {
        Command::Migrate(_) => commands::migrate::Source {
            redis_url: cli.redis_url.take(),
            kafka_brokers: cli.kafka_brokers.take(),
        },
        Command::Bridge(_) => commands::migrate::Source {
            redis_url: None,
            kafka_brokers: cli.kafka_brokers.take(),
        },
        _ => commands::migrate::Source::default(),
    };
    let overrides = context::Overrides {
        bus: cli.bus,
        redis_url: cli.redis_url,
        kafka_brokers: cli.kafka_brokers,
    };
    let ctx = match Context::from_env(overrides, cli.json) {
        Ok(ctx) => ctx,
        // A configuration that does not load is what doctor reports, not where it stops.
        Err(e) if matches!(cli.command, Command::Doctor(_)) => {
            return commands::doctor::unloadable(&e, cli.json);
        }
        Err(e) => return Err(e),
    };
    match cli.command {
        Command::Demo(a) => commands::demo::run(&ctx, a).await,
        Command::Publish(a) => commands::publish::run(&ctx, a).await,
        Command::Tail(a) => commands::tail::run(&ctx, a).await,
        Command::Replay(a) => commands::replay::run(&ctx, a).await,
        Command::Stats => commands::stats::run(&ctx).await,
        Command::Health => commands::health::run(&ctx).await,
        Command::DeadLetters(c) => commands::dead_letters::run(&ctx, c).await,
        Command::Schema(a) => commands::schema::run(&ctx, a),
        Command::Serve(a) => commands::serve::run(&ctx, a).await,
        Command::Copy(a) => commands::copy::run(&ctx, a).await,
        Command::VerifyCopy(a) => commands::verify_copy::run(&ctx, a).await,
        Command::Migrate(c) => commands::migrate::run(&ctx, c, migrate_source).await,
        Command::Bridge(c) => commands::migrate::bridge::run(&ctx, c, migrate_source).await,
        Command::Outbox(c) => commands::outbox::run(&ctx, c).await,
        Command::Doctor(a) => commands::doctor::run(&ctx, a).await,
    }
}
