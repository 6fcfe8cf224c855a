//! `validation.*` payloads. The original declared these three types but had no publisher
//! method and no payload for them; these shapes follow `opportunity.validated`, keyed by the
//! opportunity so that a handler sees a validation's steps in order.

use event_core::{EventType, JsonObject};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{MAX_VALIDATION_SCORE, domain_event};
use crate::FieldError;

/// `validation.submitted`: a validation was submitted for review. Key: `opportunity_id`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ValidationSubmitted {
    /// The validation's id (required, not empty).
    pub validation_id: String,
    /// The opportunity validated (required, not empty).
    pub opportunity_id: String,
    /// The user who submitted it (required, not empty).
    pub validator_id: String,
    /// The kind of validation, such as `market_demand` (required, not empty).
    pub validation_type: String,
    /// The score proposed, from 0 to 10 (optional).
    pub validation_score: Option<f64>,
    /// The validator's comments (optional).
    pub comments: Option<String>,
    /// Extra fields.
    #[serde(flatten)]
    pub extra: JsonObject,
}

domain_event! {
    ValidationSubmitted: EventType::VALIDATION_SUBMITTED, key = opportunity_id,
    validate(p) {
        FieldError::check_non_empty("validation_id", &p.validation_id)?;
        FieldError::check_non_empty("opportunity_id", &p.opportunity_id)?;
        FieldError::check_non_empty("validator_id", &p.validator_id)?;
        FieldError::check_non_empty("validation_type", &p.validation_type)?;
        if let Some(score) = p.validation_score {
            FieldError::check_range("validation_score", score, 0.0, MAX_VALIDATION_SCORE)?;
        }
        Ok(())
    }
}

/// `validation.approved`: a validation was approved. Key: `opportunity_id`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ValidationApproved {
    /// The validation's id (required, not empty).
    pub validation_id: String,
    /// The opportunity validated (required, not empty).
    pub opportunity_id: String,
    /// The reviewer who approved it (optional).
    pub approved_by: Option<String>,
    /// The score retained, from 0 to 10 (optional).
    pub validation_score: Option<f64>,
    /// Extra fields.
    #[serde(flatten)]
    pub extra: JsonObject,
}

domain_event! {
    ValidationApproved: EventType::VALIDATION_APPROVED, key = opportunity_id,
    validate(p) {
        FieldError::check_non_empty("validation_id", &p.validation_id)?;
        FieldError::check_non_empty("opportunity_id", &p.opportunity_id)?;
        if let Some(score) = p.validation_score {
            FieldError::check_range("validation_score", score, 0.0, MAX_VALIDATION_SCORE)?;
        }
        Ok(())
    }
}

/// `validation.rejected`: a validation was rejected. Key: `opportunity_id`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ValidationRejected {
    /// The validation's id (required, not empty).
    pub validation_id: String,
    /// The opportunity validated (required, not empty).
    pub opportunity_id: String,
    /// The reviewer who rejected it (optional).
    pub rejected_by: Option<String>,
    /// Why it was rejected (required, not empty).
    pub reason: String,
    /// Extra fields.
    #[serde(flatten)]
    pub extra: JsonObject,
}

domain_event! {
    ValidationRejected: EventType::VALIDATION_REJECTED, key = opportunity_id,
    validate(p) {
        FieldError::check_non_empty("validation_id", &p.validation_id)?;
        FieldError::check_non_empty("opportunity_id", &p.opportunity_id)?;
        FieldError::check_non_empty("reason", &p.reason)
    }
}
