//! `eventbus serve`: the domain handlers and the HTTP API until SIGTERM or Ctrl-C.

use std::sync::Arc;

use clap::Args;
use event_manager::http::{ApiConfig, TlsListener, router, serve, serve_tls};

use crate::args::ArgError;
use crate::context::Context;
use crate::exit::Exit;

/// Arguments of `serve`.
#[derive(Args, Debug)]
pub(crate) struct ServeArgs {
    /// Where to listen.
    #[arg(long, env = "EVENT_API_ADDR", default_value = event_manager::http::DEFAULT_ADDR)]
    addr: String,
    /// Also run the relay of the PostgreSQL outbox at DATABASE_URL (`eventbus outbox relay`),
    /// supervised: restarted when it fails, and reported in health.
    #[arg(long)]
    outbox_relay: bool,
    /// The outbox's database, for --outbox-relay. Prefer DATABASE_URL: a password on the
    /// command line is visible in the process list.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
}

pub(crate) async fn run(ctx: &Context, args: ServeArgs) -> anyhow::Result<Exit> {
    let api = ApiConfig::from_env(&ctx.settings.bus)?;
    if api.tokens.is_empty() {
        return Err(ArgError(
            "EVENT_API_TOKENS is empty, so every request would be refused: set it to comma-separated role:token entries, such as admin:<a long random token>,read:<another>".into(),
        )
        .into());
    }
    // The TLS files are read before anything starts: a bad one stops `serve` at once.
    let tls = api
        .tls
        .as_ref()
        .map(|tls| tls.server_config())
        .transpose()?;
    let mut components: Vec<Arc<dyn event_manager::Component>> = Vec::new();
    // With views in PostgreSQL the manager runs the relay itself.
    if args.outbox_relay && ctx.settings.views_store != event_manager::ViewsStore::Postgres {
        let Some(url) = &args.database_url else {
            return Err(ArgError(
                "--outbox-relay needs the outbox's database: set DATABASE_URL".into(),
            )
            .into());
        };
        components.push(Arc::new(event_manager::OutboxRelay::connect_lazy(url)?));
    }
    let manager = Arc::new(ctx.manager(components)?);
    // The router first: it installs the metrics recorder before any handler records.
    let app = router(manager.clone(), api);
    manager.start_with_retries(5).await?;
    // Before saying it serves: from then on SIGTERM must drain, not kill.
    let shutdown = event_manager::listen_for_shutdown()?;
    let listener = tokio::net::TcpListener::bind(&args.addr)
        .await
        .map_err(|e| ArgError(format!("cannot listen on {}: {e}", args.addr)))?;
    let addr = listener.local_addr()?;
    if tls.is_none() && !addr.ip().is_loopback() {
        eprintln!(
            "warning: the API listens on {addr}, reachable beyond this machine, without TLS: bearer tokens and events cross the network as is; set EVENT_API_TLS_CERT and EVENT_API_TLS_KEY, or listen on 127.0.0.1 behind a TLS-terminating proxy"
        );
    }
    eprintln!(
        "eventbus: serving the {} bus on {}://{addr}/api/v1/events (handlers: {})",
        ctx.settings.bus_type,
        if tls.is_some() { "https" } else { "http" },
        manager.handler_names().join(", ")
    );
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let stopped = async {
        let _ = stop_rx.await;
    };
    let server = match tls {
        Some(config) => tokio::spawn(serve_tls(TlsListener::new(listener, config)?, app, stopped)),
        None => tokio::spawn(serve(listener, app, stopped)),
    };
    let signal = shutdown.await;
    eprintln!("eventbus: shutting down: draining the handlers");
    let _ = stop_tx.send(());
    let served = server.await;
    manager.stop().await?;
    signal?;
    served??;
    Ok(Exit::Ok)
}
