//! The table of the Kafka backend's variables: each declared once, with its default, its rule
//! and its documentation.

use event_core::config::table::{Rule, Secret, Variable};

/// A variable of this table, shown as is, without a default note.
pub(super) const fn var(
    name: &'static str,
    default: Option<&'static str>,
    rule: Rule,
    original: bool,
    doc: &'static str,
) -> Variable {
    Variable {
        name,
        default,
        default_note: "",
        rule,
        secret: Secret::No,
        original,
        doc,
    }
}

pub(super) const KAFKA_BOOTSTRAP_SERVERS: Variable = var(
    "KAFKA_BOOTSTRAP_SERVERS",
    Some("localhost:9092"),
    Rule::Text("a comma-separated list of host:port, such as localhost:9092,kafka2:9092"),
    true,
    "the Kafka brokers to start from.",
);
pub(super) const KAFKA_TOPIC_PREFIX: Variable = var(
    "KAFKA_TOPIC_PREFIX",
    Some("ai-opportunity"),
    Rule::Text("1 to 100 characters of a-z, A-Z, 0-9, '.', '_' or '-'"),
    true,
    "topics are `{prefix}.{event_type}`.",
);
pub(super) const KAFKA_RETENTION_MS: Variable = Variable {
    default_note: "7 days",
    ..var(
        "KAFKA_RETENTION_MS",
        Some("604800000"),
        Rule::Whole {
            min: 1_000,
            max: u64::MAX / 2,
        },
        true,
        "`retention.ms` of the topics.",
    )
};
pub(super) const KAFKA_PARTITIONS: Variable = var(
    "KAFKA_PARTITIONS",
    Some("3"),
    Rule::Whole {
        min: 1,
        max: 10_000,
    },
    true,
    "partitions of new topics.",
);
pub(super) const KAFKA_REPLICATION_FACTOR: Variable = var(
    "KAFKA_REPLICATION_FACTOR",
    Some("1"),
    Rule::Whole {
        min: 1,
        max: 32_767,
    },
    true,
    "replication factor of new topics.",
);
pub(super) const KAFKA_MIN_INSYNC_REPLICAS: Variable = Variable {
    default_note: "the broker's `min.insync.replicas`, 1 unless changed",
    ..var(
        "KAFKA_MIN_INSYNC_REPLICAS",
        None,
        Rule::Whole {
            min: 1,
            max: 32_767,
        },
        false,
        "`min.insync.replicas` of new topics: with `acks=all` (which the bus always uses) a publish succeeds only once this many replicas have the event, and fails (transient) while fewer are in sync. At most `KAFKA_REPLICATION_FACTOR`; in production 2 with a replication factor of 3 (see [kafka.md](kafka.md#on-a-cluster)).",
    )
};
pub(super) const ENABLE_EVENT_COMPRESSION: Variable = var(
    "ENABLE_EVENT_COMPRESSION",
    Some("true"),
    Rule::Bool,
    true,
    "`false` means `KAFKA_COMPRESSION=none` (and forbids any other value). The original read it and ignored it.",
);
pub(super) const KAFKA_COMPRESSION: Variable = var(
    "KAFKA_COMPRESSION",
    Some("lz4"),
    Rule::OneOf(&["none", "gzip", "snappy", "lz4", "zstd"]),
    false,
    "compression of Kafka record batches.",
);
pub(super) const KAFKA_SASL_MECHANISM: Variable = Variable {
    default_note: "no authentication (empty is unset)",
    ..var(
        "KAFKA_SASL_MECHANISM",
        None,
        Rule::OneOf(&["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]),
        false,
        "SASL authentication to the brokers, on the data path (rskafka) and the control plane alike; needs `KAFKA_SASL_USERNAME` and `KAFKA_SASL_PASSWORD`, and a missing one is an error naming it. `PLAIN` sends the password as is: use it with TLS outside a trusted network.",
    )
};
pub(super) const KAFKA_SASL_USERNAME: Variable = var(
    "KAFKA_SASL_USERNAME",
    None,
    Rule::Text("any text; only with `KAFKA_SASL_MECHANISM`"),
    false,
    "the SASL user. Appears in errors (\"SASL SCRAM-SHA-256 authentication of user \\\"app\\\" ... failed\").",
);
pub(super) const KAFKA_SASL_PASSWORD: Variable = Variable {
    secret: Secret::Whole,
    ..var(
        "KAFKA_SASL_PASSWORD",
        None,
        Rule::Text("any text, not trimmed; only with `KAFKA_SASL_MECHANISM`"),
        false,
        "the SASL password. Never appears in logs, `Debug` output, `redacted()` or errors: they show `***`.",
    )
};
pub(super) const KAFKA_TLS_ENABLED: Variable = Variable {
    default_note: "or `true` when any `KAFKA_TLS_*_FILE` is set",
    ..var(
        "KAFKA_TLS_ENABLED",
        Some("false"),
        Rule::Bool,
        false,
        "TLS to the brokers (Kafka's `SSL` or `SASL_SSL` listeners); not `false` when a file is set. The brokers' certificates are always verified and must name the host the client connects to (the advertised listener's host).",
    )
};
pub(super) const KAFKA_TLS_CA_FILE: Variable = Variable {
    default_note: "the system's roots",
    ..var(
        "KAFKA_TLS_CA_FILE",
        None,
        Rule::Text("a path to a PEM file"),
        false,
        "the CA certificate(s) that sign the brokers' certificates, like the Java client's truststore. Read when the bus connects; a missing or unreadable file, or one without a `CERTIFICATE` block, is a configuration error naming the variable.",
    )
};
pub(super) const KAFKA_TLS_CERT_FILE: Variable = var(
    "KAFKA_TLS_CERT_FILE",
    None,
    Rule::Text("a path to a PEM file; together with `KAFKA_TLS_KEY_FILE`"),
    false,
    "the client's certificate chain, for brokers with `ssl.client.auth=required`.",
);
pub(super) const KAFKA_TLS_KEY_FILE: Variable = var(
    "KAFKA_TLS_KEY_FILE",
    None,
    Rule::Text(
        "a path to a PEM file (PKCS#8, PKCS#1 or SEC1); together with `KAFKA_TLS_CERT_FILE`",
    ),
    false,
    "the private key of the client certificate.",
);
pub(super) const KAFKA_SESSION_TIMEOUT_MS: Variable = var(
    "KAFKA_SESSION_TIMEOUT_MS",
    Some("45000"),
    Rule::Whole {
        min: 1_000,
        max: 3_600_000,
    },
    false,
    "a group member without a heartbeat for this long is removed and its partitions go to the others: how long a killed process's partitions wait. The broker allows 6000 to 1800000 unless its `group.min/max.session.timeout.ms` say otherwise.",
);
pub(super) const KAFKA_HEARTBEAT_INTERVAL_MS: Variable = var(
    "KAFKA_HEARTBEAT_INTERVAL_MS",
    Some("3000"),
    Rule::Whole {
        min: 100,
        max: 3_600_000,
    },
    false,
    "how often a member heartbeats, below `KAFKA_SESSION_TIMEOUT_MS`; also how soon the others notice a rebalance.",
);
pub(super) const KAFKA_REBALANCE_TIMEOUT_MS: Variable = var(
    "KAFKA_REBALANCE_TIMEOUT_MS",
    Some("60000"),
    Rule::Whole {
        min: 1_000,
        max: 3_600_000,
    },
    false,
    "how long the coordinator waits for every member to rejoin; a member gives in-flight events of revoked partitions three quarters of it to finish.",
);
pub(super) const KAFKA_METADATA_MAX_AGE_MS: Variable = Variable {
    default_note: "5 minutes, as the Java client's `metadata.max.age.ms`",
    ..var(
        "KAFKA_METADATA_MAX_AGE_MS",
        Some("300000"),
        Rule::Whole {
            min: 100,
            max: 86_400_000,
        },
        false,
        "how often the bus reads the partition counts of its topics again: partitions added to a topic at run time are published to, and (at the group's leader) trigger a rebalance that hands them to a member, within this time.",
    )
};
pub(super) const KAFKA_GROUP_INSTANCE_ID: Variable = var(
    "KAFKA_GROUP_INSTANCE_ID",
    None,
    Rule::Text(
        "unset, or 1 to 200 characters of a-z, A-Z, 0-9, '.', '_' or '-', different in each process",
    ),
    false,
    "static membership: a restart within the session timeout gets the same partitions back without a rebalance.",
);
pub(super) const KAFKA_ASSIGNMENT_STRATEGY: Variable = var(
    "KAFKA_ASSIGNMENT_STRATEGY",
    Some("range"),
    Rule::OneOf(&["range", "roundrobin"]),
    false,
    "the assignor the group's leader runs (the Java client's, of the same name).",
);
