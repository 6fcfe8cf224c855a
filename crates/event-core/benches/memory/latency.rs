//! Latency: single events at a steady rate, through the bus or through a raw channel.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use event_core::{Event, EventBus, EventHandler, HandlerError};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::{EVENT_TYPE, LATENCY_DURATION, LATENCY_RATE, LATENCY_TICK, Setup};

/// Records, for each event, the time from its publish (the `sent_ns` payload field, in
/// nanoseconds since `base`) to its handling, into a vector allocated beforehand.
struct LatencyHandler {
    base: Instant,
    samples: Vec<AtomicU64>,
    next: AtomicUsize,
}

#[async_trait]
impl EventHandler for LatencyHandler {
    fn name(&self) -> &str {
        "latency"
    }

    async fn handle(&self, event: &Event) -> Result<(), HandlerError> {
        let now = self.base.elapsed().as_nanos() as u64;
        let sent = event
            .payload
            .get("sent_ns")
            .and_then(Value::as_u64)
            .ok_or_else(|| HandlerError::permanent("event without sent_ns"))?;
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        if let Some(slot) = self.samples.get(i) {
            slot.store(now.saturating_sub(sent), Ordering::Relaxed);
        }
        Ok(())
    }
}

/// What a latency run measured: sorted latencies in nanoseconds and the rate achieved.
pub(crate) struct Latencies {
    pub(crate) sorted: Vec<u64>,
    pub(crate) rate: f64,
}

impl Latencies {
    pub(crate) fn percentile_us(&self, per_mille: usize) -> f64 {
        let i = (self.sorted.len() * per_mille / 1000).min(self.sorted.len() - 1);
        self.sorted[i] as f64 / 1000.0
    }

    pub(crate) fn max_us(&self) -> f64 {
        self.sorted.last().map_or(0.0, |&ns| ns as f64 / 1000.0)
    }

    pub(crate) fn summary(&self) -> String {
        format!(
            "{} events at {:.0} events/s: p50 {:.1} µs, p99 {:.1} µs, p99.9 {:.1} µs, max {:.1} µs",
            self.sorted.len(),
            self.rate,
            self.percentile_us(500),
            self.percentile_us(990),
            self.percentile_us(999),
            self.max_us()
        )
    }
}

/// Latency over several runs: each percentile is the median of the runs' values, so one run
/// disturbed by the machine does not decide the figure; the worst run's p99 and the largest
/// latency of all runs show the spread.
pub(crate) struct LatencySummary {
    pub(crate) p50: f64,
    pub(crate) p99: f64,
    pub(crate) p999: f64,
    pub(crate) worst_p99: f64,
    pub(crate) max: f64,
    pub(crate) rate: f64,
}

impl LatencySummary {
    pub(crate) fn of(runs: &[Latencies]) -> Self {
        let median = |f: &dyn Fn(&Latencies) -> f64| {
            let mut values: Vec<f64> = runs.iter().map(f).collect();
            values.sort_by(f64::total_cmp);
            values[values.len() / 2]
        };
        let most = |f: &dyn Fn(&Latencies) -> f64| runs.iter().map(f).fold(0.0, f64::max);
        LatencySummary {
            p50: median(&|l| l.percentile_us(500)),
            p99: median(&|l| l.percentile_us(990)),
            p999: median(&|l| l.percentile_us(999)),
            worst_p99: most(&|l| l.percentile_us(990)),
            max: most(&|l| l.max_us()),
            rate: runs.iter().map(|l| l.rate).sum::<f64>() / runs.len() as f64,
        }
    }
}

/// Where the latency publisher sends its events.
pub(crate) enum LatencyPath {
    /// `MemoryBus::publish` to a subscribed [`LatencyHandler`].
    Bus,
    /// The raw reference: an unbounded `tokio::sync::mpsc` channel to a task that hands each
    /// event to the same [`LatencyHandler`].
    Channel,
}

/// Sends single events at `LATENCY_RATE` for `LATENCY_DURATION` from a thread of its own that
/// sleeps between bursts, and returns the latencies recorded by the handler.
pub(crate) fn latency(
    runtime: &tokio::runtime::Runtime,
    setup: &Setup,
    path: &LatencyPath,
) -> Latencies {
    let total = (LATENCY_RATE as f64 * LATENCY_DURATION.as_secs_f64()) as usize;
    let base = Instant::now();
    let handler = Arc::new(LatencyHandler {
        base,
        samples: (0..total).map(|_| AtomicU64::new(0)).collect(),
        next: AtomicUsize::new(0),
    });
    let events: Vec<Event> = (0..total)
        .map(|_| {
            Event::builder(EVENT_TYPE, "bench")
                .field("sent_ns", 0u64)
                .build()
                .expect("a valid event")
        })
        .collect();

    let bus = setup.bus();
    let mut send: Box<dyn FnMut(Event) + Send> = match path {
        LatencyPath::Bus => {
            runtime
                .block_on(bus.subscribe(setup.spec("latency"), handler.clone()))
                .expect("subscribe");
            let (handle, bus) = (runtime.handle().clone(), bus.clone());
            Box::new(move |event| {
                handle.block_on(bus.publish(event)).expect("publish");
            })
        }
        LatencyPath::Channel => {
            let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
            let handler = handler.clone();
            runtime.spawn(async move {
                while let Some(event) = rx.recv().await {
                    handler.handle(&event).await.expect("a timed event");
                }
            });
            Box::new(move |event| {
                tx.send(event)
                    .expect("the consumer runs until the sender is dropped");
            })
        }
    };

    let publisher = std::thread::spawn(move || {
        let started = Instant::now();
        let mut events = events.into_iter();
        let mut sent = 0usize;
        while sent < total {
            let due = ((started.elapsed().as_secs_f64() * LATENCY_RATE as f64) as usize).min(total);
            for mut event in events.by_ref().take(due.saturating_sub(sent)) {
                if let Some(slot) = event.payload.get_mut("sent_ns") {
                    *slot = Value::from(base.elapsed().as_nanos() as u64);
                }
                send(event);
                sent += 1;
            }
            std::thread::sleep(LATENCY_TICK);
        }
        total as f64 / started.elapsed().as_secs_f64()
    });
    let rate = publisher.join().expect("publisher thread");

    let deadline = Instant::now() + Duration::from_secs(10);
    while handler.next.load(Ordering::Relaxed) < total && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    runtime.block_on(bus.shutdown()).expect("shutdown");
    let recorded = handler.next.load(Ordering::Relaxed).min(total);
    assert_eq!(
        recorded, total,
        "every event sent reaches the handler within 10 s"
    );
    let mut sorted: Vec<u64> = handler.samples[..recorded]
        .iter()
        .map(|s| s.load(Ordering::Relaxed))
        .collect();
    sorted.sort_unstable();
    Latencies { sorted, rate }
}
