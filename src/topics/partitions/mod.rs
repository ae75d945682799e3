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
//!
//! Files: this one (partition names, the events layout, a table's children and sizes),
//! `ahead.rs` (making partitions, ahead of need and at once for a writer whose rows found
//! none) and `detach.rs` (detaching and dropping them, and the orphans a drop left behind).

mod ahead;
mod detach;

pub use ahead::{
    ensure_deliveries, ensure_events, is_missing_partition, make_room, missing_partition,
};
pub use detach::{detach_and_drop, drop_orphan, drop_orphans_of, orphans};

use super::TopicName;
use crate::error::Result;
use chrono::NaiveDate;
use sqlx::{PgConnection, PgPool, Row};

/// The schema every partition lives in.
pub const SCHEMA: &str = "eventrelay_partitions";

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
