//! The bus named by `EVENT_BUS_TYPE`, and the check of the configuration against what that
//! backend can do.

use std::collections::BTreeSet;
use std::sync::Arc;

use event_core::{Capabilities, Config, EventBus, MemoryBus};

use crate::settings::{BusType, Settings};

use crate::Error;

/// Connects the bus that `settings.bus_type` names.
///
/// # Errors
/// [`Error::BackendNotBuilt`] when the backend's cargo feature is off, or the
/// backend's own error (bad configuration, server unreachable).
pub async fn connect_bus(settings: &Settings) -> Result<Arc<dyn EventBus>, Error> {
    let config = settings.bus.clone();
    match settings.bus_type {
        BusType::Memory => Ok(Arc::new(MemoryBus::new(config)?)),
        #[cfg(feature = "redis")]
        BusType::Redis => Ok(Arc::new(
            event_redis::RedisBus::connect(settings.redis.clone(), config).await?,
        )),
        #[cfg(feature = "kafka")]
        BusType::Kafka => Ok(Arc::new(
            event_kafka::KafkaBus::connect(settings.kafka.clone(), config).await?,
        )),
        #[allow(unreachable_patterns)]
        other => Err(Error::BackendNotBuilt {
            backend: other.as_str(),
        }),
    }
}

/// The outcome of checking a configuration against a backend's [`Capabilities`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CapabilityReport {
    /// Settings the user asked for explicitly that the backend cannot honour: start-up fails.
    pub errors: Vec<String>,
    /// Settings left at a default the backend cannot honour, or that have no effect on it:
    /// logged and shown in stats, start-up goes on.
    pub warnings: Vec<String>,
}

/// Checks `config` against `capabilities`. A feature asked for *explicitly* (its variable is in
/// `explicit`, the names of the variables the user set) that the backend lacks is an error
/// naming the variable and what to change; the same feature left at its default is a warning,
/// so that `EVENT_BUS_TYPE=kafka` alone still starts although `ENABLE_EVENT_SOURCING`
/// defaults to `true`.
pub fn check_capabilities(
    config: &Config,
    capabilities: &Capabilities,
    explicit: &BTreeSet<String>,
) -> CapabilityReport {
    let mut report = CapabilityReport::default();
    let backend = capabilities.backend;
    let mut judge = |variable: &str, message: String| {
        if explicit.contains(variable) {
            report.errors.push(message);
        } else {
            report.warnings.push(message);
        }
    };
    if config.enable_event_sourcing && !capabilities.event_sourcing {
        judge(
            "ENABLE_EVENT_SOURCING",
            format!(
                "ENABLE_EVENT_SOURCING=true but the {backend} backend has no event sourcing (aggregate append and load): set ENABLE_EVENT_SOURCING=false, or EVENT_BUS_TYPE=redis or memory"
            ),
        );
    }
    if config.enable_event_replay && !capabilities.replay_by_time {
        judge(
            "ENABLE_EVENT_REPLAY",
            format!(
                "ENABLE_EVENT_REPLAY=true but the {backend} backend cannot replay by time: set ENABLE_EVENT_REPLAY=false, or choose another EVENT_BUS_TYPE"
            ),
        );
    }
    if !capabilities.retention && explicit.contains("EVENT_TTL_SECONDS") {
        report.warnings.push(format!(
            "EVENT_TTL_SECONDS has no effect on the {backend} backend: its retention is {}",
            if backend == "kafka" {
                "KAFKA_RETENTION_MS"
            } else {
                "not configurable"
            }
        ));
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_SOURCING: Capabilities = Capabilities {
        backend: "kafka",
        persistent: true,
        shared_groups: false,
        per_key_order: true,
        replay_by_time: true,
        event_sourcing: false,
        retention: false,
    };

    #[test]
    fn sourcing_asked_for_explicitly_is_an_error_naming_the_variable() {
        let config = Config::default();
        let explicit = BTreeSet::from(["ENABLE_EVENT_SOURCING".to_string()]);
        let report = check_capabilities(&config, &NO_SOURCING, &explicit);
        assert_eq!(report.errors.len(), 1);
        assert!(report.errors[0].contains("ENABLE_EVENT_SOURCING=false"));
        assert!(report.warnings.is_empty());
    }

    #[test]
    fn sourcing_left_at_its_default_is_a_warning() {
        let report = check_capabilities(&Config::default(), &NO_SOURCING, &BTreeSet::new());
        assert!(report.errors.is_empty());
        assert_eq!(report.warnings.len(), 1);
    }

    #[test]
    fn sourcing_off_is_fine_and_ttl_on_kafka_is_pointed_to_its_variable() {
        let mut config = Config::default();
        config.enable_event_sourcing = false;
        let explicit = BTreeSet::from(["EVENT_TTL_SECONDS".to_string()]);
        let report = check_capabilities(&config, &NO_SOURCING, &explicit);
        assert!(report.errors.is_empty());
        assert_eq!(report.warnings.len(), 1);
        assert!(report.warnings[0].contains("KAFKA_RETENTION_MS"));
    }
}
