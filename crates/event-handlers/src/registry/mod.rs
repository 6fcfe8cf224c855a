//! The registry of domain handlers: their configuration names ([`DomainHandlerKind`]), what a
//! built handler is ([`DomainHandler`]: the handler, its event types, its [`View`]) and
//! [`build`], which makes one from a [`DomainContext`] ([`build_fold`]: its view alone, as a
//! [`Fold`]).

mod kind;

use std::sync::Arc;

use event_core::{EventBus, EventHandler, EventType};

pub use kind::DomainHandlerKind;

use crate::audit::{AuditSettings, AuditTrailHandler};
use crate::domain::{
    AgentAlertPolicy, AgentEventHandler, MarketSignalEventHandler, OpportunityEventHandler,
    SystemEventHandler, UserEventHandler,
};
use crate::{Error, Fold, View};

/// Limits and thresholds the domain handlers apply.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Thresholds {
    /// When the agent handler raises an error-rate alert.
    pub agent_alert: AgentAlertPolicy,
    /// The most entries a view keeps in one collection (signals, recent errors, ...; default
    /// 10,000); the oldest go first. Counters are never trimmed.
    pub view_capacity: usize,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            agent_alert: AgentAlertPolicy::default(),
            view_capacity: 10_000,
        }
    }
}

/// What the domain handlers need: the bus they publish follow-up events on (alerts,
/// re-analysis requests), where the audit trail goes, and thresholds.
#[derive(Clone)]
#[non_exhaustive]
pub struct DomainContext {
    /// The bus alerts and re-analysis requests are published on.
    pub bus: Arc<dyn EventBus>,
    /// The audit trail's sink (default [`AuditSettings::default`]: JSON Lines files under the
    /// temporary directory; the manager reads `EVENT_AUDIT_*` with
    /// [`EnvSettings::from_env`](event_core::EnvSettings::from_env)).
    pub audit: AuditSettings,
    /// Alert thresholds and view limits.
    pub thresholds: Thresholds,
}

impl std::fmt::Debug for DomainContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DomainContext")
            .field("backend", &self.bus.capabilities().backend)
            .field("audit", &self.audit)
            .field("thresholds", &self.thresholds)
            .finish()
    }
}

impl DomainContext {
    /// The defaults for `bus`: the audit settings of [`AuditSettings::default`] and the
    /// default [`Thresholds`].
    pub fn new(bus: Arc<dyn EventBus>) -> Self {
        Self {
            bus,
            audit: AuditSettings::default(),
            thresholds: Thresholds::default(),
        }
    }

    /// Uses these audit settings.
    pub fn with_audit(mut self, audit: AuditSettings) -> Self {
        self.audit = audit;
        self
    }

    /// Uses these thresholds.
    pub fn with_thresholds(mut self, thresholds: Thresholds) -> Self {
        self.thresholds = thresholds;
        self
    }
}

/// A built domain handler: subscribe `handler` to `event_types` (wrapped in middleware if
/// wanted) and serve `view`.
#[derive(Clone)]
pub struct DomainHandler {
    /// Which handler this is.
    pub kind: DomainHandlerKind,
    /// The handler; its name is the kind's configuration name.
    pub handler: Arc<dyn EventHandler>,
    /// The event types it handles.
    pub event_types: Vec<EventType>,
    /// Its view (the same object as the handler).
    pub view: Arc<dyn View>,
    /// The view as a fold of events (the same object again), for a store outside the process;
    /// `None` for the audit trail, which writes to its sink rather than keeping a view.
    pub fold: Option<Arc<dyn Fold>>,
}

impl std::fmt::Debug for DomainHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DomainHandler")
            .field("kind", &self.kind)
            .field("event_types", &self.event_types)
            .finish_non_exhaustive()
    }
}

/// Builds the domain handler `kind` for `ctx`.
///
/// ```
/// use std::sync::Arc;
/// use event_core::{EventBus, MemoryBus, SubscriptionSpec};
/// use event_handlers::{build, DomainContext, DomainHandlerKind};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::default());
/// let ctx = DomainContext::new(bus.clone());
/// let agent = build("agent".parse::<DomainHandlerKind>()?, &ctx)?;
/// let spec = SubscriptionSpec::new(agent.handler.name(), agent.event_types.clone());
/// let _subscription = bus.subscribe(spec, agent.handler.clone()).await?;
/// assert_eq!(agent.view.snapshot()["running"], 0);
/// # Ok(()) }
/// ```
///
/// # Errors
/// [`Error::Audit`] when the audit trail's sink cannot be opened.
pub fn build(kind: DomainHandlerKind, ctx: &DomainContext) -> Result<DomainHandler, Error> {
    if let Some((fold, event_types)) = domain(kind, ctx) {
        return Ok(DomainHandler {
            kind,
            handler: fold.clone(),
            event_types,
            view: fold.clone(),
            fold: Some(fold),
        });
    }
    let audit = Arc::new(AuditTrailHandler::open(ctx.audit.clone())?);
    Ok(DomainHandler {
        kind,
        handler: audit.clone(),
        event_types: audit.event_types(),
        view: audit,
        fold: None,
    })
}

/// A fresh, empty view of the domain handler `kind` as a [`Fold`] (also its handler): what a
/// store outside the process rebuilds the view from. `None` for the audit trail, which keeps
/// no view to fold.
pub fn build_fold(kind: DomainHandlerKind, ctx: &DomainContext) -> Option<Arc<dyn Fold>> {
    domain(kind, ctx).map(|(fold, _)| fold)
}

/// The handler of a domain kind, with its event types; `None` for the audit trail.
fn domain(kind: DomainHandlerKind, ctx: &DomainContext) -> Option<(Arc<dyn Fold>, Vec<EventType>)> {
    let capacity = ctx.thresholds.view_capacity;
    let bus = ctx.bus.clone();
    Some(match kind {
        DomainHandlerKind::Opportunity => (
            Arc::new(OpportunityEventHandler::new(bus, capacity)),
            OpportunityEventHandler::event_types(),
        ),
        DomainHandlerKind::User => (
            Arc::new(UserEventHandler::new(capacity)),
            UserEventHandler::event_types(),
        ),
        DomainHandlerKind::Agent => (
            Arc::new(AgentEventHandler::new(bus, ctx.thresholds.agent_alert)),
            AgentEventHandler::event_types(),
        ),
        DomainHandlerKind::MarketSignal => (
            Arc::new(MarketSignalEventHandler::new(capacity)),
            MarketSignalEventHandler::event_types(),
        ),
        DomainHandlerKind::System => (
            Arc::new(SystemEventHandler::new(capacity)),
            SystemEventHandler::event_types(),
        ),
        DomainHandlerKind::Audit => return None,
    })
}
