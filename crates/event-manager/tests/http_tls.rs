//! The HTTP API over TLS, against a real server on loopback spoken to by a real rustls client
//! trusting a throwaway CA made with `openssl`: authentication, publishing and reading back,
//! plain HTTP and untrusting clients refused, silent clients harmless, and clear errors for bad
//! certificate files.
//!
//! Without `openssl` the tests are skipped, unless `EVENTBUS_REQUIRE_INTEGRATION=1`.

mod http_client;
mod tls_harness;

use std::future::Future;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use event_manager::http::{
    ApiConfig, ApiTls, ApiTokens, Role, TlsHandshakes, TlsListener, router, serve_tls,
};
use event_manager::{EventBusManager, Settings};
use serde_json::json;
use tls_harness::{Certificates, Scratch, client_trusting, connect, openssl, request, run};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::ProtocolVersion;

const ADMIN: &str = "admin-token-0123456789";
const READER: &str = "read-token-0123456789";
const HEALTH: &str = "/api/v1/events/health";

/// The longest any step may take before the test calls it a hang; never reached when things
/// work, however loaded the machine.
const HANG: Duration = Duration::from_secs(60);

async fn guard<T>(what: &str, step: impl Future<Output = T>) -> anyhow::Result<T> {
    tokio::time::timeout(HANG, step)
        .await
        .map_err(|_| anyhow::anyhow!("{what} did not finish within {HANG:?}"))
}

/// Waits until `condition` holds (checked every 10 ms), or fails after [`HANG`].
async fn wait_for(what: &str, condition: impl Fn() -> bool) -> anyhow::Result<()> {
    guard(what, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}

/// A manager on the in-memory bus served over TLS on loopback.
struct Server {
    addr: SocketAddr,
    handshakes: TlsHandshakes,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    served: tokio::task::JoinHandle<std::io::Result<()>>,
    _manager: Arc<EventBusManager>,
}

impl Server {
    /// Checks that a client trusting `certs`' CA is served: health with a read token is 200.
    async fn serves(&self, certs: &Certificates) -> anyhow::Result<()> {
        let client = client_trusting(&certs.ca)?;
        let stream = guard("the handshake", connect(self.addr, &client)).await??;
        let reply = guard(
            "GET health",
            request(stream, "GET", HEALTH, Some(READER), None),
        )
        .await??;
        anyhow::ensure!(reply.status == 200, "health over TLS: {}", reply.status);
        Ok(())
    }

    async fn start(tls: &ApiTls, handshake_timeout: Duration) -> anyhow::Result<Self> {
        let mut settings = Settings::default();
        settings.enable_event_handlers = false;
        let manager = Arc::new(EventBusManager::builder(settings.clone()).build()?);
        manager.start().await?;
        let tokens = ApiTokens::none()
            .with(Role::Admin, ADMIN)
            .with(Role::Read, READER);
        let app = router(manager.clone(), ApiConfig::new(&settings.bus, tokens));
        let tcp = TcpListener::bind("127.0.0.1:0").await?;
        let addr = tcp.local_addr()?;
        let listener =
            TlsListener::new(tcp, tls.server_config()?)?.with_handshake_timeout(handshake_timeout);
        let handshakes = listener.handshakes();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(serve_tls(listener, app, async {
            let _ = stopped.await;
        }));
        Ok(Self {
            addr,
            handshakes,
            stop: Some(stop),
            served,
            _manager: manager,
        })
    }

    /// Stops the server and waits until it has.
    async fn shut_down(mut self) -> anyhow::Result<()> {
        let _ = self.stop.take().context("stopped twice")?.send(());
        guard("the graceful shutdown", &mut self.served).await???;
        Ok(())
    }
}

/// `openssl`, a scratch directory and certificates, or `None` to skip.
fn setup(label: &str) -> anyhow::Result<Option<(std::path::PathBuf, Scratch, Certificates)>> {
    let Some(openssl) = openssl()? else {
        return Ok(None);
    };
    let scratch = Scratch::new(label)?;
    let certificates = Certificates::create(&openssl, &scratch.0, "api")?;
    Ok(Some((openssl, scratch, certificates)))
}

fn tls_of(certificates: &Certificates) -> ApiTls {
    ApiTls::new(&certificates.server_cert, &certificates.server_key)
}

#[tokio::test]
async fn https_requests_are_served_and_authenticated() -> anyhow::Result<()> {
    let Some((_openssl, _scratch, certs)) = setup("auth")? else {
        return Ok(());
    };
    let server = Server::start(&tls_of(&certs), Duration::from_secs(10)).await?;
    let client = client_trusting(&certs.ca)?;

    let stream = guard("the handshake", connect(server.addr, &client)).await??;
    let (_, session) = stream.get_ref();
    assert_eq!(session.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert!(
        matches!(
            session.protocol_version(),
            Some(ProtocolVersion::TLSv1_3 | ProtocolVersion::TLSv1_2)
        ),
        "{:?}",
        session.protocol_version()
    );
    let reply = guard(
        "GET health",
        request(stream, "GET", HEALTH, Some(READER), None),
    )
    .await??;
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(reply.json()?["status"], "healthy");

    for token in [None, Some("not-a-valid-token-at-all")] {
        let stream = guard("the handshake", connect(server.addr, &client)).await??;
        let reply = guard("GET health", request(stream, "GET", HEALTH, token, None)).await??;
        assert_eq!(reply.status, 401, "{token:?}");
        assert!(
            reply
                .headers
                .iter()
                .any(|(n, v)| n == "www-authenticate" && v.starts_with("Bearer")),
            "{:?}",
            reply.headers
        );
    }
    assert_eq!(server.handshakes.completed(), 3);
    assert_eq!(server.handshakes.failed(), 0);
    server.shut_down().await
}

#[tokio::test]
async fn an_event_published_over_tls_is_read_back() -> anyhow::Result<()> {
    let Some((_openssl, _scratch, certs)) = setup("publish")? else {
        return Ok(());
    };
    let server = Server::start(&tls_of(&certs), Duration::from_secs(10)).await?;
    let client = client_trusting(&certs.ca)?;
    let event = json!({
        "event_type": "user.registered",
        "payload": {"user_id": "u-tls", "email": "tls@example.com"},
        "source": "user_service",
        "correlation_id": "req-tls",
    });
    // A read token may not publish; an admin token may.
    let stream = guard("the handshake", connect(server.addr, &client)).await??;
    let path = "/api/v1/events/publish";
    let refused = guard(
        "POST",
        request(stream, "POST", path, Some(READER), Some(&event)),
    )
    .await??;
    assert_eq!(refused.status, 403);
    let stream = guard("the handshake", connect(server.addr, &client)).await??;
    let reply = guard(
        "POST",
        request(stream, "POST", path, Some(ADMIN), Some(&event)),
    )
    .await??;
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let published = reply.json()?;
    let id = published["event_id"].as_str().context("no event_id")?;

    let stream = guard("the handshake", connect(server.addr, &client)).await??;
    let recent = "/api/v1/events/recent?limit=5";
    let reply = guard(
        "GET recent",
        request(stream, "GET", recent, Some(READER), None),
    )
    .await??;
    assert_eq!(reply.status, 200);
    let recent = reply.json()?;
    let events = recent.as_array().context("recent is not a list")?;
    assert_eq!(events.len(), 1, "{recent}");
    assert_eq!(events[0]["id"], id);
    assert_eq!(events[0]["payload"]["user_id"], "u-tls");
    assert_eq!(events[0]["correlation_id"], "req-tls");
    server.shut_down().await
}

#[tokio::test]
async fn plain_http_to_the_tls_port_gets_no_http_response() -> anyhow::Result<()> {
    let Some((_openssl, _scratch, certs)) = setup("plain")? else {
        return Ok(());
    };
    let server = Server::start(&tls_of(&certs), Duration::from_secs(10)).await?;
    let mut tcp = TcpStream::connect(server.addr).await?;
    tcp.write_all(
        format!("GET {HEALTH} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {READER}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await?;
    // The server closes the connection (perhaps after a TLS alert): no HTTP at all.
    let mut answer = Vec::new();
    let _ = guard("the server closing", tcp.read_to_end(&mut answer)).await?;
    assert!(
        !answer.windows(5).any(|w| w == b"HTTP/"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    wait_for("the failed handshake to be counted", || {
        server.handshakes.failed() == 1
    })
    .await?;
    assert_eq!(server.handshakes.completed(), 0);
    server.shut_down().await
}

#[tokio::test]
async fn a_silent_client_holds_up_neither_other_clients_nor_shutdown() -> anyhow::Result<()> {
    let Some((_openssl, _scratch, certs)) = setup("silent")? else {
        return Ok(());
    };
    // A handshake deadline far beyond the hang guard: were handshakes done one at a time in
    // the accept loop, the second client would wait for the first until the guard fails.
    let server = Server::start(&tls_of(&certs), Duration::from_secs(3600)).await?;
    let mut silent = TcpStream::connect(server.addr).await?;
    wait_for("the silent connection to be accepted", || {
        server.handshakes.started() == 1
    })
    .await?;

    let client = client_trusting(&certs.ca)?;
    let stream = guard("a second client's handshake", connect(server.addr, &client)).await??;
    let reply = guard(
        "GET health",
        request(stream, "GET", HEALTH, Some(READER), None),
    )
    .await??;
    assert_eq!(reply.status, 200);
    assert_eq!(server.handshakes.completed(), 1);
    assert_eq!(
        server.handshakes.failed(),
        0,
        "the silent client is still waited for"
    );

    // Shutdown does not wait for the silent client, whose connection is then closed.
    server.shut_down().await?;
    let mut rest = Vec::new();
    let closed = guard(
        "the silent connection to close",
        silent.read_to_end(&mut rest),
    )
    .await?;
    assert!(rest.is_empty(), "{closed:?} {rest:?}");
    Ok(())
}

#[tokio::test]
async fn a_handshake_that_never_comes_times_out() -> anyhow::Result<()> {
    let Some((_openssl, _scratch, certs)) = setup("timeout")? else {
        return Ok(());
    };
    let server = Server::start(&tls_of(&certs), Duration::from_millis(200)).await?;
    let mut silent = TcpStream::connect(server.addr).await?;
    let mut rest = Vec::new();
    let closed = guard("the server to close", silent.read_to_end(&mut rest)).await?;
    assert!(rest.is_empty(), "{closed:?} {rest:?}");
    wait_for("the timeout to be counted", || {
        server.handshakes.failed() == 1
    })
    .await?;
    // The server still serves.
    server.serves(&certs).await?;
    server.shut_down().await
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_ca_fails_the_handshake() -> anyhow::Result<()> {
    let Some((openssl, scratch, certs)) = setup("untrusted")? else {
        return Ok(());
    };
    let other = Certificates::create(&openssl, &scratch.0, "other")?;
    let server = Server::start(&tls_of(&certs), Duration::from_secs(10)).await?;
    let stranger = client_trusting(&other.ca)?;
    let Err(error) = guard("the handshake", connect(server.addr, &stranger)).await? else {
        bail!("a client trusting another CA completed the handshake");
    };
    let message = format!("{error:#}");
    assert!(
        message.contains("invalid peer certificate") && message.contains("UnknownIssuer"),
        "{message}"
    );
    wait_for("the failed handshake to be counted", || {
        server.handshakes.failed() == 1
    })
    .await?;
    // A client trusting the right CA is served as ever.
    server.serves(&certs).await?;
    server.shut_down().await
}

#[tokio::test]
async fn bad_files_are_clear_errors() -> anyhow::Result<()> {
    let Some((openssl, scratch, certs)) = setup("files")? else {
        return Ok(());
    };
    let problem = |tls: ApiTls| -> anyhow::Result<String> {
        match tls.server_config() {
            Ok(_) => bail!("{tls:?} was accepted"),
            Err(e) => Ok(e.to_string()),
        }
    };
    // A key of another certificate.
    let other = Certificates::create(&openssl, &scratch.0, "other")?;
    let message = problem(ApiTls::new(&certs.server_cert, &other.server_key))?;
    assert!(
        message.starts_with(&format!(
            "EVENT_API_TLS_KEY is not valid: the private key in {} does not belong to the certificate in {}",
            other.server_key.display(),
            certs.server_cert.display()
        )),
        "{message}"
    );
    assert!(message.contains("openssl req -x509"), "{message}");
    // A key file with no key in it (the certificate given twice).
    let message = problem(ApiTls::new(&certs.server_cert, &certs.server_cert))?;
    assert!(
        message.starts_with(&format!(
            "EVENT_API_TLS_KEY is not valid: {}: holds no unencrypted private key",
            certs.server_cert.display()
        )),
        "{message}"
    );
    // A certificate file with no certificate (the key given twice).
    let message = problem(ApiTls::new(&certs.server_key, &certs.server_key))?;
    assert!(
        message.starts_with(&format!(
            "EVENT_API_TLS_CERT is not valid: {}: holds no certificate",
            certs.server_key.display()
        )),
        "{message}"
    );
    // Files that do not exist.
    let missing = scratch.0.join("missing.pem");
    let message = problem(ApiTls::new(&certs.server_cert, &missing))?;
    assert!(
        message.starts_with(&format!(
            "EVENT_API_TLS_KEY is not valid: {}: cannot be read (",
            missing.display()
        )),
        "{message}"
    );
    let message = problem(ApiTls::new(&missing, &certs.server_key))?;
    assert!(
        message.starts_with(&format!(
            "EVENT_API_TLS_CERT is not valid: {}",
            missing.display()
        )),
        "{message}"
    );
    // An encrypted key is named as such.
    let encrypted = scratch.0.join("encrypted.key");
    run(Command::new(&openssl)
        .args(["pkey", "-aes256", "-passout", "pass:secret-pass"])
        .arg("-in")
        .arg(&certs.server_key)
        .arg("-out")
        .arg(&encrypted))?;
    let message = problem(ApiTls::new(&certs.server_cert, &encrypted))?;
    assert!(message.contains("ENCRYPTED PRIVATE KEY"), "{message}");
    Ok(())
}

#[tokio::test]
async fn sec1_and_pkcs1_keys_serve_too() -> anyhow::Result<()> {
    let Some((openssl, scratch, certs)) = setup("formats")? else {
        return Ok(());
    };
    // The EC key in SEC1 (`EC PRIVATE KEY`).
    let sec1 = scratch.0.join("sec1.key");
    run(Command::new(&openssl)
        .arg("ec")
        .arg("-in")
        .arg(&certs.server_key)
        .arg("-out")
        .arg(&sec1))?;
    ensure!(std::fs::read_to_string(&sec1)?.starts_with("-----BEGIN EC PRIVATE KEY-----"));
    // An RSA key in PKCS#1 (`RSA PRIVATE KEY`) with a certificate of the same CA.
    let (rsa_key, rsa_csr, rsa_cert) = (
        scratch.0.join("rsa.key"),
        scratch.0.join("rsa.csr"),
        scratch.0.join("rsa.crt"),
    );
    run(Command::new(&openssl)
        .args(["genrsa", "-traditional", "-out"])
        .arg(&rsa_key)
        .arg("2048"))?;
    ensure!(std::fs::read_to_string(&rsa_key)?.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    run(Command::new(&openssl)
        .args(["req", "-new", "-subj", "/CN=localhost", "-key"])
        .arg(&rsa_key)
        .arg("-out")
        .arg(&rsa_csr))?;
    certs.sign(&openssl, &rsa_csr, &rsa_cert)?;

    let client = client_trusting(&certs.ca)?;
    for tls in [
        ApiTls::new(&certs.server_cert, &sec1),
        ApiTls::new(&rsa_cert, &rsa_key),
    ] {
        let server = Server::start(&tls, Duration::from_secs(10)).await?;
        let stream = guard("the handshake", connect(server.addr, &client)).await??;
        let reply = guard("GET", request(stream, "GET", HEALTH, Some(READER), None)).await??;
        assert_eq!(reply.status, 200, "{tls:?}");
        server.shut_down().await?;
    }
    Ok(())
}

/// `curl`, when installed, as a second client that is not rustls (optional: skipped quietly
/// without it, even in integration runs).
#[tokio::test]
async fn curl_is_served_when_installed() -> anyhow::Result<()> {
    let Some((_openssl, _scratch, certs)) = setup("curl")? else {
        return Ok(());
    };
    let has_curl = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join("curl").is_file()));
    if !has_curl {
        eprintln!("SKIPPED: curl not found");
        return Ok(());
    }
    let server = Server::start(&tls_of(&certs), Duration::from_secs(10)).await?;
    let url = format!("https://127.0.0.1:{}{HEALTH}", server.addr.port());
    let output = guard(
        "curl",
        tokio::process::Command::new("curl")
            .args(["--silent", "--show-error", "--max-time", "60", "--cacert"])
            .arg(&certs.ca)
            .args(["--header", &format!("Authorization: Bearer {READER}")])
            .args(["--write-out", "\n%{http_code} %{http_version}", &url])
            .output(),
    )
    .await??;
    let out = String::from_utf8_lossy(&output.stdout);
    ensure!(
        output.status.success(),
        "curl failed: {out} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(out.ends_with("\n200 1.1"), "{out}");
    assert!(out.contains("\"healthy\""), "{out}");
    server.shut_down().await
}
