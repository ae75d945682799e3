//! Subscriptions: who receives a topic's events and how (webhook, websocket, or pull).
//! This module owns their validation and SQL; delivery lives elsewhere.

mod edit;

pub use edit::{SubscriptionUpdate, check_name};

use crate::auth::Principal;
use crate::cache::TtlCache;
use crate::error::{Error, Result, UNIQUE_VIOLATION, sqlstate};
use crate::page::{Page, PageRequest};
use crate::topics::{TopicName, TopicRef, parse_identifier};
use base64::Engine;
use rand::RngCore;
use sqlx::AssertSqlSafe;
use sqlx::PgPool;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// How a subscription receives events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubscriptionType {
    /// POSTed to `config.endpoint_url` by the owning node.
    Webhook,
    /// Pushed to websocket clients that join `events:<id>`.
    Websocket,
    /// Pulled or streamed by the client.
    Api,
}

impl SubscriptionType {
    /// Parses the wire form; empty means `api`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "webhook" => Ok(SubscriptionType::Webhook),
            "websocket" => Ok(SubscriptionType::Websocket),
            "" | "api" => Ok(SubscriptionType::Api),
            other => Err(Error::invalid(format!(
                "subscription_type {other:?} is not one of webhook, websocket, api"
            ))),
        }
    }

    /// Wire and stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            SubscriptionType::Webhook => "webhook",
            SubscriptionType::Websocket => "websocket",
            SubscriptionType::Api => "api",
        }
    }
}

/// A subscription to create, as clients send it.
#[derive(Clone, Debug, Default)]
pub struct NewSubscription {
    /// Unique name.
    pub name: String,
    /// Existing topic.
    pub topic_name: String,
    /// Optional identifier.
    pub topic_identifier: String,
    /// Push or pull.
    pub push: bool,
    /// Settings.
    pub config: BTreeMap<String, String>,
    /// Created paused.
    pub paused: bool,
    /// webhook, websocket or api.
    pub subscription_type: String,
}

/// A stored subscription.
#[derive(Clone, Debug, PartialEq)]
pub struct Subscription {
    /// Id.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// The topic it reads: every identifier of it, or only one.
    pub topic: TopicRef,
    /// Push or pull.
    pub push: bool,
    /// Settings.
    pub config: BTreeMap<String, String>,
    /// Paused.
    pub paused: bool,
    /// How it receives events (webhook, websocket or api).
    pub kind: SubscriptionType,
    /// Standard Webhooks signing secret (`whsec_...`); shown to clients only on creation.
    pub signing_secret: String,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    name: String,
    topic_name: String,
    topic_identifier: String,
    push: bool,
    config: serde_json::Value,
    paused: bool,
    subscription_type: String,
    signing_secret: String,
}

impl Row {
    /// The subscription of a row. Its topic was parsed when it was stored: a name that no
    /// longer parses is an internal error, never a subscription of another topic.
    fn into_subscription(self) -> Result<Subscription> {
        let name = TopicName::parse(&self.topic_name).map_err(|e| {
            Error::Internal(anyhow::anyhow!(
                "subscription {} has a bad stored topic name: {e}",
                self.id
            ))
        })?;
        let identifier = (!self.topic_identifier.is_empty()).then_some(self.topic_identifier);
        Ok(Subscription {
            id: self.id,
            name: self.name,
            topic: TopicRef { name, identifier },
            push: self.push,
            config: serde_json::from_value(self.config).unwrap_or_default(),
            paused: self.paused,
            kind: SubscriptionType::parse(&self.subscription_type).unwrap_or(SubscriptionType::Api),
            signing_secret: self.signing_secret,
        })
    }
}

const COLUMNS: &str = "id, name, topic_name, topic_identifier, push, config, paused, subscription_type, signing_secret";

/// Validates a webhook endpoint: an absolute http(s) URL with a host.
pub fn validate_endpoint(url: &str) -> Result<url::Url> {
    let u = url::Url::parse(url)
        .map_err(|e| Error::invalid(format!("config.endpoint_url is not a valid URL: {e}")))?;
    if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none_or(str::is_empty) {
        return Err(Error::invalid(
            "config.endpoint_url must be an http or https URL with a host",
        ));
    }
    Ok(u)
}

/// Checks what create and update share: the identifier, and a webhook's endpoint.
fn check_settings(
    kind: SubscriptionType,
    identifier: &str,
    config: &BTreeMap<String, String>,
) -> Result<()> {
    if !identifier.is_empty() {
        parse_identifier(identifier)?;
    }
    if kind == SubscriptionType::Webhook {
        let url = config.get("endpoint_url").map(String::as_str).unwrap_or("");
        if url.is_empty() {
            return Err(Error::invalid(
                "webhook subscriptions need config.endpoint_url",
            ));
        }
        validate_endpoint(url)?;
    }
    Ok(())
}

/// A unique violation on the name is ALREADY_EXISTS with the original's message.
fn name_taken(e: sqlx::Error) -> Error {
    if sqlstate(&e).as_deref() == Some(UNIQUE_VIOLATION) {
        Error::AlreadyExists("Subscription with that name already exists".into())
    } else {
        e.into()
    }
}

/// How long a node trusts an answer of [`Subscriptions::exists`].
const EXISTS_TTL: Duration = Duration::from_secs(1);
/// Answers of [`Subscriptions::exists`] kept before the cache is cleared.
const EXISTS_MAX: usize = 10_000;

/// The subscriptions service.
#[derive(Clone)]
pub struct Subscriptions {
    pool: PgPool,
    exists: Arc<TtlCache<Uuid, bool>>,
}

impl Subscriptions {
    /// The service over a pool.
    pub fn new(pool: PgPool) -> Self {
        Subscriptions {
            pool,
            exists: Arc::new(TtlCache::new(EXISTS_TTL, EXISTS_MAX)),
        }
    }

    /// Whether the subscription still exists, as of at most a second ago. Every listener of a
    /// subscription re-checks this twice a second; the cache makes that one query per
    /// subscription per second per node, however many listeners it has (also while the answer
    /// is being read: they wait for that one query).
    pub async fn exists(&self, id: Uuid) -> Result<bool> {
        self.exists
            .get(&id, || async {
                let yes: bool =
                    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM subscriptions WHERE id = $1)")
                        .bind(id)
                        .fetch_one(&self.pool)
                        .await?;
                Ok(yes)
            })
            .await
    }

    /// Creates a subscription (admins only).
    pub async fn create(&self, p: &Principal, new: NewSubscription) -> Result<Subscription> {
        p.require_admin("create subscriptions")?;
        let name = check_name(&new.name)?;
        let topic = TopicName::parse(&new.topic_name)?;
        let kind = SubscriptionType::parse(&new.subscription_type)?;
        check_settings(kind, &new.topic_identifier, &new.config)?;
        let mut secret = [0u8; 24];
        rand::rng().fill_bytes(&mut secret);
        let signing_secret = format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode(secret)
        );
        // A webhook subscription's delivery cursor starts at the topic's end, in the same
        // statement, so it receives exactly the events committed after it was created.
        let row = sqlx::query_as::<_, Row>(AssertSqlSafe(format!(
            "WITH s AS (
               INSERT INTO subscriptions (id, name, topic_name, topic_identifier, push, paused,
                 subscription_type, config, signing_secret)
               SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9 WHERE EXISTS (SELECT 1 FROM topics WHERE name = $3)
               RETURNING {COLUMNS}
             ), c AS (
               INSERT INTO subscription_cursors (subscription_id, delivered_offset)
               SELECT s.id, COALESCE(o.marked, 0) FROM s LEFT JOIN topic_offsets o ON o.name = s.topic_name
               WHERE s.subscription_type = 'webhook'
             )
             SELECT * FROM s"
        )))
        .bind(Uuid::now_v7())
        .bind(name)
        .bind(topic.as_str())
        .bind(&new.topic_identifier)
        .bind(new.push)
        .bind(new.paused)
        .bind(kind.as_str())
        .bind(serde_json::to_value(&new.config).unwrap_or_default())
        .bind(&signing_secret)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| {
            if sqlstate(&e).as_deref() == Some("23503") {
                // The topic was dropped between the EXISTS check and the insert.
                Error::not_found("Topic not found")
            } else {
                name_taken(e)
            }
        })?;
        row.ok_or_else(|| Error::not_found("Topic not found"))?
            .into_subscription()
    }

    /// One subscription (admins, or consumers associated with it).
    pub async fn get(&self, p: &Principal, id: Uuid) -> Result<Subscription> {
        p.authorize_subscription(id)?;
        self.find(id).await
    }

    /// One subscription, no authorization (internal use: delivery, websockets after auth).
    pub async fn find(&self, id: Uuid) -> Result<Subscription> {
        sqlx::query_as::<_, Row>(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM subscriptions WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| Error::not_found("Subscription not found"))?
        .into_subscription()
    }

    /// Lists subscriptions by name (admins only).
    pub async fn list(&self, p: &Principal, req: PageRequest) -> Result<Page<Subscription>> {
        p.require_admin("list subscriptions")?;
        let rows = sqlx::query_as::<_, Row>(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM subscriptions ORDER BY name LIMIT $1 OFFSET $2"
        )))
        .bind(req.size)
        .bind(req.offset())
        .fetch_all(&self.pool)
        .await?;
        let total: i64 = sqlx::query_scalar("SELECT count(*) FROM subscriptions")
            .fetch_one(&self.pool)
            .await?;
        let items = rows
            .into_iter()
            .map(Row::into_subscription)
            .collect::<Result<_>>()?;
        Ok(Page::new(req, items, total))
    }

    /// Deletes a subscription (admins only).
    pub async fn delete(&self, p: &Principal, id: Uuid) -> Result<Subscription> {
        p.require_admin("delete subscriptions")?;
        sqlx::query_as::<_, Row>(AssertSqlSafe(format!(
            "DELETE FROM subscriptions WHERE id = $1 RETURNING {COLUMNS}"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| Error::not_found("Subscription not found"))?
        .into_subscription()
    }
}
