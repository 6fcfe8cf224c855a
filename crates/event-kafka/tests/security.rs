//! The security requirements of the Kafka backend, against a private broker the test starts
//! (not the shared test broker) from the jars of `EVENTBUS_TEST_KAFKA_CLASSPATH`: SASL `PLAIN`,
//! `SCRAM-SHA-256` and `SCRAM-SHA-512` publish and deliver on both the data path and the
//! control plane; a wrong password fails at once with an error that names the mechanism and
//! the user; the password never appears in errors, `Debug` output or logs.
//!
//! TLS: a `SASL_SSL` listener with a certificate from a throwaway CA (made with `openssl`
//! at test time) works with `KAFKA_TLS_CA_FILE`, for the bus and for `KafkaAdmin` (doctor's
//! checks), and is refused without it; a bad `KAFKA_TLS_CA_FILE` fails before any connection.
//! Client certificates (`KAFKA_TLS_CERT_FILE`, `KAFKA_TLS_KEY_FILE`) are not tested against a
//! broker.

mod support;

use support::Settings;
// Not `mod harness;` alone: a file directly in `tests/` would be a test target of its own.
#[path = "security/harness.rs"]
mod harness;

use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail, ensure};
use event_core::{EnvSettings as _, Error, EventBus};
use event_kafka::{KafkaAdmin, KafkaBus};
use event_kafka::{KafkaConfig, KafkaSasl, KafkaSaslMechanism, KafkaTls};
use event_testkit::secrets::{captured_logs, everything_shown, hidden, round_trip};
use harness::{BROKER_START, SaslBroker, USER, openssl};

/// The whole test, broker start included.
const TEST_LIMIT: Duration = Duration::from_secs(85);
/// A refused password is reported by the first SaslAuthenticate, well within this.
const REFUSAL_WITHIN: Duration = Duration::from_secs(10);

/// Every mechanism authenticates and delivers; a wrong password is refused clearly; the
/// password shows nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_mechanisms_work_and_the_password_never_shows() -> anyhow::Result<()> {
    let Some(classpath) = event_testkit::test_server("EVENTBUS_TEST_KAFKA_CLASSPATH", "kafka")?
    else {
        return Ok(());
    };
    let logs = captured_logs();
    let password = secret("s3cret-pw");
    let wrong = secret("wr0ng-pw");
    // Dropped on every path out of this function, also when the time limit cuts it short.
    let mut broker = SaslBroker::start(&classpath, &password, None)?;
    let outcome = tokio::time::timeout(TEST_LIMIT, async {
        let first = wait_for_broker(&mut broker, &password, None).await?;
        first.shutdown().await?;

        for mechanism in [
            KafkaSaslMechanism::Plain,
            KafkaSaslMechanism::ScramSha256,
            KafkaSaslMechanism::ScramSha512,
        ] {
            let config = config_for(&broker.address(), mechanism, &password);
            let bus = config
                .connect()
                .await
                .map_err(|e| anyhow!("connecting with {mechanism} failed: {e}"))?;
            round_trip(&bus)
                .await
                .with_context(|| format!("round trip with {mechanism}"))?;
            for shown in [
                format!("{bus:?}"),
                format!("{config:?}"),
                format!("{config:#?}"),
                format!("{:?}", config.kafka.redacted()),
                format!("{:?}", bus.config()),
            ] {
                hidden(&shown, &[&password])?;
            }
            ensure!(
                config.kafka.redacted()["KAFKA_SASL_PASSWORD"] == "***",
                "the redacted password is not ***"
            );
            bus.shutdown().await?;

            // The same user with a wrong password: refused at once, clearly, permanently.
            let started = Instant::now();
            let err = connect_error(config_for(&broker.address(), mechanism, &wrong)).await?;
            ensure!(
                started.elapsed() < REFUSAL_WITHIN,
                "a refused {mechanism} password took {:?} to report",
                started.elapsed()
            );
            hidden(&everything_shown(&err), &[&password, &wrong])?;
            let message = err.to_string();
            eprintln!("a wrong {mechanism} password: {message}");
            ensure!(
                message.contains(&format!(
                    "SASL {mechanism} authentication of user \"{USER}\""
                )),
                "the error does not name the mechanism and the user: {message}"
            );
            ensure!(
                message.contains("KAFKA_SASL_PASSWORD"),
                "the error does not say what to check: {message}"
            );
            ensure!(
                !err.is_transient(),
                "a refused password is not transient: retrying cannot help ({message})"
            );
        }
        anyhow::Ok(())
    })
    .await;
    match outcome {
        Ok(result) => result?,
        Err(_) => bail!("the test did not finish within {TEST_LIMIT:?}"),
    }

    let logged = logs.text();
    ensure!(
        logged.contains("rskafka"),
        "rskafka's log records were not captured, so the check below would prove nothing"
    );
    hidden(&logged, &[&password, &wrong])
}

/// `SASL_SSL`: TLS with `KAFKA_TLS_CA_FILE` and SCRAM on both paths; without the CA the
/// broker's certificate is not trusted, and the failure is permanent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_private_ca_works_and_an_untrusted_broker_is_refused() -> anyhow::Result<()> {
    let Some(classpath) = event_testkit::test_server("EVENTBUS_TEST_KAFKA_CLASSPATH", "kafka")?
    else {
        return Ok(());
    };
    let Some(openssl) = openssl() else {
        ensure!(
            !event_testkit::integration_required(),
            "openssl is not on the PATH, and EVENTBUS_REQUIRE_INTEGRATION=1 requires the Kafka TLS test"
        );
        eprintln!("SKIPPED: openssl not found (Debian/Ubuntu: `apt-get install openssl`)");
        return Ok(());
    };
    let logs = captured_logs();
    let password = secret("tls-pw");
    let mut broker = SaslBroker::start(&classpath, &password, Some(&openssl))?;
    let ca = broker
        .ca_file
        .clone()
        .context("a TLS broker without a CA file")?;
    let outcome = tokio::time::timeout(TEST_LIMIT, async {
        let first = wait_for_broker(&mut broker, &password, Some(&ca)).await?;
        first.shutdown().await?;

        let mut config = config_for(
            &broker.address(),
            KafkaSaslMechanism::ScramSha256,
            &password,
        );
        config.kafka.tls = Some(KafkaTls::default().with_ca_file(ca.clone()));
        let bus = config.connect()
            .await
            .map_err(|e| anyhow!("connecting over TLS failed: {e}"))?;
        round_trip(&bus).await.context("round trip over TLS")?;
        bus.shutdown().await?;
        admin_over_tls(&config.kafka).await.context("the admin API over TLS")?;

        // The system's roots do not hold the test CA: verification is on.
        config.kafka.tls = Some(KafkaTls::default());
        let started = Instant::now();
        let err = connect_error(config).await?;
        let message = err.to_string();
        eprintln!("an untrusted broker certificate: {message}");
        ensure!(
            started.elapsed() < REFUSAL_WITHIN,
            "an untrusted certificate took {:?} to report",
            started.elapsed()
        );
        ensure!(
            !err.is_transient() && message.contains("KAFKA_TLS_CA_FILE"),
            "an untrusted certificate is transient, or the error does not point to KAFKA_TLS_CA_FILE: {message}"
        );
        hidden(&everything_shown(&err), &[&password])?;
        anyhow::Ok(())
    })
    .await;
    match outcome {
        Ok(result) => result?,
        Err(_) => bail!("the test did not finish within {TEST_LIMIT:?}"),
    }
    hidden(&logs.text(), &[&password])
}

/// `KafkaAdmin` on a `SASL_SSL` listener, as `eventbus doctor` uses it: the cluster's facts,
/// no API missing, the round trip's topic and its configs, a simple group's offsets.
async fn admin_over_tls(kafka: &KafkaConfig) -> anyhow::Result<()> {
    let admin = KafkaAdmin::connect(kafka).await?;
    let cluster = admin.cluster().await?;
    ensure!(cluster.brokers == 1, "{cluster:?}");
    let missing = admin.missing_apis().await?;
    ensure!(missing.is_empty(), "{missing:?}");
    let topic = format!("{}.user.registered", kafka.topic_prefix);
    let partitions = cluster
        .topic(&topic)
        .map(|t| t.partitions.len())
        .with_context(|| format!("{topic} is not in {cluster:?}"))?;
    ensure!(partitions == kafka.partitions as usize, "{cluster:?}");
    let configs = admin.topic_configs(std::slice::from_ref(&topic)).await?;
    ensure!(
        configs[&topic].get("retention.ms") == Some(&kafka.retention.as_millis().to_string()),
        "{configs:?}"
    );
    admin
        .commit_offsets("admin-over-tls", &[(topic.clone(), 0, 1)])
        .await?;
    let committed = admin
        .committed_offsets("admin-over-tls", &[(topic.clone(), 0)])
        .await?;
    ensure!(committed.get(&(topic, 0)) == Some(&1), "{committed:?}");
    Ok(())
}

/// Credentials without a mechanism, and an unreadable `KAFKA_TLS_CA_FILE`, are configuration
/// errors that name the variable and never the password; nothing is connected.
#[tokio::test]
async fn bad_security_settings_are_configuration_errors() -> anyhow::Result<()> {
    let err = KafkaConfig::from_vars([
        ("KAFKA_SASL_USERNAME", USER),
        ("KAFKA_SASL_PASSWORD", "hunter2-pw"),
    ])
    .map(|_| ())
    .expect_err("credentials without a mechanism were accepted");
    ensure!(err.to_string().contains("KAFKA_SASL_MECHANISM"), "{err}");
    hidden(&format!("{err} {err:?}"), &["hunter2-pw"])?;

    // Port 1 is never reached: the CA file is read before connecting.
    let mut config = config_for("127.0.0.1:1", KafkaSaslMechanism::Plain, "hunter2-pw");
    let missing = std::env::temp_dir().join(format!(
        "eventbus-missing-ca-{:016x}.pem",
        fastrand::u64(..)
    ));
    config.kafka.tls = Some(KafkaTls::default().with_ca_file(missing.clone()));
    let err = connect_error(config).await?;
    let message = err.to_string();
    ensure!(
        matches!(err, Error::Config(_)),
        "not a configuration error: {err:?}"
    );
    ensure!(
        message.contains("KAFKA_TLS_CA_FILE") && message.contains(&*missing.to_string_lossy()),
        "the error does not name the variable and the file: {message}"
    );
    hidden(&everything_shown(&err), &["hunter2-pw"])
}

/// Connects with `PLAIN` until the broker answers; fails when it exits or takes too long.
async fn wait_for_broker(
    broker: &mut SaslBroker,
    password: &str,
    ca_file: Option<&std::path::Path>,
) -> anyhow::Result<KafkaBus> {
    let deadline = Instant::now() + BROKER_START;
    let mut config = config_for(&broker.address(), KafkaSaslMechanism::Plain, password);
    config.kafka.tls = ca_file.map(|ca| KafkaTls::default().with_ca_file(ca));
    loop {
        broker.check_running()?;
        match config.connect().await {
            Ok(bus) => return Ok(bus),
            Err(e) if Instant::now() < deadline && e.is_transient() => {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => {
                return Err(anyhow!(
                    "the private SASL broker did not accept PLAIN within {BROKER_START:?}: {e}"
                ));
            }
        }
    }
}

/// A password no other text of the test run contains by chance.
fn secret(label: &str) -> String {
    format!("{label}-{:016x}", fastrand::u64(..))
}

/// A configuration for `servers` with SASL and a topic prefix of its own.
fn config_for(servers: &str, mechanism: KafkaSaslMechanism, password: &str) -> Settings {
    let mut config = Settings::default();
    config.kafka.bootstrap_servers = vec![servers.to_string()];
    config.kafka.topic_prefix = format!("security-{:08x}", fastrand::u32(..));
    config.kafka.partitions = 1;
    config.kafka.sasl = Some(KafkaSasl::new(mechanism, USER, password));
    config
}

/// The error of a connection attempt that must fail.
async fn connect_error(config: Settings) -> anyhow::Result<Error> {
    let servers = config.kafka.bootstrap_servers.join(",");
    match config.connect().await {
        Ok(_) => bail!("connecting to {servers} succeeded but must fail"),
        Err(e) => Ok(e),
    }
}
