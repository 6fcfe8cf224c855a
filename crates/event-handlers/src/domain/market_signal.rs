//! [`MarketSignalEventHandler`]: the signal funnel (detected, processed, clustered), the
//! confidence distribution, and the clusters with their members.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use event_core::{Event, EventType, HandlerError};
use serde::Serialize;
use time::OffsetDateTime;

use super::payloads::{SignalClustered, SignalDetected, SignalProcessed, decode};
use super::{RecentIds, lock};

/// One bucket of the confidence distribution: `[from, to)` (the last includes 1.0).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct ConfidenceBucket {
    /// Lower bound, inclusive.
    pub from: f64,
    /// Upper bound, exclusive (inclusive for the last bucket).
    pub to: f64,
    /// Signals detected with a confidence in the bucket.
    pub count: u64,
}

/// One tracked signal.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct SignalSummary {
    /// The id.
    pub signal_id: String,
    /// Where it came from (reddit, hackernews, ...), if its detection was seen.
    pub source: Option<String>,
    /// The kind of signal.
    pub signal_type: Option<String>,
    /// Detection confidence, 0 to 1.
    pub confidence: Option<f64>,
    /// When it was detected.
    #[serde(with = "time::serde::rfc3339::option")]
    pub detected_at: Option<OffsetDateTime>,
    /// Whether it was processed.
    pub processed: bool,
    /// Quality score from processing.
    pub quality_score: Option<f64>,
    /// Keywords extracted by processing.
    pub keywords: Vec<String>,
    /// The cluster it belongs to: of the cluster events naming it, the latest published.
    pub cluster_id: Option<String>,
    /// When it was placed in that cluster.
    #[serde(with = "time::serde::rfc3339::option")]
    pub clustered_at: Option<OffsetDateTime>,
}

/// One cluster of signals.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct SignalCluster {
    /// The id.
    pub cluster_id: String,
    /// What its signals have in common.
    pub theme: String,
    /// Its members' ids.
    pub members: Vec<String>,
    /// The count the publisher gave (`len(signal_ids)` unless said otherwise).
    pub signal_count: usize,
    /// When it was (last) clustered.
    #[serde(with = "time::serde::rfc3339")]
    pub clustered_at: OffsetDateTime,
}

/// The signal funnel: the view of [`MarketSignalEventHandler`].
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct SignalFunnel {
    /// Signals detected.
    pub detected: u64,
    /// Signals processed.
    pub processed: u64,
    /// Distinct signals placed in a cluster.
    pub clustered: u64,
    /// Clusters formed.
    pub cluster_count: usize,
    /// Mean detection confidence.
    pub mean_confidence: Option<f64>,
    /// Mean quality score of processed signals that had one.
    pub mean_quality_score: Option<f64>,
    /// Detection confidence in five buckets of 0.2.
    pub confidence_distribution: Vec<ConfidenceBucket>,
    /// Signals detected by source.
    pub by_source: BTreeMap<String, u64>,
    /// Signals detected by type.
    pub by_type: BTreeMap<String, u64>,
    /// The clusters, by id.
    pub clusters: BTreeMap<String, SignalCluster>,
    /// The most recent signals (up to the view capacity), by id.
    pub signals: BTreeMap<String, SignalSummary>,
}

impl SignalFunnel {
    /// The tracked signal with this id.
    pub fn signal(&self, id: &str) -> Option<&SignalSummary> {
        self.signals.get(id)
    }
}

const BUCKETS: usize = 5;

#[derive(Debug)]
struct FunnelState {
    seen: RecentIds,
    detected: u64,
    processed: u64,
    clustered: u64,
    confidence_total: f64,
    quality_total: f64,
    quality_count: u64,
    buckets: [u64; BUCKETS],
    by_source: BTreeMap<String, u64>,
    by_type: BTreeMap<String, u64>,
    clusters: BTreeMap<String, SignalCluster>,
    signals: BTreeMap<String, SignalSummary>,
    order: VecDeque<String>,
}

/// Keeps the signal funnel. Handles `signal.detected`, `signal.processed` and
/// `signal.clustered`.
pub struct MarketSignalEventHandler {
    capacity: usize,
    state: Mutex<FunnelState>,
}

impl std::fmt::Debug for MarketSignalEventHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MarketSignalEventHandler")
            .finish_non_exhaustive()
    }
}

impl MarketSignalEventHandler {
    /// The handler's name (and consumer group suffix).
    pub const NAME: &'static str = "market_signal";

    /// A handler tracking at most `capacity` individual signals (counters count them all).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            state: Mutex::new(FunnelState {
                seen: RecentIds::new(crate::view::RECENT_IDS),
                detected: 0,
                processed: 0,
                clustered: 0,
                confidence_total: 0.0,
                quality_total: 0.0,
                quality_count: 0,
                buckets: [0; BUCKETS],
                by_source: BTreeMap::new(),
                by_type: BTreeMap::new(),
                clusters: BTreeMap::new(),
                signals: BTreeMap::new(),
                order: VecDeque::new(),
            }),
        }
    }

    /// The event types it handles.
    pub fn event_types() -> Vec<EventType> {
        vec![
            EventType::SIGNAL_DETECTED,
            EventType::SIGNAL_PROCESSED,
            EventType::SIGNAL_CLUSTERED,
        ]
    }

    /// The funnel as it is now.
    pub fn funnel(&self) -> SignalFunnel {
        let state = lock(&self.state);
        let width = 1.0 / BUCKETS as f64;
        SignalFunnel {
            detected: state.detected,
            processed: state.processed,
            clustered: state.clustered,
            cluster_count: state.clusters.len(),
            mean_confidence: (state.detected > 0)
                .then(|| state.confidence_total / state.detected as f64),
            mean_quality_score: (state.quality_count > 0)
                .then(|| state.quality_total / state.quality_count as f64),
            confidence_distribution: state
                .buckets
                .iter()
                .enumerate()
                .map(|(i, count)| ConfidenceBucket {
                    from: i as f64 * width,
                    to: (i + 1) as f64 * width,
                    count: *count,
                })
                .collect(),
            by_source: state.by_source.clone(),
            by_type: state.by_type.clone(),
            clusters: state.clusters.clone(),
            signals: state.signals.clone(),
        }
    }

    fn apply(&self, state: &mut FunnelState, event: &Event) -> Result<(), HandlerError> {
        let ty = &event.event_type;
        if *ty == EventType::SIGNAL_DETECTED {
            let p: SignalDetected = decode(event)?;
            state.detected += 1;
            let confidence = p.confidence.clamp(0.0, 1.0);
            state.confidence_total += confidence;
            let bucket = ((confidence * BUCKETS as f64) as usize).min(BUCKETS - 1);
            state.buckets[bucket] += 1;
            *state.by_source.entry(p.source.clone()).or_default() += 1;
            *state.by_type.entry(p.signal_type.clone()).or_default() += 1;
            let signal = self.entry(state, &p.signal_id);
            signal.source = Some(p.source);
            signal.signal_type = Some(p.signal_type);
            signal.confidence = Some(confidence);
            signal.detected_at = Some(event.timestamp);
        } else if *ty == EventType::SIGNAL_PROCESSED {
            let p: SignalProcessed = decode(event)?;
            state.processed += 1;
            if let Some(score) = p.quality_score {
                state.quality_total += score;
                state.quality_count += 1;
            }
            let signal = self.entry(state, &p.signal_id);
            signal.processed = true;
            signal.quality_score = p.quality_score;
            signal.keywords = p.extracted_keywords.unwrap_or_default();
        } else if *ty == EventType::SIGNAL_CLUSTERED {
            let p: SignalClustered = decode(event)?;
            for id in &p.signal_ids {
                let signal = self.entry(state, id);
                let first_time = signal.cluster_id.is_none();
                // Cluster events have their own keys, so they may be handled in any order:
                // the latest published wins, whatever the order of handling.
                if signal.clustered_at.is_none_or(|t| event.timestamp >= t) {
                    signal.cluster_id = Some(p.cluster_id.clone());
                    signal.clustered_at = Some(event.timestamp);
                }
                if first_time {
                    state.clustered += 1;
                }
            }
            let signal_count = if p.signal_count == 0 {
                p.signal_ids.len()
            } else {
                p.signal_count
            };
            state.clusters.insert(
                p.cluster_id.clone(),
                SignalCluster {
                    cluster_id: p.cluster_id,
                    theme: p.cluster_theme,
                    members: p.signal_ids,
                    signal_count,
                    clustered_at: event.timestamp,
                },
            );
        } else {
            return Err(HandlerError::permanent(format!(
                "the market signal handler does not handle {} events",
                event.event_type
            )));
        }
        Ok(())
    }

    fn entry<'a>(&self, state: &'a mut FunnelState, id: &str) -> &'a mut SignalSummary {
        if !state.signals.contains_key(id) {
            state.order.push_back(id.to_owned());
            if state.order.len() > self.capacity
                && let Some(oldest) = state.order.pop_front()
            {
                state.signals.remove(&oldest);
            }
        }
        state
            .signals
            .entry(id.to_owned())
            .or_insert_with(|| SignalSummary {
                signal_id: id.to_owned(),
                source: None,
                signal_type: None,
                confidence: None,
                detected_at: None,
                processed: false,
                quality_score: None,
                keywords: Vec::new(),
                cluster_id: None,
                clustered_at: None,
            })
    }
}

domain_handler!(MarketSignalEventHandler, funnel);
