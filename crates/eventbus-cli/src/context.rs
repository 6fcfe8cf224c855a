//! The settings every command starts from: the environment, then the flags, applied as values.

use std::collections::BTreeSet;
use std::sync::Arc;

use event_manager::{BusType, EventBusManager, Settings};

use crate::args::Backend;

/// The flags that override the environment's backend settings.
#[derive(Debug, Default)]
pub(crate) struct Overrides {
    /// `--bus`.
    pub(crate) bus: Option<BusType>,
    /// `--redis-url`.
    pub(crate) redis_url: Option<String>,
    /// `--kafka-brokers`, comma-separated.
    pub(crate) kafka_brokers: Option<String>,
}

/// The settings and output mode of one run.
pub(crate) struct Context {
    pub(crate) settings: Settings,
    /// The variables the user set: in the environment, or through a flag.
    explicit: BTreeSet<String>,
    pub(crate) json: bool,
}

impl Context {
    /// The environment's settings with the flags applied.
    pub(crate) fn from_env(overrides: Overrides, json: bool) -> anyhow::Result<Self> {
        let mut settings = Settings::from_env()?;
        let mut explicit = Settings::set_in_env();
        if let Some(bus) = overrides.bus {
            settings.bus_type = bus;
            explicit.insert("EVENT_BUS_TYPE".into());
        }
        if let Some(url) = overrides.redis_url {
            apply(&mut settings, &mut explicit, &Backend::Redis(url));
        }
        if let Some(servers) = overrides.kafka_brokers {
            let servers = servers.split(',').map(|s| s.trim().to_string()).collect();
            apply(&mut settings, &mut explicit, &Backend::Kafka(servers));
        }
        settings.validate()?;
        Ok(Self {
            settings,
            explicit,
            json,
        })
    }

    /// This run's settings on `backend` instead: for `copy`'s two ends.
    pub(crate) fn on_backend(
        &self,
        backend: &Backend,
    ) -> anyhow::Result<(Settings, BTreeSet<String>)> {
        let (mut settings, mut explicit) = (self.settings.clone(), self.explicit.clone());
        apply(&mut settings, &mut explicit, backend);
        settings.bus_type = match backend {
            Backend::Redis(_) => BusType::Redis,
            Backend::Kafka(_) => BusType::Kafka,
        };
        explicit.insert("EVENT_BUS_TYPE".into());
        settings.validate()?;
        Ok((settings, explicit))
    }

    /// The bus variables the user set (environment or flags).
    pub(crate) fn explicit_variables(&self) -> BTreeSet<String> {
        self.explicit.clone()
    }

    /// A started manager without domain handlers: what most commands read and write with.
    pub(crate) async fn open(&self) -> anyhow::Result<Arc<EventBusManager>> {
        open_with(self.settings.clone(), self.explicit.clone()).await
    }

    /// A manager with this run's settings (domain handlers included) and `components`, not
    /// started.
    pub(crate) fn manager(
        &self,
        components: Vec<Arc<dyn event_manager::Component>>,
    ) -> anyhow::Result<EventBusManager> {
        let builder = EventBusManager::builder(self.settings.clone())
            .explicit_variables(self.explicit.clone());
        Ok(components
            .into_iter()
            .fold(builder, |b, c| b.component(c))
            .build()?)
    }
}

/// Points `settings` at `backend`'s server, leaving which backend runs as it is.
fn apply(settings: &mut Settings, explicit: &mut BTreeSet<String>, backend: &Backend) {
    match backend {
        Backend::Redis(url) => {
            if event_core::redact_url(url) != *url {
                eprintln!(
                    "warning: the Redis URL given on the command line holds a password, which other users of this machine can read in the process list (ps); give it through the environment (REDIS_URL) instead"
                );
            }
            settings.redis.url.clone_from(url);
            explicit.insert("REDIS_URL".into());
        }
        Backend::Kafka(servers) => {
            settings.kafka.bootstrap_servers.clone_from(servers);
            explicit.insert("KAFKA_BOOTSTRAP_SERVERS".into());
        }
    }
}

/// A started manager without domain handlers on `settings`.
pub(crate) async fn open_with(
    mut settings: Settings,
    explicit: BTreeSet<String>,
) -> anyhow::Result<Arc<EventBusManager>> {
    settings.enable_event_handlers = false;
    let manager = EventBusManager::builder(settings)
        .explicit_variables(explicit)
        .build()?;
    manager.start().await?;
    Ok(Arc::new(manager))
}
