//! The harness of the HTTPS tests: throwaway certificates (`event_testkit::tls`), a rustls
//! client, and one HTTP/1.1 request over a TLS connection.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

pub(crate) use event_testkit::tls::{Certificates, Scratch, openssl, run};

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
