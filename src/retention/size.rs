//! Retention by size. An event's size is the stored size of its row (`pg_column_size` of the
//! whole row: its columns as stored, after compression, without index and page overhead).
//! Rows never change once written, so the pruner sums each new row once, into chunks of
//! [`CHUNK`] offsets (`retention_chunks`), as events arrive; a cut then walks the chunks from
//! the newest and reads rows only inside the one chunk where the budget runs out. Topics
//! without `max_bytes` pay nothing.

use crate::error::Result;
use crate::topics::TopicName;
use sqlx::{AssertSqlSafe, PgPool};

/// Offsets per chunk: a cut reads at most this many rows.
pub(super) const CHUNK: i64 = 10_000;
/// Offsets summed per prune step at most, so a policy set on a large topic catches up over
/// several steps instead of one long scan (a cut is conservative until it has).
const PER_STEP: i64 = 1_000_000;

fn chunk_of(offset: i64) -> i64 {
    (offset - 1).div_euclid(CHUNK)
}

/// Makes the chunks count only rows from `first` on (after the mark moved past some).
pub(super) async fn forget_below(pool: &PgPool, topic: &TopicName, first: i64) -> Result<()> {
    let (from, to): (i64, i64) =
        sqlx::query_as("SELECT sized_from, sized_to FROM topic_retention WHERE name = $1")
            .bind(topic.as_str())
            .fetch_one(pool)
            .await?;
    if from >= first {
        return Ok(());
    }
    let chunk = chunk_of(first);
    let mut tx = pool.begin().await?;
    sqlx::query("DELETE FROM retention_chunks WHERE name = $1 AND chunk <= $2")
        .bind(topic.as_str())
        .bind(chunk)
        .execute(&mut *tx)
        .await?;
    let end = ((chunk + 1) * CHUNK).min(to);
    if end >= first {
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO retention_chunks (name, chunk, bytes)
             SELECT $1, $2, COALESCE(sum(pg_column_size(e.*)), 0)::bigint
             FROM {} e WHERE \"offset\" >= $3 AND \"offset\" <= $4",
            topic.events_table()
        )))
        .bind(topic.as_str())
        .bind(chunk)
        .bind(first)
        .bind(end)
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query(
        "UPDATE topic_retention SET sized_from = $2, sized_to = GREATEST(sized_to, $2 - 1)
         WHERE name = $1",
    )
    .bind(topic.as_str())
    .bind(first)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Sums the rows stored since the last call, up to offset `upto`, into their chunks.
pub(super) async fn account(pool: &PgPool, topic: &TopicName, upto: i64) -> Result<()> {
    let sized_to: i64 = sqlx::query_scalar("SELECT sized_to FROM topic_retention WHERE name = $1")
        .bind(topic.as_str())
        .fetch_one(pool)
        .await?;
    let to = upto.min(sized_to.saturating_add(PER_STEP));
    if to <= sized_to {
        return Ok(());
    }
    let mut tx = pool.begin().await?;
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO retention_chunks (name, chunk, bytes)
         SELECT $1, (\"offset\" - 1) / $4, sum(pg_column_size(e.*))::bigint
         FROM {} e WHERE \"offset\" > $2 AND \"offset\" <= $3 GROUP BY 2
         ON CONFLICT (name, chunk) DO UPDATE SET bytes = retention_chunks.bytes + EXCLUDED.bytes",
        topic.events_table()
    )))
    .bind(topic.as_str())
    .bind(sized_to)
    .bind(to)
    .bind(CHUNK)
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE topic_retention SET sized_to = $2 WHERE name = $1")
        .bind(topic.as_str())
        .bind(to)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// The first offset from which the summed events (from `first` up to what is summed) take
/// at most `max_bytes`: the newest events that fit are kept.
pub(super) async fn cut(
    pool: &PgPool,
    topic: &TopicName,
    first: i64,
    max_bytes: i64,
) -> Result<i64> {
    let over: Option<(i64, i64, i64)> = sqlx::query_as(
        "SELECT chunk, bytes, cum FROM (
             SELECT chunk, bytes, (sum(bytes) OVER (ORDER BY chunk DESC))::bigint AS cum
             FROM retention_chunks WHERE name = $1) x
         WHERE cum > $2 ORDER BY chunk DESC LIMIT 1",
    )
    .bind(topic.as_str())
    .bind(max_bytes)
    .fetch_optional(pool)
    .await?;
    let Some((chunk, bytes, cum)) = over else {
        return Ok(first);
    };
    let sized_to: i64 = sqlx::query_scalar("SELECT sized_to FROM topic_retention WHERE name = $1")
        .bind(topic.as_str())
        .fetch_one(pool)
        .await?;
    // What the newer chunks leave of the budget for this one, filled from its newest row.
    let budget = max_bytes - (cum - bytes);
    let lo = (chunk * CHUNK + 1).max(first);
    let hi = ((chunk + 1) * CHUNK).min(sized_to);
    let fits: Option<i64> = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT min(\"offset\") FROM (
             SELECT \"offset\", sum(pg_column_size(e.*)) OVER (ORDER BY \"offset\" DESC) AS s
             FROM {} e WHERE \"offset\" >= $1 AND \"offset\" <= $2) x
         WHERE s <= $3",
        topic.events_table()
    )))
    .bind(lo)
    .bind(hi)
    .bind(budget)
    .fetch_one(pool)
    .await?;
    Ok(fits.unwrap_or(hi + 1).max(first))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_start_at_offset_one() {
        assert_eq!(chunk_of(1), 0);
        assert_eq!(chunk_of(CHUNK), 0);
        assert_eq!(chunk_of(CHUNK + 1), 1);
    }
}
