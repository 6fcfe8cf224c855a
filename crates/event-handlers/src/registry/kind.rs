//! [`DomainHandlerKind`]: the domain handlers by their configuration names, as
//! `ENABLED_EVENT_HANDLERS` lists them.

use std::fmt;
use std::str::FromStr;

use crate::Error;

/// A domain handler, named as in `ENABLED_EVENT_HANDLERS`.
///
/// ```
/// use event_handlers::DomainHandlerKind;
///
/// let kind: DomainHandlerKind = "market_signal".parse()?;
/// assert_eq!(kind, DomainHandlerKind::MarketSignal);
/// assert_eq!(kind.to_string(), "market_signal");
/// let err = "billing".parse::<DomainHandlerKind>().unwrap_err();
/// assert!(err.to_string().contains("opportunity, user, agent, market_signal, system, audit"));
/// # Ok::<(), event_handlers::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DomainHandlerKind {
    /// `opportunity`: [`OpportunityEventHandler`](crate::OpportunityEventHandler).
    Opportunity,
    /// `user`: [`UserEventHandler`](crate::UserEventHandler).
    User,
    /// `agent`: [`AgentEventHandler`](crate::AgentEventHandler).
    Agent,
    /// `market_signal`: [`MarketSignalEventHandler`](crate::MarketSignalEventHandler).
    MarketSignal,
    /// `system`: [`SystemEventHandler`](crate::SystemEventHandler).
    System,
    /// `audit`: [`AuditTrailHandler`](crate::AuditTrailHandler).
    Audit,
}

impl DomainHandlerKind {
    /// Every domain handler, in configuration order: what `ENABLED_EVENT_HANDLERS=all` turns
    /// on.
    pub const ALL: [DomainHandlerKind; 6] = [
        DomainHandlerKind::Opportunity,
        DomainHandlerKind::User,
        DomainHandlerKind::Agent,
        DomainHandlerKind::MarketSignal,
        DomainHandlerKind::System,
        DomainHandlerKind::Audit,
    ];

    /// The configuration name, which is also the handler's name and its view's name.
    pub fn as_str(self) -> &'static str {
        match self {
            DomainHandlerKind::Opportunity => "opportunity",
            DomainHandlerKind::User => "user",
            DomainHandlerKind::Agent => "agent",
            DomainHandlerKind::MarketSignal => "market_signal",
            DomainHandlerKind::System => "system",
            DomainHandlerKind::Audit => "audit",
        }
    }

    /// The allowed names, comma-separated, for messages.
    pub fn allowed() -> String {
        Self::ALL.map(Self::as_str).join(", ")
    }
}

impl fmt::Display for DomainHandlerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DomainHandlerKind {
    type Err = Error;

    /// Names are case-sensitive, as the original's were; surrounding spaces are ignored.
    fn from_str(name: &str) -> Result<Self, Error> {
        let trimmed = name.trim();
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == trimmed)
            .ok_or_else(|| Error::UnknownHandler {
                name: name.to_owned(),
                allowed: Self::allowed(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_list_the_allowed_ones() {
        for kind in DomainHandlerKind::ALL {
            assert_eq!(kind.to_string().parse::<DomainHandlerKind>().unwrap(), kind);
        }
        assert_eq!(
            " agent ".parse::<DomainHandlerKind>().unwrap(),
            DomainHandlerKind::Agent
        );
        let err = "Agent"
            .parse::<DomainHandlerKind>()
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"Agent\""), "{err}");
        assert!(
            err.contains("opportunity, user, agent, market_signal, system, audit"),
            "{err}"
        );
    }
}
