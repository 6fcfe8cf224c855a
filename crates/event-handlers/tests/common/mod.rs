//! What the black-box tests share: a memory bus with domain handlers subscribed, and waiting
//! on a condition with a deadline (never a bare sleep standing in for synchronisation).

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::time::Duration;

use anyhow::ensure;
use event_core::{EventBus, MemoryBus, StartFrom, Subscription, SubscriptionSpec};
use event_handlers::{DomainContext, DomainHandler, DomainHandlerKind, build};

/// Every wait ends within this.
pub const BOUND: Duration = Duration::from_secs(20);

/// Waits until `check` holds, failing after [`BOUND`] with `what`.
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + BOUND;
    while !check() {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "timed out after {BOUND:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// Waits until the handler `name` has finished (handled or dead-lettered) `count` events.
pub async fn settled(bus: &Arc<dyn EventBus>, name: &str, count: u64) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        let stats = bus.stats().await?;
        let done = stats
            .handlers
            .get(name)
            .map_or(0, |h| h.processed + h.dead_lettered);
        if done >= count {
            return Ok(());
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {name} to finish {count} events (finished {done})"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A memory bus with domain handlers subscribed from the earliest event.
pub struct Harness {
    pub bus: Arc<dyn EventBus>,
    pub handlers: Vec<DomainHandler>,
    subscriptions: Vec<Subscription>,
}

impl Harness {
    /// Builds and subscribes `kinds` with `ctx` (made from a fresh memory bus by `context`).
    pub async fn start(
        kinds: &[DomainHandlerKind],
        context: impl FnOnce(Arc<dyn EventBus>) -> DomainContext,
    ) -> anyhow::Result<Self> {
        let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::default());
        let ctx = context(bus.clone());
        let mut handlers = Vec::new();
        let mut subscriptions = Vec::new();
        for kind in kinds {
            let handler = build(*kind, &ctx)?;
            let spec = SubscriptionSpec::new(kind.as_str(), handler.event_types.clone())
                .start_from(StartFrom::Earliest);
            subscriptions.push(bus.subscribe(spec, handler.handler.clone()).await?);
            handlers.push(handler);
        }
        Ok(Self {
            bus,
            handlers,
            subscriptions,
        })
    }

    /// The built handler of `kind`.
    pub fn handler(&self, kind: DomainHandlerKind) -> &DomainHandler {
        self.handlers
            .iter()
            .find(|h| h.kind == kind)
            .expect("the harness was started with this kind")
    }

    /// Unsubscribes everything and shuts the bus down.
    pub async fn stop(self) -> anyhow::Result<()> {
        for subscription in self.subscriptions {
            subscription.unsubscribe().await?;
        }
        self.bus.shutdown().await?;
        Ok(())
    }
}
