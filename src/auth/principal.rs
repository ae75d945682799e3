//! Who is calling and what they may do: the authorization policy of every action, in one
//! place, so gRPC and websockets enforce exactly the same rules.

use crate::error::{Error, Result};
use crate::topics::TopicRef;
use uuid::Uuid;

/// The three kinds of API key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyType {
    /// Everything.
    Admin,
    /// Publishes to its topics.
    Producer,
    /// Reads the topics of its subscriptions.
    Consumer,
}

impl KeyType {
    /// Stored and JWT form.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::Admin => "admin",
            KeyType::Producer => "producer",
            KeyType::Consumer => "consumer",
        }
    }

    /// Parses the stored form.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "admin" => Ok(KeyType::Admin),
            "producer" => Ok(KeyType::Producer),
            "consumer" => Ok(KeyType::Consumer),
            other => Err(Error::invalid(format!(
                "unknown key type {other:?}: expected admin, producer or consumer"
            ))),
        }
    }
}

/// A topic grant: `name` (every identifier) or `name:identifier` (that one only).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicGrant {
    /// Topic name.
    pub name: String,
    /// "" for every identifier.
    pub identifier: String,
}

impl TopicGrant {
    /// Whether this grant covers a topic reference. A grant on `users` covers `users` and
    /// every `users:<id>`; a grant on `users:123` covers only `users:123`.
    pub fn covers(&self, topic: &TopicRef) -> bool {
        self.name == topic.name.as_str()
            && (self.identifier.is_empty() || self.identifier == topic.identifier_str())
    }
}

/// A subscription a consumer key is associated with, with the topic it reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscriptionGrant {
    /// Subscription id.
    pub id: Uuid,
    /// The grant on its topic.
    pub topic: TopicGrant,
}

/// An authenticated caller, with its grants as they are now in Postgres.
#[derive(Clone, Debug)]
pub struct Principal {
    /// Key id (nil when authentication is disabled).
    pub key_id: Uuid,
    /// Key type.
    pub key_type: KeyType,
    /// Producer grants.
    pub topics: Vec<TopicGrant>,
    /// Consumer grants.
    pub subscriptions: Vec<SubscriptionGrant>,
}

impl Principal {
    /// The caller when authentication is disabled: an admin without a key.
    pub fn anonymous_admin() -> Self {
        Principal {
            key_id: Uuid::nil(),
            key_type: KeyType::Admin,
            topics: vec![],
            subscriptions: vec![],
        }
    }

    /// Whether this is an admin.
    pub fn is_admin(&self) -> bool {
        self.key_type == KeyType::Admin
    }

    /// Admin-only actions (topics, subscriptions, keys, dead letters).
    pub fn require_admin(&self, action: &str) -> Result<()> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(Error::PermissionDenied(format!(
                "{} keys may not {action}: an admin key is required",
                self.key_type.as_str()
            )))
        }
    }

    /// Publishing: admins anywhere, producers to the topics granted to them.
    pub fn authorize_publish(&self, topic: &TopicRef) -> Result<()> {
        match self.key_type {
            KeyType::Admin => Ok(()),
            KeyType::Producer if self.topics.iter().any(|g| g.covers(topic)) => Ok(()),
            KeyType::Producer => Err(Error::PermissionDenied(format!(
                "producer key may not publish to {topic}"
            ))),
            KeyType::Consumer => Err(Error::PermissionDenied(
                "consumer keys may not publish events".into(),
            )),
        }
    }

    /// Whether this key may publish at all (checked before a request without a topic is
    /// dead-lettered, so strangers cannot fill the dead-letter table).
    pub fn may_publish_somewhere(&self) -> Result<()> {
        match self.key_type {
            KeyType::Admin | KeyType::Producer => Ok(()),
            KeyType::Consumer => Err(Error::PermissionDenied(
                "consumer keys may not publish events".into(),
            )),
        }
    }

    /// Reading a topic (pull, stream): admins anything, consumers the topics of their
    /// subscriptions (an identifier-scoped subscription only that identifier).
    pub fn authorize_read(&self, topic: &TopicRef) -> Result<()> {
        match self.key_type {
            KeyType::Admin => Ok(()),
            KeyType::Consumer if self.subscriptions.iter().any(|s| s.topic.covers(topic)) => Ok(()),
            KeyType::Consumer => Err(Error::PermissionDenied(format!(
                "consumer key has no subscription that covers {topic}"
            ))),
            KeyType::Producer => Err(Error::PermissionDenied(
                "producer keys may not read events".into(),
            )),
        }
    }

    /// Reading one subscription (get, websocket consumer join, stream): admins, or a consumer
    /// associated with it. Producer keys never read, whatever they are associated with.
    pub fn authorize_subscription(&self, id: Uuid) -> Result<()> {
        match self.key_type {
            KeyType::Admin => Ok(()),
            KeyType::Consumer if self.subscriptions.iter().any(|s| s.id == id) => Ok(()),
            KeyType::Consumer => Err(Error::PermissionDenied(
                "key is not associated with this subscription".into(),
            )),
            KeyType::Producer => Err(Error::PermissionDenied(
                "producer keys may not read events".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(name: &str, identifier: &str) -> TopicGrant {
        TopicGrant {
            name: name.into(),
            identifier: identifier.into(),
        }
    }

    fn t(s: &str) -> TopicRef {
        TopicRef::parse(s).unwrap()
    }

    #[test]
    fn identifier_scoping() {
        let table = [
            ("users", "", "users", true),
            ("users", "", "users:123", true),
            ("users", "123", "users:123", true),
            ("users", "123", "users:124", false),
            ("users", "123", "users", false),
            ("users", "", "orders", false),
        ];
        for (name, ident, topic, want) in table {
            assert_eq!(
                grant(name, ident).covers(&t(topic)),
                want,
                "{name}:{ident} vs {topic}"
            );
        }
    }

    #[test]
    fn policy_by_key_type() {
        let producer = Principal {
            key_id: Uuid::nil(),
            key_type: KeyType::Producer,
            topics: vec![grant("users", "123")],
            subscriptions: vec![],
        };
        assert!(producer.authorize_publish(&t("users:123")).is_ok());
        assert!(producer.authorize_publish(&t("users")).is_err());
        assert!(producer.authorize_read(&t("users:123")).is_err());
        assert!(producer.require_admin("create topics").is_err());
        // A producer associated with a subscription still may not read through it.
        let sub = Uuid::now_v7();
        let associated = Principal {
            subscriptions: vec![SubscriptionGrant {
                id: sub,
                topic: grant("users", "123"),
            }],
            ..producer.clone()
        };
        assert!(associated.authorize_subscription(sub).is_err());
        assert!(associated.authorize_read(&t("users:123")).is_err());
        let consumer = Principal {
            key_id: Uuid::nil(),
            key_type: KeyType::Consumer,
            topics: vec![],
            subscriptions: vec![SubscriptionGrant {
                id: sub,
                topic: grant("users", ""),
            }],
        };
        assert!(consumer.authorize_read(&t("users:9")).is_ok());
        assert!(consumer.authorize_read(&t("orders")).is_err());
        assert!(consumer.authorize_publish(&t("users")).is_err());
        assert!(consumer.authorize_subscription(sub).is_ok());
        assert!(consumer.authorize_subscription(Uuid::now_v7()).is_err());
        assert!(
            Principal::anonymous_admin()
                .authorize_publish(&t("x"))
                .is_ok()
        );
    }
}
