//! The Kafka variables: defaults, every variable read, the rules between them, and secrets.

use super::*;
use event_core::ConfigError;
use proptest::prelude::*;

fn parse(vars: &[(&str, &str)]) -> Result<KafkaConfig, ConfigError> {
    KafkaConfig::from_vars(vars.iter().copied())
}

#[test]
fn defaults_are_the_originals() {
    let c = parse(&[]).unwrap();
    assert_eq!(c, KafkaConfig::default());
    assert_eq!(c.retention, Duration::from_millis(604_800_000));
    assert_eq!(c.partitions, 3);
    assert_eq!(c.compression, Compression::Lz4);
    assert!(c.sasl.is_none() && c.tls.is_none());
    c.validate().unwrap();
}

#[test]
fn every_variable_is_read() {
    let c = parse(&[
        ("KAFKA_BOOTSTRAP_SERVERS", "k1:9092, k2:9093"),
        ("KAFKA_TOPIC_PREFIX", "shop"),
        ("KAFKA_RETENTION_MS", "3600000"),
        ("KAFKA_PARTITIONS", "12"),
        ("KAFKA_REPLICATION_FACTOR", "3"),
        ("KAFKA_MIN_INSYNC_REPLICAS", "2"),
        ("KAFKA_COMPRESSION", "zstd"),
        ("KAFKA_SASL_MECHANISM", "scram-sha-512"),
        ("KAFKA_SASL_USERNAME", "app"),
        ("KAFKA_SASL_PASSWORD", " pass word "),
        ("KAFKA_TLS_ENABLED", "true"),
        ("KAFKA_TLS_CA_FILE", "/etc/kafka/ca.pem"),
        ("KAFKA_TLS_CERT_FILE", "/etc/kafka/client.pem"),
        ("KAFKA_TLS_KEY_FILE", "/etc/kafka/client.key"),
        ("KAFKA_SESSION_TIMEOUT_MS", "10000"),
        ("KAFKA_HEARTBEAT_INTERVAL_MS", "1000"),
        ("KAFKA_REBALANCE_TIMEOUT_MS", "20000"),
        ("KAFKA_METADATA_MAX_AGE_MS", "30000"),
        ("KAFKA_GROUP_INSTANCE_ID", "worker-1"),
        ("KAFKA_ASSIGNMENT_STRATEGY", "RoundRobin"),
    ])
    .unwrap();
    assert_eq!(c.bootstrap_servers, ["k1:9092", "k2:9093"]);
    assert_eq!((c.replication_factor, c.min_insync_replicas), (3, Some(2)));
    assert_eq!(c.session_timeout, Duration::from_secs(10));
    assert_eq!(c.heartbeat_interval, Duration::from_secs(1));
    assert_eq!(c.rebalance_timeout, Duration::from_secs(20));
    assert_eq!(c.metadata_max_age, Duration::from_secs(30));
    assert_eq!(c.group_instance_id.as_deref(), Some("worker-1"));
    assert_eq!(c.assignment_strategy, KafkaAssignmentStrategy::RoundRobin);
    assert_eq!(c.compression, Compression::Zstd);
    assert_eq!(
        c.sasl,
        Some(KafkaSasl::new(
            KafkaSaslMechanism::ScramSha512,
            "app",
            " pass word "
        ))
    );
    assert_eq!(
        c.tls,
        Some(
            KafkaTls::default()
                .with_ca_file("/etc/kafka/ca.pem")
                .with_client_cert("/etc/kafka/client.pem", "/etc/kafka/client.key")
        )
    );
    c.validate().unwrap();
    // The redacted view round-trips through the parser, but for the password.
    let again = KafkaConfig::from_vars(c.redacted().into_iter().map(|(k, v)| match k {
        "KAFKA_SASL_PASSWORD" => (k, " pass word ".to_string()),
        _ => (k, v),
    }))
    .unwrap();
    assert_eq!(again, c);
}

#[test]
fn errors_name_variable_value_and_what_is_allowed() {
    let err = parse(&[("KAFKA_PARTITIONS", "0"), ("KAFKA_COMPRESSION", "brotli")]).unwrap_err();
    let text = err.to_string();
    assert_eq!(err.problems().len(), 2, "{text}");
    assert!(
        text.contains(
            r#"KAFKA_PARTITIONS="0" is not valid: expected a whole number from 1 to 10000"#
        ),
        "{text}"
    );
    assert!(
        text.contains("expected one of none, gzip, snappy, lz4, zstd"),
        "{text}"
    );
}

#[test]
fn compression_off_means_none_and_forbids_any_other() {
    let c = parse(&[("ENABLE_EVENT_COMPRESSION", "false")]).unwrap();
    assert_eq!(c.compression, Compression::None);
    assert!(
        parse(&[
            ("ENABLE_EVENT_COMPRESSION", "false"),
            ("KAFKA_COMPRESSION", "gzip")
        ])
        .is_err()
    );
}

#[test]
fn sasl_needs_mechanism_user_and_password_together() {
    let c = parse(&[
        ("KAFKA_SASL_MECHANISM", "PLAIN"),
        ("KAFKA_SASL_USERNAME", "app"),
        ("KAFKA_SASL_PASSWORD", "hunter2"),
    ])
    .unwrap();
    // The password survives validation, which reads every variable back.
    c.validate().unwrap();
    assert_eq!(c.sasl.as_ref().unwrap().password, "hunter2");

    let err = parse(&[("KAFKA_SASL_MECHANISM", "SCRAM-SHA-256")]).unwrap_err();
    let names: Vec<_> = err.problems().iter().map(|p| p.variable).collect();
    assert_eq!(
        names,
        ["KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD"],
        "{err}"
    );
    assert!(err.to_string().contains("SCRAM-SHA-256"), "{err}");

    let err = parse(&[("KAFKA_SASL_MECHANISM", "GSSAPI")]).unwrap_err();
    assert_eq!(err.problems().len(), 1, "{err}");
    assert!(err.to_string().contains("SCRAM-SHA-512"), "{err}");

    let err = parse(&[
        ("KAFKA_SASL_USERNAME", "app"),
        ("KAFKA_SASL_PASSWORD", "hunter2"),
    ])
    .unwrap_err();
    assert_eq!(err.problems().len(), 2, "{err}");
    assert!(
        err.to_string().contains("KAFKA_SASL_MECHANISM is unset"),
        "{err}"
    );

    let blank = parse(&[("KAFKA_SASL_MECHANISM", " "), ("KAFKA_SASL_PASSWORD", "")]).unwrap();
    assert_eq!(blank, KafkaConfig::default());

    // Credentials built in code with a part missing fail validation, naming it.
    let unchecked = KafkaConfig {
        sasl: Some(KafkaSasl::new(KafkaSaslMechanism::Plain, "app", "")),
        ..KafkaConfig::default()
    };
    let err = unchecked.validate().unwrap_err();
    assert_eq!(err.problems()[0].variable, "KAFKA_SASL_PASSWORD", "{err}");
}

#[test]
fn the_password_never_shows() {
    let c = parse(&[
        ("KAFKA_SASL_MECHANISM", "SCRAM-SHA-256"),
        ("KAFKA_SASL_USERNAME", "app"),
        ("KAFKA_SASL_PASSWORD", "hunter2"),
    ])
    .unwrap();
    let debug = format!("{c:?} {c:#?}");
    assert!(!debug.contains("hunter2"), "{debug}");
    assert!(debug.contains("***") && debug.contains("app"), "{debug}");
    assert_eq!(c.redacted()["KAFKA_SASL_PASSWORD"], "***");
    assert_eq!(KafkaConfig::default().redacted()["KAFKA_SASL_PASSWORD"], "");

    let err = parse(&[
        ("KAFKA_SASL_PASSWORD", "hunter2"),
        ("KAFKA_PARTITIONS", "0"),
    ])
    .unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains(r#"KAFKA_SASL_PASSWORD="***""#), "{text}");
}

#[test]
fn tls_files_imply_tls_and_a_certificate_needs_its_key() {
    let c = parse(&[("KAFKA_TLS_ENABLED", "yes")]).unwrap();
    assert_eq!(c.tls, Some(KafkaTls::default()));
    let c = parse(&[("KAFKA_TLS_CA_FILE", " /etc/kafka/ca.pem ")]).unwrap();
    assert_eq!(
        c.tls,
        Some(KafkaTls::default().with_ca_file("/etc/kafka/ca.pem"))
    );
    c.validate().unwrap();

    let err = parse(&[("KAFKA_TLS_CERT_FILE", "/etc/kafka/client.pem")]).unwrap_err();
    assert_eq!(err.problems()[0].variable, "KAFKA_TLS_KEY_FILE", "{err}");
    let err = parse(&[("KAFKA_TLS_KEY_FILE", "/etc/kafka/client.key")]).unwrap_err();
    assert_eq!(err.problems()[0].variable, "KAFKA_TLS_CERT_FILE", "{err}");
    let err = parse(&[
        ("KAFKA_TLS_ENABLED", "false"),
        ("KAFKA_TLS_CA_FILE", "/etc/kafka/ca.pem"),
    ])
    .unwrap_err();
    assert_eq!(err.problems()[0].variable, "KAFKA_TLS_ENABLED", "{err}");
    let blank = parse(&[("KAFKA_TLS_CA_FILE", ""), ("KAFKA_TLS_ENABLED", "")]).unwrap();
    assert_eq!(blank, KafkaConfig::default());
}

#[test]
fn bad_servers_and_ranges() {
    for (k, v) in [
        ("KAFKA_BOOTSTRAP_SERVERS", ""),
        ("KAFKA_BOOTSTRAP_SERVERS", "localhost"),
        ("KAFKA_BOOTSTRAP_SERVERS", "h:99999"),
        ("KAFKA_TOPIC_PREFIX", "has space"),
        ("KAFKA_HEARTBEAT_INTERVAL_MS", "45000"),
        ("KAFKA_SESSION_TIMEOUT_MS", "500"),
        ("KAFKA_GROUP_INSTANCE_ID", "has space"),
        ("KAFKA_ASSIGNMENT_STRATEGY", "sticky"),
    ] {
        let err = parse(&[(k, v)]).expect_err(k);
        assert_eq!(err.problems()[0].variable, k, "{err}");
    }
}

proptest! {
    #[test]
    fn any_value_parses_or_names_its_variable(
        index in 0..KafkaConfig::VARIABLES.len(),
        value in ".{0,40}",
    ) {
        let name = KafkaConfig::VARIABLES[index].name;
        match KafkaConfig::from_vars([(name, value.as_str())]) {
            Ok(config) => prop_assert!(config.validate().is_ok()),
            // A mechanism names the credentials it lacks, a certificate its key, a session
            // timeout the heartbeat it must exceed.
            Err(err) => prop_assert!(err.problems().iter().all(|p| p.variable == name
                || (name == "KAFKA_SASL_MECHANISM" && p.variable.starts_with("KAFKA_SASL_"))
                || (name.starts_with("KAFKA_TLS_") && p.variable.starts_with("KAFKA_TLS_"))
                || (name == "KAFKA_SESSION_TIMEOUT_MS" && p.variable == "KAFKA_HEARTBEAT_INTERVAL_MS"))),
        }
    }

    #[test]
    fn numbers_in_range_are_accepted(n in 1u32..=10_000) {
        let c = KafkaConfig::from_vars([("KAFKA_PARTITIONS", n.to_string())]).unwrap();
        prop_assert_eq!(c.partitions, n);
    }
}

#[test]
fn min_insync_replicas_is_unset_by_default_and_at_most_the_replication_factor() {
    assert_eq!(parse(&[]).unwrap().min_insync_replicas, None);
    let err = parse(&[("KAFKA_MIN_INSYNC_REPLICAS", "2")]).unwrap_err();
    assert!(
        err.to_string()
            .contains("at most KAFKA_REPLICATION_FACTOR (1)"),
        "{err}"
    );
    let err = parse(&[("KAFKA_MIN_INSYNC_REPLICAS", "0")]).unwrap_err();
    assert!(
        err.to_string().contains("KAFKA_MIN_INSYNC_REPLICAS"),
        "{err}"
    );
    let built = KafkaConfig::builder()
        .replication_factor(3)
        .min_insync_replicas(2)
        .build()
        .unwrap();
    assert_eq!(built.min_insync_replicas, Some(2));
    assert!(
        KafkaConfig::builder()
            .min_insync_replicas(3)
            .build()
            .is_err()
    );
}
