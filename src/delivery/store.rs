//! Delivery state in Postgres: the subscription cursor (position, retry state, fencing epoch)
//! and the attempt records in `<topic>_deliveries`. Every write that moves a cursor names the
//! epoch its writer acquired the subscription under and changes nothing if the epoch has moved
//! on; the attempt record is inserted by the same statement, so both happen or neither does.

use crate::error::{Error, Result, UNDEFINED_TABLE, sqlstate};
use crate::topics::TopicName;
use chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, PgPool};
use uuid::Uuid;

/// A subscription's delivery state as its worker sees it before each step.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct CursorState {
    /// Last offset acknowledged or given up on.
    pub delivered_offset: i64,
    /// Fencing epoch.
    pub epoch: i64,
    /// Failed attempts so far at the next event.
    pub attempts: i32,
    /// Not before this time.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The subscription is paused.
    pub paused: bool,
    /// Last change of the subscription's settings (a worker restarts when it moves).
    pub subscription_updated_at: DateTime<Utc>,
    /// The topic's first retained offset: a cursor below `first_offset - 1` is behind
    /// retention.
    pub first_offset: i64,
    /// The topic lets retention remove undelivered events (the cursor then skips them).
    pub drop_undelivered: bool,
}

/// Reads the state; `None` when the subscription (or its cursor) no longer exists.
pub async fn state(pool: &PgPool, subscription: Uuid) -> Result<Option<CursorState>> {
    Ok(sqlx::query_as::<_, CursorState>(
        "SELECT c.delivered_offset, c.epoch, c.attempts, c.next_attempt_at, s.paused,
                s.updated_at AS subscription_updated_at,
                COALESCE(r.first_offset, 1) AS first_offset,
                COALESCE(r.drop_undelivered, false) AS drop_undelivered
         FROM subscription_cursors c JOIN subscriptions s ON s.id = c.subscription_id
         LEFT JOIN topic_retention r ON r.name = s.topic_name
         WHERE c.subscription_id = $1",
    )
    .bind(subscription)
    .fetch_optional(pool)
    .await?)
}

/// Takes a subscription for a new owner: bumps the epoch (creating the cursor at the topic's
/// end if it is missing) and returns the new epoch; `None` if the subscription is gone.
pub async fn acquire(pool: &PgPool, subscription: Uuid, node: Uuid) -> Result<Option<i64>> {
    Ok(sqlx::query_scalar(
        "INSERT INTO subscription_cursors (subscription_id, delivered_offset, epoch, owner_node)
         SELECT s.id, COALESCE(o.marked, 0), 1, $2
         FROM subscriptions s LEFT JOIN topic_offsets o ON o.name = s.topic_name WHERE s.id = $1
         ON CONFLICT (subscription_id) DO UPDATE
           SET epoch = subscription_cursors.epoch + 1, owner_node = $2, updated_at = now()
         RETURNING epoch",
    )
    .bind(subscription)
    .bind(node)
    .fetch_optional(pool)
    .await?)
}

/// One attempt, as recorded.
#[derive(Clone, Debug)]
pub struct AttemptRecord {
    /// Event offset.
    pub event_offset: i64,
    /// Event id (also the `webhook-id`).
    pub event_id: Uuid,
    /// 1-based attempt number for this event.
    pub attempt: i32,
    /// `delivered`, `failed`, `undeliverable` or `gone`.
    pub status: &'static str,
    /// HTTP status, if the receiver answered.
    pub response_status: Option<i32>,
    /// Connection error, or the start of the response body.
    pub error: Option<String>,
    /// How long the attempt took.
    pub duration_ms: i32,
    /// When it started.
    pub attempted_at: DateTime<Utc>,
    /// When retention removes the record (`retention::RetentionConfig::attempt_expiry`).
    pub expires_at: DateTime<Utc>,
}

/// How the cursor moves with an attempt.
#[derive(Clone, Debug)]
pub struct CursorUpdate {
    /// New delivered offset.
    pub delivered_offset: i64,
    /// Failed attempts at the next event.
    pub attempts: i32,
    /// Not before this time.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Pause the subscription too (410 Gone, or exhausted with `on_exhausted=pause`).
    pub pause: bool,
}

/// Records an attempt and moves the cursor, both only if `epoch` is still current. Returns
/// false when fenced off (another owner, or a reset, took over). When no partition takes the
/// record's expiry day yet (the pruner makes them ahead for topics with webhooks), one is made
/// and the statement runs again: it failed whole, so nothing was written.
pub async fn record(
    pool: &PgPool,
    topic: &TopicName,
    subscription: Uuid,
    epoch: i64,
    a: &AttemptRecord,
    c: &CursorUpdate,
) -> Result<bool> {
    match record_once(pool, topic, subscription, epoch, a, c).await {
        Err(e) if crate::topics::partitions::is_missing_partition(&e) => {
            crate::topics::partitions::ensure_deliveries(pool, topic, a.expires_at).await?;
            record_once(pool, topic, subscription, epoch, a, c).await
        }
        other => other,
    }
}

async fn record_once(
    pool: &PgPool,
    topic: &TopicName,
    subscription: Uuid,
    epoch: i64,
    a: &AttemptRecord,
    c: &CursorUpdate,
) -> Result<bool> {
    let sql = format!(
        "WITH c AS (
           UPDATE subscription_cursors
              SET delivered_offset = $3, attempts = $4, next_attempt_at = $5, updated_at = now()
            WHERE subscription_id = $1 AND epoch = $2
            RETURNING subscription_id
         ), p AS (
           UPDATE subscriptions SET paused = true, updated_at = now()
            WHERE $6 AND id IN (SELECT subscription_id FROM c)
         )
         INSERT INTO {} (id, subscription_id, event_offset, event_id, attempt, status,
                         response_status, error, duration_ms, epoch, attempted_at, expires_at)
         SELECT $7, subscription_id, $8, $9, $10, $11, $12, $13, $14, $2, $15, $16 FROM c",
        topic.deliveries_table()
    );
    let done = sqlx::query(AssertSqlSafe(sql))
        .bind(subscription)
        .bind(epoch)
        .bind(c.delivered_offset)
        .bind(c.attempts)
        .bind(c.next_attempt_at)
        .bind(c.pause)
        .bind(Uuid::now_v7())
        .bind(a.event_offset)
        .bind(a.event_id)
        .bind(a.attempt)
        .bind(a.status)
        .bind(a.response_status)
        .bind(a.error.as_deref())
        .bind(a.duration_ms)
        .bind(a.attempted_at)
        .bind(a.expires_at)
        .execute(pool)
        .await
        .map_err(topic_gone)?;
    Ok(done.rows_affected() == 1)
}

/// A recorded attempt, as listed.
#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct DeliveryRecord {
    /// Id of the record.
    pub id: Uuid,
    /// Event offset.
    pub event_offset: i64,
    /// Event id.
    pub event_id: Uuid,
    /// Attempt number for this event.
    pub attempt: i32,
    /// `delivered`, `failed`, `undeliverable` or `gone`.
    pub status: String,
    /// HTTP status, if any.
    pub response_status: Option<i32>,
    /// Error or response start.
    pub error: Option<String>,
    /// Duration.
    pub duration_ms: i32,
    /// Owner epoch that made the attempt.
    pub epoch: i64,
    /// When.
    pub attempted_at: DateTime<Utc>,
}

/// A page of a subscription's attempts, newest first, and the total.
pub async fn list(
    pool: &PgPool,
    topic: &TopicName,
    subscription: Uuid,
    limit: i64,
    offset: i64,
) -> Result<(Vec<DeliveryRecord>, i64)> {
    let table = topic.deliveries_table();
    let items = sqlx::query_as::<_, DeliveryRecord>(AssertSqlSafe(format!(
        "SELECT id, event_offset, event_id, attempt, status, response_status, error,
                duration_ms, epoch, attempted_at
         FROM {table} WHERE subscription_id = $1 ORDER BY id DESC LIMIT $2 OFFSET $3"
    )))
    .bind(subscription)
    .bind(limit)
    .bind(offset)
    .fetch_all(pool)
    .await
    .map_err(topic_gone)?;
    let total: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT count(*) FROM {table} WHERE subscription_id = $1"
    )))
    .bind(subscription)
    .fetch_one(pool)
    .await
    .map_err(topic_gone)?;
    Ok((items, total))
}

/// A dropped topic's table reads as "Topic not found", not as an internal error.
fn topic_gone(e: sqlx::Error) -> Error {
    if sqlstate(&e).as_deref() == Some(UNDEFINED_TABLE) {
        Error::not_found("Topic not found")
    } else {
        e.into()
    }
}
