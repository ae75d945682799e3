//! What a topic's retention looks like from outside: its policy and the statistics its pruner
//! keeps (first retained offset and time, bytes on disk, events and attempts pruned), read by
//! the API, the UI and `/metrics`, and written by the pruner after each step.

use super::policy::Policy;
use crate::error::Result;
use crate::metrics::{Metrics, TopicGauges};
use crate::topics::{Bounds, TopicName, partitions};
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use std::collections::HashMap;

/// A topic's retention policy and statistics.
#[derive(Clone, Debug, PartialEq)]
pub struct TopicRetention {
    /// What the topic keeps.
    pub policy: Policy,
    /// Where it stands.
    pub stats: TopicStats,
}

/// A topic's retained range and what its pruner last measured.
#[derive(Clone, Debug, PartialEq)]
pub struct TopicStats {
    /// First retained and last visible offset.
    pub bounds: Bounds,
    /// When the first retained event was stored (as of the last prune).
    pub oldest_at: Option<DateTime<Utc>>,
    /// Bytes on disk of the topic's tables, every partition with its indexes (last prune).
    pub bytes_on_disk: i64,
    /// Events removed by retention so far.
    pub pruned_events: i64,
    /// Attempt records removed by retention so far.
    pub pruned_attempts: i64,
    /// When retention last removed events.
    pub pruned_at: Option<DateTime<Utc>>,
    /// Whether the events table is partitioned yet (older topics are converted online).
    pub partitioned: bool,
}

#[derive(sqlx::FromRow)]
struct Row {
    name: String,
    max_age_seconds: i64,
    max_events: i64,
    max_bytes: i64,
    drop_undelivered: bool,
    first_offset: i64,
    last_offset: i64,
    oldest_at: Option<DateTime<Utc>>,
    bytes_on_disk: i64,
    pruned_events: i64,
    pruned_attempts: i64,
    pruned_at: Option<DateTime<Utc>>,
    partitioned: bool,
}

/// Every column, from [`MARKS`] m left-joined with `topic_retention` r (a topic made by a
/// node of an earlier version may have no retention row yet: it keeps everything).
/// Each topic with its mark (`topic_offsets.marked`, 0 before its first publish).
const MARKS: &str = "(SELECT t.name, COALESCE(o.marked, 0) AS last_offset
    FROM topics t LEFT JOIN topic_offsets o ON o.name = t.name) m";

const COLUMNS: &str = "m.name, COALESCE(r.max_age_seconds, 0) AS max_age_seconds,
    COALESCE(r.max_events, 0) AS max_events, COALESCE(r.max_bytes, 0) AS max_bytes,
    COALESCE(r.drop_undelivered, false) AS drop_undelivered,
    COALESCE(r.first_offset, 1) AS first_offset, m.last_offset, r.oldest_at,
    COALESCE(r.bytes_on_disk, 0) AS bytes_on_disk, COALESCE(r.pruned_events, 0) AS pruned_events,
    COALESCE(r.pruned_attempts, 0) AS pruned_attempts, r.pruned_at,
    COALESCE(r.partition_base IS NOT NULL, false) AS partitioned";

/// Retention and statistics of the named topics (missing ones are left out).
pub(super) async fn for_topics(
    pool: &PgPool,
    names: &[String],
) -> Result<HashMap<String, TopicRetention>> {
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM {MARKS} LEFT JOIN topic_retention r ON r.name = m.name
         WHERE m.name = ANY($1)"
    )))
    .bind(names)
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|r| {
            let policy = Policy::from_parts(
                r.max_age_seconds,
                r.max_events,
                r.max_bytes,
                r.drop_undelivered,
            )?;
            let stats = TopicStats {
                bounds: Bounds {
                    first: r.first_offset,
                    last: r.last_offset,
                },
                oldest_at: r.oldest_at,
                bytes_on_disk: r.bytes_on_disk,
                pruned_events: r.pruned_events,
                pruned_attempts: r.pruned_attempts,
                pruned_at: r.pruned_at,
                partitioned: r.partitioned,
            };
            Ok((r.name, TopicRetention { policy, stats }))
        })
        .collect()
}

/// Measures what the pruner reports after a step: bytes on disk and the time of the first
/// retained event.
pub(super) async fn record(pool: &PgPool, topic: &TopicName) -> Result<()> {
    let bytes = partitions::bytes_on_disk(pool, &topic.events_table()).await?
        + partitions::bytes_on_disk(pool, &topic.deliveries_table()).await?;
    let b = crate::topics::bounds(pool, topic.as_str()).await?;
    let oldest: Option<DateTime<Utc>> = if b.first <= b.last {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT inserted_at FROM {} WHERE \"offset\" = $1",
            topic.events_table()
        )))
        .bind(b.first)
        .fetch_optional(pool)
        .await?
    } else {
        None
    };
    sqlx::query(
        "UPDATE topic_retention SET bytes_on_disk = $2, oldest_at = $3, updated_at = now()
         WHERE name = $1",
    )
    .bind(topic.as_str())
    .bind(bytes)
    .bind(oldest)
    .execute(pool)
    .await?;
    Ok(())
}

/// Reads every topic's statistics and the housekeeping totals into `metrics`.
pub(super) async fn refresh_metrics(pool: &PgPool, metrics: &Metrics) -> Result<()> {
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM {MARKS} LEFT JOIN topic_retention r ON r.name = m.name"
    )))
    .fetch_all(pool)
    .await?;
    metrics.set_topic_gauges(rows.into_iter().map(|r| {
        TopicGauges {
            events: Bounds {
                first: r.first_offset,
                last: r.last_offset,
            }
            .retained(),
            topic: r.name,
            first_offset: r.first_offset,
            oldest_event_seconds: r.oldest_at.map(|t| t.timestamp_millis() as f64 / 1000.0),
            bytes: r.bytes_on_disk,
            pruned_events: r.pruned_events,
            pruned_attempts: r.pruned_attempts,
        }
    }));
    let totals: Vec<(String, i64)> = sqlx::query_as("SELECT what, rows FROM retention_totals")
        .fetch_all(pool)
        .await?;
    for (what, rows) in totals {
        metrics.set_retention_pruned(&what, rows);
    }
    Ok(())
}
