//! [`RedisConfig`]: where the Redis server is and how the bus names its keys; the variables
//! `REDIS_*`, declared once in [`RedisConfig::VARIABLES`](EnvSettings::VARIABLES).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use event_core::config::table::{REDIS_SCHEMES, Reader, Rule, Secret, Variable, valid_name};
use event_core::{ConfigError, EnvSettings, redact_url};

const REDIS_URL: Variable = Variable {
    name: "REDIS_URL",
    default: Some("redis://localhost:6379/0"),
    default_note: "",
    rule: Rule::Text(
        "a URL starting with redis:// or rediss:// (TLS), such as redis://user:password@host:6379/0, or a Redis Cluster's redis-cluster://host:port,host:port,... (rediss-cluster:// for TLS)",
    ),
    secret: Secret::UrlPassword,
    original: true,
    doc: "the Redis server (`redis://`, `rediss://` for TLS, `redis+unix://`, `unix://`, optionally with `user:password@`), or a Redis Cluster: `redis-cluster://` (`rediss-cluster://` for TLS) with some of its nodes separated by commas, `redis-cluster://user:password@10.0.0.1:7000,10.0.0.2:7000`, or the client's own form `redis-cluster://10.0.0.1:7000?node=10.0.0.2:7000`; the bus discovers the other nodes (see [redis.md](redis.md#redis-cluster)). The password never appears in logs, `Debug` output or errors.",
};
const REDIS_KEY_PREFIX: Variable = Variable {
    name: "REDIS_KEY_PREFIX",
    default: Some("ai-opportunity"),
    default_note: "",
    rule: Rule::Text("1 to 100 characters of a-z, A-Z, 0-9, '.', '_' or '-'"),
    secret: Secret::No,
    original: false,
    doc: "every Redis key of the bus starts with `{prefix}:` (see [redis.md](redis.md)).",
};
const REDIS_TLS_CA_FILE: Variable = Variable {
    name: "REDIS_TLS_CA_FILE",
    default: None,
    default_note: "the system's roots (empty is unset)",
    rule: Rule::Text("a path to a PEM file; only with a `rediss://` `REDIS_URL`"),
    secret: Secret::No,
    original: false,
    doc: "the CA certificate(s) that `rediss://` trusts instead of the system's roots: for a private CA or a self-signed server, like `redis-cli --cacert`. The server's certificate must still name the URL's host (DNS name or IP address). Unset, `rediss://` trusts the system's roots (rustls-native-certs: the OS store, or `SSL_CERT_FILE`/`SSL_CERT_DIR`). The file is read when the bus connects; a missing or unreadable file, or one without a `CERTIFICATE` block, is a configuration error naming the variable.",
};

const REDIS_WAIT_REPLICAS: Variable = Variable {
    name: "REDIS_WAIT_REPLICAS",
    default: Some("0"),
    default_note: "the publish returns once the master has the event",
    rule: Rule::Whole { min: 0, max: 16 },
    secret: Secret::No,
    original: false,
    doc: "after each publish (one event, a batch, an event-sourcing append), `WAIT` until this many replicas of the master that took it have it too; fewer within `REDIS_WAIT_TIMEOUT_MS` fails the publish with a transient error (the event is written and may still be delivered: a retry publishes it twice). Redis replicates asynchronously: with 0, a master that dies right after answering can take the last events it acknowledged with it when its replica takes over. See [redis.md](redis.md#redis-cluster).",
};
const REDIS_WAIT_TIMEOUT_MS: Variable = Variable {
    name: "REDIS_WAIT_TIMEOUT_MS",
    default: Some("1000"),
    default_note: "",
    rule: Rule::Whole { min: 1, max: 5_000 },
    secret: Secret::No,
    original: false,
    doc: "how long a publish waits for `REDIS_WAIT_REPLICAS` replicas.",
};

/// Whether a URL asks for TLS.
pub(crate) fn is_tls(url: &str) -> bool {
    url.starts_with("rediss://") || url.starts_with("rediss-cluster://")
}

/// The Redis backend's own settings, beside the shared [`Config`](event_core::Config).
///
/// Read from the environment ([`EnvSettings::from_env`]), or built in code:
///
/// ```
/// use event_redis::RedisConfig;
///
/// let redis = RedisConfig::builder()
///     .url("redis://app:secret@cache:6379/0")
///     .key_prefix("shop")
///     .build()?;
/// assert_eq!(redis.key_prefix, "shop");
/// assert!(!format!("{redis:?}").contains("secret"));
/// assert!(RedisConfig::builder().url("http://cache").build().is_err());
/// # Ok::<(), event_core::ConfigError>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisConfig {
    /// `REDIS_URL` (default `redis://localhost:6379/0`): one server, or a Redis Cluster
    /// (`redis-cluster://host:port,host:port`). May hold a password: it is never printed by
    /// `Debug`.
    pub url: String,
    /// `REDIS_KEY_PREFIX` (default `ai-opportunity`): every Redis key starts with `{prefix}:`.
    pub key_prefix: String,
    /// `REDIS_TLS_CA_FILE` (default unset): a PEM file with the certificate of the CA that
    /// signed the Redis server's certificate. When set, `rediss://` trusts these certificates
    /// instead of the system's roots (a private CA, a self-signed server); when unset it
    /// trusts the system's roots. Allowed only with a `rediss://` URL; the file is read when
    /// the bus connects.
    pub tls_ca_file: Option<PathBuf>,
    /// `REDIS_WAIT_REPLICAS` (default 0): the replicas each publish waits for (`WAIT`).
    pub wait_replicas: u32,
    /// `REDIS_WAIT_TIMEOUT_MS` (default 1 s): how long a publish waits for them.
    pub wait_timeout: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        event_core::config::table::defaults()
    }
}

impl RedisConfig {
    /// A builder starting from the defaults; [`RedisConfigBuilder::build`] checks the result.
    pub fn builder() -> RedisConfigBuilder {
        RedisConfigBuilder {
            config: Self::default(),
        }
    }

    /// Whether `REDIS_URL` names a Redis Cluster (`redis-cluster://`, `rediss-cluster://`).
    pub fn is_cluster(&self) -> bool {
        event_core::config::table::REDIS_CLUSTER_SCHEMES
            .iter()
            .any(|scheme| self.url.starts_with(scheme))
    }
}

impl EnvSettings for RedisConfig {
    const VARIABLES: &'static [Variable] = &[
        REDIS_URL,
        REDIS_KEY_PREFIX,
        REDIS_TLS_CA_FILE,
        REDIS_WAIT_REPLICAS,
        REDIS_WAIT_TIMEOUT_MS,
    ];

    fn read(r: &mut Reader<'_>) -> Self {
        let url = r.text(&REDIS_URL);
        if !REDIS_SCHEMES.iter().any(|scheme| url.starts_with(scheme)) {
            r.invalid(&REDIS_URL, &url);
        }
        let key_prefix = r.text(&REDIS_KEY_PREFIX);
        if !valid_name(&key_prefix, 100) {
            r.invalid(&REDIS_KEY_PREFIX, &key_prefix);
        }
        let tls_ca_file = r.path(&REDIS_TLS_CA_FILE);
        if let Some(path) = &tls_ca_file
            && !is_tls(&url)
        {
            r.problem(
                &REDIS_TLS_CA_FILE,
                &path.display().to_string(),
                "unset, since REDIS_URL does not start with rediss:// or rediss-cluster:// (the CA file is for TLS connections only)",
            );
        }
        RedisConfig {
            url,
            key_prefix,
            tls_ca_file,
            wait_replicas: r.whole(&REDIS_WAIT_REPLICAS),
            wait_timeout: r.millis(&REDIS_WAIT_TIMEOUT_MS),
        }
    }

    fn write(&self, name: &str) -> Option<String> {
        Some(match name {
            "REDIS_URL" => self.url.clone(),
            "REDIS_KEY_PREFIX" => self.key_prefix.clone(),
            // Unset is written as empty, which the parser reads as unset.
            "REDIS_TLS_CA_FILE" => self
                .tls_ca_file
                .as_ref()
                .map(|path| path.display().to_string())
                .unwrap_or_default(),
            "REDIS_WAIT_REPLICAS" => self.wait_replicas.to_string(),
            "REDIS_WAIT_TIMEOUT_MS" => self.wait_timeout.as_millis().to_string(),
            _ => return None,
        })
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Written by hand so that the URL's password never reaches a log.
        f.debug_struct("RedisConfig")
            .field("url", &redact_url(&self.url))
            .field("key_prefix", &self.key_prefix)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("wait_replicas", &self.wait_replicas)
            .field("wait_timeout", &self.wait_timeout)
            .finish()
    }
}

/// Builds a [`RedisConfig`] in code; [`build`](Self::build) applies the environment's rules.
#[derive(Clone, Debug)]
pub struct RedisConfigBuilder {
    config: RedisConfig,
}

impl RedisConfigBuilder {
    /// `REDIS_URL`.
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.config.url = url.into();
        self
    }

    /// `REDIS_KEY_PREFIX`.
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.config.key_prefix = prefix.into();
        self
    }

    /// `REDIS_TLS_CA_FILE`.
    pub fn tls_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.config.tls_ca_file = Some(path.into());
        self
    }

    /// `REDIS_WAIT_REPLICAS` and `REDIS_WAIT_TIMEOUT_MS`: each publish waits until
    /// `replicas` replicas have its events, for at most `timeout`.
    pub fn wait_replicas(mut self, replicas: u32, timeout: Duration) -> Self {
        self.config.wait_replicas = replicas;
        self.config.wait_timeout = timeout;
        self
    }

    /// The settings, checked against the same rules as the environment.
    ///
    /// # Errors
    /// A [`ConfigError`] listing every bad value.
    pub fn build(self) -> Result<RedisConfig, ConfigError> {
        self.config.validate()?;
        Ok(self.config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(vars: &[(&str, &str)]) -> Result<RedisConfig, ConfigError> {
        RedisConfig::from_vars(vars.iter().copied())
    }

    #[test]
    fn defaults_and_every_variable() {
        let d = parse(&[]).unwrap();
        assert_eq!(d.url, "redis://localhost:6379/0");
        assert_eq!(d.key_prefix, "ai-opportunity");
        let c = parse(&[
            ("REDIS_URL", "rediss://app:pw@cache:6380/1"),
            ("REDIS_KEY_PREFIX", "shop"),
            ("REDIS_TLS_CA_FILE", " /etc/redis/ca.pem "),
        ])
        .unwrap();
        assert_eq!(
            c.tls_ca_file.as_deref(),
            Some(std::path::Path::new("/etc/redis/ca.pem"))
        );
        c.validate().unwrap();
    }

    #[test]
    fn secrets_never_show() {
        let err = parse(&[("REDIS_URL", "http://admin:hunter2@cache")]).unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert_eq!(err.problems()[0].variable, "REDIS_URL");
        let c = parse(&[("REDIS_URL", "redis://admin:hunter2@cache:6379/0")]).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
        assert_eq!(c.redacted()["REDIS_URL"], "redis://admin:***@cache:6379/0");
    }

    #[test]
    fn cluster_urls_are_accepted() {
        for url in [
            "redis-cluster://127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002",
            "redis-cluster://app:pw@h1:7000?node=h2:7000&node=h3:7000",
            "rediss-cluster://h1:7000,h2:7000",
        ] {
            let c = parse(&[("REDIS_URL", url)]).unwrap();
            assert!(c.is_cluster(), "{url}");
        }
        assert!(!parse(&[]).unwrap().is_cluster());
        let tls = parse(&[
            ("REDIS_URL", "rediss-cluster://h1:7000,h2:7000"),
            ("REDIS_TLS_CA_FILE", "/ca.pem"),
        ]);
        assert!(tls.is_ok(), "{tls:?}");
    }

    #[test]
    fn tls_ca_file_needs_rediss() {
        let err = parse(&[("REDIS_TLS_CA_FILE", "/etc/redis/ca.pem")]).unwrap_err();
        assert_eq!(err.problems()[0].variable, "REDIS_TLS_CA_FILE", "{err}");
        assert!(err.to_string().contains("rediss://"), "{err}");
        let blank = parse(&[("REDIS_TLS_CA_FILE", "  ")]).unwrap();
        assert_eq!(blank.tls_ca_file, None);
        assert_eq!(blank.redacted()["REDIS_TLS_CA_FILE"], "");
    }

    #[test]
    fn the_builder_checks_what_it_builds() {
        let err = RedisConfig::builder()
            .key_prefix("has space")
            .tls_ca_file("/ca.pem")
            .build()
            .unwrap_err();
        assert_eq!(err.problems().len(), 2, "{err}");
    }
}
