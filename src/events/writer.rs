//! Durable writes with group commit. Each topic has one writer lane per node: concurrent
//! publish requests queue on it, and the lane stores everything queued in one transaction,
//! with at most two such transactions going at once. The lanes run on a thread of their own
//! with connections of their own (see [`Engine`]); the statement itself is in `insert.rs`, the
//! queue a lane cuts its batches from in `queue.rs`.
//!
//! Offsets: the transaction first bumps the topic's `topic_offsets.reserved`, which row-locks
//! it until commit. Every publisher of the topic, on any node, waits for that lock, so offsets
//! are contiguous and commit strictly in offset order. The transaction commits without waiting
//! for the WAL flush (the lock is free a flush sooner); a mark (`mark.rs`, synchronously
//! committed) then raises the mark every reader stops at (`topic_marks`), and its flush
//! makes the batch durable. A small batch commits synchronously and moves the mark itself.
//! Requests are answered after the mark, so an acknowledged event is durable and visible,
//! and a reader of "offset > N" can never miss a row that commits later.
//! Batching many requests into one transaction is what keeps the serialisation fast.

use super::handoff::{self, Outbox};
use super::insert::{self, Columns};
use super::mark::{self, Marked, Stored, unconfirmed};
use super::model::{Event, ValidEvent};
use super::queue::{Job, MAX_BATCH_EVENTS, Queue, Waiting};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::topics::TopicName;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};
use tokio_util::task::TaskTracker;

/// Requests that may wait on one lane; further publishers wait for room (backpressure).
const LANE_QUEUE: usize = 1_024;
/// Transactions one lane keeps going at once. They queue on the topic's offset lock (its
/// `topic_offsets` row) in Postgres, so offsets still follow commit order; meanwhile the
/// waiting one has already been sent, decoded and had its JSON parsed (see [`store`]), so the
/// lock is held only for the inserts and the commit, and one core parses while the other
/// inserts.
const IN_FLIGHT: usize = 2;
/// Events that must be queued before a second transaction starts beside a running one. Small
/// batches are better left to grow until the running one ends: a transaction of a handful of
/// events costs Postgres nearly as much as one of fifty, and measured (er-loadgen, 1-event
/// requests) splitting them lowered throughput by a quarter.
const PIPELINE_MIN_EVENTS: usize = 100;

/// Why a write did not store the events.
#[derive(Debug)]
pub enum WriteError {
    /// The topic does not exist (any more); the events come back for the dead-letter table.
    TopicGone(Vec<ValidEvent>),
    /// Anything else.
    Failed(Error),
}

/// The per-node set of writer lanes.
#[derive(Clone)]
pub struct Writer {
    /// The writer's own connections, opened on its thread (see [`Engine`]); the node's main
    /// pool is not used for writes.
    pool: PgPool,
    // A std mutex: held only to find or insert a lane's sender.
    lanes: Arc<Mutex<HashMap<TopicName, LaneTx>>>,
    tracker: TaskTracker,
    metrics: Metrics,
    engine: Arc<Engine>,
}

/// A lane's channel and its count of events sent and not yet taken.
#[derive(Clone)]
struct LaneTx {
    tx: mpsc::Sender<Job>,
    waiting: Arc<Waiting>,
}

/// The lanes' own thread and runtime. A lane's transactions are serial, so every moment
/// between "Postgres answered" and "the next transaction is sent" is lost throughput for the
/// topic. On the node's main runtime that moment waited behind whatever request work was
/// queued on its workers (HTTP/2 frames, protobuf, replies); on a thread of its own, mostly
/// asleep, the lane is woken at once (measured on 2 cores: 100-event publishing at 0.89 x the
/// multi-row baseline before, 0.97-1.07 x in four runs after; docs/benchmarks.md). One thread
/// serves every lane: a lane's own CPU work is a few microseconds per event, the rest is
/// Postgres. The runtime stops when the last `Writer` clone is dropped or at shutdown.
type Engine = crate::rt::ThreadRuntime;

impl Writer {
    /// Starts the writer thread with a pool of `connections` opened like `pool`'s (on that
    /// thread, so Postgres' answers wake it directly). Lanes are spawned on `tracker` so
    /// shutdown waits for queued writes.
    pub async fn start(
        pool: &PgPool,
        connections: u32,
        tracker: TaskTracker,
        metrics: Metrics,
    ) -> anyhow::Result<Self> {
        let engine = Arc::new(Engine::start("er-writer")?);
        let opts = (*pool.connect_options()).clone();
        let pool = engine
            .handle()
            .spawn(crate::db::connect_with(opts, connections))
            .await??;
        // Ends with the writer's runtime.
        engine.handle().spawn(mark::sweep(pool.clone()));
        Ok(Writer {
            pool,
            lanes: Arc::default(),
            tracker,
            metrics,
            engine,
        })
    }

    /// Stores the events of one request in one transaction (possibly shared with other
    /// requests) and returns them with their offsets.
    pub async fn write(
        &self,
        topic: &TopicName,
        identifier: &str,
        events: Vec<ValidEvent>,
    ) -> Result<Vec<Event>, WriteError> {
        let (reply, rx) = oneshot::channel();
        let job = Job {
            identifier: identifier.to_owned(),
            events,
            reply,
            home: handoff::home(),
        };
        let gone = || WriteError::Failed(Error::Unavailable("node is shutting down".into()));
        let lane = self.lane(topic);
        // Counted before it is sent, so the lane never takes a job it was not told of.
        lane.waiting.add(job.events.len());
        lane.tx.send(job).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// Closes every lane: queued writes finish, then the lane tasks end.
    pub fn close(&self) {
        self.lanes.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// After the lanes have ended: closes the writer's connections and stops its thread.
    pub async fn shutdown(&self) {
        self.pool.close().await;
        self.engine.stop();
    }

    fn lane(&self, topic: &TopicName) -> LaneTx {
        let mut lanes = self.lanes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(lane) = lanes.get(topic) {
            return lane.clone();
        }
        let (tx, rx) = mpsc::channel(LANE_QUEUE);
        let lane = LaneTx {
            tx,
            waiting: Arc::new(Waiting::new(PIPELINE_MIN_EVENTS)),
        };
        lanes.insert(topic.clone(), lane.clone());
        let queue = Queue::new(lane.waiting.clone());
        self.tracker.spawn_on(
            run_lane(
                self.pool.clone(),
                topic.clone(),
                rx,
                queue,
                self.metrics.clone(),
            ),
            self.engine.handle(),
        );
        lane
    }
}

/// Takes whatever is queued, stores it in one transaction, answers every request once a mark
/// has made it durable; keeps up to [`IN_FLIGHT`] such transactions and one mark going at once.
async fn run_lane(
    pool: PgPool,
    topic: TopicName,
    mut rx: mpsc::Receiver<Job>,
    mut queue: Queue,
    metrics: Metrics,
) {
    let mut running = FuturesUnordered::new();
    let mut marking = FuturesUnordered::new();
    let mut open = true;
    // Transactions that have ended, handled once the next one is on its way.
    let mut ended: Vec<Ended> = Vec::new();
    // Committed batches not yet covered by a mark; the next mark takes them all.
    let mut stored: Stored = Vec::new();
    let mut marked: Option<Marked> = None;
    let mut outbox = Outbox::default();
    loop {
        if open {
            open = queue.take_from(&mut rx);
        }
        // Launch what is pending when a slot is free: at once when nothing runs, and beside a
        // running transaction only when enough has queued to be worth a second one.
        let mut launched = false;
        while !queue.jobs.is_empty()
            && (running.is_empty()
                || (running.len() < IN_FLIGHT && queue.events >= PIPELINE_MIN_EVENTS))
        {
            running.push(commit(&pool, &topic, queue.take_batch()));
            launched = true;
        }
        if !ended.is_empty() || marked.is_some() {
            // The next transaction is the topic's critical path (it waits for the lock the
            // last one held), answering is not: send its statement first, so that Postgres
            // works on it while this thread wakes the requesters (a cross-thread wake-up
            // each).
            if launched {
                while let Some(Some(e)) = running.next().now_or_never() {
                    ended.push(e);
                }
            }
            for (batch, result) in ended.drain(..).flatten() {
                match result {
                    Ok((first_offset, Commit::Flushed)) => {
                        settle(&topic, batch, Ok(first_offset), &metrics, &mut outbox)
                    }
                    Ok((first_offset, Commit::Unflushed)) => stored.push((batch, first_offset)),
                    Err(e) => settle(&topic, batch, Err(e), &metrics, &mut outbox),
                }
            }
            if let Some((cohort, result)) = marked.take() {
                for (batch, first_offset) in cohort {
                    let result = match &result {
                        Ok(_) => Ok(first_offset),
                        Err(e) => Err(unconfirmed(e)),
                    };
                    settle(&topic, batch, result, &metrics, &mut outbox);
                }
            }
            // One mark at a time: whatever commits meanwhile waits for the next one, so marks
            // cost one statement per flush, not one per transaction.
            if marking.is_empty() && !stored.is_empty() {
                marking.push(mark::mark(&pool, &topic, std::mem::take(&mut stored)));
            }
            outbox.deliver();
            continue;
        }
        if !open && queue.jobs.is_empty() && running.is_empty() && marking.is_empty() {
            break;
        }
        // Listen to the channel only when what arrives could be launched: when idle, or when a
        // second transaction could start and enough waits for one. Otherwise arrivals wait in
        // the channel (taken at the top of the loop when a transaction ends) without waking
        // this thread, and only the count crossing the threshold does.
        let room = open && queue.events < MAX_BATCH_EVENTS;
        let second = !running.is_empty() && running.len() < IN_FLIGHT;
        let enough = queue.events + queue.waiting.events() >= PIPELINE_MIN_EVENTS;
        let waiting = queue.waiting.clone();
        tokio::select! {
            biased;
            Some(e) = running.next(), if !running.is_empty() => ended.push(e),
            Some(m) = marking.next(), if !marking.is_empty() => marked = Some(m),
            job = rx.recv(), if room && (running.is_empty() || (second && enough)) => match job {
                Some(job) => queue.push(job),
                None => open = false,
            },
            () = waiting.enough(), if room && second && !enough => {}
        }
    }
}

/// Requests of an ended transaction (or of its single retries) with their outcomes: the first
/// offset and how the transaction committed.
type Ended = Vec<(Vec<Job>, Result<(i64, Commit)>)>;

/// How a batch's transaction committed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Commit {
    /// Synchronously, with the mark moved: durable and visible, answer at once.
    Flushed,
    /// Without waiting for the flush: answer after a mark.
    Unflushed,
}

/// Batches of at least this many events commit without waiting for the flush and are marked
/// after; smaller ones commit synchronously and mark themselves. A mark is a second statement
/// per flush, cheap beside a large batch's inserts but as costly as a small batch itself
/// (measured, er-loadgen: with every batch marked, 1-event publishing went from 0.96-1.18 x
/// to 0.75-0.78 x its baseline while 100-event publishing gained a third). The same line as
/// [`PIPELINE_MIN_EVENTS`]: a batch big enough to run beside another never holds the lock
/// through a flush (measured at 200 instead: some second transactions of 100-event publishing
/// committed synchronously; b 86,500 -> 87,500-88,000 events/s, within noise).
const UNFLUSHED_MIN_EVENTS: usize = PIPELINE_MIN_EVENTS;

/// Stores one batch; the lane answers its requests.
async fn commit(pool: &PgPool, topic: &TopicName, batch: Vec<Job>) -> Ended {
    match store(pool, topic, &batch).await {
        Err(e) if batch.len() > 1 && !matches!(e, Error::NotFound(_)) => {
            // One bad request must not fail its neighbours: store each on its own.
            tracing::warn!(topic = %topic, error = %e, "batched write failed, retrying singly");
            let mut ended = Vec::with_capacity(batch.len());
            for job in batch {
                let result = store(pool, topic, std::slice::from_ref(&job)).await;
                ended.push((vec![job], result));
            }
            ended
        }
        result => vec![(batch, result)],
    }
}

/// Answers the requests of a batch with the outcome of its transaction (through `out`, which
/// the lane delivers after the whole round).
fn settle(
    topic: &TopicName,
    batch: Vec<Job>,
    result: Result<i64>,
    metrics: &Metrics,
    out: &mut Outbox,
) {
    match result {
        Ok(first_offset) => {
            metrics.committed(topic.as_str(), batch.iter().map(|j| j.events.len()).sum());
            answer(topic, batch, first_offset, out)
        }
        Err(Error::NotFound(_)) => {
            for job in batch {
                let gone = Err(WriteError::TopicGone(job.events));
                out.answer(job.home.as_ref(), job.reply, gone);
            }
        }
        // A request stored alone gets its own error; a batch's requests get copies.
        Err(e) if batch.len() == 1 => {
            if let Some(job) = batch.into_iter().next() {
                out.answer(job.home.as_ref(), job.reply, Err(WriteError::Failed(e)));
            }
        }
        Err(e) => {
            for job in batch {
                let failed = Err(WriteError::Failed(clone_error(&e)));
                out.answer(job.home.as_ref(), job.reply, failed);
            }
        }
    }
}

fn answer(topic: &TopicName, batch: Vec<Job>, first_offset: i64, out: &mut Outbox) {
    let mut offset = first_offset;
    for job in batch {
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
        out.answer(job.home.as_ref(), job.reply, Ok(events));
    }
}

fn clone_error(e: &Error) -> Error {
    match e {
        Error::Unavailable(m) => Error::Unavailable(m.clone()),
        other => Error::Internal(anyhow::anyhow!("batched write failed: {other}")),
    }
}

/// One transaction: reserve offsets, insert every row with a single multi-row INSERT.
/// Returns the first offset of the batch and how it committed.
async fn store(pool: &PgPool, topic: &TopicName, batch: &[Job]) -> Result<(i64, Commit)> {
    let n: usize = batch.iter().map(|j| j.events.len()).sum();
    let mut cols = Columns::with_capacity(n);
    for job in batch {
        for v in &job.events {
            cols.push(&job.identifier, v);
        }
    }
    let commit = if n >= UNFLUSHED_MIN_EVENTS {
        Commit::Unflushed
    } else {
        Commit::Flushed
    };
    let first = insert::store(pool, topic, cols, commit == Commit::Flushed).await?;
    Ok((first, commit))
}
