//! Moving a topic's plain tables to the partitioned layout, online. Topics made before
//! retention existed (and, during a rolling upgrade, by nodes of an earlier version) have a
//! plain `<topic>_events` and `<topic>_deliveries`; their pruner converts them a step at a
//! time, each step safe to repeat and to resume on another node:
//!
//! 1. (deliveries only) add `expires_at` with a stable default: a catalog change, no rewrite;
//! 2. add a CHECK constraint `NOT VALID` bounding the partition key above everything the
//!    table can receive before the switch (a brief lock; new rows are checked from now on);
//! 3. `VALIDATE` it: a scan under SHARE UPDATE EXCLUSIVE, which blocks neither readers nor
//!    writers, however long the table;
//! 4. in one short transaction: rename the table into the partitions schema, make a
//!    partitioned parent of the old name with the same columns and indexes, attach the old
//!    table as partition 0 below the bound (no scan: the validated constraint proves it fits)
//!    and the first new partition above it.
//!
//! Readers and writers wait only for step 4's lock, a few milliseconds. Statements of any node
//! (prepared ones too) name the table, so they reach the new parent at once.

use super::TopicName;
use super::partitions::{self, SCHEMA, qualified};
use crate::error::{Error, Result, sqlstate};
use sqlx::{AssertSqlSafe, Connection, PgConnection, PgPool, Postgres, Transaction};
use std::time::Duration;

/// Name of the bounding constraint of step 2.
const BOUND: &str = "er_partition_bound";
/// Longest wait for a table's lock in steps 1, 2 and 4; on timeout the step is retried at
/// the next prune, so a busy table never has readers and writers queue behind the conversion.
const LOCK_TIMEOUT: &str = "2s";
/// SQLSTATE lock_not_available (a lock_timeout).
const LOCK_NOT_AVAILABLE: &str = "55P03";

/// What a conversion step did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// The table is partitioned (or gone): nothing left to do.
    Done,
    /// A step was taken; call again.
    Stepped,
    /// A lock was busy; try again later.
    Busy,
}

/// One step of converting `<topic>_events`. `headroom` is how many offsets may be published
/// between step 2 and step 4 (the bound is the topic's end plus it).
pub async fn convert_events(pool: &PgPool, topic: &TopicName, headroom: i64) -> Result<Progress> {
    let parent = topic.events_table();
    let state = table_state(pool, &parent, Some("offset")).await?;
    let result = match state {
        State::Gone | State::Partitioned => return Ok(Progress::Done),
        State::Plain { bound: None, .. } => add_bound_events(pool, topic, headroom).await,
        State::Plain {
            bound: Some(false), ..
        } => validate(pool, &parent).await,
        State::Plain {
            bound: Some(true), ..
        } => switch_events(pool, topic).await,
    };
    busy_is_not_an_error(result)
}

/// One step of converting `<topic>_deliveries`. `horizon` is the longest attempt retention
/// any node may use: the converted table takes every attempt expiring before two days past it.
pub async fn convert_deliveries(
    pool: &PgPool,
    topic: &TopicName,
    horizon: Duration,
) -> Result<Progress> {
    let parent = topic.deliveries_table();
    let state = table_state(pool, &parent, Some("expires_at")).await?;
    let result = match state {
        State::Gone | State::Partitioned => return Ok(Progress::Done),
        State::Plain { column: false, .. } => add_expiry_column(pool, &parent).await,
        State::Plain { bound: None, .. } => add_bound_deliveries(pool, topic, horizon).await,
        State::Plain {
            bound: Some(false), ..
        } => validate(pool, &parent).await,
        State::Plain {
            bound: Some(true), ..
        } => switch_deliveries(pool, topic).await,
    };
    busy_is_not_an_error(result)
}

/// Where a table stands in the conversion.
enum State {
    Gone,
    Partitioned,
    Plain {
        /// The partition key column exists.
        column: bool,
        /// The bounding constraint: absent, not yet validated, validated.
        bound: Option<bool>,
    },
}

async fn table_state(pool: &PgPool, table: &str, column: Option<&str>) -> Result<State> {
    let row: Option<(bool, bool, Option<bool>)> = sqlx::query_as(
        "SELECT c.relkind = 'p',
                EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid
                        AND a.attname = $2 AND NOT a.attisdropped),
                (SELECT k.convalidated FROM pg_constraint k
                  WHERE k.conrelid = c.oid AND k.conname = $3)
         FROM pg_class c WHERE c.oid = to_regclass($1)",
    )
    .bind(table)
    .bind(column.unwrap_or(""))
    .bind(BOUND)
    .fetch_optional(pool)
    .await?;
    Ok(match row {
        None => State::Gone,
        Some((true, _, _)) => State::Partitioned,
        Some((false, column, bound)) => State::Plain { column, bound },
    })
}

/// A transaction whose lock waits are bounded by [`LOCK_TIMEOUT`].
async fn begin_locked(pool: &PgPool) -> Result<Transaction<'static, Postgres>> {
    let mut tx = pool.begin().await?;
    sqlx::raw_sql(AssertSqlSafe(format!(
        "SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"
    )))
    .execute(&mut *tx)
    .await?;
    Ok(tx)
}

/// Step 1 of deliveries: the partition key. Rows already there expire 30 days from now.
async fn add_expiry_column(pool: &PgPool, table: &str) -> Result<Progress> {
    let mut tx = begin_locked(pool).await?;
    sqlx::raw_sql(AssertSqlSafe(format!(
        "ALTER TABLE {table} ADD COLUMN IF NOT EXISTS expires_at timestamptz
         NOT NULL DEFAULT now() + interval '30 days'"
    )))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Progress::Stepped)
}

async fn add_bound_deliveries(
    pool: &PgPool,
    topic: &TopicName,
    horizon: Duration,
) -> Result<Progress> {
    let days = (horizon.as_secs() / 86_400).max(30) + 2;
    let mut tx = begin_locked(pool).await?;
    let bound: chrono::DateTime<chrono::Utc> = sqlx::query_scalar(
        "SELECT date_trunc('day', now() + make_interval(days => $1::int), 'UTC')",
    )
    .bind(i32::try_from(days).unwrap_or(i32::MAX))
    .fetch_one(&mut *tx)
    .await?;
    sqlx::raw_sql(AssertSqlSafe(format!(
        "ALTER TABLE {} ADD CONSTRAINT {BOUND} CHECK (expires_at < '{}') NOT VALID",
        topic.deliveries_table(),
        bound.format("%Y-%m-%dT%H:%M:%SZ")
    )))
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE topic_retention SET deliveries_bound = $2 WHERE name = $1")
        .bind(topic.as_str())
        .bind(bound)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Progress::Stepped)
}

async fn add_bound_events(pool: &PgPool, topic: &TopicName, headroom: i64) -> Result<Progress> {
    let mut tx = begin_locked(pool).await?;
    // Everything published so far is below the topic's end; what is published until the
    // switch must stay below the bound too, or its insert fails the check.
    let end: i64 = sqlx::query_scalar(
        "SELECT GREATEST(t.last_offset, COALESCE(o.reserved, 0))
         FROM topics t LEFT JOIN topic_offsets o ON o.name = t.name WHERE t.name = $1",
    )
    .bind(topic.as_str())
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| Error::not_found("Topic not found"))?;
    let bound = end.saturating_add(headroom).saturating_add(1);
    sqlx::raw_sql(AssertSqlSafe(format!(
        "ALTER TABLE {} ADD CONSTRAINT {BOUND} CHECK (\"offset\" < {bound}) NOT VALID",
        topic.events_table()
    )))
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE topic_retention SET convert_bound = $2 WHERE name = $1")
        .bind(topic.as_str())
        .bind(bound)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Progress::Stepped)
}

/// Step 3, on a connection of its own without the pool's statement timeout: the scan takes
/// as long as the table is large.
async fn validate(pool: &PgPool, table: &str) -> Result<Progress> {
    let opts = (*pool.connect_options()).clone();
    let mut conn = PgConnection::connect_with(&opts).await?;
    sqlx::raw_sql("SET statement_timeout = 0")
        .execute(&mut conn)
        .await?;
    sqlx::raw_sql(AssertSqlSafe(format!(
        "ALTER TABLE {table} VALIDATE CONSTRAINT {BOUND}"
    )))
    .execute(&mut conn)
    .await?;
    let _ = conn.close().await;
    Ok(Progress::Stepped)
}

async fn switch_events(pool: &PgPool, topic: &TopicName) -> Result<Progress> {
    let mut tx = begin_locked(pool).await?;
    let parent = topic.events_table();
    let (bound, span): (Option<i64>, i64) =
        sqlx::query_as("SELECT convert_bound, partition_span FROM topic_retention WHERE name = $1")
            .bind(topic.as_str())
            .fetch_one(&mut *tx)
            .await?;
    let bound = bound
        .ok_or_else(|| Error::Internal(anyhow::anyhow!("{topic}: no convert_bound recorded")))?;
    let old = partitions::events_partition(topic, 0);
    let first = partitions::events_partition(topic, 1);
    move_into_schema(&mut tx, topic, &parent, &old).await?;
    let upper = bound.saturating_add(span);
    sqlx::raw_sql(AssertSqlSafe(format!(
        "CREATE TABLE {parent} (LIKE {q_old} INCLUDING DEFAULTS) PARTITION BY RANGE (\"offset\");
         ALTER TABLE {parent} ADD PRIMARY KEY (\"offset\");
         CREATE INDEX ON {parent} (topic_identifier, \"offset\");
         CREATE INDEX ON {parent} (name, \"offset\");
         ALTER TABLE {parent} ATTACH PARTITION {q_old} FOR VALUES FROM (MINVALUE) TO ({bound});
         CREATE TABLE {q_first} PARTITION OF {parent} FOR VALUES FROM ({bound}) TO ({upper});",
        q_old = qualified(&old),
        q_first = qualified(&first),
    )))
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE topic_retention SET partition_base = $2 WHERE name = $1")
        .bind(topic.as_str())
        .bind(bound)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    tracing::info!(topic = %topic, bound, "events table converted to partitions");
    Ok(Progress::Done)
}

async fn switch_deliveries(pool: &PgPool, topic: &TopicName) -> Result<Progress> {
    let mut tx = begin_locked(pool).await?;
    let parent = topic.deliveries_table();
    let bound: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT deliveries_bound FROM topic_retention WHERE name = $1")
            .bind(topic.as_str())
            .fetch_one(&mut *tx)
            .await?;
    let bound = bound
        .ok_or_else(|| Error::Internal(anyhow::anyhow!("{topic}: no deliveries_bound recorded")))?;
    let old = partitions::deliveries_partition(topic, None);
    move_into_schema(&mut tx, topic, &parent, &old).await?;
    sqlx::raw_sql(AssertSqlSafe(format!(
        "CREATE TABLE {parent} (LIKE {q_old} INCLUDING DEFAULTS) PARTITION BY RANGE (expires_at);
         CREATE INDEX ON {parent} (subscription_id, event_offset);
         ALTER TABLE {parent} ATTACH PARTITION {q_old} FOR VALUES FROM (MINVALUE) TO ('{b}');",
        q_old = qualified(&old),
        b = bound.format("%Y-%m-%dT%H:%M:%SZ"),
    )))
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE topic_retention SET deliveries_base = $2 WHERE name = $1")
        .bind(topic.as_str())
        .bind(bound)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    tracing::info!(topic = %topic, "deliveries table converted to partitions");
    Ok(Progress::Done)
}

/// Locks the plain table (waiting at most [`LOCK_TIMEOUT`] for writers in flight), then moves
/// it into the partitions schema as `new_name`, indexes and constraints with it.
async fn move_into_schema(
    tx: &mut PgConnection,
    topic: &TopicName,
    table: &str,
    new_name: &str,
) -> Result<()> {
    sqlx::raw_sql(AssertSqlSafe(format!(
        "LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"
    )))
    .execute(&mut *tx)
    .await?;
    partitions::drop_orphans_of(tx, topic).await?;
    sqlx::raw_sql(AssertSqlSafe(format!(
        "ALTER TABLE {table} RENAME TO \"{new_name}\";
         ALTER TABLE \"{new_name}\" SET SCHEMA {SCHEMA};"
    )))
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// A lock timeout means "not now": the step is retried at the next prune.
fn busy_is_not_an_error(r: Result<Progress>) -> Result<Progress> {
    match r {
        Err(Error::Internal(e))
            if e.downcast_ref::<sqlx::Error>()
                .and_then(sqlstate)
                .as_deref()
                == Some(LOCK_NOT_AVAILABLE) =>
        {
            Ok(Progress::Busy)
        }
        other => other,
    }
}
