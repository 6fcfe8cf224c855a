//! TLS for the HTTP API: the certificate and key (`EVENT_API_TLS_CERT`, `EVENT_API_TLS_KEY`),
//! the rustls configuration built from them, and a [`TlsListener`] that hands axum only
//! connections whose handshake completed.
//!
//! The handshakes never hold up the accept loop: TCP connections are accepted by a task of
//! their own, each handshake runs in its own task with a deadline, and the finished streams
//! reach axum through a bounded channel. A client that connects and never says hello costs one
//! task until the deadline, nothing more.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use event_core::config::table::{Reader, Rule, Secret, Variable};
use rustls::ServerConfig;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::Error;

pub(super) const EVENT_API_TLS_CERT: Variable = Variable {
    name: "EVENT_API_TLS_CERT",
    default: None,
    default_note: "no TLS: the API speaks plain HTTP",
    rule: Rule::Text(
        "the path of a PEM file: the server's certificate first, then any intermediate CA certificates",
    ),
    secret: Secret::No,
    original: false,
    doc: "the certificate chain of the HTTP API (`event_manager::http::ApiTls`). Set together with `EVENT_API_TLS_KEY`: `eventbus serve` then speaks HTTPS only (TLS 1.2 or 1.3, ALPN `http/1.1`). The files are read at start; a missing or unreadable file, a file without a certificate or a key that does not belong to the certificate stops the start with an error naming the file.",
};

pub(super) const EVENT_API_TLS_KEY: Variable = Variable {
    name: "EVENT_API_TLS_KEY",
    default: None,
    default_note: "no TLS",
    rule: Rule::Text(
        "the path of a PEM file with the certificate's unencrypted private key: PKCS#8 (`PRIVATE KEY`), PKCS#1 (`RSA PRIVATE KEY`) or SEC1 (`EC PRIVATE KEY`)",
    ),
    secret: Secret::No,
    original: false,
    doc: "the private key of `EVENT_API_TLS_CERT`'s certificate; set both or neither. Keep the file readable by the service's user only.",
};

/// How to make a certificate and key, for the messages.
const MAKE_ONE: &str = "make a pair with `openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 365 -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout key.pem -out cert.pem` (for a test; in production use the certificate your CA issued for the API's host name)";

/// How long a client has to complete its TLS handshake unless
/// [`TlsListener::with_handshake_timeout`] says otherwise.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The most handshakes in progress at once; the next connection is accepted when one ends.
const MAX_HANDSHAKES: usize = 1024;

/// Finished handshakes waiting for axum to take them.
const READY_QUEUE: usize = 64;

/// The TLS settings of the HTTP API: a certificate chain and its private key, PEM files.
/// The files are read by [`server_config`](Self::server_config), not before.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ApiTls {
    /// `EVENT_API_TLS_CERT`: the server's certificate, then any intermediates.
    pub cert_file: PathBuf,
    /// `EVENT_API_TLS_KEY`: the certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

impl ApiTls {
    /// TLS with the certificate chain in `cert_file` and its private key in `key_file`.
    pub fn new(cert_file: impl Into<PathBuf>, key_file: impl Into<PathBuf>) -> Self {
        Self {
            cert_file: cert_file.into(),
            key_file: key_file.into(),
        }
    }

    /// The settings from the environment: `None` when neither `EVENT_API_TLS_CERT` nor
    /// `EVENT_API_TLS_KEY` is set (an empty value counts as unset).
    ///
    /// # Errors
    /// [`Error::InvalidSetting`] when only one of them is set.
    pub fn from_env() -> Result<Option<Self>, Error> {
        Self::from_lookup(&|name| std::env::var(name).ok())
    }

    /// The settings through `lookup`, which returns a variable's value if it is set.
    ///
    /// # Errors
    /// [`Error::InvalidSetting`] when only one of the two variables is set.
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Option<Self>, Error> {
        let reader = Reader::new(lookup);
        let both = "set both EVENT_API_TLS_CERT (the certificate chain) and EVENT_API_TLS_KEY (its private key), PEM files, to serve HTTPS, or neither to serve plain HTTP";
        match (
            reader.path(&EVENT_API_TLS_CERT),
            reader.path(&EVENT_API_TLS_KEY),
        ) {
            (None, None) => Ok(None),
            (Some(cert_file), Some(key_file)) => Ok(Some(Self::new(cert_file, key_file))),
            (Some(cert_file), None) => Err(Error::InvalidSetting {
                variable: EVENT_API_TLS_KEY.name,
                problem: format!(
                    "it is unset while EVENT_API_TLS_CERT={} is set: {both}",
                    cert_file.display()
                ),
            }),
            (None, Some(key_file)) => Err(Error::InvalidSetting {
                variable: EVENT_API_TLS_CERT.name,
                problem: format!(
                    "it is unset while EVENT_API_TLS_KEY={} is set: {both}",
                    key_file.display()
                ),
            }),
        }
    }

    /// The rustls server configuration: the files are read now. The `ring` provider is
    /// named rather than taken from the process default; TLS 1.2 and 1.3 only; ALPN
    /// `http/1.1` (the API is served over HTTP/1.1).
    ///
    /// # Errors
    /// [`Error::InvalidSetting`] naming the variable and the file: a file that cannot be
    /// read, holds no certificate or no private key, or a key that does not belong to the
    /// certificate.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, Error> {
        let chain = certificates(&self.cert_file)?;
        let key = private_key(&self.key_file)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::InvalidSetting {
                variable: EVENT_API_TLS_CERT.name,
                problem: format!("the TLS configuration cannot be built: {e}"),
            })?
            .with_no_client_auth();
        let mut config = builder.with_single_cert(chain, key).map_err(|e| {
            let problem = match e {
                rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                    format!(
                        "the private key in {} does not belong to the certificate in {} (EVENT_API_TLS_CERT): point both at the same pair, or {MAKE_ONE}",
                        self.key_file.display(),
                        self.cert_file.display()
                    )
                }
                other => format!(
                    "the private key in {} cannot be used with the certificate in {} (EVENT_API_TLS_CERT): {other}; {MAKE_ONE}",
                    self.key_file.display(),
                    self.cert_file.display()
                ),
            };
            Error::InvalidSetting {
                variable: EVENT_API_TLS_KEY.name,
                problem,
            }
        })?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// A problem with one of the two files.
fn file_problem(var: &Variable, path: &Path, what: String) -> Error {
    Error::InvalidSetting {
        variable: var.name,
        problem: format!("{}: {what}", path.display()),
    }
}

/// What a PEM read failed with, in words.
fn pem_problem(error: pem::Error, holds: &str) -> String {
    match error {
        pem::Error::Io(e) => format!("cannot be read ({e}): check the path and its permissions"),
        pem::Error::NoItemsFound => format!("holds no {holds}; {MAKE_ONE}"),
        other => format!("is not a valid PEM file ({other}); {MAKE_ONE}"),
    }
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let holds = "certificate (a `-----BEGIN CERTIFICATE-----` block)";
    let chain = CertificateDer::pem_file_iter(path)
        .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
        .map_err(|e| file_problem(&EVENT_API_TLS_CERT, path, pem_problem(e, holds)))?;
    if chain.is_empty() {
        return Err(file_problem(
            &EVENT_API_TLS_CERT,
            path,
            pem_problem(pem::Error::NoItemsFound, holds),
        ));
    }
    Ok(chain)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, Error> {
    let holds = "unencrypted private key (a `PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY` block; decrypt an `ENCRYPTED PRIVATE KEY` with `openssl pkey -in key.pem -out plain.pem`)";
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| file_problem(&EVENT_API_TLS_KEY, path, pem_problem(e, holds)))
}

/// The TLS handshakes of a [`TlsListener`], counted. Clones share the counts: keep one
/// before handing the listener to [`serve_tls`](super::serve_tls).
#[derive(Clone, Debug, Default)]
pub struct TlsHandshakes {
    counts: Arc<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    started: AtomicU64,
    completed: AtomicU64,
    failed: AtomicU64,
}

impl TlsHandshakes {
    /// TCP connections accepted, whose handshake began.
    pub fn started(&self) -> u64 {
        self.counts.started.load(Ordering::SeqCst)
    }

    /// Handshakes that completed.
    pub fn completed(&self) -> u64 {
        self.counts.completed.load(Ordering::SeqCst)
    }

    /// Handshakes that failed or ran out of time (a client that does not trust the
    /// certificate, plain HTTP sent to the TLS port, a client that never says hello).
    pub fn failed(&self) -> u64 {
        self.counts.failed.load(Ordering::SeqCst)
    }
}

/// A TCP listener whose connections come out TLS-encrypted: an [`axum::serve::Listener`]
/// (use it with [`serve_tls`](super::serve_tls) or `axum::serve`).
///
/// Its background tasks start at the first `accept` and stop when it is dropped (as axum
/// does at graceful shutdown); handshakes still in progress then are abandoned. Failed
/// handshakes are logged at `debug` (target `eventbus::api::tls`), counted in
/// [`handshakes`](Self::handshakes) and in the metric
/// `eventbus_api_tls_handshake_failures_total`, and are never fatal.
pub struct TlsListener {
    local_addr: SocketAddr,
    /// The TCP listener and configuration until the first `accept` starts the tasks.
    pending: Option<(TcpListener, TlsAcceptor)>,
    ready: Option<mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>>,
    accept_task: Option<tokio::task::JoinHandle<()>>,
    handshake_timeout: Duration,
    handshakes: TlsHandshakes,
}

impl fmt::Debug for TlsListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsListener")
            .field("local_addr", &self.local_addr)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("handshakes", &self.handshakes)
            .finish_non_exhaustive()
    }
}

impl TlsListener {
    /// Connections of `listener`, encrypted with `config` (from [`ApiTls::server_config`] or
    /// your own rustls configuration).
    ///
    /// # Errors
    /// When the listener's local address cannot be read.
    pub fn new(listener: TcpListener, config: Arc<ServerConfig>) -> io::Result<Self> {
        Ok(Self {
            local_addr: listener.local_addr()?,
            pending: Some((listener, TlsAcceptor::from(config))),
            ready: None,
            accept_task: None,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            handshakes: TlsHandshakes::default(),
        })
    }

    /// How long a client has to complete its handshake (default
    /// [`DEFAULT_HANDSHAKE_TIMEOUT`]); then its connection is closed. Takes effect if set
    /// before the first `accept`.
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// The handshakes' counts, shared with this listener.
    pub fn handshakes(&self) -> TlsHandshakes {
        self.handshakes.clone()
    }

    /// Starts the accepting task, once.
    fn start(&mut self) {
        let Some((listener, acceptor)) = self.pending.take() else {
            return;
        };
        let (tx, rx) = mpsc::channel(READY_QUEUE);
        self.ready = Some(rx);
        self.accept_task = Some(tokio::spawn(accept_loop(
            listener,
            acceptor,
            tx,
            self.handshake_timeout,
            self.handshakes.clone(),
        )));
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        // The task owns the TCP listener: aborting it closes the port.
        if let Some(task) = &self.accept_task {
            task.abort();
        }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        self.start();
        if let Some(ready) = &mut self.ready
            && let Some(connection) = ready.recv().await
        {
            return connection;
        }
        // The accepting task ended, which it only does when it panicked: accept no more.
        tracing::error!(target: "eventbus::api::tls", "the TLS accepting task ended; no more connections are accepted");
        std::future::pending().await
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

/// Accepts TCP connections and hands each to a handshake task of its own.
async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
    timeout: Duration,
    handshakes: TlsHandshakes,
) {
    let slots = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // Out of file descriptors, say: wait for some to be closed rather than spin.
                tracing::error!(target: "eventbus::api::tls", error = %e, "accepting a TCP connection failed; retrying in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        handshakes.counts.started.fetch_add(1, Ordering::SeqCst);
        let acceptor = acceptor.clone();
        let ready = ready.clone();
        let handshakes = handshakes.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let outcome = tokio::select! {
                outcome = tokio::time::timeout(timeout, acceptor.accept(tcp)) => outcome,
                // The listener was dropped: nobody would take the connection.
                () = ready.closed() => return,
            };
            let failure = match outcome {
                Ok(Ok(stream)) => {
                    handshakes.counts.completed.fetch_add(1, Ordering::SeqCst);
                    let _ = ready.send((stream, peer)).await;
                    return;
                }
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("no complete handshake within {} ms", timeout.as_millis()),
            };
            handshakes.counts.failed.fetch_add(1, Ordering::SeqCst);
            metrics::counter!("eventbus_api_tls_handshake_failures_total").increment(1);
            tracing::debug!(target: "eventbus::api::tls", %peer, error = %failure, "TLS handshake failed");
        });
    }
}

/// Errors of one connection, not of the listener.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(vars: &[(&str, &str)]) -> Result<Option<ApiTls>, Error> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ApiTls::from_lookup(&|name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
    }

    /// A scratch file, removed when dropped.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str, contents: &str) -> Self {
            let path = std::env::temp_dir().join(format!(
                "eventbus-api-tls-{}-{name}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            std::fs::write(&path, contents).expect("writing a scratch file");
            Self(path)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn both_variables_or_neither() {
        assert_eq!(lookup(&[]).unwrap(), None);
        assert_eq!(
            lookup(&[("EVENT_API_TLS_CERT", " "), ("EVENT_API_TLS_KEY", "")]).unwrap(),
            None
        );
        assert_eq!(
            lookup(&[
                ("EVENT_API_TLS_CERT", "c.pem"),
                ("EVENT_API_TLS_KEY", "k.pem")
            ])
            .unwrap(),
            Some(ApiTls::new("c.pem", "k.pem"))
        );
        for (set, unset) in [
            ("EVENT_API_TLS_CERT", "EVENT_API_TLS_KEY"),
            ("EVENT_API_TLS_KEY", "EVENT_API_TLS_CERT"),
        ] {
            let message = lookup(&[(set, "/etc/api/file.pem")])
                .unwrap_err()
                .to_string();
            assert!(
                message.starts_with(&format!("{unset} is not valid: it is unset while {set}=")),
                "{message}"
            );
            assert!(
                message.contains("set both EVENT_API_TLS_CERT")
                    && message.contains("/etc/api/file.pem"),
                "{message}"
            );
        }
    }

    #[test]
    fn unreadable_and_empty_files_are_named_with_the_fix() {
        let missing = std::env::temp_dir().join("eventbus-api-tls-no-such-file.pem");
        let message = ApiTls::new(&missing, &missing)
            .server_config()
            .unwrap_err()
            .to_string();
        assert!(
            message.starts_with(&format!(
                "EVENT_API_TLS_CERT is not valid: {}: cannot be read (",
                missing.display()
            )),
            "{message}"
        );
        assert!(message.contains("check the path"), "{message}");

        let junk = Scratch::new("junk", "not a certificate\n");
        let message = ApiTls::new(&junk.0, &junk.0)
            .server_config()
            .unwrap_err()
            .to_string();
        assert!(
            message.starts_with(&format!(
                "EVENT_API_TLS_CERT is not valid: {}: holds no certificate",
                junk.0.display()
            )),
            "{message}"
        );
        assert!(message.contains("openssl req -x509 -newkey"), "{message}");
    }
}
