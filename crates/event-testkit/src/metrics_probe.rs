//! A metrics recorder for the trials: installed once per test process, it keeps every
//! counter and the number of values each histogram recorded, and reads them without resetting
//! them (trials run concurrently and each reads only its own labels).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::bail;
use metrics::{
    Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};

/// Counts what a histogram recorded.
#[derive(Debug, Default)]
struct Recorded(AtomicU64);

impl HistogramFn for Recorded {
    fn record(&self, _value: f64) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// The process's probe recorder.
#[derive(Debug, Default)]
pub(crate) struct Probe {
    counters: Mutex<HashMap<Key, Arc<AtomicU64>>>,
    gauges: Mutex<HashMap<Key, Arc<AtomicU64>>>,
    histograms: Mutex<HashMap<Key, Arc<Recorded>>>,
}

fn slot<T: Default>(map: &Mutex<HashMap<Key, Arc<T>>>, key: &Key) -> Arc<T> {
    map.lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(key.clone())
        .or_default()
        .clone()
}

impl Recorder for Probe {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(slot(&self.counters, key))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(slot(&self.gauges, key))
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(slot(&self.histograms, key))
    }
}

static PROBE: OnceLock<Result<&'static Probe, String>> = OnceLock::new();

impl Probe {
    /// The probe, installed as the process's recorder on first use.
    ///
    /// # Errors
    /// When another recorder was installed first: the trial cannot see the metrics.
    pub(crate) fn installed() -> anyhow::Result<&'static Probe> {
        let probe = PROBE.get_or_init(|| {
            let probe: &'static Probe = Box::leak(Box::default());
            metrics::set_global_recorder(probe)
                .map(|()| probe)
                .map_err(|e| {
                    format!("another metrics recorder is installed in this test process: {e}")
                })
        });
        match probe {
            Ok(probe) => Ok(probe),
            Err(e) => bail!("{e}"),
        }
    }

    /// The sum of the counters named `name` whose labels include every one of `labels`.
    pub(crate) fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        sum(&self.counters, name, labels, |c| c.load(Ordering::Relaxed))
    }

    /// How many values the histograms named `name` with `labels` recorded.
    pub(crate) fn recorded(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        sum(&self.histograms, name, labels, |h| {
            h.0.load(Ordering::Relaxed)
        })
    }

    /// The values of label `label` among the counters named `name` with `labels`.
    pub(crate) fn label_values(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        label: &str,
    ) -> Vec<String> {
        let counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        let mut values: Vec<String> = counters
            .keys()
            .filter(|k| matches(k, name, labels))
            .filter_map(|k| {
                k.labels()
                    .find(|l| l.key() == label)
                    .map(|l| l.value().to_string())
            })
            .collect();
        values.sort();
        values.dedup();
        values
    }
}

fn matches(key: &Key, name: &str, labels: &[(&str, &str)]) -> bool {
    key.name() == name
        && labels
            .iter()
            .all(|(k, v)| key.labels().any(|l| l.key() == *k && l.value() == *v))
}

fn sum<T>(
    map: &Mutex<HashMap<Key, Arc<T>>>,
    name: &str,
    labels: &[(&str, &str)],
    value: impl Fn(&T) -> u64,
) -> u64 {
    map.lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter(|(k, _)| matches(k, name, labels))
        .map(|(_, v)| value(v))
        .sum()
}
