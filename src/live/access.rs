//! The access of a long-lived listener (a websocket channel, a gRPC stream), re-checked while
//! it runs: a check at the start is not enough for a connection that may stay open for days.
//!
//! A listener ends when its JWT expires, its key is revoked, its key no longer grants the
//! topic or subscription it reads (DeleteTopicsFromApiKey, DeleteSubscriptionsFromApiKey), or
//! its subscription is deleted. Each check reads node-local caches that live one second
//! (keys in [`Auth`], subscriptions in [`Subscriptions::exists`]), so with a check every half
//! second a change made on any node ends the listener within two seconds, and many
//! listeners on one node cost one query per key and per subscription a second.

use crate::auth::{Auth, Principal};
use crate::error::Error;
use crate::subscriptions::Subscriptions;
use crate::topics::TopicRef;
use std::time::Duration;
use uuid::Uuid;

/// How often listeners re-check their access.
pub const ACCESS_CHECK: Duration = Duration::from_millis(500);

/// What a listener reads.
#[derive(Clone, Debug)]
pub enum Target {
    /// The topic of a subscription (websocket channels, StreamEvents by subscription).
    Subscription(Uuid),
    /// A topic, or one identifier of it (StreamEvents by topic).
    Topic(TopicRef),
    /// Nothing: a websocket producer, which only needs its key to stay valid to publish.
    Publish,
}

/// What a listener was allowed when it opened.
#[derive(Clone, Debug)]
pub struct Access {
    key: Uuid,
    expires: Option<i64>,
    target: Target,
}

impl Access {
    /// The access of `principal` to `target`; `expires` is the JWT's `exp` when the listener
    /// was opened with a JWT.
    pub fn new(principal: &Principal, expires: Option<i64>, target: Target) -> Self {
        Access {
            key: principal.key_id,
            expires,
            target,
        }
    }

    /// The key behind the listener.
    pub fn key(&self) -> Uuid {
        self.key
    }

    /// `None` while the listener may go on; otherwise why it must end. A failed lookup (a
    /// database hiccup) is not a reason: only a definite answer ends a listener.
    pub async fn lost(&self, auth: &Auth, subscriptions: &Subscriptions) -> Option<Lost> {
        if let Some(exp) = self.expires
            && chrono::Utc::now().timestamp() >= exp
        {
            return Some(Lost::Expired);
        }
        let principal = match auth.current(self.key).await {
            Ok(Some(p)) => p,
            Ok(None) => return Some(Lost::Revoked),
            Err(_) => return None,
        };
        let granted = match &self.target {
            Target::Publish => principal.may_publish_somewhere(),
            Target::Topic(topic) => principal.authorize_read(topic),
            Target::Subscription(id) => principal.authorize_subscription(*id),
        };
        if let Err(e) = granted {
            return Some(Lost::Withdrawn(e.to_string()));
        }
        match &self.target {
            Target::Subscription(id) => match subscriptions.exists(*id).await {
                Ok(false) => Some(Lost::Deleted),
                _ => None,
            },
            _ => None,
        }
    }
}

/// Why a listener's access ended.
#[derive(Debug, PartialEq)]
pub enum Lost {
    /// The JWT it was opened with expired.
    Expired,
    /// The key was revoked (or deleted).
    Revoked,
    /// The key no longer grants the topic or subscription (the grant's refusal).
    Withdrawn(String),
    /// The subscription was deleted.
    Deleted,
}

impl std::fmt::Display for Lost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Lost::Expired => f.write_str("token expired"),
            Lost::Revoked => f.write_str("api key revoked"),
            Lost::Withdrawn(why) => f.write_str(why),
            Lost::Deleted => f.write_str("subscription deleted"),
        }
    }
}

impl From<Lost> for Error {
    fn from(l: Lost) -> Error {
        match l {
            Lost::Expired | Lost::Revoked => Error::Unauthenticated(l.to_string()),
            Lost::Withdrawn(_) => Error::PermissionDenied(l.to_string()),
            Lost::Deleted => Error::not_found(l.to_string()),
        }
    }
}
