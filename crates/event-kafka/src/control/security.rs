//! How the client proves who it is and protects the connection: SASL credentials and TLS
//! settings, with a `Debug` that never prints the password, and the rustls configuration built
//! from them (shareable with `rskafka`, which uses the same rustls).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use event_core::{ConfigError, Error};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

/// SASL and TLS settings of the connections to the brokers. The default is neither: plain TCP,
/// no authentication.
#[derive(Clone, Debug, Default)]
pub(crate) struct Security {
    /// SASL authentication (`KAFKA_SASL_*`); `None`: none.
    pub(crate) sasl: Option<KafkaSasl>,
    /// TLS (`KAFKA_TLS_*`); `None`: plain TCP.
    pub(crate) tls: Option<KafkaTls>,
}

impl Security {
    /// The SASL settings for rskafka's data path, which implements the same three mechanisms.
    pub(crate) fn rskafka_sasl(&self) -> Option<rskafka::client::SaslConfig> {
        let sasl = self.sasl.as_ref()?;
        let credentials =
            rskafka::client::Credentials::new(sasl.username.clone(), sasl.password.clone());
        Some(match sasl.mechanism {
            KafkaSaslMechanism::Plain => rskafka::client::SaslConfig::Plain(credentials),
            KafkaSaslMechanism::ScramSha256 => {
                rskafka::client::SaslConfig::ScramSha256(credentials)
            }
            KafkaSaslMechanism::ScramSha512 => {
                rskafka::client::SaslConfig::ScramSha512(credentials)
            }
        })
    }

    /// How the connection is secured, for messages: never the password.
    pub(crate) fn describe(&self) -> String {
        let transport = if self.tls.is_some() {
            "TLS"
        } else {
            "plain TCP"
        };
        match &self.sasl {
            None => format!("{transport}, no SASL"),
            Some(sasl) => format!(
                "{transport}, SASL {} as user {:?}",
                sasl.mechanism, sasl.username
            ),
        }
    }
}

/// A SASL mechanism for Kafka (`KAFKA_SASL_MECHANISM`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KafkaSaslMechanism {
    /// `PLAIN`: the password travels as is, so use it with TLS outside a trusted network.
    Plain,
    /// `SCRAM-SHA-256` (RFC 5802, RFC 7677): the password never leaves the client.
    ScramSha256,
    /// `SCRAM-SHA-512`.
    ScramSha512,
}

impl KafkaSaslMechanism {
    pub(crate) const ALL: [KafkaSaslMechanism; 3] = [
        KafkaSaslMechanism::Plain,
        KafkaSaslMechanism::ScramSha256,
        KafkaSaslMechanism::ScramSha512,
    ];

    /// The name used in `KAFKA_SASL_MECHANISM`, in SaslHandshake and in Kafka's own settings.
    pub fn as_str(self) -> &'static str {
        match self {
            KafkaSaslMechanism::Plain => "PLAIN",
            KafkaSaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            KafkaSaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

impl fmt::Display for KafkaSaslMechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// SASL credentials (`KAFKA_SASL_*`). `Debug` is written by hand: the password never
/// reaches a log.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KafkaSasl {
    /// `KAFKA_SASL_MECHANISM`.
    pub mechanism: KafkaSaslMechanism,
    /// `KAFKA_SASL_USERNAME`.
    pub username: String,
    /// `KAFKA_SASL_PASSWORD`, taken as is (not trimmed).
    pub password: String,
}

impl KafkaSasl {
    /// Credentials for `mechanism`.
    pub fn new(
        mechanism: KafkaSaslMechanism,
        username: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        Self {
            mechanism,
            username: username.into(),
            password: password.into(),
        }
    }
}

impl fmt::Debug for KafkaSasl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaSasl")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .field("password", &"***")
            .finish()
    }
}

/// TLS settings (`KAFKA_TLS_*`). The brokers' certificates are always verified, and must name
/// the host the client connects to (as advertised by the broker). The files are read when the
/// bus connects.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct KafkaTls {
    /// `KAFKA_TLS_CA_FILE`: a PEM file with the CA certificates to trust; `None`: the system's
    /// roots.
    pub ca_file: Option<PathBuf>,
    /// `KAFKA_TLS_CERT_FILE`: a PEM file with the client's certificate chain, for brokers that
    /// require client certificates; needs `key_file`.
    pub cert_file: Option<PathBuf>,
    /// `KAFKA_TLS_KEY_FILE`: a PEM file with the client certificate's private key.
    pub key_file: Option<PathBuf>,
}

impl KafkaTls {
    /// TLS trusting the CA certificates of the PEM file at `path` instead of the system's.
    pub fn with_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    /// A client certificate (its chain and its private key, PEM files), for brokers with
    /// `ssl.client.auth=required`.
    pub fn with_client_cert(
        mut self,
        cert_file: impl Into<PathBuf>,
        key_file: impl Into<PathBuf>,
    ) -> Self {
        self.cert_file = Some(cert_file.into());
        self.key_file = Some(key_file.into());
        self
    }
}

impl KafkaTls {
    /// The rustls configuration for these settings; the files are read now.
    ///
    /// The `ring` provider is named rather than taken from the process default, which rustls
    /// cannot choose when another crate of the build enables a second provider.
    pub(crate) fn client_config(&self) -> Result<Arc<ClientConfig>, Error> {
        let client_files = match (&self.cert_file, &self.key_file) {
            (None, None) => None,
            (Some(cert_file), Some(key_file)) => Some((cert_file, key_file)),
            (Some(_), None) => {
                return Err(Error::Config(ConfigError::single(
                    "KAFKA_TLS_KEY_FILE",
                    "",
                    "set together with KAFKA_TLS_CERT_FILE: the client certificate's private key",
                )));
            }
            (None, Some(_)) => {
                return Err(Error::Config(ConfigError::single(
                    "KAFKA_TLS_CERT_FILE",
                    "",
                    "set together with KAFKA_TLS_KEY_FILE: the client certificate chain",
                )));
            }
        };
        let roots = match &self.ca_file {
            Some(path) => roots_from_file(path)?,
            None => system_roots()?,
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::backend("kafka", format!("TLS setup failed: {e}"), false))?
            .with_root_certificates(roots);
        let config = match client_files {
            None => builder.with_no_client_auth(),
            Some((cert_file, key_file)) => {
                let chain = certificates(cert_file, "KAFKA_TLS_CERT_FILE", "the client's")?;
                let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| {
                    file_problem(
                        "KAFKA_TLS_KEY_FILE",
                        key_file,
                        "a readable PEM file with the private key of the client certificate",
                        e.to_string(),
                    )
                })?;
                builder.with_client_auth_cert(chain, key).map_err(|e| {
                    file_problem(
                        "KAFKA_TLS_KEY_FILE",
                        key_file,
                        "the private key that belongs to KAFKA_TLS_CERT_FILE's certificate",
                        e.to_string(),
                    )
                })?
            }
        };
        Ok(Arc::new(config))
    }
}

fn file_problem(variable: &'static str, path: &Path, expected: &str, why: String) -> Error {
    Error::Config(ConfigError::single(
        variable,
        path.display().to_string(),
        format!("{expected} ({why})"),
    ))
}

fn certificates(
    path: &Path,
    variable: &'static str,
    whose: &str,
) -> Result<Vec<CertificateDer<'static>>, Error> {
    let expected = format!("a readable PEM file with {whose} certificates");
    let certificates = CertificateDer::pem_file_iter(path)
        .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
        .map_err(|e| file_problem(variable, path, &expected, e.to_string()))?;
    if certificates.is_empty() {
        return Err(file_problem(
            variable,
            path,
            &expected,
            "it holds no CERTIFICATE block".into(),
        ));
    }
    Ok(certificates)
}

/// The CA certificates in the PEM file at `path`, as `kafka-console-producer`'s truststore.
fn roots_from_file(path: &Path) -> Result<RootCertStore, Error> {
    let mut roots = RootCertStore::empty();
    for certificate in certificates(path, "KAFKA_TLS_CA_FILE", "the CA")? {
        roots.add(certificate).map_err(|e| {
            file_problem(
                "KAFKA_TLS_CA_FILE",
                path,
                "CA certificates",
                format!("a certificate cannot be used as a root: {e}"),
            )
        })?;
    }
    Ok(roots)
}

/// The operating system's trusted roots (or `SSL_CERT_FILE` / `SSL_CERT_DIR`).
fn system_roots() -> Result<RootCertStore, Error> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map(|e| format!(": {e}"))
            .unwrap_or_default();
        return Err(Error::backend(
            "kafka",
            format!(
                "TLS is on but no trusted CA certificate was found on this system{why}; set KAFKA_TLS_CA_FILE to the CA that signed the brokers' certificates"
            ),
            false,
        ));
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_password_and_describe_names_the_user() {
        let security = Security {
            sasl: Some(KafkaSasl::new(
                KafkaSaslMechanism::ScramSha256,
                "app",
                "hunter2-secret",
            )),
            tls: Some(KafkaTls::default()),
        };
        let text = format!("{security:?} {security:#?}");
        assert!(!text.contains("hunter2-secret"), "{text}");
        assert!(
            text.contains("app") && text.contains("ScramSha256"),
            "{text}"
        );
        assert!(matches!(
            security.rskafka_sasl(),
            Some(rskafka::client::SaslConfig::ScramSha256(_))
        ));
        assert_eq!(
            security.describe(),
            r#"TLS, SASL SCRAM-SHA-256 as user "app""#
        );
        let plain = Security::default();
        assert!(plain.rskafka_sasl().is_none());
        assert_eq!(plain.describe(), "plain TCP, no SASL");
    }

    #[test]
    fn a_missing_ca_file_names_the_variable() {
        let tls = KafkaTls::default().with_ca_file("/nonexistent/ca.pem");
        let e = tls.client_config().unwrap_err().to_string();
        assert!(e.contains("KAFKA_TLS_CA_FILE"), "{e}");
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
    }

    #[test]
    fn a_certificate_needs_its_key() {
        let tls = KafkaTls {
            cert_file: Some("/tmp/client.pem".into()),
            ..KafkaTls::default()
        };
        let e = tls.client_config().unwrap_err().to_string();
        assert!(e.contains("KAFKA_TLS_KEY_FILE"), "{e}");
    }
}
