//! The HTTP API (feature `http`): the original router's endpoints under `/api/v1/events`,
//! dead letters, views, the schema and `/metrics`, behind bearer tokens, and a live dashboard
//! page at `/` (static files embedded in the binary; its data calls use the same tokens).
//!
//! [`router`] gives an axum [`Router`] to mount in an application's own router or to [`serve`];
//! [`serve_tls`] serves it over HTTPS with the certificate of [`ApiTls`] (`EVENT_API_TLS_CERT`,
//! `EVENT_API_TLS_KEY`).
//!
//! ```no_run
//! use std::sync::Arc;
//! use event_manager::EventBusManager;
//! use event_manager::http::{ApiConfig, router, serve};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let manager = Arc::new(EventBusManager::from_env()?);
//! manager.start().await?;
//! let api = ApiConfig::from_env(manager.config())?; // EVENT_API_TOKENS
//! let app = axum::Router::new()
//!     .route("/hello", axum::routing::get(|| async { "my service" }))
//!     .merge(router(manager.clone(), api));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! serve(listener, app, async { let _ = event_manager::shutdown_signal().await; }).await?;
//! manager.stop().await?;
//! # Ok(()) }
//! ```

mod auth;
mod chain;
mod dashboard;
mod error;
mod extract;
mod limits;
mod metrics;
mod routes;
mod stream;
mod tls;

use std::future::Future;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::middleware::from_fn_with_state;
use axum::routing::{delete, get, post};
use axum::{Extension, Router};
use event_core::Config;
use event_core::config::table::{EnvSettings as _, Rule, Secret, Variable};

pub use auth::{ApiTokens, Role};
pub use error::ApiError;
pub use limits::ApiLimits;
pub use tls::{ApiTls, DEFAULT_HANDSHAKE_TIMEOUT, TlsHandshakes, TlsListener};

use crate::{Error, EventBusManager};

/// The most events one replay page holds; a larger `limit` is served in pages of this size.
pub const MAX_REPLAY_PAGE: usize = 1000;

/// Settings of the HTTP API.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ApiConfig {
    /// The bearer tokens (`EVENT_API_TOKENS`); with none, every request is refused with 401.
    pub tokens: ApiTokens,
    /// The largest request body accepted, in bytes (default: `EVENT_MAX_PAYLOAD_BYTES` plus
    /// 64 KiB for the request around the event); larger bodies get 413.
    pub body_limit: usize,
    /// The most events a replay page holds (default [`MAX_REPLAY_PAGE`]).
    pub max_page: usize,
    /// Deadlines, concurrency, rates and scan bounds (`EVENT_API_TIMEOUT_MS`,
    /// `EVENT_API_MAX_CONCURRENT`, `EVENT_API_RATE_LIMIT`, `EVENT_API_MAX_SCAN`).
    pub limits: ApiLimits,
    /// The certificate and key to serve HTTPS with (`EVENT_API_TLS_CERT`,
    /// `EVENT_API_TLS_KEY`); `None`: plain HTTP. [`router`] does not use it; whoever serves
    /// the router does ([`serve_tls`], `eventbus serve`).
    pub tls: Option<ApiTls>,
    /// Whether the router serves the dashboard at `/`, `/dashboard` and
    /// `/dashboard/assets/...` (default `true`); turn it off to mount the API beside an
    /// application that owns `/`.
    pub dashboard: bool,
}

impl ApiConfig {
    /// Settings with these tokens and limits that fit `config`.
    pub fn new(config: &Config, tokens: ApiTokens) -> Self {
        Self {
            tokens,
            body_limit: config.max_event_bytes + 64 * 1024,
            max_page: MAX_REPLAY_PAGE,
            limits: ApiLimits::default(),
            tls: None,
            dashboard: true,
        }
    }

    /// Settings from the environment (`EVENT_API_TOKENS`, the limits' variables and the TLS
    /// files' paths) that fit `config`. The TLS files are not read yet
    /// ([`ApiTls::server_config`] reads them).
    ///
    /// # Errors
    /// [`Error::InvalidSetting`] for a bad `EVENT_API_TOKENS` or only one of
    /// `EVENT_API_TLS_CERT` and `EVENT_API_TLS_KEY`, [`Error::Config`] listing the limits'
    /// variables with bad values.
    pub fn from_env(config: &Config) -> Result<Self, Error> {
        let mut api = Self::new(config, ApiTokens::from_env()?);
        api.limits = ApiLimits::from_env()?;
        api.tls = ApiTls::from_env()?;
        Ok(api)
    }
}

/// Where `eventbus serve` listens unless `EVENT_API_ADDR` or `--addr` says otherwise.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8080";

const EVENT_API_ADDR: Variable = Variable {
    name: "EVENT_API_ADDR",
    default: Some(DEFAULT_ADDR),
    default_note: "",
    rule: Rule::Text("`host:port` (port 0: any free port)"),
    secret: Secret::No,
    original: false,
    doc: "where `eventbus serve` listens (also `--addr`).",
};

/// The HTTP API's variables (`EVENT_API_TOKENS`, `EVENT_API_ADDR`, TLS and the limits),
/// declared once for the documentation; [`ApiConfig::from_env`] reads the tokens, TLS and
/// limits, `eventbus serve` the address.
pub const VARIABLES: &[Variable] = &[
    auth::EVENT_API_TOKENS,
    EVENT_API_ADDR,
    tls::EVENT_API_TLS_CERT,
    tls::EVENT_API_TLS_KEY,
    limits::EVENT_API_TIMEOUT_MS,
    limits::EVENT_API_MAX_CONCURRENT,
    limits::EVENT_API_RATE_LIMIT,
    limits::EVENT_API_MAX_SCAN,
    limits::EVENT_API_MAX_STREAMS,
];

/// What the route handlers share.
pub(crate) struct ApiState {
    pub(crate) manager: Arc<EventBusManager>,
    pub(crate) config: ApiConfig,
}

/// The API as a router: `/api/v1/events/...`, `/metrics` and, unless
/// [`ApiConfig::dashboard`] is off, the dashboard at `/`. Mount it in your own router
/// (`app.merge(event_manager::http::router(manager, config))`) or [`serve`] it.
///
/// The dashboard's files are public (they hold no data) and carry a strict
/// `Content-Security-Policy`; the page's data calls go to the guarded endpoints with the
/// token the user types.
///
/// Read tokens may use the `GET` endpoints; publishing, replay, removing handlers and
/// redriving dead letters need an admin token. Every request is subject to
/// [`ApiConfig::limits`]; requests with an admin token are written to the access log (target
/// `eventbus::api::access`, level `info`; reads at `debug`).
pub fn router(manager: Arc<EventBusManager>, config: ApiConfig) -> Router {
    metrics::install_recorder();
    let tokens = Arc::new(config.tokens.clone());
    let rates = Arc::new(limits::RateLimits::new(
        config.limits.rate_per_token,
        tokens.len(),
    ));
    let gate = Arc::new(limits::Gate::new(&config.limits));
    let body_limit = config.body_limit;
    let guard = |required| auth::Guard {
        tokens: tokens.clone(),
        rates: rates.clone(),
        required,
    };
    let with_dashboard = config.dashboard;
    let streams = Arc::new(stream::Streams::new(config.limits.max_streams));
    let state = Arc::new(ApiState { manager, config });
    let read = Router::new()
        .route("/stats", get(routes::stats))
        .route("/types", get(routes::types))
        .route("/health", get(routes::health))
        .route("/recent", get(routes::recent))
        .route("/dead-letters", get(routes::dead_letters))
        .route("/views", get(routes::views))
        .route("/views/{handler}", get(routes::view))
        .route("/schema", get(routes::schema))
        .route("/stream", get(stream::stream))
        .route("/chain/{id}", get(chain::chain))
        .route_layer(from_fn_with_state(guard(Role::Read), auth::require));
    let admin = Router::new()
        .route("/publish", post(routes::publish))
        .route("/replay", post(routes::replay))
        .route("/handlers/{name}", delete(routes::remove_handler))
        .route("/dead-letters/redrive", post(routes::redrive))
        .route("/dead-letters/purge", post(routes::purge))
        .route_layer(from_fn_with_state(guard(Role::Admin), auth::require));
    let api = read
        .merge(admin)
        .method_not_allowed_fallback(routes::method_not_allowed);
    let scrape = Router::new()
        .route("/metrics", get(metrics::scrape))
        .route_layer(from_fn_with_state(guard(Role::Read), auth::require));
    let mut app = Router::new().nest("/api/v1/events", api).merge(scrape);
    if with_dashboard {
        app = app.merge(dashboard::routes());
    }
    app.fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .with_state(state)
        .layer(Extension(streams))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(from_fn_with_state(gate, limits::gate))
}

/// Serves `router` on `listener` until `shutdown` resolves, then finishes the requests in
/// progress; the live streams (`GET /api/v1/events/stream`) end then, with an `end` message.
/// (Served otherwise, with `axum::serve` directly, a graceful shutdown waits until their
/// clients leave.)
///
/// # Errors
/// An I/O error of the listener.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (router, shutdown) = ending_streams(router, shutdown);
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Serves `router` over HTTPS on `listener` until `shutdown` resolves, then finishes the
/// requests in progress (handshakes still in progress are abandoned) and ends the live
/// streams, as [`serve`] does.
///
/// ```no_run
/// use std::sync::Arc;
/// use event_manager::EventBusManager;
/// use event_manager::http::{ApiConfig, ApiTls, TlsListener, router, serve_tls};
///
/// # async fn run(manager: Arc<EventBusManager>) -> Result<(), Box<dyn std::error::Error>> {
/// let api = ApiConfig::from_env(manager.config())?;
/// let tls = api.tls.clone().unwrap_or_else(|| ApiTls::new("cert.pem", "key.pem"));
/// let config = tls.server_config()?; // reads the files: a bad one is an error here
/// let tcp = tokio::net::TcpListener::bind("0.0.0.0:8443").await?;
/// let listener = TlsListener::new(tcp, config)?;
/// serve_tls(listener, router(manager, api), async {
///     let _ = event_manager::shutdown_signal().await;
/// })
/// .await?;
/// # Ok(()) }
/// ```
///
/// # Errors
/// None in practice: failed handshakes and accept errors are logged, not returned.
pub async fn serve_tls(
    listener: TlsListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (router, shutdown) = ending_streams(router, shutdown);
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Adds the signal the live streams end on to `router`, and a shutdown future that sets it.
fn ending_streams(
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> (Router, impl Future<Output = ()> + Send + 'static) {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let router = router.layer(Extension(stream::ShutdownSignal(rx)));
    (router, async move {
        shutdown.await;
        let _ = tx.send(true);
    })
}
