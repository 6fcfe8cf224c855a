//! [`OpportunityEventHandler`]: the opportunity catalogue (created, updated with change
//! history, validated with count and mean score, deleted), the validation workflow
//! (`validation.submitted`, `approved`, `rejected`, which the original never subscribed to),
//! and a re-analysis request when the description, market signals or AI solution type change.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use event_core::{Event, EventBus, EventType, HandlerError, JsonObject};
use serde::Serialize;
use time::OffsetDateTime;

use super::payloads::{
    OpportunityCreated, OpportunityDeleted, OpportunityUpdated, OpportunityValidated,
    ValidationApproved, ValidationRejected, ValidationSubmitted, decode,
};
use super::{Outbox, RecentIds, lock};

/// The fields whose change calls for a re-analysis, as in the original.
pub const REANALYSIS_FIELDS: [&str; 3] = ["description", "market_signals", "ai_solution_type"];

/// The custom event type of a re-analysis request.
pub const REANALYSIS_REQUESTED: &str = "opportunity.reanalysis_requested";

/// One update of an opportunity.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct OpportunityChange {
    /// When it happened.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Who made it.
    pub updated_by: Option<String>,
    /// The fields changed and their new values.
    pub changes: JsonObject,
}

/// One validation of an opportunity, through `opportunity.validated` or the
/// `validation.*` workflow.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct ValidationRecord {
    /// The validation's id.
    pub validation_id: String,
    /// Who validated.
    pub validator_id: Option<String>,
    /// The kind of validation.
    pub validation_type: Option<String>,
    /// The score, 0 to 10.
    pub score: Option<f64>,
    /// `submitted`, `approved`, `rejected` or `validated`.
    pub status: &'static str,
    /// Why it was rejected.
    pub rejection_reason: Option<String>,
}

/// One opportunity in the [`OpportunityCatalog`].
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct OpportunityRecord {
    /// The id.
    pub opportunity_id: String,
    /// Its title (`None` when known only from later events).
    pub title: Option<String>,
    /// Its description.
    pub description: Option<String>,
    /// The kind of AI solution.
    pub ai_solution_type: Option<String>,
    /// The market size estimate.
    pub market_size_estimate: Option<f64>,
    /// Who created it.
    pub created_by: Option<String>,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339::option")]
    pub created_at: Option<OffsetDateTime>,
    /// When it last changed.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// Its updates, oldest first.
    pub history: Vec<OpportunityChange>,
    /// Validations with a score counted in the mean (`opportunity.validated` and approved
    /// `validation.*` with a score).
    pub validation_count: u64,
    /// The mean of those scores.
    pub mean_validation_score: Option<f64>,
    /// Its validations by id.
    pub validations: BTreeMap<String, ValidationRecord>,
    /// Re-analysis requests made for it.
    pub reanalysis_requests: u64,
}

/// A re-analysis request raised by an update.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct ReanalysisRequest {
    /// The opportunity.
    pub opportunity_id: String,
    /// The significant fields that changed.
    pub changed_fields: Vec<String>,
    /// The update event that caused it.
    pub caused_by: String,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// A deleted opportunity.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct DeletedOpportunity {
    /// The id.
    pub opportunity_id: String,
    /// Its title when deleted.
    pub title: Option<String>,
    /// Who deleted it.
    pub deleted_by: String,
    /// Why.
    pub reason: Option<String>,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub deleted_at: OffsetDateTime,
}

/// The opportunity catalogue: the view of [`OpportunityEventHandler`].
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct OpportunityCatalog {
    /// Opportunities in the catalogue.
    pub active: usize,
    /// Opportunities created (events seen).
    pub created: u64,
    /// Updates applied.
    pub updated: u64,
    /// Opportunities deleted.
    pub deleted_count: u64,
    /// Validation events of any kind applied.
    pub validations: u64,
    /// The catalogue, by id.
    pub opportunities: BTreeMap<String, OpportunityRecord>,
    /// Deleted opportunities, by id (the most recent ones, up to the view capacity).
    pub deleted: BTreeMap<String, DeletedOpportunity>,
    /// The most recent re-analysis requests, oldest first.
    pub reanalysis_requests: Vec<ReanalysisRequest>,
}

impl OpportunityCatalog {
    /// The opportunity with this id.
    pub fn opportunity(&self, id: &str) -> Option<&OpportunityRecord> {
        self.opportunities.get(id)
    }
}

#[derive(Debug)]
struct CatalogState {
    seen: RecentIds,
    created: u64,
    updated: u64,
    deleted_count: u64,
    validations: u64,
    opportunities: BTreeMap<String, OpportunityRecord>,
    score_totals: BTreeMap<String, f64>,
    deleted: BTreeMap<String, DeletedOpportunity>,
    deleted_order: VecDeque<String>,
    reanalysis: VecDeque<ReanalysisRequest>,
}

/// Keeps the opportunity catalogue and requests re-analyses. Handles the four
/// `opportunity.*` types and the three `validation.*` types.
///
/// A re-analysis request is published as an `opportunity.reanalysis_requested` event
/// (`{opportunity_id, changed_fields, updated_by}`, caused by the update, keyed by the
/// opportunity) for the analysis service to act on, and listed in the view.
pub struct OpportunityEventHandler {
    bus: Arc<dyn EventBus>,
    capacity: usize,
    state: Mutex<CatalogState>,
    outbox: Outbox,
}

impl std::fmt::Debug for OpportunityEventHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpportunityEventHandler")
            .finish_non_exhaustive()
    }
}

impl OpportunityEventHandler {
    /// The handler's name (and consumer group suffix).
    pub const NAME: &'static str = "opportunity";

    /// A handler publishing re-analysis requests on `bus`, keeping at most `capacity`
    /// deleted opportunities and re-analysis requests in its view.
    pub fn new(bus: Arc<dyn EventBus>, capacity: usize) -> Self {
        Self {
            bus,
            capacity: capacity.max(1),
            state: Mutex::new(CatalogState {
                seen: RecentIds::new(crate::view::RECENT_IDS),
                created: 0,
                updated: 0,
                deleted_count: 0,
                validations: 0,
                opportunities: BTreeMap::new(),
                score_totals: BTreeMap::new(),
                deleted: BTreeMap::new(),
                deleted_order: VecDeque::new(),
                reanalysis: VecDeque::new(),
            }),
            outbox: Outbox::default(),
        }
    }

    /// The event types it handles.
    pub fn event_types() -> Vec<EventType> {
        vec![
            EventType::OPPORTUNITY_CREATED,
            EventType::OPPORTUNITY_UPDATED,
            EventType::OPPORTUNITY_DELETED,
            EventType::OPPORTUNITY_VALIDATED,
            EventType::VALIDATION_SUBMITTED,
            EventType::VALIDATION_APPROVED,
            EventType::VALIDATION_REJECTED,
        ]
    }

    /// The catalogue as it is now.
    pub fn catalog(&self) -> OpportunityCatalog {
        let state = lock(&self.state);
        OpportunityCatalog {
            active: state.opportunities.len(),
            created: state.created,
            updated: state.updated,
            deleted_count: state.deleted_count,
            validations: state.validations,
            opportunities: state.opportunities.clone(),
            deleted: state.deleted.clone(),
            reanalysis_requests: state.reanalysis.iter().cloned().collect(),
        }
    }

    fn apply(&self, state: &mut CatalogState, event: &Event) -> Result<(), HandlerError> {
        let at = event.timestamp;
        let ty = &event.event_type;
        if *ty == EventType::OPPORTUNITY_CREATED {
            let p: OpportunityCreated = decode(event)?;
            state.created += 1;
            let record = entry(state, &p.opportunity_id, at);
            record.title = Some(p.title);
            record.description = Some(p.description);
            record.ai_solution_type = Some(p.ai_solution_type);
            record.market_size_estimate = p.market_size_estimate;
            record.created_by = p.created_by;
            record.created_at = Some(at);
        } else if *ty == EventType::OPPORTUNITY_UPDATED {
            let p: OpportunityUpdated = decode(event)?;
            state.updated += 1;
            let record = entry(state, &p.opportunity_id, at);
            for (field, value) in &p.changes {
                let text = value.as_str().map(str::to_owned);
                match field.as_str() {
                    "title" => record.title = text.or(record.title.take()),
                    "description" => record.description = text.or(record.description.take()),
                    "ai_solution_type" => {
                        record.ai_solution_type = text.or(record.ai_solution_type.take());
                    }
                    "market_size_estimate" => {
                        record.market_size_estimate =
                            value.as_f64().or(record.market_size_estimate);
                    }
                    _ => {}
                }
            }
            let changed_fields: Vec<String> = REANALYSIS_FIELDS
                .iter()
                .filter(|f| p.changes.contains_key(**f))
                .map(|f| (*f).to_owned())
                .collect();
            record.history.push(OpportunityChange {
                at,
                updated_by: p.updated_by.clone(),
                changes: p.changes,
            });
            if record.history.len() > self.capacity {
                record.history.remove(0);
            }
            if !changed_fields.is_empty() {
                record.reanalysis_requests += 1;
                let request = event
                    .caused(reanalysis_requested(), "opportunity_handler")
                    .partition_key(p.opportunity_id.clone())
                    .field("opportunity_id", p.opportunity_id.clone())
                    .field("changed_fields", changed_fields.clone())
                    .field("updated_by", p.updated_by)
                    .build()
                    .map_err(HandlerError::permanent)?;
                tracing::info!(opportunity_id = %p.opportunity_id, ?changed_fields, "significant changes: re-analysis requested");
                self.outbox.push(request);
                state.reanalysis.push_back(ReanalysisRequest {
                    opportunity_id: p.opportunity_id,
                    changed_fields,
                    caused_by: event.id.to_string(),
                    at,
                });
                if state.reanalysis.len() > self.capacity {
                    state.reanalysis.pop_front();
                }
            }
        } else if *ty == EventType::OPPORTUNITY_VALIDATED {
            let p: OpportunityValidated = decode(event)?;
            state.validations += 1;
            let record = entry(state, &p.opportunity_id, at);
            record.validations.insert(
                p.validation_id.clone(),
                ValidationRecord {
                    validation_id: p.validation_id,
                    validator_id: Some(p.validator_id),
                    validation_type: Some(p.validation_type),
                    score: Some(p.validation_score),
                    status: "validated",
                    rejection_reason: None,
                },
            );
            add_score(state, &p.opportunity_id, p.validation_score);
        } else if *ty == EventType::OPPORTUNITY_DELETED {
            let p: OpportunityDeleted = decode(event)?;
            state.deleted_count += 1;
            let removed = state.opportunities.remove(&p.opportunity_id);
            state.score_totals.remove(&p.opportunity_id);
            state.deleted.insert(
                p.opportunity_id.clone(),
                DeletedOpportunity {
                    opportunity_id: p.opportunity_id.clone(),
                    title: removed.and_then(|r| r.title),
                    deleted_by: p.deleted_by,
                    reason: p.reason,
                    deleted_at: at,
                },
            );
            state.deleted_order.push_back(p.opportunity_id);
            if state.deleted_order.len() > self.capacity
                && let Some(oldest) = state.deleted_order.pop_front()
            {
                state.deleted.remove(&oldest);
            }
        } else if *ty == EventType::VALIDATION_SUBMITTED {
            let p: ValidationSubmitted = decode(event)?;
            state.validations += 1;
            let record = entry(state, &p.opportunity_id, at);
            record.validations.insert(
                p.validation_id.clone(),
                ValidationRecord {
                    validation_id: p.validation_id,
                    validator_id: Some(p.validator_id),
                    validation_type: Some(p.validation_type),
                    score: p.validation_score,
                    status: "submitted",
                    rejection_reason: None,
                },
            );
        } else if *ty == EventType::VALIDATION_APPROVED {
            let p: ValidationApproved = decode(event)?;
            state.validations += 1;
            let record = entry(state, &p.opportunity_id, at);
            let validation = record
                .validations
                .entry(p.validation_id.clone())
                .or_insert_with(|| pending(&p.validation_id));
            validation.status = "approved";
            validation.score = p.validation_score.or(validation.score);
            if validation.validator_id.is_none() {
                validation.validator_id = p.approved_by;
            }
            if let Some(score) = validation.score {
                add_score(state, &p.opportunity_id, score);
            }
        } else if *ty == EventType::VALIDATION_REJECTED {
            let p: ValidationRejected = decode(event)?;
            state.validations += 1;
            let record = entry(state, &p.opportunity_id, at);
            let validation = record
                .validations
                .entry(p.validation_id.clone())
                .or_insert_with(|| pending(&p.validation_id));
            validation.status = "rejected";
            validation.rejection_reason = Some(p.reason);
            if validation.validator_id.is_none() {
                validation.validator_id = p.rejected_by;
            }
        } else {
            return Err(HandlerError::permanent(format!(
                "the opportunity handler does not handle {} events",
                event.event_type
            )));
        }
        Ok(())
    }
}

fn pending(validation_id: &str) -> ValidationRecord {
    ValidationRecord {
        validation_id: validation_id.to_owned(),
        validator_id: None,
        validation_type: None,
        score: None,
        status: "submitted",
        rejection_reason: None,
    }
}

fn entry<'a>(
    state: &'a mut CatalogState,
    id: &str,
    at: OffsetDateTime,
) -> &'a mut OpportunityRecord {
    let record = state
        .opportunities
        .entry(id.to_owned())
        .or_insert_with(|| OpportunityRecord {
            opportunity_id: id.to_owned(),
            title: None,
            description: None,
            ai_solution_type: None,
            market_size_estimate: None,
            created_by: None,
            created_at: None,
            updated_at: at,
            history: Vec::new(),
            validation_count: 0,
            mean_validation_score: None,
            validations: BTreeMap::new(),
            reanalysis_requests: 0,
        });
    record.updated_at = record.updated_at.max(at);
    record
}

fn add_score(state: &mut CatalogState, id: &str, score: f64) {
    let total = state.score_totals.entry(id.to_owned()).or_default();
    *total += score;
    let total = *total;
    if let Some(record) = state.opportunities.get_mut(id) {
        record.validation_count += 1;
        record.mean_validation_score = Some(total / record.validation_count as f64);
    }
}

/// `opportunity.reanalysis_requested`.
pub(crate) fn reanalysis_requested() -> EventType {
    EventType::new(REANALYSIS_REQUESTED)
        .expect("`opportunity.reanalysis_requested` is a valid event type")
}

domain_handler!(OpportunityEventHandler, catalog, outbox);
