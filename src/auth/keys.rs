//! API keys in Postgres: creation (secret shown once, stored as SHA-256), revocation, and the
//! topic and subscription grants that make up a key's [`Principal`].

use super::principal::{KeyType, Principal, SubscriptionGrant, TopicGrant};
use crate::error::{Error, Result};
use crate::topics::TopicRef;
use base64::Engine;
use rand::Rng;
use rand::distr::Alphanumeric;
use sha2::{Digest, Sha256};
use sqlx::AssertSqlSafe;
use sqlx::PgPool;
use uuid::Uuid;

/// An API key as shown to clients. `secret` is only present right after creation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKey {
    /// Id.
    pub id: Uuid,
    /// Public key part (42 URL-safe characters).
    pub key: String,
    /// The secret (64 URL-safe characters); `None` once stored.
    pub secret: Option<String>,
    /// Active or revoked.
    pub revoked: bool,
    /// Type.
    pub key_type: KeyType,
    /// Human name.
    pub name: String,
}

impl ApiKey {
    /// Base64 of `key:secret`, the bearer token; only while the secret is known.
    pub fn bearer_token(&self) -> Option<String> {
        self.secret
            .as_ref()
            .map(|s| base64::engine::general_purpose::STANDARD.encode(format!("{}:{s}", self.key)))
    }
}

/// What authentication needs of a stored key.
#[derive(Clone, Debug)]
pub(crate) struct KeyRecord {
    pub id: Uuid,
    pub secret_hash: Vec<u8>,
    pub revoked: bool,
}

#[derive(sqlx::FromRow)]
struct KeyRow {
    id: Uuid,
    key: String,
    key_type: String,
    status: String,
    name: String,
}

impl KeyRow {
    fn into_key(self) -> Result<ApiKey> {
        Ok(ApiKey {
            id: self.id,
            key: self.key,
            secret: None,
            revoked: self.status == "revoked",
            key_type: KeyType::parse(&self.key_type)?,
            name: self.name,
        })
    }
}

/// SHA-256 of a secret.
pub(crate) fn hash_secret(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

fn random_string(len: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// Key type, topic grant names and identifiers, subscription ids with their topic names and
/// identifiers: parallel arrays, one round trip.
type GrantsRow = (
    String,
    Vec<String>,
    Vec<String>,
    Vec<Uuid>,
    Vec<String>,
    Vec<String>,
);

const KEY_COLUMNS: &str = "id, key, key_type, status, name";

/// The key store.
#[derive(Clone)]
pub struct ApiKeys {
    pool: PgPool,
}

impl ApiKeys {
    /// The store over a pool.
    pub fn new(pool: PgPool) -> Self {
        ApiKeys { pool }
    }

    /// Creates a key with its grants in one transaction; the returned key carries its secret.
    pub async fn create(
        &self,
        key_type: KeyType,
        name: &str,
        topics: &[TopicRef],
        subscription_ids: &[Uuid],
    ) -> Result<ApiKey> {
        if name.len() > 255 {
            return Err(Error::invalid("name must be at most 255 characters"));
        }
        let secret = random_string(64);
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query_as::<_, KeyRow>(AssertSqlSafe(format!(
            "INSERT INTO api_keys (id, key, secret_hash, key_type, name) VALUES ($1, $2, $3, $4, $5)
             RETURNING {KEY_COLUMNS}"
        )))
        .bind(Uuid::now_v7())
        .bind(random_string(42))
        .bind(hash_secret(&secret))
        .bind(key_type.as_str())
        .bind(name)
        .fetch_one(&mut *tx)
        .await?;
        add_topics(&mut tx, row.id, topics).await?;
        add_subscriptions(&mut tx, row.id, subscription_ids).await?;
        tx.commit().await?;
        let mut key = row.into_key()?;
        key.secret = Some(secret);
        Ok(key)
    }

    /// Revokes a key. Nodes stop accepting it within their cache lifetime (one second).
    pub async fn revoke(&self, id: Uuid) -> Result<ApiKey> {
        let row = sqlx::query_as::<_, KeyRow>(AssertSqlSafe(format!(
            "UPDATE api_keys SET status = 'revoked', revoked_at = now()
             WHERE id = $1 AND status = 'active' RETURNING {KEY_COLUMNS}"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) => row.into_key(),
            None => {
                self.get(id).await?;
                Err(Error::FailedPrecondition(
                    "ApiKey is already revoked".into(),
                ))
            }
        }
    }

    /// One key, without secret.
    pub async fn get(&self, id: Uuid) -> Result<ApiKey> {
        sqlx::query_as::<_, KeyRow>(AssertSqlSafe(format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| Error::not_found("ApiKey not found"))?
        .into_key()
    }

    /// All keys, newest first (for the admin UI).
    pub async fn list(&self) -> Result<Vec<ApiKey>> {
        sqlx::query_as::<_, KeyRow>(AssertSqlSafe(format!(
            "SELECT {KEY_COLUMNS} FROM api_keys ORDER BY inserted_at DESC LIMIT 1000"
        )))
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(KeyRow::into_key)
        .collect()
    }

    /// Grants topics; returns those newly granted.
    pub async fn add_topics(&self, id: Uuid, topics: &[TopicRef]) -> Result<Vec<String>> {
        let mut tx = self.pool.begin().await?;
        self.lock_key(&mut tx, id).await?;
        let added = add_topics(&mut tx, id, topics).await?;
        tx.commit().await?;
        Ok(added)
    }

    /// Removes topic grants; returns those removed.
    pub async fn delete_topics(&self, id: Uuid, topics: &[TopicRef]) -> Result<Vec<String>> {
        let mut tx = self.pool.begin().await?;
        self.lock_key(&mut tx, id).await?;
        let mut removed = Vec::new();
        for t in topics {
            let n = sqlx::query(
                "DELETE FROM api_key_topics
                 WHERE api_key_id = $1 AND topic_name = $2 AND topic_identifier = $3",
            )
            .bind(id)
            .bind(t.name.as_str())
            .bind(t.identifier_str())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n > 0 {
                removed.push(t.to_string());
            }
        }
        tx.commit().await?;
        Ok(removed)
    }

    /// Associates subscriptions; returns those newly associated.
    pub async fn add_subscriptions(&self, id: Uuid, subs: &[Uuid]) -> Result<Vec<Uuid>> {
        let mut tx = self.pool.begin().await?;
        self.lock_key(&mut tx, id).await?;
        let added = add_subscriptions(&mut tx, id, subs).await?;
        tx.commit().await?;
        Ok(added)
    }

    /// Removes subscription associations; returns those removed.
    pub async fn delete_subscriptions(&self, id: Uuid, subs: &[Uuid]) -> Result<Vec<Uuid>> {
        let mut tx = self.pool.begin().await?;
        self.lock_key(&mut tx, id).await?;
        let removed: Vec<Uuid> = sqlx::query_scalar(
            "DELETE FROM api_key_subscriptions WHERE api_key_id = $1 AND subscription_id = ANY($2)
             RETURNING subscription_id",
        )
        .bind(id)
        .bind(subs)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(subs
            .iter()
            .copied()
            .filter(|s| removed.contains(s))
            .collect())
    }

    async fn lock_key(&self, tx: &mut sqlx::PgConnection, id: Uuid) -> Result<()> {
        sqlx::query_scalar::<_, Uuid>("SELECT id FROM api_keys WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .map(|_| ())
            .ok_or_else(|| Error::not_found("ApiKey not found"))
    }

    /// The stored key with that public part, for authentication.
    pub(crate) async fn record_by_key(&self, key: &str) -> Result<Option<KeyRecord>> {
        self.record("key = $1", key).await
    }

    /// The stored key with that id, for JWT authentication.
    pub(crate) async fn record_by_id(&self, id: Uuid) -> Result<Option<KeyRecord>> {
        self.record("id = $1", id).await
    }

    async fn record<T>(&self, cond: &str, v: T) -> Result<Option<KeyRecord>>
    where
        T: for<'q> sqlx::Encode<'q, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send,
    {
        let row: Option<(Uuid, Vec<u8>, String)> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT id, secret_hash, status FROM api_keys WHERE {cond}"
        )))
        .bind(v)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(id, secret_hash, status)| KeyRecord {
            id,
            secret_hash,
            revoked: status == "revoked",
        }))
    }

    /// The key's principal with its current grants, in one round trip.
    pub(crate) async fn principal(&self, id: Uuid) -> Result<Principal> {
        let row: Option<GrantsRow> =
            sqlx::query_as(
                "SELECT k.key_type,
                    ARRAY(SELECT topic_name FROM api_key_topics WHERE api_key_id = k.id ORDER BY topic_name, topic_identifier),
                    ARRAY(SELECT topic_identifier FROM api_key_topics WHERE api_key_id = k.id ORDER BY topic_name, topic_identifier),
                    ARRAY(SELECT s.id FROM api_key_subscriptions a JOIN subscriptions s ON s.id = a.subscription_id
                          WHERE a.api_key_id = k.id ORDER BY s.id),
                    ARRAY(SELECT s.topic_name FROM api_key_subscriptions a JOIN subscriptions s ON s.id = a.subscription_id
                          WHERE a.api_key_id = k.id ORDER BY s.id),
                    ARRAY(SELECT s.topic_identifier FROM api_key_subscriptions a JOIN subscriptions s ON s.id = a.subscription_id
                          WHERE a.api_key_id = k.id ORDER BY s.id)
                 FROM api_keys k WHERE k.id = $1",
            )
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        let (key_type, t_names, t_idents, s_ids, s_names, s_idents) =
            row.ok_or_else(|| Error::Unauthenticated("Invalid credentials".into()))?;
        Ok(Principal {
            key_id: id,
            key_type: KeyType::parse(&key_type)?,
            topics: t_names
                .into_iter()
                .zip(t_idents)
                .map(|(name, identifier)| TopicGrant { name, identifier })
                .collect(),
            subscriptions: s_ids
                .into_iter()
                .zip(s_names.into_iter().zip(s_idents))
                .map(|(id, (name, identifier))| SubscriptionGrant {
                    id,
                    topic: TopicGrant { name, identifier },
                })
                .collect(),
        })
    }
}

async fn add_topics(
    tx: &mut sqlx::PgConnection,
    id: Uuid,
    topics: &[TopicRef],
) -> Result<Vec<String>> {
    let mut added = Vec::new();
    for t in topics {
        let n = sqlx::query(
            "INSERT INTO api_key_topics (api_key_id, topic_name, topic_identifier)
             VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(id)
        .bind(t.name.as_str())
        .bind(t.identifier_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n > 0 {
            added.push(t.to_string());
        }
    }
    Ok(added)
}

async fn add_subscriptions(
    tx: &mut sqlx::PgConnection,
    id: Uuid,
    subs: &[Uuid],
) -> Result<Vec<Uuid>> {
    let known: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM subscriptions WHERE id = ANY($1)")
        .bind(subs)
        .fetch_all(&mut *tx)
        .await?;
    if let Some(missing) = subs.iter().find(|s| !known.contains(s)) {
        return Err(Error::not_found(format!(
            "Subscription not found: {missing}"
        )));
    }
    let mut added = Vec::new();
    for s in subs {
        let n = sqlx::query(
            "INSERT INTO api_key_subscriptions (api_key_id, subscription_id)
             VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(id)
        .bind(s)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n > 0 {
            added.push(*s);
        }
    }
    Ok(added)
}
