//! Removing partitions: detaching one CONCURRENTLY and dropping the table no query can reach
//! any more ([`detach_and_drop`]), and the orphans a detach whose drop did not happen leaves
//! behind ([`orphans`], [`drop_orphan`], [`drop_orphans_of`]).

use super::{Child, SCHEMA, qualified};
use crate::error::Result;
use crate::topics::TopicName;
use sqlx::{AssertSqlSafe, PgConnection, PgPool};

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
