//! The configuration every command starts from: the environment, overridden by flags.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use event_core::Config;
use event_manager::EventBusManager;

/// The configuration and output mode of one run.
pub(crate) struct Context {
    /// Every variable the run sees: the environment, then the flags.
    vars: BTreeMap<String, String>,
    pub(crate) config: Config,
    pub(crate) json: bool,
}

impl Context {
    pub(crate) fn from_env(
        overrides: Vec<(&'static str, String)>,
        json: bool,
    ) -> anyhow::Result<Self> {
        let mut vars: BTreeMap<String, String> = std::env::vars().collect();
        for (name, value) in overrides {
            vars.insert(name.to_string(), value);
        }
        let config = Config::from_vars(vars.clone())?;
        Ok(Self { vars, config, json })
    }

    /// This run's variables with `changes` applied: for `copy`'s two ends.
    pub(crate) fn config_with(
        &self,
        changes: &[(&'static str, String)],
    ) -> anyhow::Result<(Config, BTreeSet<String>)> {
        let mut vars = self.vars.clone();
        for (name, value) in changes {
            vars.insert((*name).to_string(), value.clone());
        }
        let config = Config::from_vars(vars.clone())?;
        Ok((config, explicit(&vars)))
    }

    /// The bus variables the user set (environment or flags).
    pub(crate) fn explicit_variables(&self) -> BTreeSet<String> {
        explicit(&self.vars)
    }

    /// A started manager without domain handlers: what most commands read and write with.
    pub(crate) async fn open(&self) -> anyhow::Result<Arc<EventBusManager>> {
        let mut config = self.config.clone();
        config.enable_event_handlers = false;
        open_with(config, explicit(&self.vars)).await
    }

    /// A manager with this run's configuration (domain handlers included), not started.
    pub(crate) fn manager(&self) -> anyhow::Result<EventBusManager> {
        Ok(EventBusManager::builder(self.config.clone())
            .explicit_variables(explicit(&self.vars))
            .build()?)
    }
}

/// A started manager without domain handlers on `config`.
pub(crate) async fn open_with(
    mut config: Config,
    explicit: BTreeSet<String>,
) -> anyhow::Result<Arc<EventBusManager>> {
    config.enable_event_handlers = false;
    let manager = EventBusManager::builder(config)
        .explicit_variables(explicit)
        .build()?;
    manager.start().await?;
    Ok(Arc::new(manager))
}

/// The bus variables among `vars`: the ones the user set.
fn explicit(vars: &BTreeMap<String, String>) -> BTreeSet<String> {
    let known = Config::default().redacted();
    vars.keys()
        .filter(|name| known.contains_key(name.as_str()))
        .cloned()
        .collect()
}
