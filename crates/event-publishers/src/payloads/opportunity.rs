//! `opportunity.*` payloads, published by
//! [`OpportunityEventPublisher`](crate::OpportunityEventPublisher).

use event_core::{EventType, JsonObject};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{MAX_VALIDATION_SCORE, domain_event};
use crate::FieldError;

/// `opportunity.created`: a new opportunity was added to the catalogue. Key: `opportunity_id`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OpportunityCreated {
    /// The opportunity's id (required, not empty).
    pub opportunity_id: String,
    /// Its title (required, not empty).
    pub title: String,
    /// What the opportunity is (required, not empty).
    pub description: String,
    /// The kind of AI solution, such as `nlp` (required, not empty).
    pub ai_solution_type: String,
    /// Estimated market size, in the catalogue's currency (optional, >= 0).
    pub market_size_estimate: Option<f64>,
    /// The user who created it (optional).
    pub created_by: Option<String>,
    /// Extra fields (the original's `**kwargs`).
    #[serde(flatten)]
    pub extra: JsonObject,
}

domain_event! {
    OpportunityCreated: EventType::OPPORTUNITY_CREATED, key = opportunity_id,
    validate(p) {
        FieldError::check_non_empty("opportunity_id", &p.opportunity_id)?;
        FieldError::check_non_empty("title", &p.title)?;
        FieldError::check_non_empty("description", &p.description)?;
        FieldError::check_non_empty("ai_solution_type", &p.ai_solution_type)?;
        if let Some(size) = p.market_size_estimate {
            FieldError::check_non_negative("market_size_estimate", size)?;
        }
        Ok(())
    }
}

/// `opportunity.updated`: fields of an opportunity changed. Key: `opportunity_id`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OpportunityUpdated {
    /// The opportunity's id (required, not empty).
    pub opportunity_id: String,
    /// The changed fields and their new values (required, may be empty).
    pub changes: JsonObject,
    /// The user who changed it (optional).
    pub updated_by: Option<String>,
    /// Derived: the number of entries in `changes`, computed by the publisher.
    #[serde(default)]
    pub change_count: usize,
    /// Extra fields (the original's `**kwargs`).
    #[serde(flatten)]
    pub extra: JsonObject,
}

domain_event! {
    OpportunityUpdated: EventType::OPPORTUNITY_UPDATED, key = opportunity_id,
    validate(p) {
        FieldError::check_non_empty("opportunity_id", &p.opportunity_id)
    },
    derive(p) {
        p.change_count = p.changes.len();
    }
}

/// `opportunity.validated`: an opportunity received a validation. Key: `opportunity_id`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OpportunityValidated {
    /// The opportunity's id (required, not empty).
    pub opportunity_id: String,
    /// The validation's id (required, not empty).
    pub validation_id: String,
    /// The user who validated (required, not empty).
    pub validator_id: String,
    /// The score given, from 0 to 10 (required).
    pub validation_score: f64,
    /// The kind of validation, such as `market_demand` (required, not empty).
    pub validation_type: String,
    /// The validator's comments (optional).
    pub comments: Option<String>,
    /// Extra fields (the original's `**kwargs`).
    #[serde(flatten)]
    pub extra: JsonObject,
}

domain_event! {
    OpportunityValidated: EventType::OPPORTUNITY_VALIDATED, key = opportunity_id,
    validate(p) {
        FieldError::check_non_empty("opportunity_id", &p.opportunity_id)?;
        FieldError::check_non_empty("validation_id", &p.validation_id)?;
        FieldError::check_non_empty("validator_id", &p.validator_id)?;
        FieldError::check_range("validation_score", p.validation_score, 0.0, MAX_VALIDATION_SCORE)?;
        FieldError::check_non_empty("validation_type", &p.validation_type)
    }
}

/// `opportunity.deleted`: an opportunity was removed. Key: `opportunity_id`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OpportunityDeleted {
    /// The opportunity's id (required, not empty).
    pub opportunity_id: String,
    /// The user who deleted it (required, not empty).
    pub deleted_by: String,
    /// Why (optional).
    pub reason: Option<String>,
    /// Extra fields (the original's `**kwargs`).
    #[serde(flatten)]
    pub extra: JsonObject,
}

domain_event! {
    OpportunityDeleted: EventType::OPPORTUNITY_DELETED, key = opportunity_id,
    validate(p) {
        FieldError::check_non_empty("opportunity_id", &p.opportunity_id)?;
        FieldError::check_non_empty("deleted_by", &p.deleted_by)
    }
}
