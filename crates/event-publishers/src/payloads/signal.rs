//! `signal.*` payloads, published by
//! [`MarketSignalEventPublisher`](crate::MarketSignalEventPublisher).

use event_core::{EventType, JsonObject};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::domain_event;
use crate::FieldError;

/// `signal.detected`: a market signal was detected. Key: `signal_id`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SignalDetected {
    /// The signal's id (required, not empty).
    pub signal_id: String,
    /// Where it was found, such as `reddit` (required, not empty). Not the envelope's
    /// `source`, which names the publishing service.
    pub source: String,
    /// The kind of signal, such as `pain_point` (required, not empty).
    pub signal_type: String,
    /// The signal's text (required, may be empty: the original's helper sent `""`).
    pub content: String,
    /// How sure the detector is, from 0 to 1 (required).
    pub confidence: f64,
    /// Likes, comments, shares and so on (optional).
    pub engagement_metrics: Option<JsonObject>,
    /// Extra fields (the original's `**kwargs`).
    #[serde(flatten)]
    pub extra: JsonObject,
}

domain_event! {
    SignalDetected: EventType::SIGNAL_DETECTED, key = signal_id,
    validate(p) {
        FieldError::check_non_empty("signal_id", &p.signal_id)?;
        FieldError::check_non_empty("source", &p.source)?;
        FieldError::check_non_empty("signal_type", &p.signal_type)?;
        FieldError::check_range("confidence", p.confidence, 0.0, 1.0)
    }
}

/// `signal.processed`: a market signal was processed. Key: `signal_id`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SignalProcessed {
    /// The signal's id (required, not empty).
    pub signal_id: String,
    /// What processing produced, any JSON value (required).
    pub processing_result: Value,
    /// The signal's quality, from 0 to 1 (optional).
    pub quality_score: Option<f64>,
    /// Keywords extracted from the signal (optional).
    pub extracted_keywords: Option<Vec<String>>,
    /// Extra fields (the original's `**kwargs`).
    #[serde(flatten)]
    pub extra: JsonObject,
}

domain_event! {
    SignalProcessed: EventType::SIGNAL_PROCESSED, key = signal_id,
    validate(p) {
        FieldError::check_non_empty("signal_id", &p.signal_id)?;
        if p.processing_result.is_null() {
            return Err(FieldError::new("processing_result", "is required"));
        }
        if let Some(score) = p.quality_score {
            FieldError::check_range("quality_score", score, 0.0, 1.0)?;
        }
        Ok(())
    }
}

/// `signal.clustered`: market signals were grouped into a cluster. Key: `cluster_id`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SignalClustered {
    /// The cluster's id (required, not empty).
    pub cluster_id: String,
    /// The signals in the cluster (required).
    pub signal_ids: Vec<String>,
    /// What the signals have in common (required, not empty).
    pub cluster_theme: String,
    /// Derived: when left at 0 the publisher sets it to the number of `signal_ids`, as the
    /// original's `signal_count or len(signal_ids)` did.
    #[serde(default)]
    pub signal_count: usize,
    /// Extra fields (the original's `**kwargs`).
    #[serde(flatten)]
    pub extra: JsonObject,
}

domain_event! {
    SignalClustered: EventType::SIGNAL_CLUSTERED, key = cluster_id,
    validate(p) {
        FieldError::check_non_empty("cluster_id", &p.cluster_id)?;
        if let Some(empty) = p.signal_ids.iter().position(|id| id.trim().is_empty()) {
            return Err(FieldError::new(format!("signal_ids[{empty}]"), "must not be empty"));
        }
        FieldError::check_non_empty("cluster_theme", &p.cluster_theme)
    },
    derive(p) {
        if p.signal_count == 0 {
            p.signal_count = p.signal_ids.len();
        }
    }
}
