//! The table of the shared variables, and how [`Config`] reads and writes them; one set of
//! rules for the environment and for configurations built in code.

use std::time::Duration;

use super::Config;
use super::table::{EnvSettings, Reader, Rule, Secret, Variable, valid_name};
use crate::encryption::EncryptionKeys;

/// A variable of this table that the original system had, shown as is.
const fn var(name: &'static str, default: &'static str, rule: Rule, doc: &'static str) -> Variable {
    Variable {
        name,
        default: Some(default),
        default_note: "",
        rule,
        secret: Secret::No,
        original: false,
        doc,
    }
}

/// `var` for a variable the original system had.
const fn original(
    name: &'static str,
    default: &'static str,
    rule: Rule,
    doc: &'static str,
) -> Variable {
    Variable {
        original: true,
        ..var(name, default, rule, doc)
    }
}

const GROUP_NAME: Rule = Rule::Text("1 to 150 characters of a-z, A-Z, 0-9, '.', '_' or '-'");

const ENABLE_EVENT_SOURCING: Variable = original(
    "ENABLE_EVENT_SOURCING",
    "true",
    Rule::Bool,
    "aggregate append and load; when `false` they fail with \"event sourcing is disabled\".",
);
const ENABLE_EVENT_REPLAY: Variable = original(
    "ENABLE_EVENT_REPLAY",
    "true",
    Rule::Bool,
    "replay; when `false` it fails with \"event replay is disabled\".",
);
const EVENT_BATCH_SIZE: Variable = original(
    "EVENT_BATCH_SIZE",
    "100",
    Rule::Whole {
        min: 1,
        max: 100_000,
    },
    "events per `BatchPublisher` flush (a full buffer flushes at once, one `publish_batch` call per batch), and the most events a consumer reads at once.",
);
const EVENT_FLUSH_INTERVAL_MS: Variable = original(
    "EVENT_FLUSH_INTERVAL_MS",
    "1000",
    Rule::Whole {
        min: 1,
        max: 3_600_000,
    },
    "the `BatchPublisher`'s flush timer: buffered events are published at least this often, also when no new event arrives.",
);
const EVENT_TTL_SECONDS: Variable = Variable {
    default_note: "7 days",
    ..original(
        "EVENT_TTL_SECONDS",
        "604800",
        Rule::Whole {
            min: 1,
            max: 10 * 365 * 86_400,
        },
        "retention on the memory and Redis backends: older events are trimmed and no longer counted or replayed. Counted from when the event was stored.",
    )
};
const EVENT_CONSUMER_GROUP: Variable = var(
    "EVENT_CONSUMER_GROUP",
    "ai-opportunity-consumers",
    GROUP_NAME,
    "each handler's consumer group is `{EVENT_CONSUMER_GROUP}.{handler}`, on every backend.",
);
const KAFKA_CONSUMER_GROUP: Variable = original(
    "KAFKA_CONSUMER_GROUP",
    "ai-opportunity-consumers",
    GROUP_NAME,
    "the original's name of `EVENT_CONSUMER_GROUP`, read on every backend; setting both to different values is an error.",
);
const EVENT_MAX_RETRIES: Variable = original(
    "EVENT_MAX_RETRIES",
    "3",
    Rule::Whole { min: 0, max: 100 },
    "retries of a transient failure; an event is tried at most `EVENT_MAX_RETRIES + 1` times, then dead-lettered. The original passed it around and never used it.",
);
const ENABLE_EVENT_ENCRYPTION: Variable = original(
    "ENABLE_EVENT_ENCRYPTION",
    "false",
    Rule::Bool,
    "encrypt every payload published (AES-256-GCM, with the first key of `EVENT_ENCRYPTION_KEYS`, which it requires); handlers, replay, dead letters and `copy` see the plaintext, Redis and Kafka hold ciphertext. When `false`, events stored encrypted are still decrypted with the keys given. The original read it and ignored it.",
);
const EVENT_ENCRYPTION_KEYS: Variable = Variable {
    default: None,
    secret: Secret::Whole,
    ..var(
        "EVENT_ENCRYPTION_KEYS",
        "",
        Rule::Text(
            "comma-separated `id:key` pairs, each key 32 bytes in base64 (`openssl rand -base64 32`), ids of a-z, A-Z, 0-9, '.', '_', '-'",
        ),
        "the payload encryption keys: the first encrypts (when `ENABLE_EVENT_ENCRYPTION=true`), every one decrypts; each event names its key's id in `metadata.encryption_key_id`. To rotate, put a new key first and keep the old ones as long as their events are kept. An event whose key is missing is dead-lettered (`undecryptable`), never lost.",
    )
};
const EVENT_RETRY_BASE_MS: Variable = var(
    "EVENT_RETRY_BASE_MS",
    "100",
    Rule::Whole {
        min: 1,
        max: 3_600_000,
    },
    "the first retry's delay; retry `n` waits a random time in `[d/2, d]` with `d = min(max, base * 2^(n-1))`.",
);
const EVENT_RETRY_MAX_MS: Variable = var(
    "EVENT_RETRY_MAX_MS",
    "30000",
    Rule::Whole {
        min: 1,
        max: 86_400_000,
    },
    "the cap on retry delays; at least `EVENT_RETRY_BASE_MS`.",
);
const EVENT_HANDLER_CONCURRENCY: Variable = var(
    "EVENT_HANDLER_CONCURRENCY",
    "16",
    Rule::Whole { min: 1, max: 1024 },
    "events in progress at once per subscription; events with the same partition key never run at once. A `SubscriptionSpec` may override it.",
);
const EVENT_MAX_PAYLOAD_BYTES: Variable = Variable {
    default_note: "1 MiB",
    ..var(
        "EVENT_MAX_PAYLOAD_BYTES",
        "1048576",
        Rule::Whole {
            min: 1024,
            max: 64 * 1024 * 1024,
        },
        "the limit on one encoded event (the whole envelope). Over it, publish fails with a message giving both sizes and nothing is written; in a batch, only that event fails.",
    )
};
const EVENT_CLAIM_IDLE_MS: Variable = var(
    "EVENT_CLAIM_IDLE_MS",
    "30000",
    Rule::Whole {
        min: 100,
        max: 86_400_000,
    },
    "Redis: entries left pending this long by a dead consumer are taken over.",
);
const EVENT_SHUTDOWN_TIMEOUT_MS: Variable = var(
    "EVENT_SHUTDOWN_TIMEOUT_MS",
    "30000",
    Rule::Whole {
        min: 0,
        max: 3_600_000,
    },
    "how long `shutdown` and `unsubscribe` wait for in-flight handlers; what does not finish is not acknowledged and is delivered again.",
);
const EVENT_STALL_TIMEOUT_MS: Variable = var(
    "EVENT_STALL_TIMEOUT_MS",
    "60000",
    Rule::Whole {
        min: 100,
        max: 86_400_000,
    },
    "health reports a consumer as stalled when it has lag and has finished nothing for this long.",
);

impl EnvSettings for Config {
    const VARIABLES: &'static [Variable] = &[
        ENABLE_EVENT_SOURCING,
        ENABLE_EVENT_REPLAY,
        EVENT_BATCH_SIZE,
        EVENT_FLUSH_INTERVAL_MS,
        EVENT_TTL_SECONDS,
        EVENT_CONSUMER_GROUP,
        KAFKA_CONSUMER_GROUP,
        EVENT_MAX_RETRIES,
        ENABLE_EVENT_ENCRYPTION,
        EVENT_ENCRYPTION_KEYS,
        EVENT_RETRY_BASE_MS,
        EVENT_RETRY_MAX_MS,
        EVENT_HANDLER_CONCURRENCY,
        EVENT_MAX_PAYLOAD_BYTES,
        EVENT_CLAIM_IDLE_MS,
        EVENT_SHUTDOWN_TIMEOUT_MS,
        EVENT_STALL_TIMEOUT_MS,
    ];

    fn read(r: &mut Reader<'_>) -> Self {
        // The variable the group was read from, so that a bad value names the one set.
        let (group_var, consumer_group) = match (
            r.raw(&EVENT_CONSUMER_GROUP),
            r.raw(&KAFKA_CONSUMER_GROUP),
        ) {
            (Some(a), Some(b)) if a != b => {
                r.problem(
                        &EVENT_CONSUMER_GROUP,
                        &a,
                        format!("the same value as its alias KAFKA_CONSUMER_GROUP ({b:?}), or only one of the two set"),
                    );
                (&EVENT_CONSUMER_GROUP, a)
            }
            (Some(a), _) => (&EVENT_CONSUMER_GROUP, a),
            (None, Some(b)) => (&KAFKA_CONSUMER_GROUP, b),
            (None, None) => (&EVENT_CONSUMER_GROUP, r.text(&EVENT_CONSUMER_GROUP)),
        };
        if !valid_name(&consumer_group, 150) {
            r.invalid(group_var, &consumer_group);
        }

        let encrypt_payloads = r.bool(&ENABLE_EVENT_ENCRYPTION);
        let encryption_keys = r.optional(&EVENT_ENCRYPTION_KEYS).and_then(|text| {
            EncryptionKeys::parse(&text)
                .map_err(|why| {
                    let expected = EVENT_ENCRYPTION_KEYS.rule.expected();
                    r.problem(
                        &EVENT_ENCRYPTION_KEYS,
                        &text,
                        format!("{expected}; but {why}"),
                    );
                })
                .ok()
        });
        if encrypt_payloads && encryption_keys.is_none() && r.raw(&EVENT_ENCRYPTION_KEYS).is_none()
        {
            r.problem(
                &ENABLE_EVENT_ENCRYPTION,
                "true",
                "false, or EVENT_ENCRYPTION_KEYS set to the keys to encrypt with (`id:key`, a key made by `openssl rand -base64 32`)",
            );
        }

        let retry_base = r.millis(&EVENT_RETRY_BASE_MS);
        let retry_max = r.millis(&EVENT_RETRY_MAX_MS);
        if retry_max < retry_base {
            r.problem(
                &EVENT_RETRY_MAX_MS,
                &retry_max.as_millis().to_string(),
                format!("at least EVENT_RETRY_BASE_MS ({})", retry_base.as_millis()),
            );
        }
        Config {
            enable_event_sourcing: r.bool(&ENABLE_EVENT_SOURCING),
            enable_event_replay: r.bool(&ENABLE_EVENT_REPLAY),
            batch_size: r.whole(&EVENT_BATCH_SIZE),
            flush_interval: r.millis(&EVENT_FLUSH_INTERVAL_MS),
            event_ttl: Duration::from_secs(r.whole(&EVENT_TTL_SECONDS)),
            consumer_group,
            max_retries: r.whole(&EVENT_MAX_RETRIES),
            encrypt_payloads,
            encryption_keys,
            retry_base,
            retry_max,
            handler_concurrency: r.whole(&EVENT_HANDLER_CONCURRENCY),
            max_event_bytes: r.whole(&EVENT_MAX_PAYLOAD_BYTES),
            claim_idle: r.millis(&EVENT_CLAIM_IDLE_MS),
            shutdown_timeout: r.millis(&EVENT_SHUTDOWN_TIMEOUT_MS),
            stall_timeout: r.millis(&EVENT_STALL_TIMEOUT_MS),
        }
    }

    fn write(&self, name: &str) -> Option<String> {
        let ms = |d: Duration| d.as_millis().to_string();
        Some(match name {
            "ENABLE_EVENT_SOURCING" => self.enable_event_sourcing.to_string(),
            "ENABLE_EVENT_REPLAY" => self.enable_event_replay.to_string(),
            "EVENT_BATCH_SIZE" => self.batch_size.to_string(),
            "EVENT_FLUSH_INTERVAL_MS" => ms(self.flush_interval),
            "EVENT_TTL_SECONDS" => self.event_ttl.as_secs().to_string(),
            "EVENT_CONSUMER_GROUP" | "KAFKA_CONSUMER_GROUP" => self.consumer_group.clone(),
            "EVENT_MAX_RETRIES" => self.max_retries.to_string(),
            "ENABLE_EVENT_ENCRYPTION" => self.encrypt_payloads.to_string(),
            "EVENT_ENCRYPTION_KEYS" => self
                .encryption_keys
                .as_ref()
                .map(EncryptionKeys::to_text)
                .unwrap_or_default(),
            "EVENT_RETRY_BASE_MS" => ms(self.retry_base),
            "EVENT_RETRY_MAX_MS" => ms(self.retry_max),
            "EVENT_HANDLER_CONCURRENCY" => self.handler_concurrency.to_string(),
            "EVENT_MAX_PAYLOAD_BYTES" => self.max_event_bytes.to_string(),
            "EVENT_CLAIM_IDLE_MS" => ms(self.claim_idle),
            "EVENT_SHUTDOWN_TIMEOUT_MS" => ms(self.shutdown_timeout),
            "EVENT_STALL_TIMEOUT_MS" => ms(self.stall_timeout),
            _ => return None,
        })
    }
}

/// Whether `s` may name a handler. Handler names become part of group, stream and topic
/// names: lower-case letters, digits, `_` and `-`, starting with a letter, at most 100 bytes.
pub fn valid_handler_name(s: &str) -> bool {
    s.len() <= 100
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ConfigError;
    use proptest::prelude::*;

    fn parse(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_vars(vars.iter().copied())
    }

    #[test]
    fn defaults_are_the_originals() {
        let c = parse(&[]).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.batch_size, 100);
        assert_eq!(c.event_ttl, Duration::from_secs(604_800));
        assert_eq!(c.consumer_group, "ai-opportunity-consumers");
        assert_eq!(c.max_retries, 3);
        assert_eq!(c.max_event_bytes, crate::codec::DEFAULT_MAX_EVENT_BYTES);
        c.validate().unwrap();
    }

    #[test]
    fn every_variable_is_read() {
        let c = parse(&[
            ("ENABLE_EVENT_SOURCING", "false"),
            ("ENABLE_EVENT_REPLAY", "0"),
            ("EVENT_BATCH_SIZE", "250"),
            ("EVENT_FLUSH_INTERVAL_MS", "50"),
            ("EVENT_TTL_SECONDS", "86_400"),
            ("KAFKA_CONSUMER_GROUP", "shop-consumers"),
            ("EVENT_MAX_RETRIES", "7"),
            ("ENABLE_EVENT_ENCRYPTION", "off"),
            ("EVENT_RETRY_BASE_MS", "10"),
            ("EVENT_RETRY_MAX_MS", "1000"),
            ("EVENT_HANDLER_CONCURRENCY", "4"),
            ("EVENT_MAX_PAYLOAD_BYTES", "2048"),
            ("EVENT_CLAIM_IDLE_MS", "5000"),
            ("EVENT_SHUTDOWN_TIMEOUT_MS", "100"),
            ("EVENT_STALL_TIMEOUT_MS", "2000"),
        ])
        .unwrap();
        assert!(!c.enable_event_sourcing && !c.enable_event_replay);
        assert_eq!(c.batch_size, 250);
        assert_eq!(c.event_ttl, Duration::from_secs(86_400));
        assert_eq!(c.consumer_group, "shop-consumers");
        assert_eq!(c.retry_policy().max_retries, 7);
        assert_eq!(c.handler_concurrency, 4);
        assert_eq!(c.max_event_bytes, 2048);
        assert_eq!(c.stall_timeout, Duration::from_secs(2));
        c.validate().unwrap();
        // The redacted view round-trips through the parser.
        assert_eq!(Config::from_vars(c.redacted()).unwrap(), c);
    }

    #[test]
    fn errors_name_variable_value_and_what_is_allowed() {
        let err = parse(&[
            ("EVENT_BATCH_SIZE", "0"),
            ("EVENT_MAX_RETRIES", "three"),
            ("ENABLE_EVENT_REPLAY", "maybe"),
        ])
        .unwrap_err();
        let text = err.to_string();
        assert_eq!(err.problems().len(), 3, "{text}");
        assert!(
            text.contains(
                r#"EVENT_BATCH_SIZE="0" is not valid: expected a whole number from 1 to 100000"#
            ),
            "{text}"
        );
        assert!(text.contains("EVENT_MAX_RETRIES=\"three\""), "{text}");
        assert!(text.contains("ENABLE_EVENT_REPLAY=\"maybe\""), "{text}");
    }

    #[test]
    fn encryption_needs_keys_and_never_shows_them() {
        const KEY: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
        assert!(parse(&[("ENABLE_EVENT_ENCRYPTION", "false")]).is_ok());
        let err = parse(&[("ENABLE_EVENT_ENCRYPTION", "true")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("EVENT_ENCRYPTION_KEYS"), "{err}");
        let c = parse(&[
            ("ENABLE_EVENT_ENCRYPTION", "true"),
            ("EVENT_ENCRYPTION_KEYS", KEY),
        ])
        .unwrap();
        assert!(c.encrypt_payloads);
        assert_eq!(c.encryption_keys.as_ref().unwrap().active_id(), "k1");
        assert!(!format!("{c:?}").contains("AAECAwQF"));
        assert_eq!(c.redacted()["EVENT_ENCRYPTION_KEYS"], "***");
        assert_eq!(Config::from_vars(c.to_vars()).unwrap(), c);
        let err = parse(&[("EVENT_ENCRYPTION_KEYS", "k1:AAECAwQFBgcICQoLDA0ODw==")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("16 bytes, not 32"), "{err}");
        assert!(!err.contains("AAECAwQF"), "{err}");
    }

    #[test]
    fn conflicting_group_aliases_are_refused() {
        assert!(parse(&[("EVENT_CONSUMER_GROUP", "a"), ("KAFKA_CONSUMER_GROUP", "b")]).is_err());
        let c = parse(&[("EVENT_CONSUMER_GROUP", "a"), ("KAFKA_CONSUMER_GROUP", "a")]).unwrap();
        assert_eq!(c.consumer_group, "a");
        // A bad value names the variable it was given in.
        let err = parse(&[("KAFKA_CONSUMER_GROUP", "/")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("KAFKA_CONSUMER_GROUP=\"/\""), "{err}");
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (k, v) in [
            ("EVENT_RETRY_MAX_MS", "5"),
            ("EVENT_HANDLER_CONCURRENCY", "0"),
            ("EVENT_TTL_SECONDS", "-1"),
            ("EVENT_CONSUMER_GROUP", "has space"),
        ] {
            let err = parse(&[(k, v)]).expect_err(k);
            assert_eq!(err.problems()[0].variable, k, "{err}");
        }
    }

    proptest! {
        #[test]
        fn any_value_parses_or_names_its_variable(
            index in 0..Config::VARIABLES.len(),
            value in ".{0,40}",
        ) {
            let name = Config::VARIABLES[index].name;
            match Config::from_vars([(name, value.as_str())]) {
                Ok(config) => prop_assert!(config.validate().is_ok()),
                Err(err) => prop_assert!(err.problems().iter().all(|p| p.variable == name
                    || (name == "EVENT_RETRY_BASE_MS" && p.variable == "EVENT_RETRY_MAX_MS")
                    || (name == "KAFKA_CONSUMER_GROUP" && p.variable == "EVENT_CONSUMER_GROUP"))),
            }
        }
    }
}
