//! [`UserEventHandler`]: the users and a reputation ledger (every change with its reason, the
//! current score).

use std::collections::BTreeMap;
use std::sync::Mutex;

use event_core::{Event, EventType, HandlerError, JsonObject};
use serde::Serialize;
use time::OffsetDateTime;

use super::payloads::{UserProfileUpdated, UserRegistered, UserReputationChanged, decode};
use super::{RecentIds, lock};

/// One change in a user's reputation ledger.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct ReputationEntry {
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// The score before.
    pub old_score: f64,
    /// The score after.
    pub new_score: f64,
    /// The change (`new_score - old_score` unless the publisher said otherwise).
    pub change_amount: f64,
    /// Why.
    pub reason: String,
}

/// One user in the [`UserDirectory`].
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct UserRecord {
    /// The id.
    pub user_id: String,
    /// E-mail address (`None` when known only from later events).
    pub email: Option<String>,
    /// User name.
    pub username: Option<String>,
    /// Kind of account.
    pub user_type: Option<String>,
    /// When the user registered.
    #[serde(with = "time::serde::rfc3339::option")]
    pub registered_at: Option<OffsetDateTime>,
    /// The profile: every field changed by `user.profile_updated`, latest value.
    pub profile: JsonObject,
    /// Profile updates received.
    pub profile_updates: u64,
    /// The current reputation score (the last change's `new_score`; 0 before any).
    pub reputation: f64,
    /// The reputation ledger, oldest first (the most recent entries, up to the view
    /// capacity).
    pub ledger: Vec<ReputationEntry>,
}

/// The users: the view of [`UserEventHandler`].
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct UserDirectory {
    /// Users registered (events seen).
    pub registered: u64,
    /// Reputation changes applied.
    pub reputation_changes: u64,
    /// Every user seen, by id.
    pub users: BTreeMap<String, UserRecord>,
}

impl UserDirectory {
    /// The user with this id.
    pub fn user(&self, id: &str) -> Option<&UserRecord> {
        self.users.get(id)
    }
}

#[derive(Debug)]
struct DirectoryState {
    seen: RecentIds,
    registered: u64,
    reputation_changes: u64,
    users: BTreeMap<String, UserRecord>,
}

/// Keeps the users and their reputation ledger. Handles `user.registered`,
/// `user.profile_updated` and `user.reputation_changed`.
pub struct UserEventHandler {
    capacity: usize,
    state: Mutex<DirectoryState>,
}

impl std::fmt::Debug for UserEventHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserEventHandler").finish_non_exhaustive()
    }
}

impl UserEventHandler {
    /// The handler's name (and consumer group suffix).
    pub const NAME: &'static str = "user";

    /// A handler keeping at most `capacity` ledger entries per user.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            state: Mutex::new(DirectoryState {
                seen: RecentIds::new(crate::view::RECENT_IDS),
                registered: 0,
                reputation_changes: 0,
                users: BTreeMap::new(),
            }),
        }
    }

    /// The event types it handles.
    pub fn event_types() -> Vec<EventType> {
        vec![
            EventType::USER_REGISTERED,
            EventType::USER_PROFILE_UPDATED,
            EventType::USER_REPUTATION_CHANGED,
        ]
    }

    /// The users as they are now.
    pub fn directory(&self) -> UserDirectory {
        let state = lock(&self.state);
        UserDirectory {
            registered: state.registered,
            reputation_changes: state.reputation_changes,
            users: state.users.clone(),
        }
    }

    fn apply(&self, state: &mut DirectoryState, event: &Event) -> Result<(), HandlerError> {
        let ty = &event.event_type;
        if *ty == EventType::USER_REGISTERED {
            let p: UserRegistered = decode(event)?;
            state.registered += 1;
            let user = entry(state, &p.user_id);
            user.email = Some(p.email);
            user.username = p.username;
            user.user_type = Some(p.user_type);
            user.registered_at = Some(event.timestamp);
        } else if *ty == EventType::USER_PROFILE_UPDATED {
            let p: UserProfileUpdated = decode(event)?;
            let user = entry(state, &p.user_id);
            user.profile_updates += 1;
            for (field, value) in p.changes {
                match field.as_str() {
                    "email" => user.email = value.as_str().map(str::to_owned).or(user.email.take()),
                    "username" => {
                        user.username = value.as_str().map(str::to_owned).or(user.username.take());
                    }
                    _ => {}
                }
                user.profile.insert(field, value);
            }
        } else if *ty == EventType::USER_REPUTATION_CHANGED {
            let p: UserReputationChanged = decode(event)?;
            state.reputation_changes += 1;
            let capacity = self.capacity;
            let user = entry(state, &p.user_id);
            let change_amount = if p.change_amount == 0.0 {
                p.new_score - p.old_score
            } else {
                p.change_amount
            };
            user.reputation = p.new_score;
            user.ledger.push(ReputationEntry {
                at: event.timestamp,
                old_score: p.old_score,
                new_score: p.new_score,
                change_amount,
                reason: p.reason,
            });
            if user.ledger.len() > capacity {
                user.ledger.remove(0);
            }
        } else {
            return Err(HandlerError::permanent(format!(
                "the user handler does not handle {} events",
                event.event_type
            )));
        }
        Ok(())
    }
}

fn entry<'a>(state: &'a mut DirectoryState, id: &str) -> &'a mut UserRecord {
    state
        .users
        .entry(id.to_owned())
        .or_insert_with(|| UserRecord {
            user_id: id.to_owned(),
            email: None,
            username: None,
            user_type: None,
            registered_at: None,
            profile: JsonObject::new(),
            profile_updates: 0,
            reputation: 0.0,
            ledger: Vec::new(),
        })
}

domain_handler!(UserEventHandler, directory);
