//! [`Plan`]: the workload of a run, drawn from its seed: event types, handlers (their types,
//! where they start, how they behave), partition keys, publishing rates, and the schedule of
//! operations and faults.

use std::time::Duration;

use event_core::EventType;
use fastrand::Rng;
use serde::{Deserialize, Serialize};

use super::backend::{Abilities, Fault};
use super::behaviour::Profile;

/// Event types in the pool the handlers draw from.
pub(crate) const TYPE_POOL: usize = 6;

/// Where a handler's group starts. For [`StartKind::Time`] the time is taken while the
/// backlog is published, so part of the backlog is owed and part is not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum StartKind {
    Earliest,
    Latest,
    Time,
}

/// One handler of the run.
#[derive(Clone, Debug)]
pub(crate) struct HandlerPlan {
    pub(crate) name: String,
    /// Indexes into [`Plan::types`].
    pub(crate) types: Vec<usize>,
    pub(crate) start: StartKind,
    pub(crate) concurrency: usize,
    pub(crate) profile: Profile,
    /// The handler whose group several consumers share (a second subscription or bus, and
    /// consumer processes).
    pub(crate) shared: bool,
}

/// Partition keys: a few hot keys take a large share, some events have no key.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KeySpace {
    pub(crate) keys: usize,
    pub(crate) hot: usize,
    /// Per thousand events: on a hot key, and without a key.
    pub(crate) hot_per_mille: u32,
    pub(crate) keyless_per_mille: u32,
}

impl KeySpace {
    /// A key for the next event, or none.
    pub(crate) fn pick(&self, rng: &mut Rng) -> Option<String> {
        let roll = rng.u32(0..1000);
        if roll < self.keyless_per_mille {
            None
        } else if roll < self.keyless_per_mille + self.hot_per_mille {
            Some(format!("hot{}", rng.usize(0..self.hot)))
        } else {
            Some(format!("k{}", rng.usize(0..self.keys)))
        }
    }
}

/// Something the run does at a time.
#[derive(Clone, Debug)]
pub(crate) enum Operation {
    /// Redrive a handler's dead letters: all, or a random part.
    Redrive { handler: usize, all: bool },
    /// Purge a random part of a handler's dead letters.
    Purge { handler: usize },
    /// Unsubscribe a handler's subscription in the test process and subscribe it again after
    /// `away`.
    Resubscribe { handler: usize, away: Duration },
    /// Write foreign entries into an event type's log.
    Foreign { event_type: usize },
}

/// An operation or a fault, at an offset from the start of the run.
#[derive(Clone, Debug)]
pub(crate) struct Scheduled<T> {
    pub(crate) at: Duration,
    pub(crate) what: T,
}

/// Everything a run does, drawn from the seed.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    pub(crate) seed: u64,
    pub(crate) duration: Duration,
    /// `EVENT_BATCH_SIZE`.
    pub(crate) batch_size: usize,
    pub(crate) types: Vec<EventType>,
    pub(crate) handlers: Vec<HandlerPlan>,
    pub(crate) publishers: usize,
    /// Events per type published before any handler subscribes.
    pub(crate) backlog_per_type: usize,
    pub(crate) events_per_second: u32,
    pub(crate) keys: KeySpace,
    /// Consumer processes of the shared handler (0 where the backend has none).
    pub(crate) consumer_processes: usize,
    pub(crate) operations: Vec<Scheduled<Operation>>,
    pub(crate) faults: Vec<Scheduled<(Fault, u64)>>,
}

impl Plan {
    /// The plan of the run with this seed on a backend with these abilities. Handler names
    /// end in `tag` (`h0-{tag}`): test-only faults of `event_core::fault` are armed by
    /// handler name for the whole process, so runs in one process must not share names. What
    /// a handler does is decided by its role (`h0`), so a seed replays the same behaviour.
    pub(crate) fn new(seed: u64, duration: Duration, abilities: &Abilities, tag: &str) -> Self {
        let mut rng = Rng::with_seed(seed);
        let batch_size = [20, 50, 100][rng.usize(0..3)];
        let types = (0..TYPE_POOL)
            .map(|i| {
                EventType::new(format!("chaos.t{i}"))
                    .unwrap_or_else(|e| panic!("chaos.t{i} is a valid event type: {e}"))
            })
            .collect();
        let handler_count = rng.usize(3..=5);
        let mut handlers = (0..handler_count)
            .map(|i| HandlerPlan::draw(i, tag, &mut rng))
            .collect::<Vec<_>>();
        let rate = abilities.events_per_second.max(10);
        let events_per_second = rng.u32(rate * 7 / 10..=rate * 13 / 10);
        for handler in &mut handlers {
            handler.fit_slow_calls(events_per_second, abilities.slow_call);
        }
        let keys = KeySpace {
            keys: rng.usize(100..400),
            hot: rng.usize(2..5),
            hot_per_mille: rng.u32(200..450),
            keyless_per_mille: rng.u32(50..150),
        };
        let consumer_processes = if abilities.consumer_processes {
            rng.usize(1..=2)
        } else {
            0
        };
        let operations = schedule_operations(&mut rng, duration, &handlers);
        let faults = schedule_faults(&mut rng, duration, abilities);
        Self {
            seed,
            duration,
            batch_size,
            types,
            handlers,
            publishers: rng.usize(2..=4),
            backlog_per_type: batch_size * rng.usize(10..=12),
            events_per_second,
            keys,
            consumer_processes,
            operations,
            faults,
        }
    }

    /// The names of a handler's types.
    pub(crate) fn types_of(&self, handler: &HandlerPlan) -> Vec<EventType> {
        handler
            .types
            .iter()
            .map(|i| self.types[*i].clone())
            .collect()
    }

    /// A few lines describing the plan, printed at the start of a run.
    pub(crate) fn describe(&self) -> String {
        let mut lines = vec![format!(
            "  EVENT_BATCH_SIZE {}, backlog {} events per type, {} publishers at ~{} events/s, {} keys ({} hot), {} consumer processes",
            self.batch_size,
            self.backlog_per_type,
            self.publishers,
            self.events_per_second,
            self.keys.keys,
            self.keys.hot,
            self.consumer_processes
        )];
        for h in &self.handlers {
            let types: Vec<&str> = h.types.iter().map(|i| self.types[*i].as_str()).collect();
            lines.push(format!(
                "  handler {}{}: {} from {:?}, concurrency {}, {}",
                h.name,
                if h.shared { " (shared group)" } else { "" },
                types.join(","),
                h.start,
                h.concurrency,
                h.profile
            ));
        }
        lines.push(format!(
            "  operations: {}",
            listing(&self.operations, |op| format!("{op:?}"))
        ));
        lines.push(format!(
            "  faults: {}",
            listing(&self.faults, |(f, _)| format!("{f:?}"))
        ));
        lines.join("\n")
    }
}

/// The first entries of a schedule with their times, and how many more there are.
fn listing<T>(schedule: &[Scheduled<T>], name: impl Fn(&T) -> String) -> String {
    const SHOWN: usize = 12;
    let mut items: Vec<String> = schedule
        .iter()
        .take(SHOWN)
        .map(|s| format!("{}@{}s", name(&s.what), s.at.as_secs()))
        .collect();
    if schedule.len() > SHOWN {
        items.push(format!("and {} more", schedule.len() - SHOWN));
    }
    items.join(", ")
}

impl HandlerPlan {
    fn draw(i: usize, tag: &str, rng: &mut Rng) -> Self {
        let shared = i == 0;
        // The shared handler reads at least two types: one subscription over several streams
        // or topics, each with a backlog, is where reads overrun what was reserved.
        let count = if shared {
            rng.usize(2..=5)
        } else {
            rng.usize(1..=5)
        };
        let mut pool: Vec<usize> = (0..TYPE_POOL).collect();
        rng.shuffle(&mut pool);
        let mut types: Vec<usize> = pool.into_iter().take(count).collect();
        types.sort_unstable();
        let start = if shared {
            StartKind::Earliest
        } else {
            [StartKind::Earliest, StartKind::Latest, StartKind::Time][rng.usize(0..3)]
        };
        Self {
            name: format!("h{i}-{tag}"),
            types,
            start,
            concurrency: [1, 4, 16][rng.usize(0..3)],
            profile: Profile::draw(rng, i == 1),
            shared,
        }
    }
}

impl HandlerPlan {
    /// Caps the share of slow calls so that they keep the handler's lanes busy a quarter of
    /// the time at most, at the rate its types are published (at least one call in 10,000
    /// stays slow). Above its capacity a handler falls behind for ever: a long run would end
    /// with a backlog that no bus could deliver in time, which says nothing about the bus.
    fn fit_slow_calls(&mut self, events_per_second: u32, slow_call: Duration) {
        let per_second = f64::from(events_per_second) * self.types.len() as f64 / TYPE_POOL as f64;
        let busy_per_call = per_second * slow_call.as_secs_f64() / 10_000.0;
        if busy_per_call > 0.0 {
            let fits = (0.25 * self.concurrency as f64 / busy_per_call).floor() as u32;
            self.profile.slow = self.profile.slow.min(fits.max(1));
        }
    }
}

/// A time in the run's middle part (the start settles the subscriptions, the end lets the
/// last operations take effect).
fn moment(rng: &mut Rng, duration: Duration, from: f64, to: f64) -> Duration {
    duration.mul_f64(from + (to - from) * rng.f64())
}

fn schedule_operations(
    rng: &mut Rng,
    duration: Duration,
    handlers: &[HandlerPlan],
) -> Vec<Scheduled<Operation>> {
    let minutes = (duration.as_secs() / 60).max(1) as usize;
    let mut ops = Vec::new();
    for _ in 0..2 * minutes {
        ops.push(Scheduled {
            at: moment(rng, duration, 0.3, 0.8),
            what: Operation::Redrive {
                handler: rng.usize(0..handlers.len()),
                all: rng.bool(),
            },
        });
    }
    for _ in 0..minutes {
        ops.push(Scheduled {
            at: moment(rng, duration, 0.3, 0.8),
            what: Operation::Purge {
                handler: rng.usize(0..handlers.len()),
            },
        });
        ops.push(Scheduled {
            at: moment(rng, duration, 0.1, 0.7),
            what: Operation::Resubscribe {
                // Not the shared handler: its group already has several consumers.
                handler: rng.usize(1..handlers.len()),
                away: Duration::from_millis(rng.u64(500..3000)),
            },
        });
    }
    for _ in 0..3 * minutes {
        ops.push(Scheduled {
            at: moment(rng, duration, 0.05, 0.8),
            what: Operation::Foreign {
                event_type: rng.usize(0..TYPE_POOL),
            },
        });
    }
    ops.sort_by_key(|s| s.at);
    ops
}

fn schedule_faults(
    rng: &mut Rng,
    duration: Duration,
    abilities: &Abilities,
) -> Vec<Scheduled<(Fault, u64)>> {
    let usable: Vec<Fault> = abilities
        .faults
        .iter()
        .copied()
        .filter(|f| {
            abilities.consumer_processes
                || !matches!(f, Fault::KillConsumerProcess | Fault::PauseConsumerProcess)
        })
        .collect();
    if usable.is_empty() {
        return Vec::new();
    }
    // One fault per 20 seconds, every usable class at least once when the run is long enough.
    let count = (duration.as_secs() / 20).max(1) as usize;
    let mut classes: Vec<Fault> = usable.clone();
    rng.shuffle(&mut classes);
    let mut faults: Vec<Scheduled<(Fault, u64)>> = (0..count)
        .map(|i| {
            let fault = if i < classes.len() {
                classes[i]
            } else {
                usable[rng.usize(0..usable.len())]
            };
            Scheduled {
                at: moment(rng, duration, 0.1, 0.8),
                what: (fault, rng.u64(..)),
            }
        })
        .collect();
    faults.sort_by_key(|s| s.at);
    faults
}

#[cfg(test)]
mod tests {
    use super::*;

    fn abilities() -> Abilities {
        Abilities {
            faults: vec![Fault::KillConsumerProcess, Fault::ClientKill],
            consumer_processes: true,
            second_instance: true,
            order_survives_takeover: false,
            rebalance_redelivers: false,
            takeover_after: Duration::from_secs(2),
            slow_call: Duration::from_secs(3),
            events_per_second: 300,
            default_seconds: 60,
            quiescence_deadline: Duration::from_secs(60),
        }
    }

    #[test]
    fn a_seed_gives_one_plan() {
        let a = Plan::new(7, Duration::from_secs(60), &abilities(), "x");
        let b = Plan::new(7, Duration::from_secs(60), &abilities(), "x");
        assert_eq!(a.describe(), b.describe());
        assert!(a.handlers[0].shared && a.handlers[0].types.len() >= 2);
        assert!(a.backlog_per_type >= 10 * a.batch_size);
        assert!((3..=5).contains(&a.handlers.len()));
        assert!(!a.faults.is_empty());
    }

    /// The 30-minute memory soak of seed 14715619266405708568 ended with one handler 780,000
    /// events behind: concurrency 1, a slow share of 0.17%, 1.5 s a slow call, at ~790 events
    /// a second: busy twice the time it had. Every handler's slow calls now fit its lanes.
    #[test]
    fn slow_calls_fit_every_handlers_capacity() {
        let mut memory = abilities();
        memory.slow_call = Duration::from_millis(1500);
        memory.events_per_second = 1500;
        for seed in [14715619266405708568, 1, 2, 3, 4, 5, 6, 7, 8, 9] {
            let plan = Plan::new(seed, Duration::from_secs(1800), &memory, "x");
            for h in &plan.handlers {
                let per_second =
                    f64::from(plan.events_per_second) * h.types.len() as f64 / TYPE_POOL as f64;
                let busy = per_second * f64::from(h.profile.slow) / 10_000.0
                    * memory.slow_call.as_secs_f64();
                assert!(
                    busy <= 0.25 * h.concurrency as f64 || h.profile.slow <= 1,
                    "seed {seed}, {}: slow calls keep {busy:.2} lanes busy of {}",
                    h.name,
                    h.concurrency
                );
            }
        }
    }
}
