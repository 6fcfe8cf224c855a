//! The security requirements of the Redis backend, each test against its own private
//! `redis-server` on a free loopback port: an ACL user with a password works and the password
//! never appears in errors, `Debug` output or logs; `rediss://` works with a private CA
//! (`REDIS_TLS_CA_FILE`), and plain `redis://` to a TLS port fails quickly and clearly.
//!
//! `redis-server` comes from `EVENTBUS_TEST_REDIS_SERVER` or `PATH` (it must be built with TLS,
//! as Debian's is), `openssl` from `PATH`. When they are missing the tests are skipped with a
//! `SKIPPED:` line on stderr, or fail when `EVENTBUS_REQUIRE_INTEGRATION=1`.

mod common;

use common::Settings;
// Not `mod harness;` alone: a file directly in `tests/` would be a test target of its own.
#[path = "security/harness.rs"]
mod harness;

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure};
use event_core::{EnvSettings as _, Error, Event, EventBus, EventType, redact_url};
use event_testkit::secrets::{captured_logs, everything_shown, hidden, round_trip};
use harness::{Certificates, RedisServer, Scratch, acl_args, tools};

/// The ACL user the servers accept (the `default` user is switched off).
const USER: &str = "app";
/// How long `RedisBus::connect` may take to give up: twice the 5 s connect timeout, plus slack
/// for a loaded machine.
const CONNECT_GIVES_UP_WITHIN: Duration = Duration::from_secs(15);

/// `redis://user:password@` authenticates as an ACL user; the password shows nowhere.
#[tokio::test]
async fn acl_user_and_password_work_and_the_password_never_shows() -> anyhow::Result<()> {
    let Some(tools) = tools(false)? else {
        return Ok(());
    };
    let logs = captured_logs();
    let password = secret("s3cret-pw");
    let wrong = secret("wr0ng-pw");
    let scratch = Scratch::new("acl")?;
    let server = RedisServer::start(&tools.redis_server, &scratch.0, |port| {
        let mut args = acl_args(&password);
        args.extend(["--port".into(), port.to_string()]);
        args
    })?;

    // The right password: connect, publish, consume.
    let url = format!("redis://{USER}:{password}@127.0.0.1:{}/0", server.port);
    let config = config_for(&url);
    let bus = config
        .connect()
        .await
        .map_err(|e| anyhow!("connecting as the ACL user failed: {e}"))?;
    round_trip(&bus).await?;
    let redacted = format!("{USER}:***@127.0.0.1:{}", server.port);
    for shown in [
        format!("{bus:?}"),
        format!("{config:?}"),
        format!("{:?}", config.redis.redacted()),
    ] {
        hidden(&shown, &[&password])?;
        ensure!(
            shown.contains(&redacted),
            "the redacted URL is missing from: {shown}"
        );
    }

    // A wrong password: refused, quickly, with an error that says so without either password.
    let bad_url = format!("redis://{USER}:{wrong}@127.0.0.1:{}/0", server.port);
    let started = Instant::now();
    let err = match config_for(&bad_url).connect().await {
        Ok(_) => bail!("connecting with a wrong password succeeded"),
        Err(e) => e,
    };
    ensure!(
        started.elapsed() < CONNECT_GIVES_UP_WITHIN,
        "a refused password took {:?} to report",
        started.elapsed()
    );
    hidden(&everything_shown(&err), &[&password, &wrong])?;
    let message = err.to_string();
    ensure!(
        message.contains(&format!(
            "cannot connect to Redis at {}",
            redact_url(&bad_url)
        )),
        "the error does not name the redacted URL: {message}"
    );
    ensure!(
        message.contains("WRONGPASS"),
        "the error does not say the credentials were refused: {message}"
    );
    ensure!(
        !err.is_transient(),
        "a refused password is not transient: retrying it cannot help ({message})"
    );

    // The working bus still publishes after the failed attempt, then shuts down.
    bus.publish(Event::builder(EventType::USER_REGISTERED, "security_test").build()?)
        .await?;
    bus.shutdown().await?;

    let logged = logs.text();
    ensure!(
        logged.contains("fred::"),
        "fred's log records were not captured, so the check below would prove nothing"
    );
    hidden(&logged, &[&password, &wrong])
}

/// `rediss://` with `REDIS_TLS_CA_FILE` works and verifies; plain `redis://` to TLS fails fast.
#[tokio::test]
async fn rediss_with_a_private_ca_works_and_plain_redis_to_tls_fails_fast() -> anyhow::Result<()> {
    let Some(tools) = tools(true)? else {
        return Ok(());
    };
    let Some(openssl) = tools.openssl.as_deref() else {
        bail!("tools(true) returned no openssl");
    };
    let password = secret("tls-pw");
    let scratch = Scratch::new("tls")?;
    let certificates = Certificates::create(openssl, &scratch.0, "redis")?;
    let server = RedisServer::start(&tools.redis_server, &scratch.0, |port| {
        let mut args = acl_args(&password);
        args.extend([
            "--port".into(),
            "0".into(),
            "--tls-port".into(),
            port.to_string(),
        ]);
        for (option, path) in [
            ("--tls-cert-file", &certificates.server_cert),
            ("--tls-key-file", &certificates.server_key),
            ("--tls-ca-cert-file", &certificates.ca),
        ] {
            args.extend([option.into(), path.display().to_string()]);
        }
        args.extend(["--tls-auth-clients".into(), "no".into()]);
        args
    })?;

    // By IP address and by host name: the certificate names both, and rustls checks the name.
    for host in ["127.0.0.1", "localhost"] {
        let mut tls = config_for(&format!(
            "rediss://{USER}:{password}@{host}:{}/0",
            server.port
        ));
        tls.redis.tls_ca_file = Some(certificates.ca.clone());
        let bus = tls
            .connect()
            .await
            .map_err(|e| anyhow!("connecting over TLS to {host} failed: {e}"))?;
        round_trip(&bus).await?;
        bus.shutdown().await?;
    }

    // Without the CA the server's certificate is not trusted: verification is on.
    let untrusted = format!("rediss://{USER}:{password}@127.0.0.1:{}/0", server.port);
    let err = connect_error(config_for(&untrusted)).await?;
    hidden(&everything_shown(&err), &[&password])?;
    ensure!(
        err.to_string().contains("REDIS_TLS_CA_FILE") && !err.is_transient(),
        "the error does not point to REDIS_TLS_CA_FILE, or says retrying could help: {err}"
    );

    // Plain TCP to the TLS port: an error naming the URL, within the connect timeout.
    let plain = format!("redis://127.0.0.1:{}/0", server.port);
    let started = Instant::now();
    let err = connect_error(config_for(&plain)).await?;
    ensure!(
        started.elapsed() < CONNECT_GIVES_UP_WITHIN,
        "plain redis:// to a TLS port took {:?} to fail",
        started.elapsed()
    );
    let message = err.to_string();
    ensure!(
        message.contains(&format!("cannot connect to Redis at {plain}")),
        "the error does not name the URL: {message}"
    );
    ensure!(
        message.contains("rediss://"),
        "the error does not suggest rediss://: {message}"
    );
    Ok(())
}

/// An unusable `REDIS_TLS_CA_FILE` is a configuration error naming the variable and file.
#[tokio::test]
async fn a_bad_ca_file_is_a_configuration_error() -> anyhow::Result<()> {
    let scratch = Scratch::new("ca-file")?;
    let not_pem = scratch.0.join("not-a-certificate.pem");
    std::fs::write(&not_pem, "this is no certificate\n")?;
    // Port 1 is never reached: the CA file is read before connecting.
    let url = "rediss://app:hunter2-pw@127.0.0.1:1/0";
    for (path, expected) in [
        (scratch.0.join("missing.pem"), "No such file"),
        (not_pem, "no CERTIFICATE block"),
    ] {
        let mut tls = config_for(url);
        tls.redis.tls_ca_file = Some(path.clone());
        let err = connect_error(tls).await?;
        let message = err.to_string();
        ensure!(
            matches!(err, Error::Config(_)),
            "not a configuration error: {err:?}"
        );
        ensure!(
            message.contains("REDIS_TLS_CA_FILE") && message.contains(&*path.to_string_lossy()),
            "the error does not name the variable and the file: {message}"
        );
        ensure!(
            message.contains(expected),
            "expected {expected:?} in: {message}"
        );
        hidden(&everything_shown(&err), &["hunter2-pw"])?;
    }

    // A CA file with a plain redis:// URL would suggest a protection that is not there.
    let mut plain = config_for("redis://127.0.0.1:1/0");
    plain.redis.tls_ca_file = Some(scratch.0.join("ca.pem"));
    let err = connect_error(plain).await?;
    ensure!(
        matches!(err, Error::Config(_)) && err.to_string().contains("REDIS_TLS_CA_FILE"),
        "a CA file without rediss:// was accepted or misreported: {err}"
    );
    Ok(())
}

/// A password no other text of the test run contains by chance.
fn secret(label: &str) -> String {
    format!("{label}-{:016x}", fastrand::u64(..))
}

/// A configuration for `url` with a key prefix of its own.
fn config_for(url: &str) -> Settings {
    let mut config = Settings::default();
    config.redis.url = url.into();
    config.redis.key_prefix = format!("security-{:08x}", fastrand::u32(..));
    config
}

/// The error of a connection attempt that must fail.
async fn connect_error(config: Settings) -> anyhow::Result<Error> {
    let url = redact_url(&config.redis.url);
    match config.connect().await {
        Ok(_) => bail!("connecting to {url} succeeded but must fail"),
        Err(e) => Ok(e),
    }
}
