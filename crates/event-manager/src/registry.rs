//! The handler registry: every handler the manager runs, where it came from, its subscription
//! while the manager runs, and its rate meter.

use std::collections::BTreeMap;
use std::sync::Arc;

use event_core::{EventHandler, Subscription, SubscriptionSpec};
use event_handlers::View;
use serde::Serialize;

use crate::meter::{Metered, RateMeter};

/// Where a registered handler came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum HandlerOrigin {
    /// A domain handler chosen by `ENABLED_EVENT_HANDLERS`, built at each start.
    Domain,
    /// A handler the application registered.
    Custom,
}

/// One registered handler.
pub(crate) struct Entry {
    pub(crate) spec: SubscriptionSpec,
    /// The handler as delivered to: the application's, wrapped in its meter.
    pub(crate) handler: Arc<dyn EventHandler>,
    pub(crate) meter: Arc<RateMeter>,
    pub(crate) origin: HandlerOrigin,
    pub(crate) view: Option<Arc<dyn View>>,
    /// Set while the manager runs.
    pub(crate) subscription: Option<Subscription>,
}

impl Entry {
    pub(crate) fn new(
        spec: SubscriptionSpec,
        handler: Arc<dyn EventHandler>,
        origin: HandlerOrigin,
        view: Option<Arc<dyn View>>,
    ) -> Self {
        let meter = Arc::new(RateMeter::new());
        Self {
            spec,
            handler: Arc::new(Metered::new(handler, meter.clone())),
            meter,
            origin,
            view,
            subscription: None,
        }
    }
}

/// The registry, by handler name.
pub(crate) type Registry = BTreeMap<String, Entry>;
