//! The harness of the HTTPS tests: finding `openssl`, throwaway certificates in scratch
//! directories, a rustls client, and one HTTP/1.1 request over a TLS connection.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context as _, bail, ensure};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

/// Finds `openssl`; `None` means skip the test, and an error means it is missing although
/// `EVENTBUS_REQUIRE_INTEGRATION=1` asks for the tests that need it.
pub(crate) fn openssl() -> anyhow::Result<Option<PathBuf>> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("openssl"))
            .find(|candidate| candidate.is_file())
    });
    match found {
        Some(openssl) => Ok(Some(openssl)),
        None if event_testkit::integration_required() => bail!(
            "openssl (on PATH) not found, and EVENTBUS_REQUIRE_INTEGRATION=1 requires the HTTPS \
             tests, which make their certificates with it: install it (Debian/Ubuntu: \
             `sudo apt-get install openssl`; macOS: `brew install openssl`)"
        ),
        None => {
            eprintln!("SKIPPED: openssl not found (Debian/Ubuntu: `apt-get install openssl`)");
            Ok(None)
        }
    }
}

/// A temporary directory, removed when dropped.
pub(crate) struct Scratch(pub(crate) PathBuf);

impl Scratch {
    pub(crate) fn new(label: &str) -> anyhow::Result<Self> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "eventbus-api-tls-{label}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A throwaway CA and a server certificate it signed, for `127.0.0.1` and `localhost`, with
/// its key in PKCS#8 (`PRIVATE KEY`).
pub(crate) struct Certificates {
    pub(crate) ca: PathBuf,
    pub(crate) ca_key: PathBuf,
    pub(crate) server_cert: PathBuf,
    pub(crate) server_key: PathBuf,
}

const EC: [&str; 4] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];

impl Certificates {
    /// A CA (`<name>-ca.crt`) and a server certificate (`<name>.crt`, `<name>.key`) in `dir`.
    pub(crate) fn create(openssl: &Path, dir: &Path, name: &str) -> anyhow::Result<Self> {
        let certificates = Self {
            ca: dir.join(format!("{name}-ca.crt")),
            ca_key: dir.join(format!("{name}-ca.key")),
            server_cert: dir.join(format!("{name}.crt")),
            server_key: dir.join(format!("{name}.key")),
        };
        run(Command::new(openssl)
            .args(["req", "-x509", "-nodes", "-days", "1"])
            .args(EC)
            .arg("-subj")
            .arg(format!("/CN=eventbus API test CA {name}"))
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
            .arg("-keyout")
            .arg(&certificates.ca_key)
            .arg("-out")
            .arg(&certificates.ca))?;
        let csr = dir.join(format!("{name}.csr"));
        run(Command::new(openssl)
            .args(["req", "-new", "-nodes"])
            .args(EC)
            .args(["-subj", "/CN=localhost"])
            .arg("-keyout")
            .arg(&certificates.server_key)
            .arg("-out")
            .arg(&csr))?;
        certificates.sign(openssl, &csr, &certificates.server_cert)?;
        Ok(certificates)
    }

    /// Signs the request `csr` with the CA into a server certificate at `out`.
    pub(crate) fn sign(&self, openssl: &Path, csr: &Path, out: &Path) -> anyhow::Result<()> {
        let extensions = csr.with_extension("ext");
        std::fs::write(
            &extensions,
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n\
             basicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature,keyEncipherment\n\
             extendedKeyUsage=serverAuth\n",
        )?;
        run(Command::new(openssl)
            .args(["x509", "-req", "-days", "1", "-set_serial"])
            .arg((std::process::id() as u64 * 1000 + fresh()).to_string())
            .arg("-in")
            .arg(csr)
            .arg("-CA")
            .arg(&self.ca)
            .arg("-CAkey")
            .arg(&self.ca_key)
            .arg("-extfile")
            .arg(&extensions)
            .arg("-out")
            .arg(out))
    }
}

fn fresh() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::SeqCst)
}

/// Runs `command`, failing with its standard error.
pub(crate) fn run(command: &mut Command) -> anyhow::Result<()> {
    let output = command
        .output()
        .with_context(|| format!("cannot run {command:?}"))?;
    ensure!(
        output.status.success(),
        "{command:?} failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// A rustls client trusting only the CA certificates in `ca`, offering ALPN `http/1.1`.
pub(crate) fn client_trusting(ca: &Path) -> anyhow::Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(ca)? {
        roots.add(certificate?)?;
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A TLS connection to `addr`, checking the certificate names `127.0.0.1`.
pub(crate) async fn connect(
    addr: SocketAddr,
    client: &Arc<ClientConfig>,
) -> anyhow::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::from(addr.ip());
    Ok(TlsConnector::from(client.clone())
        .connect(name, tcp)
        .await?)
}

pub(crate) use crate::http_client::request;
