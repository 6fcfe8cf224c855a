//! `eventbus demo --serve`: after the story, the demo's bus stays up with the HTTP API and its
//! dashboard until Ctrl-C (or SIGTERM), so a newcomer sees the handlers, views, charts and
//! dead letters the story left behind.

use std::io::Read as _;
use std::sync::Arc;

use anyhow::Context as _;
use event_manager::EventBusManager;
use event_manager::http::{ApiConfig, ApiTokens, Role, router, serve};

/// Serves the API and the dashboard on `addr` until Ctrl-C or SIGTERM. The tokens are those of
/// `EVENT_API_TOKENS` when it is set; otherwise one admin token is made up for this run and
/// printed, with the address, to standard error (standard output may hold `--json`'s summary).
pub(super) async fn serve_until_stopped(
    manager: &Arc<EventBusManager>,
    addr: &str,
) -> anyhow::Result<()> {
    let mut api = ApiConfig::from_env(manager.config())?;
    let made_up = if api.tokens.is_empty() {
        let token = random_token()?;
        api.tokens = ApiTokens::none().with(Role::Admin, &token);
        Some(token)
    } else {
        None
    };
    let shutdown = event_manager::listen_for_shutdown()?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (choose another with --addr)"))?;
    let local = listener.local_addr()?;
    eprintln!("\nthe demo's bus keeps running: dashboard at http://{local}/");
    match &made_up {
        Some(token) => eprintln!("admin token for this run (paste it into the page): {token}"),
        None => eprintln!("sign in with a token of EVENT_API_TOKENS"),
    }
    eprintln!("Ctrl-C to stop");
    serve(listener, router(manager.clone(), api), async {
        let _ = shutdown.await;
    })
    .await?;
    eprintln!("eventbus: stopping the demo's bus");
    Ok(())
}

/// 24 random bytes from the operating system, in hex.
fn random_token() -> anyhow::Result<String> {
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom for a token; set EVENT_API_TOKENS instead")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_are_long_and_differ() {
        let (a, b) = (
            super::random_token().unwrap(),
            super::random_token().unwrap(),
        );
        assert_eq!(a.len(), 48);
        assert_ne!(a, b);
    }
}
