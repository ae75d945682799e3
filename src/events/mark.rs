//! Marks: making batches that committed without waiting for the WAL flush durable and
//! visible. A mark raises `topics.last_offset` to the topic's reservation counter in a
//! synchronously committed transaction (the SQL is [`raise`]). Readers stop at the larger of
//! it and `topic_offsets.marked`, which small synchronous publishes move themselves (the view
//! `topic_marks`, migration 0007). Each writer lane marks its own batches before answering
//! them ([`mark`]); every node also sweeps all topics once a second ([`sweep`]) for batches
//! whose node died before marking them, and so keeps `topics.last_offset` itself at most a
//! second behind small publishes, for nodes of earlier versions that read only that.

use super::queue::Job;
use crate::error::{Error, Result};
use crate::topics::TopicName;
use sqlx::PgPool;
use std::time::Duration;

/// Committed batches with their first offsets, not yet durable.
pub(super) type Stored = Vec<(Vec<Job>, i64)>;
/// A mark's batches and its outcome.
pub(super) type Marked = (Stored, Result<u64>);

/// Makes `cohort` durable and visible (one retry: a lost connection is not a lost write).
pub(super) async fn mark(pool: &PgPool, topic: &TopicName, cohort: Stored) -> Marked {
    let mut result = raise(pool, Some(topic)).await;
    if let Err(e) = &result {
        tracing::warn!(topic = %topic, error = %e, "marking stored events failed, retrying");
        result = raise(pool, Some(topic)).await;
        if let Err(e) = &result {
            tracing::error!(topic = %topic, error = %e, "stored events could not be confirmed durable");
        }
    }
    (cohort, result)
}

/// The answer to requests whose events are stored but could not be confirmed durable. They
/// may still become visible (any later mark covers them), so a retry may store them twice:
/// at least once, as after a node that dies before it answers.
pub(super) fn unconfirmed(e: &Error) -> Error {
    Error::Unavailable(format!(
        "events were written but could not be confirmed durable ({e}); a retry may store them twice"
    ))
}

/// Makes every publish of `topic` committed so far durable and visible: raises
/// `topics.last_offset` to the reservation counter in a synchronously committed transaction.
/// Its commit flushes the WAL up to its own commit record, which comes after the commit of
/// every transaction it saw, so those are on disk when this returns. When there is nothing to
/// raise, someone else's raise already covered them, and a raise is visible only after its own
/// flush. Every reservation below the counter has committed (they commit in offset order under
/// the row lock, and an aborted one takes its reservation with it), so the mark never passes
/// an offset that could still appear. Safe to run from anywhere at any time.
pub(super) async fn raise(pool: &PgPool, topic: Option<&TopicName>) -> Result<u64> {
    macro_rules! raise {
        () => {
            // Synchronous whatever the server's default: the flush is the point.
            "UPDATE topics t SET last_offset = o.reserved
             FROM topic_offsets o, (SELECT set_config('synchronous_commit', 'on', true)) s(v)
             WHERE o.name = t.name AND o.reserved > t.last_offset"
        };
    }
    let done = match topic {
        Some(t) => {
            sqlx::query(concat!(raise!(), " AND t.name = $1"))
                .bind(t.as_str())
                .execute(pool)
                .await?
        }
        None => sqlx::query(raise!()).execute(pool).await?,
    };
    Ok(done.rows_affected())
}

/// How often every node raises marks nobody else will: those of batches whose node died
/// between commit and mark (their lane is gone, and the next publish of the topic may be far
/// off). A no-op statement when there is nothing to raise.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

pub(super) async fn sweep(pool: PgPool) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if pool.is_closed() {
            return;
        }
        match raise(&pool, None).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(topics = n, "mark sweep raised marks"),
            Err(e) => tracing::debug!(error = %e, "mark sweep failed"),
        }
    }
}
