//! The dead-letter table: events refused at publish time, kept with every reason, so a
//! producer's mistakes are visible instead of silently dropped.

use super::model::{NewEvent, Refused};
use crate::error::Result;
use crate::page::{Page, PageRequest};
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

/// A refused event.
#[derive(Clone, Debug)]
pub struct DeadLetter {
    /// Id of the record.
    pub id: Uuid,
    /// Topic string as published ("" when missing).
    pub topic: String,
    /// The event as received.
    pub event: NewEvent,
    /// Why it was refused.
    pub errors: Vec<String>,
    /// When.
    pub inserted_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    topic: String,
    event: serde_json::Value,
    errors: Vec<String>,
    inserted_at: DateTime<Utc>,
}

/// Stores refused events, all of one request in one statement.
pub async fn record(pool: &PgPool, topic: &str, refused: &[Refused]) -> Result<()> {
    if refused.is_empty() {
        return Ok(());
    }
    let topic_name = topic.split(':').next().unwrap_or_default().to_owned();
    let ids: Vec<Uuid> = refused.iter().map(|_| Uuid::now_v7()).collect();
    let events: Vec<String> = refused
        .iter()
        .map(|r| serde_json::to_string(&r.event).unwrap_or_else(|_| "{}".into()))
        .collect();
    // Postgres has no ragged arrays: errors travel as one JSON array per event.
    let errors: Vec<String> = refused
        .iter()
        .map(|r| serde_json::to_string(&r.errors).unwrap_or_else(|_| "[]".into()))
        .collect();
    sqlx::query(
        "INSERT INTO dead_letters (id, topic, topic_name, event, errors)
         SELECT i, $4, $5, e::jsonb, ARRAY(SELECT jsonb_array_elements_text(r::jsonb))
         FROM UNNEST($1::uuid[], $2::text[], $3::text[]) AS u(i, e, r)",
    )
    .bind(ids)
    .bind(events)
    .bind(errors)
    .bind(strip_nul(topic))
    .bind(strip_nul(&topic_name))
    .execute(pool)
    .await?;
    Ok(())
}

/// Postgres text cannot hold NUL; a dead letter must still be storable.
fn strip_nul(s: &str) -> String {
    s.replace('\0', "")
}

/// Lists dead letters, newest first, optionally of one topic name.
pub async fn list(pool: &PgPool, topic_name: &str, req: PageRequest) -> Result<Page<DeadLetter>> {
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, topic, event, errors, inserted_at FROM dead_letters
         WHERE ($1 = '' OR topic_name = $1) ORDER BY inserted_at DESC, id DESC LIMIT $2 OFFSET $3",
    )
    .bind(topic_name)
    .bind(req.size)
    .bind(req.offset())
    .fetch_all(pool)
    .await?;
    let total: i64 =
        sqlx::query_scalar("SELECT count(*) FROM dead_letters WHERE ($1 = '' OR topic_name = $1)")
            .bind(topic_name)
            .fetch_one(pool)
            .await?;
    let items = rows
        .into_iter()
        .map(|r| DeadLetter {
            id: r.id,
            topic: r.topic,
            event: serde_json::from_value(r.event).unwrap_or_default(),
            errors: r.errors,
            inserted_at: r.inserted_at,
        })
        .collect();
    Ok(Page::new(req, items, total))
}
