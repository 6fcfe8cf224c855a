//! How the run's handlers behave: a [`Profile`] per handler, a [`Behaviour`] per event drawn
//! from the seed, the handler, the publisher and the event's sequence number (so a consumer
//! process decides exactly as the test process would), and [`ChaosHandler`], which acts it
//! out and records every call.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use event_core::{Event, EventHandler, EventId, HandlerError};
use fastrand::Rng;
use serde::{Deserialize, Serialize};

use super::history::{DeliveryRecord, Outcome, now_ms};

/// Retries per event (`EVENT_MAX_RETRIES`) in every run.
pub(crate) const MAX_RETRIES: u32 = 3;

/// The role of a handler (`h0` of `h0-1a2b3c`): what its behaviour is drawn from.
pub(crate) fn role(name: &str) -> &str {
    name.split('-').next().unwrap_or(name)
}

/// The text of a deliberate panic, so the run's panic hook keeps it off the terminal.
pub(crate) const DELIBERATE_PANIC: &str = "chaos: deliberate panic";

/// What a handler does with events, per ten thousand events.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Profile {
    /// Fail transiently 1 to `MAX_RETRIES` times, then succeed.
    pub(crate) transient: u32,
    /// Fail permanently, every time: the event ends in the dead letters.
    pub(crate) permanent: u32,
    /// Fail permanently on the first call in a consumer, succeed after (a redrive succeeds).
    pub(crate) permanent_once: u32,
    /// Panic on the first call in a consumer, succeed after.
    pub(crate) panic_once: u32,
    /// Take longer than the takeover time, then succeed.
    pub(crate) slow: u32,
}

impl Profile {
    /// A random profile; `slow` handlers also get some slow calls.
    pub(crate) fn draw(rng: &mut Rng, slow: bool) -> Self {
        Self {
            transient: rng.u32(0..800),
            permanent: rng.u32(0..200),
            permanent_once: rng.u32(0..200),
            panic_once: rng.u32(0..100),
            slow: if slow { rng.u32(5..30) } else { 0 },
        }
    }

    /// What the handler does with the event `seq` of `publisher`.
    pub(crate) fn decide(&self, seed: u64, handler: &str, publisher: &str, seq: u64) -> Behaviour {
        let h = mix(
            seed,
            &[handler.as_bytes(), publisher.as_bytes(), &seq.to_le_bytes()],
        );
        let mut roll = (h % 10_000) as u32;
        let k = 1 + ((h >> 32) % u64::from(MAX_RETRIES)) as u32;
        for (share, behaviour) in [
            (self.transient, Behaviour::Transient(k)),
            (self.permanent, Behaviour::Permanent),
            (self.permanent_once, Behaviour::PermanentOnce),
            (self.panic_once, Behaviour::PanicOnce),
            (self.slow, Behaviour::Slow),
        ] {
            if roll < share {
                return behaviour;
            }
            roll -= share;
        }
        Behaviour::Succeed
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pct = |n: u32| f64::from(n) / 100.0;
        write!(
            f,
            "transient {:.1}%, permanent {:.1}%, permanent once {:.1}%, panic once {:.1}%, slow {:.2}%",
            pct(self.transient),
            pct(self.permanent),
            pct(self.permanent_once),
            pct(self.panic_once),
            pct(self.slow)
        )
    }
}

/// FNV-1a over the parts, then a final mix: the same in every process and build.
fn mix(seed: u64, parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for part in parts {
        for b in *part {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

/// What a handler does with one event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Behaviour {
    Succeed,
    Transient(u32),
    Permanent,
    PermanentOnce,
    PanicOnce,
    Slow,
}

/// Where a [`ChaosHandler`] records its calls: the history in the test process, a file in a
/// consumer process.
pub(crate) trait DeliveryLog: Send + Sync + 'static {
    fn record(&self, delivery: DeliveryRecord);
}

/// The event's tag: publisher, sequence number, as the publishers write them.
pub(crate) fn tag_of(event: &Event) -> Option<(String, u64)> {
    let publisher = event.payload.get("publisher")?.as_str()?.to_string();
    let seq = event.payload.get("seq")?.as_u64()?;
    Some((publisher, seq))
}

/// A handler of the run: one per subscription, named after the handler, labelled with its
/// consumer.
pub(crate) struct ChaosHandler {
    name: String,
    consumer: String,
    seed: u64,
    profile: Profile,
    slow_call: Duration,
    attempts: Mutex<HashMap<EventId, u32>>,
    log: Arc<dyn DeliveryLog>,
}

impl ChaosHandler {
    pub(crate) fn new(
        name: &str,
        consumer: &str,
        seed: u64,
        profile: Profile,
        slow_call: Duration,
        log: Arc<dyn DeliveryLog>,
    ) -> Arc<Self> {
        Arc::new(Self {
            name: name.to_string(),
            consumer: consumer.to_string(),
            seed,
            profile,
            slow_call,
            attempts: Mutex::new(HashMap::new()),
            log,
        })
    }
}

#[async_trait]
impl EventHandler for ChaosHandler {
    fn name(&self) -> &str {
        &self.name
    }

    async fn handle(&self, event: &Event) -> Result<(), HandlerError> {
        let started_ms = now_ms();
        let attempt = {
            let mut attempts = self.attempts.lock().unwrap_or_else(|p| p.into_inner());
            let n = attempts.entry(event.id).or_default();
            *n += 1;
            *n
        };
        let tag = tag_of(event);
        let behaviour = tag.as_ref().map_or(Behaviour::Succeed, |(publisher, seq)| {
            self.profile
                .decide(self.seed, role(&self.name), publisher, *seq)
        });
        let outcome = match behaviour {
            Behaviour::Succeed => Outcome::Handled,
            Behaviour::Transient(k) if attempt <= k => Outcome::Transient,
            Behaviour::Transient(_) => Outcome::Handled,
            Behaviour::Permanent => Outcome::Permanent,
            Behaviour::PermanentOnce if attempt == 1 => Outcome::Permanent,
            Behaviour::PermanentOnce => Outcome::Handled,
            Behaviour::PanicOnce if attempt == 1 => Outcome::Panicked,
            Behaviour::PanicOnce => Outcome::Handled,
            Behaviour::Slow => {
                tokio::time::sleep(self.slow_call).await;
                Outcome::Handled
            }
        };
        self.log.record(DeliveryRecord {
            handler: self.name.clone(),
            consumer: self.consumer.clone(),
            event_id: event.id,
            event_type: event.event_type.as_str().to_string(),
            key: event.partition_key.clone(),
            publisher: tag.as_ref().map(|(p, _)| p.clone()),
            seq: tag.map(|(_, s)| s),
            attempt,
            outcome,
            started_ms,
            finished_ms: now_ms(),
        });
        match outcome {
            Outcome::Handled => Ok(()),
            Outcome::Transient => Err(HandlerError::transient(format!(
                "chaos: transient failure, attempt {attempt}"
            ))),
            Outcome::Permanent => Err(HandlerError::permanent("chaos: permanent failure")),
            Outcome::Panicked => panic!("{DELIBERATE_PANIC} in {}", self.name),
        }
    }

    async fn on_error(&self, _event: &Event, _error: &HandlerError, _attempt: u32) {
        // The history has every failure; the default warning per failure would flood the
        // terminal.
    }
}

/// Keeps deliberate panics off the terminal; every other panic is printed as before.
pub(crate) fn quiet_deliberate_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let text = info
                .payload()
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| info.payload().downcast_ref::<&str>().copied())
                .unwrap_or("");
            // Handlers' deliberate panics, and the consumer-loop panics of
            // `event_core::fault::panic_loop_once`, which the run injects and checks itself.
            if !text.starts_with(DELIBERATE_PANIC) && !text.starts_with("fault injected:") {
                previous(info);
            }
        }));
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_follow_the_seed_and_the_profile() {
        let profile = Profile {
            transient: 5000,
            permanent: 0,
            permanent_once: 0,
            panic_once: 0,
            slow: 0,
        };
        let one: Vec<Behaviour> = (0..200).map(|s| profile.decide(1, "h", "p0", s)).collect();
        let again: Vec<Behaviour> = (0..200).map(|s| profile.decide(1, "h", "p0", s)).collect();
        assert_eq!(one, again);
        let transient = one
            .iter()
            .filter(|b| matches!(b, Behaviour::Transient(k) if (1..=MAX_RETRIES).contains(k)))
            .count();
        assert!((60..140).contains(&transient), "{transient} of 200");
        let other: Vec<Behaviour> = (0..200).map(|s| profile.decide(2, "h", "p0", s)).collect();
        assert_ne!(one, other);
        assert!((0..100).all(|s| Profile::default().decide(3, "h", "p", s) == Behaviour::Succeed));
    }
}
