//! Where a topic's low-water mark moves: the first offset each of the policy's measures would
//! keep (count: arithmetic on contiguous offsets; age: a binary search over the offset index;
//! size: `size.rs`), and the fenced update that moves it, never past an event a webhook
//! subscription still has to deliver unless the topic allows that.

use super::policy::Policy;
use super::size;
use crate::error::Result;
use crate::topics::{Bounds, TopicName};
use chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, PgPool};

/// The first offset `policy` keeps of the retained range `b` (at least `b.first`, at most
/// `b.last + 1`). Offsets never come back, so the mark only moves forward.
pub(super) async fn target(
    pool: &PgPool,
    topic: &TopicName,
    policy: &Policy,
    b: Bounds,
) -> Result<i64> {
    let mut first = b.first;
    if b.first > b.last {
        return Ok(first);
    }
    if let Some(n) = policy.max_events {
        first = first.max(b.last - n + 1);
    }
    if let Some(age) = policy.max_age {
        first = first.max(
            by_age(
                pool,
                topic,
                Bounds {
                    first,
                    last: b.last,
                },
                age,
            )
            .await?,
        );
    }
    if let Some(bytes) = policy.max_bytes {
        first = first.max(size::cut(pool, topic, first, bytes).await?);
    }
    Ok(first.min(b.last + 1))
}

/// The first offset of `b` stored at or after `now - age`. Offsets follow commit order and
/// `inserted_at` is each transaction's start, so stored times rise with offsets (transactions
/// that overlap can be out of order by their overlap, milliseconds): a binary search over the
/// primary key, one index probe per step, about 27 for 100 million events.
async fn by_age(
    pool: &PgPool,
    topic: &TopicName,
    b: Bounds,
    age: std::time::Duration,
) -> Result<i64> {
    let cutoff: DateTime<Utc> = sqlx::query_scalar("SELECT now() - make_interval(secs => $1)")
        .bind(age.as_secs_f64())
        .fetch_one(pool)
        .await?;
    let sql = format!(
        "SELECT inserted_at FROM {} WHERE \"offset\" = $1",
        topic.events_table()
    );
    let stored_at = |offset: i64| {
        let sql = sql.clone();
        async move {
            sqlx::query_scalar::<_, DateTime<Utc>>(AssertSqlSafe(sql))
                .bind(offset)
                .fetch_optional(pool)
                .await
        }
    };
    // Invariant: everything below `lo` is older than the cutoff, nothing from `hi` on is.
    let (mut lo, mut hi) = (b.first, b.last + 1);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match stored_at(mid).await? {
            Some(t) if t < cutoff => lo = mid + 1,
            // Young, or (never expected: offsets are contiguous) missing: keep it.
            _ => hi = mid,
        }
    }
    Ok(lo)
}

/// How the mark moved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Moved {
    /// From the first offset to the second (equal when nothing moved).
    To(i64, i64),
    /// Another pruner owns the topic now: nothing was written.
    Fenced,
}

/// Moves the mark towards `target`, under the pruner's `epoch`. Unless the topic drops
/// undelivered events, it stops after the lowest webhook cursor of the topic (paused ones
/// included), read under the retention row's lock: a cursor reset takes the same lock, so
/// none can slip below the mark between the read and the write.
pub(super) async fn apply(
    pool: &PgPool,
    topic: &TopicName,
    epoch: i64,
    target: i64,
) -> Result<Moved> {
    let mut tx = pool.begin().await?;
    let row: Option<(i64, i64, bool)> = sqlx::query_as(
        "SELECT first_offset, epoch, drop_undelivered FROM topic_retention
         WHERE name = $1 FOR UPDATE",
    )
    .bind(topic.as_str())
    .fetch_optional(&mut *tx)
    .await?;
    let Some((old, current_epoch, drop_undelivered)) = row else {
        return Ok(Moved::Fenced);
    };
    if current_epoch != epoch {
        return Ok(Moved::Fenced);
    }
    let mut new = target.max(old);
    if !drop_undelivered {
        let lowest: Option<i64> = sqlx::query_scalar(
            "SELECT min(c.delivered_offset) FROM subscription_cursors c
             JOIN subscriptions s ON s.id = c.subscription_id
             WHERE s.topic_name = $1 AND s.subscription_type = 'webhook'",
        )
        .bind(topic.as_str())
        .fetch_one(&mut *tx)
        .await?;
        if let Some(delivered) = lowest {
            new = new.min(delivered + 1).max(old);
        }
    }
    if new > old {
        sqlx::query(
            "UPDATE topic_retention SET first_offset = $2,
                    pruned_events = pruned_events + ($2 - first_offset), pruned_at = now()
             WHERE name = $1",
        )
        .bind(topic.as_str())
        .bind(new)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(Moved::To(old, new))
}
