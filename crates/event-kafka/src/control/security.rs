//! How the client proves who it is and protects the connection: SASL credentials and TLS
//! settings, with a `Debug` that never prints the password, and the rustls configuration built
//! from them (shareable with `rskafka`, which uses the same rustls).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use event_core::{Config, ConfigError, Error, KafkaSaslMechanism};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

/// SASL and TLS settings of the connections to the brokers. The default is neither: plain TCP,
/// no authentication.
#[derive(Clone, Debug, Default)]
pub(crate) struct Security {
    /// SASL authentication (`KAFKA_SASL_*`); `None`: none.
    pub(crate) sasl: Option<Sasl>,
    /// TLS (`KAFKA_TLS_*`); `None`: plain TCP.
    pub(crate) tls: Option<Tls>,
}

impl Security {
    /// The settings `KAFKA_SASL_*` and `KAFKA_TLS_*` of `config` describe. The TLS files are
    /// read later, by [`Tls::client_config`].
    ///
    /// # Errors
    /// A configuration error for a mechanism without its credentials (a `Config` built in
    /// code and not validated) or one this build does not implement.
    pub(crate) fn from_config(config: &Config) -> Result<Self, Error> {
        let sasl = match config.kafka_sasl_mechanism {
            None => None,
            Some(mechanism) => {
                let mechanism = match mechanism {
                    KafkaSaslMechanism::Plain => SaslMechanism::Plain,
                    KafkaSaslMechanism::ScramSha256 => SaslMechanism::ScramSha256,
                    KafkaSaslMechanism::ScramSha512 => SaslMechanism::ScramSha512,
                    other => {
                        return Err(Error::Config(ConfigError::single(
                            "KAFKA_SASL_MECHANISM",
                            other.as_str(),
                            "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512: the mechanisms the Kafka backend implements",
                        )));
                    }
                };
                let (Some(username), Some(password)) =
                    (&config.kafka_sasl_username, &config.kafka_sasl_password)
                else {
                    let missing = if config.kafka_sasl_username.is_none() {
                        "KAFKA_SASL_USERNAME"
                    } else {
                        "KAFKA_SASL_PASSWORD"
                    };
                    return Err(Error::Config(ConfigError::single(
                        missing,
                        "",
                        format!(
                            "set, since KAFKA_SASL_MECHANISM={mechanism} needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD together"
                        ),
                    )));
                };
                Some(Sasl {
                    mechanism,
                    username: username.clone(),
                    password: password.clone(),
                })
            }
        };
        let any_file = config.kafka_tls_ca_file.is_some()
            || config.kafka_tls_cert_file.is_some()
            || config.kafka_tls_key_file.is_some();
        let tls = (config.kafka_tls_enabled || any_file).then(|| Tls {
            ca_file: config.kafka_tls_ca_file.clone(),
            cert_file: config.kafka_tls_cert_file.clone(),
            key_file: config.kafka_tls_key_file.clone(),
        });
        Ok(Security { sasl, tls })
    }

    /// The SASL settings for rskafka's data path, which implements the same three mechanisms.
    pub(crate) fn rskafka_sasl(&self) -> Option<rskafka::client::SaslConfig> {
        let sasl = self.sasl.as_ref()?;
        let credentials =
            rskafka::client::Credentials::new(sasl.username.clone(), sasl.password.clone());
        Some(match sasl.mechanism {
            SaslMechanism::Plain => rskafka::client::SaslConfig::Plain(credentials),
            SaslMechanism::ScramSha256 => rskafka::client::SaslConfig::ScramSha256(credentials),
            SaslMechanism::ScramSha512 => rskafka::client::SaslConfig::ScramSha512(credentials),
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

/// A SASL mechanism the client implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum SaslMechanism {
    /// `PLAIN`: the password travels as is, so use it with TLS only.
    Plain,
    /// `SCRAM-SHA-256` (RFC 5802, RFC 7677).
    ScramSha256,
    /// `SCRAM-SHA-512`.
    ScramSha512,
}

impl SaslMechanism {
    /// The mechanism's name in SaslHandshake and in Kafka's settings.
    pub(crate) fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }

    /// Parses a mechanism name, in any case (`KAFKA_SASL_MECHANISM`).
    pub(crate) fn parse(name: &str) -> Option<Self> {
        [
            SaslMechanism::Plain,
            SaslMechanism::ScramSha256,
            SaslMechanism::ScramSha512,
        ]
        .into_iter()
        .find(|m| m.name().eq_ignore_ascii_case(name.trim()))
    }
}

impl fmt::Display for SaslMechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// SASL credentials. `Debug` is written by hand: the password never reaches a log.
#[derive(Clone)]
pub(crate) struct Sasl {
    /// The mechanism (`KAFKA_SASL_MECHANISM`).
    pub(crate) mechanism: SaslMechanism,
    /// The user name (`KAFKA_SASL_USERNAME`).
    pub(crate) username: String,
    /// The password (`KAFKA_SASL_PASSWORD`).
    pub(crate) password: String,
}

impl fmt::Debug for Sasl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sasl")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// TLS settings. The server's certificate is always verified, and must name the host the
/// client connects to (as advertised by the broker).
#[derive(Clone, Debug, Default)]
pub(crate) struct Tls {
    /// A PEM file with the CA certificates to trust (`KAFKA_TLS_CA_FILE`); `None`: the
    /// system's roots.
    pub(crate) ca_file: Option<PathBuf>,
    /// A PEM file with the client's certificate chain, for brokers that require client
    /// certificates (`KAFKA_TLS_CERT_FILE`); needs `key_file`.
    pub(crate) cert_file: Option<PathBuf>,
    /// A PEM file with the client certificate's private key (`KAFKA_TLS_KEY_FILE`).
    pub(crate) key_file: Option<PathBuf>,
}

impl Tls {
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
    fn debug_hides_the_password() {
        let security = Security {
            sasl: Some(Sasl {
                mechanism: SaslMechanism::ScramSha512,
                username: "app".into(),
                password: "hunter2-secret".into(),
            }),
            tls: Some(Tls::default()),
        };
        let text = format!("{security:?} {security:#?}");
        assert!(!text.contains("hunter2-secret"), "{text}");
        assert!(
            text.contains("app") && text.contains("ScramSha512"),
            "{text}"
        );
    }

    #[test]
    fn security_comes_from_the_config() {
        let config = Config::from_vars([
            ("KAFKA_SASL_MECHANISM", "scram-sha-256"),
            ("KAFKA_SASL_USERNAME", "app"),
            ("KAFKA_SASL_PASSWORD", "hunter2-secret"),
            ("KAFKA_TLS_CA_FILE", "/etc/kafka/ca.pem"),
        ])
        .unwrap();
        let security = Security::from_config(&config).unwrap();
        let sasl = security.sasl.as_ref().unwrap();
        assert_eq!(sasl.mechanism, SaslMechanism::ScramSha256);
        assert_eq!(sasl.password, "hunter2-secret");
        assert_eq!(
            security.tls.as_ref().unwrap().ca_file.as_deref(),
            Some(Path::new("/etc/kafka/ca.pem"))
        );
        assert!(matches!(
            security.rskafka_sasl(),
            Some(rskafka::client::SaslConfig::ScramSha256(_))
        ));
        let described = security.describe();
        assert_eq!(described, r#"TLS, SASL SCRAM-SHA-256 as user "app""#);

        let plain = Security::from_config(&Config::default()).unwrap();
        assert!(plain.sasl.is_none() && plain.tls.is_none());
        assert!(plain.rskafka_sasl().is_none());

        let mut unchecked = Config::default();
        unchecked.kafka_sasl_mechanism = Some(KafkaSaslMechanism::Plain);
        unchecked.kafka_sasl_username = Some("app".into());
        let e = Security::from_config(&unchecked).unwrap_err().to_string();
        assert!(e.contains("KAFKA_SASL_PASSWORD"), "{e}");
    }

    #[test]
    fn mechanisms_parse_by_kafka_name() {
        assert_eq!(
            SaslMechanism::parse("scram-sha-256"),
            Some(SaslMechanism::ScramSha256)
        );
        assert_eq!(SaslMechanism::parse("PLAIN"), Some(SaslMechanism::Plain));
        assert_eq!(SaslMechanism::parse("GSSAPI"), None);
    }

    #[test]
    fn a_missing_ca_file_names_the_variable() {
        let tls = Tls {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..Tls::default()
        };
        let e = tls.client_config().unwrap_err().to_string();
        assert!(e.contains("KAFKA_TLS_CA_FILE"), "{e}");
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
    }

    #[test]
    fn a_certificate_needs_its_key() {
        let tls = Tls {
            ca_file: None,
            cert_file: Some("/tmp/client.pem".into()),
            key_file: None,
        };
        let e = tls.client_config().unwrap_err().to_string();
        assert!(e.contains("KAFKA_TLS_KEY_FILE"), "{e}");
    }
}
