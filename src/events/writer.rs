//! Durable writes with group commit. A node has a few writer tasks (`ER_WRITERS`), and each
//! topic belongs to one of them. Publish requests queue on their topic's writer, which stores
//! everything queued, whatever its topics, in one transaction, commits it synchronously, and
//! then answers each request through its oneshot. One transaction is in flight per writer;
//! requests arriving meanwhile wait for the next one, so the busier the node, the larger the
//! batch. The statement for one topic's rows is in `insert.rs` (`keyed.rs` with idempotency
//! keys), the queue in `queue.rs`, the answers in `answer.rs`.
//!
//! Idempotency keys ride the same transaction (`keyed.rs`); a request with conditions
//! (`guard.rs`: expected last offset, producer epoch) takes its own transaction after the
//! shared one, so a refused condition fails no other request.
//!
//! Offsets: for each topic in the batch, in name order, the transaction bumps the topic's
//! `topic_offsets` row, which row-locks it until commit. Every publisher of the topic, on any
//! node, waits for that lock, so offsets are contiguous and commit in offset order; taking the
//! rows in one fixed order means two nodes' transactions never wait for each other in a cycle.
//! The same update moves the topic's mark (`marked`, what readers read up to), and the
//! commit is synchronous: when the requests are answered their events are durable and
//! visible, and a reader of "offset > N" never misses a row that commits later.

use super::answer::settle;
use super::guard::{self, Check, Guard};
use super::insert::{self, Columns};
use super::keyed::{self, Outcome};
use super::model::ValidEvent;
use super::queue::{Groups, Job, Queue, Stored, WriteError};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::topics::{TopicName, partitions};
use sqlx::PgPool;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Requests that may wait for one writer; further publishers wait for room (backpressure).
const QUEUE: usize = 1_024;

/// The dedupe window of topics without their own, when the node sets none (24 hours).
pub const DEFAULT_DEDUPE_WINDOW_SECONDS: i64 = 86_400;

/// The node's writers: handles to their tasks.
#[derive(Clone)]
pub struct Writer {
    writers: Arc<[mpsc::Sender<Job>]>,
    close: CancellationToken,
}

impl Writer {
    /// Starts `writers` writer tasks on `tracker`, writing through `pool`; shutdown waits for
    /// them to store what was queued before [`Writer::close`]. Topics without a dedupe window
    /// of their own keep keys [`DEFAULT_DEDUPE_WINDOW_SECONDS`].
    pub fn start(pool: PgPool, writers: usize, tracker: &TaskTracker, metrics: Metrics) -> Self {
        Self::start_with_window(
            pool,
            writers,
            tracker,
            metrics,
            DEFAULT_DEDUPE_WINDOW_SECONDS,
        )
    }

    /// [`Writer::start`] with the node's default dedupe window (`ER_DEDUPE_WINDOW_SECONDS`).
    pub fn start_with_window(
        pool: PgPool,
        writers: usize,
        tracker: &TaskTracker,
        metrics: Metrics,
        window_seconds: i64,
    ) -> Self {
        let close = CancellationToken::new();
        let writers = (0..writers.max(1))
            .map(|_| {
                let (tx, rx) = mpsc::channel(QUEUE);
                let ctx = Ctx {
                    pool: pool.clone(),
                    metrics: metrics.clone(),
                    window: window_seconds,
                };
                tracker.spawn(run(ctx, rx, close.clone()));
                tx
            })
            .collect();
        Writer { writers, close }
    }

    /// Stores the events of one request in one transaction (possibly shared with other
    /// requests, of any topic; its own when `guard` has conditions) and returns them with
    /// their offsets, in request order.
    pub async fn write(
        &self,
        topic: &TopicName,
        identifier: &str,
        events: Vec<ValidEvent>,
        guard: Option<Guard>,
    ) -> Result<Vec<Stored>, WriteError> {
        let (reply, rx) = oneshot::channel();
        let job = Job {
            topic: topic.clone(),
            identifier: identifier.to_owned(),
            events,
            guard,
            reply,
        };
        let gone = || WriteError::Failed(Error::Unavailable("node is shutting down".into()));
        // A topic always goes to the same writer, so its requests commit in arrival order.
        let mut hasher = std::hash::DefaultHasher::new();
        topic.hash(&mut hasher);
        let writer = &self.writers[hasher.finish() as usize % self.writers.len()];
        writer.send(job).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// Stops taking requests: what is queued is stored and answered, then the task ends.
    pub fn close(&self) {
        self.close.cancel();
    }
}

/// What a writer task writes with.
struct Ctx {
    pool: PgPool,
    metrics: Metrics,
    /// Default dedupe window in seconds.
    window: i64,
}

/// Takes whatever is queued, stores it in one transaction, answers; until closed and drained.
async fn run(ctx: Ctx, mut rx: mpsc::Receiver<Job>, close: CancellationToken) {
    let mut queue = Queue::default();
    let mut closing = false;
    loop {
        if queue.is_empty() {
            tokio::select! {
                job = rx.recv() => match job {
                    Some(job) => queue.push(job),
                    None => return,
                },
                // Refuse new sends; those already queued in the channel are still received.
                () = close.cancelled(), if !closing => {
                    rx.close();
                    closing = true;
                    continue;
                }
            }
        }
        queue.take_from(&mut rx);
        let (groups, guarded) = queue.take_batch();
        if !groups.is_empty() {
            commit(&ctx, groups).await;
        }
        // The conditional requests, each in its own transaction, after the shared one.
        for job in guarded {
            let topic = job.topic.clone();
            let guard = job.guard.clone();
            let single = [(topic, vec![job])];
            let result = store(&ctx, &single, guard.as_ref()).await.map(first);
            let [(topic, jobs)] = single;
            settle(&topic, jobs, result, &ctx.metrics);
        }
    }
}

/// Stores one batch and answers its requests. If the shared transaction fails, each topic is
/// stored on its own, and a topic that fails again each request on its own: one bad request
/// must not fail its neighbours.
async fn commit(ctx: &Ctx, groups: Groups) {
    match store(ctx, &groups, None).await {
        Ok(outcomes) => {
            for ((topic, jobs), outcome) in groups.into_iter().zip(outcomes) {
                settle(&topic, jobs, Ok(outcome), &ctx.metrics);
            }
        }
        // One topic: its transaction has just failed, go on to its requests one by one.
        Err(e) if groups.len() == 1 => {
            if let Some((topic, jobs)) = groups.into_iter().next() {
                retry_singly(ctx, topic, jobs, e).await;
            }
        }
        Err(e) => {
            tracing::warn!(topics = groups.len(), error = %e, "batched write failed, retrying each topic");
            for (topic, jobs) in groups {
                let group = [(topic, jobs)];
                let result = store(ctx, &group, None).await;
                let [(topic, jobs)] = group;
                match result {
                    Ok(outcomes) => settle(&topic, jobs, Ok(first(outcomes)), &ctx.metrics),
                    Err(e) => retry_singly(ctx, topic, jobs, e).await,
                }
            }
        }
    }
}

/// After `topic`'s requests failed together with `e`: stores each on its own, unless there
/// is only one or the topic is gone.
async fn retry_singly(ctx: &Ctx, topic: TopicName, jobs: Vec<Job>, e: Error) {
    if jobs.len() == 1 || matches!(e, Error::NotFound(_)) {
        return settle(&topic, jobs, Err(e), &ctx.metrics);
    }
    tracing::warn!(topic = %topic, error = %e, "batched write failed, retrying singly");
    for job in jobs {
        let single = [(topic.clone(), vec![job])];
        let result = store(ctx, &single, None).await.map(first);
        let [(topic, jobs)] = single;
        settle(&topic, jobs, result, &ctx.metrics);
    }
}

/// The outcome of a transaction of one topic.
fn first(outcomes: Vec<Option<Outcome>>) -> Option<Outcome> {
    outcomes.into_iter().next().flatten()
}

/// One transaction: for each topic in name order, reserve its offsets and insert its rows
/// (and its keys). Returns each topic's outcome, `None` for a topic whose row is gone. A
/// write that finds no partition for its offsets (a burst outran those the topic's owner
/// makes ahead) failed whole, reservation included: the partitions are made and the batch
/// runs again, so no offset is skipped (see `topics::partitions`). A key that raced (see
/// `keyed.rs`) undid the transaction too: it runs again. With `guard`, `groups` is one
/// request, checked under its topic's offsets lock in the same transaction.
async fn store(
    ctx: &Ctx,
    groups: &[(TopicName, Vec<Job>)],
    guard: Option<&Guard>,
) -> Result<Vec<Option<Outcome>>> {
    let pool = &ctx.pool;
    let batches: Vec<(&TopicName, Columns)> = groups
        .iter()
        .map(|(topic, jobs)| {
            let n = jobs.iter().map(|j| j.events.len()).sum();
            let mut cols = Columns::with_capacity(n);
            for job in jobs {
                for v in &job.events {
                    cols.push(&job.identifier, v);
                }
            }
            (topic, cols)
        })
        .collect();
    // Each retry makes the partitions of one topic: at most one per topic, and one more;
    // and a raced key's retry, at most one per topic too.
    for _ in 0..=2 * batches.len() {
        match try_store(ctx, &batches, guard).await {
            Err(Failed::NoPartition(i)) => {
                // Nothing made means the topic's owner made them in the meantime (or the
                // topic is gone, which the next try reports): either way, try again.
                let (topic, cols) = &batches[i];
                partitions::make_room(pool, topic, cols.len() as i64).await?;
            }
            Err(Failed::KeyRaced) => {
                tracing::debug!("an idempotency key raced with another publish; storing again");
            }
            Err(Failed::Refused(e)) => return Err(e),
            Err(Failed::Other(e)) => return Err(super::read::topic_gone(e)),
            Ok(outcomes) => return Ok(outcomes),
        }
    }
    Err(Error::Unavailable(
        "the published events could not be stored, retry".into(),
    ))
}

/// Why a transaction failed: the batch at an index found no partition, a key raced, a
/// condition refused the request, or anything else.
enum Failed {
    NoPartition(usize),
    KeyRaced,
    Refused(Error),
    Other(sqlx::Error),
}

impl Failed {
    fn of(i: usize) -> impl Fn(sqlx::Error) -> Failed {
        move |e: sqlx::Error| {
            if partitions::missing_partition(&e) {
                Failed::NoPartition(i)
            } else if keyed::raced(&e) {
                Failed::KeyRaced
            } else {
                Failed::Other(e)
            }
        }
    }
}

/// The transaction itself. A batch of one topic is one statement in its own implicit
/// transaction (one round trip); several topics, or a guarded request, share an explicit
/// one.
async fn try_store(
    ctx: &Ctx,
    batches: &[(&TopicName, Columns<'_>)],
    guard: Option<&Guard>,
) -> Result<Vec<Option<Outcome>>, Failed> {
    if let ([(topic, cols)], None) = (batches, guard) {
        return Ok(vec![
            statement(&ctx.pool, topic, cols, ctx.window)
                .await
                .map_err(Failed::of(0))?,
        ]);
    }
    let mut tx = ctx.pool.begin().await.map_err(Failed::Other)?;
    if let (Some(guard), [(topic, cols)]) = (guard, batches) {
        let keys = (
            cols.hash_hi.iter().flatten().copied().collect::<Vec<_>>(),
            cols.hash_lo.iter().flatten().copied().collect::<Vec<_>>(),
        );
        let all_keyed = cols.hash_hi.iter().all(Option::is_some);
        match guard::check(&mut tx, topic, guard, &keys, all_keyed)
            .await
            .map_err(Failed::of(0))?
        {
            Check::Pass => {}
            Check::Gone => return Ok(vec![None]),
            Check::Refused(e) => return Err(Failed::Refused(e)),
        }
    }
    let mut outcomes = Vec::with_capacity(batches.len());
    for (i, (topic, cols)) in batches.iter().enumerate() {
        outcomes.push(
            statement(&mut *tx, topic, cols, ctx.window)
                .await
                .map_err(Failed::of(i))?,
        );
    }
    tx.commit().await.map_err(Failed::Other)?;
    Ok(outcomes)
}

/// One topic's statement: the keyed one when a row has a key, else the plain one.
async fn statement<'c>(
    db: impl sqlx::PgExecutor<'c>,
    topic: &TopicName,
    cols: &Columns<'_>,
    window: i64,
) -> Result<Option<Outcome>, sqlx::Error> {
    if cols.is_keyed() {
        return keyed::store(db, topic, cols, window).await;
    }
    let first = insert::store(db, topic, cols).await?;
    Ok(first.map(|first| Outcome {
        first,
        ..Outcome::default()
    }))
}
