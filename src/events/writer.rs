//! Durable writes with group commit. A node has a few writer tasks (`ER_WRITERS`), and each
//! topic belongs to one of them. Publish requests queue on their topic's writer, which stores
//! everything queued, whatever its topics, in one transaction, commits it synchronously, and
//! then answers each request through its oneshot. One transaction is in flight per writer;
//! requests arriving meanwhile wait for the next one, so the busier the node, the larger the
//! batch. The statement for one topic's rows is in `insert.rs`, the queue in `queue.rs`.
//!
//! Offsets: for each topic in the batch, in name order, the transaction bumps the topic's
//! `topic_offsets` row, which row-locks it until commit. Every publisher of the topic, on any
//! node, waits for that lock, so offsets are contiguous and commit in offset order; taking the
//! rows in one fixed order means two nodes' transactions never wait for each other in a cycle.
//! The same update moves the topic's mark (`marked`, what readers read up to), and the
//! commit is synchronous: when the requests are answered their events are durable and
//! visible, and a reader of "offset > N" never misses a row that commits later.

use super::insert::{self, Columns};
use super::model::{Event, ValidEvent};
use super::queue::{Groups, Job, Queue, WriteError};
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

/// The node's writers: handles to their tasks.
#[derive(Clone)]
pub struct Writer {
    writers: Arc<[mpsc::Sender<Job>]>,
    close: CancellationToken,
}

impl Writer {
    /// Starts `writers` writer tasks on `tracker`, writing through `pool`; shutdown waits for
    /// them to store what was queued before [`Writer::close`].
    pub fn start(pool: PgPool, writers: usize, tracker: &TaskTracker, metrics: Metrics) -> Self {
        let close = CancellationToken::new();
        let writers = (0..writers.max(1))
            .map(|_| {
                let (tx, rx) = mpsc::channel(QUEUE);
                tracker.spawn(run(pool.clone(), rx, close.clone(), metrics.clone()));
                tx
            })
            .collect();
        Writer { writers, close }
    }

    /// Stores the events of one request in one transaction (possibly shared with other
    /// requests, of any topic) and returns them with their offsets.
    pub async fn write(
        &self,
        topic: &TopicName,
        identifier: &str,
        events: Vec<ValidEvent>,
    ) -> Result<Vec<Event>, WriteError> {
        let (reply, rx) = oneshot::channel();
        let job = Job {
            topic: topic.clone(),
            identifier: identifier.to_owned(),
            events,
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

/// Takes whatever is queued, stores it in one transaction, answers; until closed and drained.
async fn run(
    pool: PgPool,
    mut rx: mpsc::Receiver<Job>,
    close: CancellationToken,
    metrics: Metrics,
) {
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
        commit(&pool, queue.take_batch(), &metrics).await;
    }
}

/// Stores one batch and answers its requests. If the shared transaction fails, each topic is
/// stored on its own, and a topic that fails again each request on its own: one bad request
/// must not fail its neighbours.
async fn commit(pool: &PgPool, groups: Groups, metrics: &Metrics) {
    match store(pool, &groups).await {
        Ok(firsts) => {
            for ((topic, jobs), first) in groups.into_iter().zip(firsts) {
                settle(&topic, jobs, Ok(first), metrics);
            }
        }
        // One topic: its transaction has just failed, go on to its requests one by one.
        Err(e) if groups.len() == 1 => {
            if let Some((topic, jobs)) = groups.into_iter().next() {
                retry_singly(pool, topic, jobs, e, metrics).await;
            }
        }
        Err(e) => {
            tracing::warn!(topics = groups.len(), error = %e, "batched write failed, retrying each topic");
            for (topic, jobs) in groups {
                let group = [(topic, jobs)];
                let result = store(pool, &group).await;
                let [(topic, jobs)] = group;
                match result {
                    Ok(firsts) => settle(&topic, jobs, Ok(first(firsts)), metrics),
                    Err(e) => retry_singly(pool, topic, jobs, e, metrics).await,
                }
            }
        }
    }
}

/// After `topic`'s requests failed together with `e`: stores each on its own, unless there
/// is only one or the topic is gone.
async fn retry_singly(
    pool: &PgPool,
    topic: TopicName,
    jobs: Vec<Job>,
    e: Error,
    metrics: &Metrics,
) {
    if jobs.len() == 1 || matches!(e, Error::NotFound(_)) {
        return settle(&topic, jobs, Err(e), metrics);
    }
    tracing::warn!(topic = %topic, error = %e, "batched write failed, retrying singly");
    for job in jobs {
        let single = [(topic.clone(), vec![job])];
        let result = store(pool, &single).await.map(first);
        let [(topic, jobs)] = single;
        settle(&topic, jobs, result, metrics);
    }
}

/// The first offset of a transaction of one topic.
fn first(firsts: Vec<Option<i64>>) -> Option<i64> {
    firsts.into_iter().next().flatten()
}

/// One transaction: for each topic in name order, reserve its offsets and insert its rows.
/// Returns each topic's first offset, `None` for a topic whose row is gone. A write that
/// finds no partition for its offsets (a burst outran those the topic's owner makes ahead)
/// failed whole, reservation included: the partitions are made and the batch runs again, so
/// no offset is skipped (see `topics::partitions`).
async fn store(pool: &PgPool, groups: &[(TopicName, Vec<Job>)]) -> Result<Vec<Option<i64>>> {
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
    // Each retry makes the partitions of one topic: at most one per topic, and one more.
    for _ in 0..=batches.len() {
        match try_store(pool, &batches).await {
            Err(Failed::NoPartition(i, e)) => {
                let (topic, cols) = &batches[i];
                if partitions::make_room(pool, topic, cols.len() as i64).await? == 0 {
                    return Err(super::read::topic_gone(e));
                }
            }
            Err(Failed::Other(e)) => return Err(super::read::topic_gone(e)),
            Ok(firsts) => return Ok(firsts),
        }
    }
    Err(Error::Unavailable(
        "no partition could be made for the published events".into(),
    ))
}

/// Why a transaction failed: the batch at an index found no partition, or anything else.
enum Failed {
    NoPartition(usize, sqlx::Error),
    Other(sqlx::Error),
}

/// The transaction itself. A batch of one topic is one statement in its own implicit
/// transaction (one round trip); several topics share an explicit one.
async fn try_store(
    pool: &PgPool,
    batches: &[(&TopicName, Columns<'_>)],
) -> Result<Vec<Option<i64>>, Failed> {
    let failed = |i: usize| {
        move |e: sqlx::Error| {
            if partitions::missing_partition(&e) {
                Failed::NoPartition(i, e)
            } else {
                Failed::Other(e)
            }
        }
    };
    if let [(topic, cols)] = batches {
        return Ok(vec![
            insert::store(pool, topic, cols).await.map_err(failed(0))?,
        ]);
    }
    let mut tx = pool.begin().await.map_err(Failed::Other)?;
    let mut firsts = Vec::with_capacity(batches.len());
    for (i, (topic, cols)) in batches.iter().enumerate() {
        firsts.push(
            insert::store(&mut *tx, topic, cols)
                .await
                .map_err(failed(i))?,
        );
    }
    tx.commit().await.map_err(Failed::Other)?;
    Ok(firsts)
}

/// Answers a topic's requests with the outcome of their transaction.
fn settle(topic: &TopicName, jobs: Vec<Job>, result: Result<Option<i64>>, metrics: &Metrics) {
    match result {
        Ok(Some(first_offset)) => {
            metrics.committed(topic.as_str(), jobs.iter().map(|j| j.events.len()).sum());
            answer(topic, jobs, first_offset)
        }
        // No row reserved: the topic is gone (dropped, or dropped and made again later).
        Ok(None) | Err(Error::NotFound(_)) => {
            for job in jobs {
                let _ = job.reply.send(Err(WriteError::TopicGone(job.events)));
            }
        }
        // A request stored alone gets its own error; a batch's requests get copies.
        Err(e) if jobs.len() == 1 => {
            if let Some(job) = jobs.into_iter().next() {
                let _ = job.reply.send(Err(WriteError::Failed(e)));
            }
        }
        Err(e) => {
            for job in jobs {
                let _ = job.reply.send(Err(WriteError::Failed(clone_error(&e))));
            }
        }
    }
}

fn answer(topic: &TopicName, jobs: Vec<Job>, first_offset: i64) {
    let mut offset = first_offset;
    for job in jobs {
        let events = job
            .events
            .into_iter()
            .map(|v| {
                let e = Event::from_valid(v, topic.as_str(), &job.identifier, offset);
                offset += 1;
                e
            })
            .collect();
        // The requester may have gone away (client cancelled); the events are stored anyway.
        let _ = job.reply.send(Ok(events));
    }
}

fn clone_error(e: &Error) -> Error {
    match e {
        Error::Unavailable(m) => Error::Unavailable(m.clone()),
        other => Error::Internal(anyhow::anyhow!("batched write failed: {other}")),
    }
}
