//! One client's view of a topic: a replay from Postgres after a given offset, then the live
//! hub, with no gap and no duplicate for durable events and in offset order.
//!
//! The feed remembers the last topic offset it has accounted for. A live batch that starts
//! right after it is passed on as is (no copy); one that starts later means something was
//! missed (Redis pub/sub is at-most-once, a node may have joined late, the hub may have lagged
//! during a replay), so the feed reads the gap from Postgres; anything at or below it is a
//! duplicate and dropped. Non-durable events (offset 0) are live only and pass straight on.
//! Every replay read takes a turn of the node's replay budget (`ER_LIVE_REPLAY_CONCURRENCY`),
//! so a thousand clients rejoining at once wait their turns instead of loading Postgres.

use super::{Batch, Listener, Live};
use crate::error::{Error, Result};
use crate::events::{Event, Filter, read_after, scoped};
use crate::topics::{self, TopicRef};
use sqlx::PgPool;
use std::sync::Arc;
use tokio::sync::Semaphore;
use tokio::sync::broadcast::error::RecvError;

/// Events read from Postgres per replay step.
pub const REPLAY_BATCH: i64 = 500;

/// Opens feeds: the node's hub and the pool their replays and gap reads use; cheap to clone.
#[derive(Clone)]
pub struct Feeds {
    live: Live,
    pool: PgPool,
}

impl Feeds {
    /// Feeds over the node's hub and pool.
    pub fn new(live: Live, pool: PgPool) -> Self {
        Feeds { live, pool }
    }

    /// A feed of `topic` (see [`Feed::open`]).
    pub async fn open(
        &self,
        topic: TopicRef,
        filters: Vec<Filter>,
        after: Option<i64>,
    ) -> Result<Feed> {
        Feed::open(&self.live, &self.pool, topic, filters, after).await
    }
}

/// An ordered, resumable stream of one topic's events for one client.
pub struct Feed {
    pool: PgPool,
    topic: TopicRef,
    filters: Vec<Filter>,
    rx: Listener,
    /// Highest topic offset delivered or known not to match.
    last: i64,
    replaying: bool,
    /// Set when a replay ends: a lag reported right after it is the replay's, not the client's.
    after_replay: bool,
    /// The hub's per-topic buffers (batches, bytes), for the slow-client message.
    buffer: (usize, usize),
    /// The client is sent each event's JSON (see [`Feed::with_json`]).
    json: bool,
    /// Statement timeout of replays that are scoped or filtered.
    timeout: std::time::Duration,
    /// The node's replay budget: one permit per replay read.
    replays: Arc<Semaphore>,
    /// The topic's first retained offset when the feed opened.
    first: i64,
}

/// Longest a new feed waits for the bus to carry its topic from other nodes.
const BUS_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

impl Feed {
    /// Opens a feed. With `after` it first replays stored events after that offset (from the
    /// first retained event, when retention has removed earlier ones); without, it starts at
    /// the topic's current end. The hub subscription is taken before the topic's end is read,
    /// so nothing committed in between can be missed.
    pub async fn open(
        live: &Live,
        pool: &PgPool,
        topic: TopicRef,
        filters: Vec<Filter>,
        after: Option<i64>,
    ) -> Result<Feed> {
        if after.is_some_and(|a| a < 0) {
            return Err(Error::invalid("after_offset must not be negative"));
        }
        let rx = live.subscribe(topic.name.as_str());
        // Events other nodes publish from here on reach this node before the client is told
        // it is listening (bounded: a Redis that is away must not hold joins up).
        live.carried(topic.name.as_str(), BUS_WAIT).await;
        let buffer = (live.buffer(), live.buffer_bytes());
        let bounds = topics::bounds(pool, topic.name.as_str()).await?;
        let head = bounds.last;
        Ok(Feed {
            pool: pool.clone(),
            topic,
            filters,
            rx,
            last: after.unwrap_or(head),
            replaying: after.is_some(),
            after_replay: false,
            buffer,
            json: false,
            timeout: crate::events::READ_TIMEOUT,
            replays: live.replay_budget(),
            first: bounds.first,
        })
    }

    /// The statement timeout of replay reads that are scoped by an identifier or filtered
    /// (`ER_PULL_TIMEOUT_MS`); such a read can scan the whole topic.
    pub fn with_timeout(mut self, timeout: std::time::Duration) -> Feed {
        self.timeout = timeout;
        self
    }

    /// The topic's first retained offset when the feed opened: a replay asked for after an
    /// earlier offset starts here.
    pub fn first_offset(&self) -> i64 {
        self.first
    }

    /// For a client that is sent each event's JSON ([`Batch::json`], websocket pushes): when a
    /// live batch has to be narrowed for it (a topic identifier), the whole shared batch is
    /// encoded first, once for every such client, and the narrowed copy shares that text.
    pub fn with_json(mut self) -> Feed {
        self.json = true;
        self
    }

    /// The topic offset the client has been brought up to (what to resume after).
    pub fn last_offset(&self) -> i64 {
        self.last
    }

    /// The next non-empty batch for the client. Cancel-safe: state changes only after each
    /// await completes. Fails with [`Error::ResourceExhausted`] when the client fell more than
    /// the hub's buffer behind, and with [`Error::NotFound`] when the topic is dropped.
    pub async fn next(&mut self) -> Result<Batch> {
        loop {
            if self.replaying {
                let rows = self.replay_step().await?;
                if !rows.is_empty() {
                    return Ok(rows.into());
                }
                continue;
            }
            match self.rx.recv().await {
                Ok(batch) => {
                    self.after_replay = false;
                    if let Some(b) = self.accept(batch) {
                        return Ok(b);
                    }
                }
                Err(RecvError::Lagged(_)) if self.after_replay => {
                    // Batches piled up while we read Postgres; they are durable, read them too.
                    self.after_replay = false;
                    self.replaying = true;
                }
                Err(RecvError::Lagged(_)) => {
                    return Err(Error::ResourceExhausted(format!(
                        "slow client: fell more than {} batches or {} bytes behind the live stream",
                        self.buffer.0, self.buffer.1
                    )));
                }
                Err(RecvError::Closed) => {
                    return Err(Error::Unavailable("live stream closed".into()));
                }
            }
        }
    }

    fn matches(&self, e: &Event) -> bool {
        self.topic
            .identifier
            .as_deref()
            .is_none_or(|i| i == e.topic_identifier)
    }

    /// Applies a live batch: what to pass on, or `None`. Switches to replay on a gap.
    fn accept(&mut self, batch: Batch) -> Option<Batch> {
        let first = batch.first()?;
        if first.offset == 0 {
            // Non-durable: live only. Filters are evaluated by Postgres, so a filtered feed
            // carries durable events only.
            if !self.filters.is_empty() {
                return None;
            }
            return self.select(batch, |_| true);
        }
        let newest = batch.iter().map(|e| e.offset).max().unwrap_or(0);
        if newest <= self.last {
            return None; // already delivered (a duplicate announcement or the safety sweep)
        }
        let first_new = batch
            .iter()
            .map(|e| e.offset)
            .filter(|o| *o > self.last)
            .min()
            .unwrap_or(newest);
        if first_new != self.last + 1 || !self.filters.is_empty() {
            // A gap (or filters that only Postgres can evaluate): read from the store.
            self.replaying = true;
            return None;
        }
        let after = self.last;
        self.last = newest;
        self.select(batch, |e| e.offset > after)
    }

    fn select(&self, batch: Batch, keep: impl Fn(&Event) -> bool) -> Option<Batch> {
        if batch.iter().all(|e| keep(e) && self.matches(e)) {
            return Some(batch); // the common case: share the hub's batch
        }
        if self.json {
            batch.json(); // once for every feed of the batch, not once per picked copy
        }
        let picked = batch.pick(|e| keep(e) && self.matches(e));
        (!picked.is_empty()).then_some(picked)
    }

    async fn replay_step(&mut self) -> Result<Vec<Event>> {
        // A reconnect storm queues here instead of at Postgres; the wait is cancel-safe.
        let _turn = self
            .replays
            .acquire()
            .await
            .map_err(|_| Error::Unavailable("replays closed".into()))?;
        // The end is read first: every offset up to it is committed, so a short read below
        // proves nothing matching is left up to it.
        let end = topics::last_offset(&self.pool, self.topic.name.as_str()).await?;
        let rows = if self.topic.identifier.is_none() && self.filters.is_empty() {
            read_after(&self.pool, &self.topic, self.last, REPLAY_BATCH, &[]).await?
        } else {
            let mut tx = scoped(&self.pool, self.timeout).await?;
            let rows = read_after(
                &mut *tx,
                &self.topic,
                self.last,
                REPLAY_BATCH,
                &self.filters,
            )
            .await?;
            tx.commit().await?;
            rows
        };
        let read_to = rows.last().map_or(self.last, |e| e.offset);
        if (rows.len() as i64) < REPLAY_BATCH {
            self.last = read_to.max(end).max(self.last);
            self.replaying = false;
            self.after_replay = true;
        } else {
            self.last = read_to;
        }
        Ok(rows)
    }
}
