//! Making partitions: ahead of need by the topic's pruner ([`ensure_events`],
//! [`ensure_deliveries`]), and at once for a write that found none ([`make_room`], on
//! [`missing_partition`]). An empty table is created apart and attached, serialised per topic,
//! so making one never blocks readers or writers.

use super::{
    children, deliveries_partition, events_layout, events_number, events_partition, qualified,
};
use crate::error::Result;
use crate::topics::TopicName;
use chrono::{DateTime, Duration as TimeDelta, Utc};
use sqlx::{AssertSqlSafe, PgConnection, PgPool};

/// Longest wait for the parent's lock when attaching a partition: a waiting ATTACH would make
/// later requests for conflicting locks queue behind it.
const ATTACH_LOCK_TIMEOUT: &str = "5s";

/// Makes sure every offset of `from..=upto` has a partition to go to; returns how many
/// partitions were made. Only partitions of that range are made: offsets below the topic's
/// reservation are stored already or never will be (a counter moved by a bulk load leaves a
/// gap no partition needs to cover). Nothing to do while the events table is still plain.
pub async fn ensure_events(
    pool: &PgPool,
    topic: &TopicName,
    from: i64,
    upto: i64,
) -> Result<usize> {
    let Some(layout) = events_layout(pool, topic).await? else {
        return Ok(0);
    };
    let (Some(base), Some(lo), Some(hi)) = (
        layout.base,
        layout.partition_of(from.max(1)),
        layout.partition_of(upto),
    ) else {
        return Ok(0);
    };
    let have: std::collections::HashSet<i64> = children(pool, &topic.events_table())
        .await?
        .iter()
        .filter_map(|c| events_number(topic, &c.table))
        .collect();
    let mut made = 0;
    for n in lo.max(1)..=hi {
        if have.contains(&n) {
            continue;
        }
        let lower = layout.lower(n).unwrap_or(base);
        let upper = layout.upper(n).unwrap_or(i64::MAX);
        let bounds = format!("FROM ({lower}) TO ({upper})");
        if attach(
            pool,
            topic,
            &topic.events_table(),
            &events_partition(topic, n),
            &bounds,
        )
        .await?
        {
            made += 1;
        }
    }
    Ok(made)
}

/// Makes partitions for a write of `n` events that found none (the publish path's fallback):
/// up to a partition past the topic's reservation plus `n`.
pub async fn make_room(pool: &PgPool, topic: &TopicName, n: i64) -> Result<usize> {
    let end: Option<(i64, i64)> = sqlx::query_as(
        "SELECT GREATEST(t.last_offset, COALESCE(o.reserved, 0)), r.partition_span
         FROM topics t JOIN topic_retention r ON r.name = t.name
         LEFT JOIN topic_offsets o ON o.name = t.name WHERE t.name = $1",
    )
    .bind(topic.as_str())
    .fetch_optional(pool)
    .await?;
    let Some((end, span)) = end else {
        return Ok(0);
    };
    let made = ensure_events(
        pool,
        topic,
        end.saturating_add(1),
        end.saturating_add(n).saturating_add(span),
    )
    .await?;
    tracing::info!(topic = %topic, made, "a write found no partition: made them at once");
    Ok(made)
}

/// Makes sure attempts expiring at `at` have a partition; true if one was made. Nothing to do
/// while the deliveries table is plain, or where the converted plain table covers `at`.
pub async fn ensure_deliveries(
    pool: &PgPool,
    topic: &TopicName,
    at: DateTime<Utc>,
) -> Result<bool> {
    let base: Option<Option<DateTime<Utc>>> =
        sqlx::query_scalar("SELECT deliveries_base FROM topic_retention WHERE name = $1")
            .bind(topic.as_str())
            .fetch_optional(pool)
            .await?;
    let Some(Some(base)) = base else {
        return Ok(false);
    };
    if at < base {
        return Ok(false);
    }
    let day = at.date_naive();
    let start = day.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc();
    let end = start + TimeDelta::days(1);
    let bounds = format!(
        "FROM ('{}') TO ('{}')",
        start.format("%Y-%m-%dT%H:%M:%SZ"),
        end.format("%Y-%m-%dT%H:%M:%SZ")
    );
    attach(
        pool,
        topic,
        &topic.deliveries_table(),
        &deliveries_partition(topic, Some(day)),
        &bounds,
    )
    .await
}

/// Creates `table` shaped like `parent` and attaches it with `bounds`, unless it is attached
/// already; true if it was made. Serialised per topic by a transaction advisory lock, so a
/// pruner and a writer's fallback (on any node) never race for one partition.
async fn attach(
    pool: &PgPool,
    topic: &TopicName,
    parent: &str,
    table: &str,
    bounds: &str,
) -> Result<bool> {
    let mut tx = pool.begin().await?;
    sqlx::query(AssertSqlSafe(format!(
        "SET LOCAL lock_timeout = '{ATTACH_LOCK_TIMEOUT}'"
    )))
    .execute(&mut *tx)
    .await?;
    lock_topic(&mut tx, topic).await?;
    let attached: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = to_regclass($1))",
    )
    .bind(qualified(table))
    .fetch_one(&mut *tx)
    .await?;
    if attached {
        return Ok(false);
    }
    // A table of that name that is not attached is left from a detach whose drop did not
    // happen (or from a dropped topic of the same name): it holds nothing anyone can read.
    let q = qualified(table);
    sqlx::raw_sql(AssertSqlSafe(format!(
        "DROP TABLE IF EXISTS {q};
         CREATE TABLE {q} (LIKE {parent} INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
         ALTER TABLE {parent} ATTACH PARTITION {q} FOR VALUES {bounds};"
    )))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    tracing::debug!(topic = %topic, table, "partition attached");
    Ok(true)
}

/// Whether a statement failed because no partition takes one of its rows (a burst outran the
/// partitions made ahead, or an expiry day none was made for yet).
pub fn missing_partition(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            db.code().as_deref() == Some("23514")
                && db.message().starts_with("no partition of relation")
        }
        _ => false,
    }
}

/// [`missing_partition`] of a domain error.
pub fn is_missing_partition(e: &crate::error::Error) -> bool {
    match e {
        crate::error::Error::Internal(cause) => cause
            .downcast_ref::<sqlx::Error>()
            .is_some_and(missing_partition),
        _ => false,
    }
}

/// Takes the topic's partition-maintenance lock until the transaction ends.
pub(crate) async fn lock_topic(conn: &mut PgConnection, topic: &TopicName) -> Result<()> {
    sqlx::query(
        "SELECT pg_advisory_xact_lock(hashtextextended('eventrelay:partitions:' || $1, 0))",
    )
    .bind(topic.as_str())
    .execute(&mut *conn)
    .await?;
    Ok(())
}
