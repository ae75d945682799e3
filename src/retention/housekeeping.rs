//! Retention of the cluster-wide tables that grow with traffic but not per topic: dead letters
//! (kept `ER_RETENTION_DEAD_LETTERS_DAYS`), the live spill (kept
//! `ER_RETENTION_SPILL_SECONDS`) and idempotency keys past their topic's dedupe window (each
//! row carries its expiry), plus partitions a pruner detached and did not get to drop.
//! One node runs it at a time (the [`super::HOUSEKEEPING`] unit of the topic ownership).
//!
//! These tables are one each for the whole cluster and small beside the events (a dead letter
//! is a producer's mistake, a spill a large live-only event while Redis is away), so they are
//! cut with batched deletes through their time index rather than partitioned: each batch is a
//! short transaction that locks only the rows it removes, and autovacuum hands the space to
//! the next inserts, so the tables stay at the size of their retention window.

use super::RetentionConfig;
use crate::error::Result;
use crate::topics::partitions;
use sqlx::PgPool;

/// Rows per delete: a short transaction however far behind the sweep is.
const BATCH: i64 = 5_000;
/// Batches per sweep at most, so one sweep after a long outage does not run for minutes.
const MAX_BATCHES: usize = 200;

/// What one sweep removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Swept {
    /// Dead letters older than their retention.
    pub dead_letters: u64,
    /// Spilled live announcements older than theirs.
    pub spill: u64,
    /// Detached partitions left behind.
    pub orphans: u64,
    /// Idempotency keys past their window.
    pub keys: u64,
}

/// One sweep over the cluster-wide tables.
pub async fn sweep(pool: &PgPool, settings: &RetentionConfig) -> Result<Swept> {
    let dead_letters = delete_in_batches(
        pool,
        "DELETE FROM dead_letters WHERE id IN (
             SELECT id FROM dead_letters WHERE inserted_at < now() - make_interval(secs => $2)
             ORDER BY inserted_at LIMIT $1)",
        Some(settings.dead_letters.as_secs_f64()),
    )
    .await?;
    // The BRIN expiry index skips only summarized page ranges: summarize those filled since
    // the last sweep (each is read once), so a sweep reads the ranges holding expired keys.
    // Postgres lets only the index's owner do it; a node connecting as another role prunes
    // all the same, reading the ranges autovacuum has not summarized yet.
    if let Err(e) = sqlx::query("SELECT brin_summarize_new_values('idempotency_digests_expiry')")
        .execute(pool)
        .await
    {
        tracing::warn!(error = %e, "could not summarize the idempotency keys' expiry index");
    }
    // Through the BRIN expiry index (or a scan from the table's start, where the oldest keys
    // are), by row address; a key a publish took over meanwhile (its expiry moved, its row
    // version with it) is left alone.
    let mut keys = delete_in_batches(
        pool,
        "DELETE FROM idempotency_digests d WHERE d.ctid = ANY(ARRAY(
             SELECT ctid FROM idempotency_digests WHERE expires_at <= now() LIMIT $1))
         AND d.expires_at <= now()",
        None,
    )
    .await?;
    // The previous version's table (migration 0020), written only by nodes of that version
    // during a rolling upgrade, through its btree expiry index.
    keys += delete_in_batches(
        pool,
        "DELETE FROM idempotency_keys k USING (
             SELECT topic, key FROM idempotency_keys WHERE expires_at <= now()
             ORDER BY expires_at LIMIT $1) d
         WHERE k.topic = d.topic AND k.key = d.key AND k.expires_at <= now()",
        None,
    )
    .await?;
    let mut swept = Swept {
        dead_letters,
        keys,
        ..Swept::default()
    };
    swept.spill =
        sqlx::query("DELETE FROM live_spill WHERE created_at < now() - make_interval(secs => $1)")
            .bind(settings.spill.as_secs_f64())
            .execute(pool)
            .await?
            .rows_affected();
    let orphans = {
        let mut conn = pool.acquire().await?;
        partitions::orphans(&mut conn, None).await?
    };
    for t in orphans {
        if partitions::drop_orphan(pool, &t).await? {
            swept.orphans += 1;
        }
    }
    for (what, n) in [
        ("dead_letters", swept.dead_letters),
        ("live_spill", swept.spill),
    ] {
        if n > 0 {
            sqlx::query("UPDATE retention_totals SET rows = rows + $2 WHERE what = $1")
                .bind(what)
                .bind(i64::try_from(n).unwrap_or(i64::MAX))
                .execute(pool)
                .await?;
        }
    }
    Ok(swept)
}

/// Runs `sql`, a delete of at most `$1` rows (with `seconds`, bound as `$2`, the retention it
/// applies), batch after batch until one removes fewer than [`BATCH`] rows or
/// [`MAX_BATCHES`] ran; returns the rows removed.
async fn delete_in_batches(pool: &PgPool, sql: &'static str, seconds: Option<f64>) -> Result<u64> {
    let mut removed = 0;
    for _ in 0..MAX_BATCHES {
        let mut query = sqlx::query(sql).bind(BATCH);
        if let Some(seconds) = seconds {
            query = query.bind(seconds);
        }
        let n = query.execute(pool).await?.rows_affected();
        removed += n;
        if n < BATCH as u64 {
            break;
        }
    }
    Ok(removed)
}
