//! Partitions of a topic's tables. `<topic>_events` is partitioned by offset range: partition
//! `n` (n >= 1) holds offsets `[base + (n-1)*span, base + n*span)`, and partition 0, where a
//! plain table was converted (`layout.rs`), everything below `base`. `<topic>_deliveries` is
//! partitioned by the day an attempt record expires: `<topic>_d<yyyymmdd>`, and `<topic>_d0`
//! for a converted plain table. Every partition lives in [`SCHEMA`].
//!
//! Partitions are made ahead of need by the topic's pruner ([`ensure_events`]), and at once by
//! a writer whose rows found none (the publish path's fallback, in `events::insert`). Making
//! one never blocks readers or writers: an empty table is created apart and attached, which
//! takes SHARE UPDATE EXCLUSIVE on the parent (CREATE TABLE ... PARTITION OF would take ACCESS
//! EXCLUSIVE). Retention removes a partition by detaching it CONCURRENTLY, then dropping the
//! table no query can reach any more ([`detach_and_drop`]).

use super::TopicName;
use crate::error::Result;
use chrono::{DateTime, Duration as TimeDelta, NaiveDate, Utc};
use sqlx::{AssertSqlSafe, PgConnection, PgPool, Row};

/// The schema every partition lives in.
pub const SCHEMA: &str = "eventrelay_partitions";

/// Longest wait for the parent's lock when attaching a partition: a waiting ATTACH would make
/// later requests for conflicting locks queue behind it.
const ATTACH_LOCK_TIMEOUT: &str = "5s";

/// A topic's events layout, from `topic_retention`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventsLayout {
    /// Offsets per partition.
    pub span: i64,
    /// First offset of partition 1; `None` while the table is plain.
    pub base: Option<i64>,
}

impl EventsLayout {
    /// The partition holding `offset` (0: the converted plain table).
    pub fn partition_of(&self, offset: i64) -> Option<i64> {
        let base = self.base?;
        Some(if offset < base {
            0
        } else {
            (offset - base) / self.span + 1
        })
    }

    /// First offset above partition `n` (its exclusive upper bound).
    pub fn upper(&self, n: i64) -> Option<i64> {
        let base = self.base?;
        Some(base.saturating_add(n.saturating_mul(self.span)))
    }

    /// First offset of partition `n` (n >= 1).
    pub fn lower(&self, n: i64) -> Option<i64> {
        self.upper(n - 1)
    }
}

/// One child of a partitioned table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Child {
    /// Table name inside [`SCHEMA`] (unquoted).
    pub table: String,
    /// Half-detached: a `DETACH ... CONCURRENTLY` began and did not finish.
    pub detaching: bool,
}

/// Quoted, schema-qualified name of table `table` of [`SCHEMA`].
pub fn qualified(table: &str) -> String {
    format!("\"{SCHEMA}\".\"{table}\"")
}

/// Table name of events partition `n`.
pub fn events_partition(topic: &TopicName, n: i64) -> String {
    format!("{topic}_e{n}")
}

/// Table name of the deliveries partition for attempts expiring on `day` (`None`: the
/// converted plain table).
pub fn deliveries_partition(topic: &TopicName, day: Option<NaiveDate>) -> String {
    match day {
        Some(d) => format!("{topic}_d{}", d.format("%Y%m%d")),
        None => format!("{topic}_d0"),
    }
}

/// The events partition number of a child table's name.
pub fn events_number(topic: &TopicName, table: &str) -> Option<i64> {
    table
        .strip_prefix(topic.as_str())?
        .strip_prefix("_e")?
        .parse()
        .ok()
}

/// The expiry day of a deliveries child's name: `Some(None)` for the converted plain table.
pub fn deliveries_day(topic: &TopicName, table: &str) -> Option<Option<NaiveDate>> {
    let rest = table.strip_prefix(topic.as_str())?.strip_prefix("_d")?;
    if rest == "0" {
        return Some(None);
    }
    NaiveDate::parse_from_str(rest, "%Y%m%d").ok().map(Some)
}

/// The children of a topic's table (`parent` quoted), attached or half-detached.
pub async fn children(pool: &PgPool, parent: &str) -> Result<Vec<Child>> {
    let rows = sqlx::query(
        "SELECT c.relname::text AS t, i.inhdetachpending AS d
         FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = to_regclass($1)",
    )
    .bind(parent)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Child {
                table: r.try_get("t")?,
                detaching: r.try_get("d")?,
            })
        })
        .collect()
}

/// Whether `parent` (quoted) is a partitioned table (false: a plain table, or none).
pub async fn is_partitioned(conn: &mut PgConnection, parent: &str) -> Result<bool> {
    let partitioned: Option<bool> =
        sqlx::query_scalar("SELECT relkind = 'p' FROM pg_class WHERE oid = to_regclass($1)")
            .bind(parent)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(partitioned == Some(true))
}

/// The topic's events layout; `None` without a retention row (a topic made by a node of an
/// earlier version, until its pruner adds the row).
pub async fn events_layout(pool: &PgPool, topic: &TopicName) -> Result<Option<EventsLayout>> {
    let row: Option<(i64, Option<i64>)> = sqlx::query_as(
        "SELECT partition_span, partition_base FROM topic_retention WHERE name = $1",
    )
    .bind(topic.as_str())
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(span, base)| EventsLayout { span, base }))
}

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

/// Longest a detach waits for queries that still use the partition (an old reader's
/// snapshot); after that the partition stays half-detached and a later prune finishes it.
const DETACH_WAIT: &str = "5s";

/// Detaches `table` from `parent` without blocking readers or writers (or finishes a detach a
/// dead pruner left half done), then drops it.
pub async fn detach_and_drop(pool: &PgPool, parent: &str, child: &Child) -> Result<()> {
    let q = qualified(&child.table);
    let how = if child.detaching {
        "FINALIZE"
    } else {
        "CONCURRENTLY"
    };
    let mut conn = pool.acquire().await?;
    sqlx::raw_sql(AssertSqlSafe(format!("SET lock_timeout = '{DETACH_WAIT}'")))
        .execute(&mut *conn)
        .await?;
    // One statement per call: a multi-statement simple query is a transaction block, where
    // DETACH CONCURRENTLY cannot run.
    let detached = sqlx::raw_sql(AssertSqlSafe(format!(
        "ALTER TABLE {parent} DETACH PARTITION {q} {how}"
    )))
    .execute(&mut *conn)
    .await;
    sqlx::raw_sql("RESET lock_timeout")
        .execute(&mut *conn)
        .await?;
    detached?;
    drop(conn);
    drop_orphan(pool, &child.table).await?;
    Ok(())
}

/// Drops `table` of [`SCHEMA`] if it exists and is attached to nothing; true if dropped. The
/// check and the drop happen under the table's lock, so a partition attached meanwhile (a
/// topic of the same name made again) is never dropped.
pub async fn drop_orphan(pool: &PgPool, table: &str) -> Result<bool> {
    let mut tx = pool.begin().await?;
    let q = qualified(table);
    let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(&q)
        .fetch_one(&mut *tx)
        .await?;
    if !exists {
        return Ok(false);
    }
    // The pruner that detached it may drop it between the check and the lock: then it is gone,
    // which is what this wanted.
    let locked = sqlx::raw_sql(AssertSqlSafe(format!(
        "LOCK TABLE {q} IN ACCESS EXCLUSIVE MODE"
    )))
    .execute(&mut *tx)
    .await;
    match locked {
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => return Ok(false),
        other => {
            other?;
        }
    }
    let attached: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = to_regclass($1))",
    )
    .bind(&q)
    .fetch_one(&mut *tx)
    .await?;
    if attached {
        return Ok(false);
    }
    sqlx::raw_sql(AssertSqlSafe(format!("DROP TABLE {q}")))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(true)
}

/// Tables of [`SCHEMA`] attached to nothing (left by a detach whose drop did not happen),
/// optionally only those of one topic.
pub async fn orphans(conn: &mut PgConnection, topic: Option<&TopicName>) -> Result<Vec<String>> {
    let pattern = match topic {
        Some(t) => format!("^{t}_[ed][0-9]+$"),
        None => ".*".into(),
    };
    Ok(sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = $1 AND c.relkind = 'r' AND c.relname ~ $2
           AND NOT EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = c.oid)",
    )
    .bind(SCHEMA)
    .bind(pattern)
    .fetch_all(&mut *conn)
    .await?)
}

/// Drops a topic's orphaned partitions in the caller's transaction (topic creation and
/// deletion, so a name made again never meets its predecessor's tables).
pub async fn drop_orphans_of(conn: &mut PgConnection, topic: &TopicName) -> Result<()> {
    for t in orphans(conn, Some(topic)).await? {
        sqlx::raw_sql(AssertSqlSafe(format!(
            "DROP TABLE IF EXISTS {}",
            qualified(&t)
        )))
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// On-disk bytes of a table and all its partitions (heap, indexes, TOAST).
pub async fn bytes_on_disk(pool: &PgPool, table: &str) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT COALESCE(sum(pg_total_relation_size(relid)), 0)::bigint
         FROM pg_partition_tree(to_regclass($1))",
    )
    .bind(table)
    .fetch_one(pool)
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back_and_ranges_tile() {
        let t = TopicName::parse("a_e1").unwrap();
        assert_eq!(events_partition(&t, 7), "a_e1_e7");
        assert_eq!(events_number(&t, "a_e1_e7"), Some(7));
        assert_eq!(events_number(&t, "a_e1_d20260101"), None);
        let other = TopicName::parse("a").unwrap();
        assert_eq!(
            events_number(&other, "a_e1_e7"),
            None,
            "another topic's partition"
        );
        let day = NaiveDate::from_ymd_opt(2026, 11, 28).unwrap();
        assert_eq!(deliveries_partition(&t, Some(day)), "a_e1_d20261128");
        assert_eq!(deliveries_day(&t, "a_e1_d20261128"), Some(Some(day)));
        assert_eq!(deliveries_day(&t, "a_e1_d0"), Some(None));
        // The longest name fits Postgres' 63-byte identifiers.
        let long = TopicName::parse(&"x".repeat(50)).unwrap();
        assert!(deliveries_partition(&long, Some(day)).len() <= 63);
        assert!(events_partition(&long, 99_999_999_999).len() <= 63);

        let l = EventsLayout {
            span: 10,
            base: Some(101),
        };
        assert_eq!(l.partition_of(5), Some(0));
        assert_eq!(l.partition_of(101), Some(1));
        assert_eq!(l.partition_of(110), Some(1));
        assert_eq!(l.partition_of(111), Some(2));
        assert_eq!(l.upper(0), Some(101));
        assert_eq!(l.upper(1), Some(111));
        let plain = EventsLayout {
            span: 10,
            base: None,
        };
        assert_eq!(plain.partition_of(5), None);
    }
}
