//! `user.*` payloads, published by [`UserEventPublisher`](crate::UserEventPublisher).

use event_core::{EventType, JsonObject};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::domain_event;
use crate::FieldError;

/// `user.registered`: a new user signed up. Key: `user_id`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct UserRegistered {
    /// The user's id (required, not empty).
    pub user_id: String,
    /// The user's e-mail address (required, not empty).
    pub email: String,
    /// The user's name (optional).
    pub username: Option<String>,
    /// The kind of account (default `user`).
    #[serde(default = "default_user_type")]
    pub user_type: String,
    /// Extra fields (the original's `**kwargs`).
    #[serde(flatten)]
    pub extra: JsonObject,
}

fn default_user_type() -> String {
    "user".into()
}

impl Default for UserRegistered {
    fn default() -> Self {
        Self {
            user_id: String::new(),
            email: String::new(),
            username: None,
            user_type: default_user_type(),
            extra: JsonObject::new(),
        }
    }
}

domain_event! {
    UserRegistered: EventType::USER_REGISTERED, key = user_id,
    validate(p) {
        FieldError::check_non_empty("user_id", &p.user_id)?;
        FieldError::check_non_empty("email", &p.email)?;
        FieldError::check_non_empty("user_type", &p.user_type)
    }
}

/// `user.profile_updated`: a user's profile changed. Key: `user_id`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct UserProfileUpdated {
    /// The user's id (required, not empty).
    pub user_id: String,
    /// The changed profile fields and their new values (required, may be empty).
    pub changes: JsonObject,
    /// Derived: the number of entries in `changes`, computed by the publisher.
    #[serde(default)]
    pub change_count: usize,
    /// Extra fields (the original's `**kwargs`).
    #[serde(flatten)]
    pub extra: JsonObject,
}

domain_event! {
    UserProfileUpdated: EventType::USER_PROFILE_UPDATED, key = user_id,
    validate(p) {
        FieldError::check_non_empty("user_id", &p.user_id)
    },
    derive(p) {
        p.change_count = p.changes.len();
    }
}

/// `user.reputation_changed`: a user's reputation score changed. Key: `user_id`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct UserReputationChanged {
    /// The user's id (required, not empty).
    pub user_id: String,
    /// The score before (required, finite).
    pub old_score: f64,
    /// The score after (required, finite).
    pub new_score: f64,
    /// Why it changed (required, not empty).
    pub reason: String,
    /// Derived: the change; when left at 0 the publisher sets it to `new_score - old_score`,
    /// as the original's `change_amount or (new_score - old_score)` did.
    #[serde(default)]
    pub change_amount: f64,
    /// Extra fields (the original's `**kwargs`).
    #[serde(flatten)]
    pub extra: JsonObject,
}

domain_event! {
    UserReputationChanged: EventType::USER_REPUTATION_CHANGED, key = user_id,
    validate(p) {
        FieldError::check_non_empty("user_id", &p.user_id)?;
        FieldError::check_finite("old_score", p.old_score)?;
        FieldError::check_finite("new_score", p.new_score)?;
        FieldError::check_non_empty("reason", &p.reason)?;
        FieldError::check_finite("change_amount", p.change_amount)
    },
    derive(p) {
        if p.change_amount == 0.0 {
            p.change_amount = p.new_score - p.old_score;
        }
    }
}
