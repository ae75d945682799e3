//! The cluster bus: every node's committed (and non-durable) events reach the local listeners
//! of every other node.
//!
//! After a publish commits, [`Bus::published`] hands the batch to the local hub at once and
//! queues an announcement. A background announcer sends queued announcements on Redis pub/sub
//! (channel `<ER_CLUSTER_NAME>:live:<topic>`, events inline when small) and, when Redis is not
//! configured or a send fails, over Postgres NOTIFY instead: one statement per flush carrying
//! only topic and offset range per topic, so the publish path never issues a NOTIFY per event
//! and the receivers fetch the rows themselves.
//!
//! On the receiving side one task feeds the hub from both transports, in arrival order, and
//! once a second sweeps the topics that have local listeners against their committed end in
//! Postgres, re-announcing locally what the at-most-once transports lost (a Redis restart, a
//! dropped LISTEN connection). Listeners ([`crate::live::Feed`]) track their own last offset
//! and fill gaps from Postgres, so a lost or duplicated announcement costs latency, never an
//! event.

mod notify;
mod pubsub;
mod sequencer;

use crate::events::{Event, Fanout};
use crate::live::{Batch, Live};
use crate::redis::RedisState;
use sequencer::Sequencer;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

/// Announcements waiting to be sent; when full, new ones are dropped (the sweep recovers
/// durable events on the other nodes) so a publisher never waits for the bus.
const ANNOUNCE_QUEUE: usize = 8_192;
/// Received announcements waiting for the hub feeder.
const INCOMING_QUEUE: usize = 8_192;
/// How often the receiving side checks topics with local listeners against Postgres.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// Most queued announcements merged into one round of hub batches.
const DRAIN_MAX: usize = 256;

/// What travels between nodes. `first`/`last` are the offset range of durable events (0 for
/// non-durable ones); `events` holds them when they fit, else receivers read the range.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Announcement {
    #[serde(rename = "n")]
    node: Uuid,
    #[serde(rename = "t")]
    topic: String,
    #[serde(rename = "f")]
    first: i64,
    #[serde(rename = "l")]
    last: i64,
    #[serde(rename = "e", default, skip_serializing_if = "Vec::is_empty")]
    events: Vec<Event>,
    /// Unix milliseconds when it was sent, for the bus-lag metric (0 from older nodes).
    #[serde(rename = "s", default)]
    sent_ms: i64,
    /// The `live_spill` row holding the real announcement, when it was too large for NOTIFY.
    #[serde(rename = "x", default, skip_serializing_if = "is_zero")]
    spill: i64,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// Unix milliseconds now.
fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Announcement {
    fn of(node: Uuid, topic: &str, batch: &[Event], inline: bool) -> Self {
        let first = batch.iter().map(|e| e.offset).min().unwrap_or(0);
        let last = batch.iter().map(|e| e.offset).max().unwrap_or(0);
        Announcement {
            node,
            topic: topic.to_owned(),
            first,
            last,
            events: if inline { batch.to_vec() } else { vec![] },
            sent_ms: now_ms(),
            spill: 0,
        }
    }
}

/// The bus of one node. Cheap to clone.
#[derive(Clone)]
pub struct Bus {
    inner: Arc<Inner>,
}

struct Inner {
    live: Live,
    /// The node's Redis client, when `REDIS_URL` is set (announcements go over it).
    redis: Option<fred::clients::Client>,
    outgoing: mpsc::Sender<(String, Batch)>,
    /// Local durable batches on their way to the sequencer.
    local: mpsc::Sender<(String, Batch)>,
}

impl Bus {
    /// Starts the announcer, the receivers (LISTEN always, Redis when configured) and the
    /// sequencer with its sweep on `tracker`; they stop when `stop` is cancelled. `redis` is
    /// the node's client for publishing; a separate subscriber connection is opened from
    /// `redis_url`, and the LISTEN connection from `database_url`. `cluster` namespaces the
    /// Redis channels.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        cluster: &str,
        database_url: &str,
        redis_url: Option<&str>,
        pool: PgPool,
        live: Live,
        redis: Option<fred::clients::Client>,
        tracker: &TaskTracker,
        stop: CancellationToken,
        metrics: crate::metrics::Metrics,
    ) -> anyhow::Result<Bus> {
        let node = Uuid::new_v4();
        let (outgoing, out_rx) = mpsc::channel(ANNOUNCE_QUEUE);
        let (local, local_rx) = mpsc::channel(INCOMING_QUEUE);
        let (in_tx, in_rx) = mpsc::channel(INCOMING_QUEUE);
        let prefix = format!("{cluster}:live:");
        tracker.spawn(notify::listen(
            database_url.to_owned(),
            in_tx.clone(),
            stop.clone(),
        ));
        if let Some(url) = redis_url {
            let subscriber = pubsub::subscriber(url)?;
            tracker.spawn(pubsub::receive(
                subscriber,
                prefix.clone(),
                live.clone(),
                in_tx,
                stop.clone(),
            ));
        }
        tracker.spawn(announce(
            node,
            out_rx,
            redis.clone(),
            prefix,
            pool.clone(),
            stop.clone(),
        ));
        let sequencer = Sequencer::new(live.clone(), pool.clone());
        tracker.spawn(receive(
            node, sequencer, pool, local_rx, in_rx, stop, metrics,
        ));
        Ok(Bus {
            inner: Arc::new(Inner {
                live,
                redis,
                outgoing,
                local,
            }),
        })
    }
}

impl Bus {
    /// Whether announcements can go over Redis now (readiness and the UI report it).
    pub fn redis_state(&self) -> RedisState {
        RedisState::of(self.inner.redis.as_ref())
    }
}

impl Fanout for Bus {
    /// Hands events of `topic` (committed, or non-durable) to local listeners and announces
    /// them to the other nodes. Never blocks.
    fn published(&self, topic: &str, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        let batch: Batch = events.into();
        let durable = batch.first().is_some_and(|e| e.offset > 0);
        if !durable || !self.inner.live.has_listeners(topic) {
            self.inner.live.publish_batch(topic, batch.clone());
        } else if let Err(e) = self.inner.local.try_send((topic.to_owned(), batch.clone())) {
            // The sequencer is behind: hand over directly, feeds order it themselves.
            let (topic, batch) = e.into_inner();
            self.inner.live.publish_batch(&topic, batch);
        }
        if self
            .inner
            .outgoing
            .try_send((topic.to_owned(), batch))
            .is_err()
        {
            tracing::debug!(
                topic,
                "bus queue full: announcement dropped, sweeps recover it"
            );
        }
    }
}

/// Least time between two NOTIFY flushes. Each NOTIFY is a transaction that takes Postgres'
/// cluster-wide notify lock and wakes every node's listener: one per group commit cost a
/// quarter of the 1-event publish throughput (er-loadgen, no Redis). Announcements that come
/// sooner wait and go out together; a lone commit is announced at once.
const NOTIFY_GAP: Duration = Duration::from_millis(5);

/// Sends queued announcements: Redis when it answers, else one coalesced NOTIFY per flush.
async fn announce(
    node: Uuid,
    mut rx: mpsc::Receiver<(String, Batch)>,
    redis: Option<fred::clients::Client>,
    prefix: String,
    pool: PgPool,
    stop: CancellationToken,
) {
    let mut queued = Vec::with_capacity(512);
    let mut last_notify: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            n = rx.recv_many(&mut queued, 512) => if n == 0 { return },
        }
        let mut failed = match &redis {
            Some(client) => pubsub::publish(client, &prefix, node, &mut queued).await,
            None => std::mem::take(&mut queued),
        };
        if !failed.is_empty() {
            if let Some(at) = last_notify
                && at.elapsed() < NOTIFY_GAP
            {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep_until(at + NOTIFY_GAP) => {}
                }
                // What queued meanwhile joins this flush (it would take NOTIFY too: Redis
                // just failed).
                while failed.len() < 4 * 512
                    && let Ok(item) = rx.try_recv()
                {
                    failed.push(item);
                }
            }
            notify::send(&pool, node, &failed).await;
            last_notify = Some(tokio::time::Instant::now());
        }
        queued.clear();
    }
}

/// Feeds the hub through the sequencer from local commits and received announcements, and
/// sweeps once a second.
async fn receive(
    node: Uuid,
    mut seq: Sequencer,
    pool: PgPool,
    mut local: mpsc::Receiver<(String, Batch)>,
    mut remote: mpsc::Receiver<Announcement>,
    stop: CancellationToken,
    metrics: crate::metrics::Metrics,
) {
    let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let deadline = seq.deadline();
        tokio::select! {
            _ = stop.cancelled() => return,
            l = local.recv() => match l {
                Some((topic, batch)) => {
                    seq.durable(&topic, batch);
                    while let Ok((topic, batch)) = local.try_recv() {
                        seq.durable(&topic, batch);
                    }
                }
                None => return,
            },
            a = remote.recv() => match a {
                Some(a) => {
                    // Take whatever else is queued too, so it reaches the hub as one batch.
                    let mut next = Some(a);
                    let mut taken = 0;
                    while let Some(a) = next.take() {
                        if a.node != node {
                            if a.sent_ms > 0 {
                                metrics.bus_lag(now_ms() - a.sent_ms);
                            }
                            deliver(&mut seq, &pool, a).await;
                        }
                        taken += 1;
                        if taken < DRAIN_MAX {
                            next = remote.try_recv().ok();
                        }
                    }
                }
                None => return,
            },
            _ = sleep_until(deadline), if deadline.is_some() => seq.expire().await,
            _ = sweep.tick() => {
                if let Err(e) = self::sweep(&mut seq, &pool).await {
                    tracing::debug!(error = %e, "live sweep failed; retrying next tick");
                }
            }
        }
        seq.flush();
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    if let Some(d) = deadline {
        tokio::time::sleep_until(d).await;
    }
}

/// Hands one announcement from another node to the local hub.
async fn deliver(seq: &mut Sequencer, pool: &PgPool, a: Announcement) {
    if !seq.live().has_listeners(&a.topic) {
        return;
    }
    let a = match a.spill {
        0 => a,
        id => match notify::unspill(pool, id).await {
            Some(a) => a,
            None => return,
        },
    };
    if a.last == 0 {
        seq.non_durable(&a.topic, a.events.into());
    } else if a.events.is_empty() {
        seq.range(&a.topic, a.first, a.last).await;
    } else {
        seq.durable(&a.topic, a.events.into());
    }
}

/// Compares each listened topic's committed end with what the hub has seen and hands over
/// the tail that the transports lost.
async fn sweep(seq: &mut Sequencer, pool: &PgPool) -> crate::error::Result<()> {
    seq.retain_listened();
    let topics = seq.live().topics();
    if topics.is_empty() {
        return Ok(());
    }
    let ends: Vec<(String, i64)> = sqlx::query_as(
        "SELECT t.name, COALESCE(o.marked, 0) FROM topics t
             LEFT JOIN topic_offsets o ON o.name = t.name WHERE t.name = ANY($1)",
    )
    .bind(&topics)
    .fetch_all(pool)
    .await?;
    for (topic, end) in ends {
        match seq.seen(&topic) {
            Some(seen) if end > seen => {
                tracing::debug!(topic, seen, end, "sweep recovers events the bus missed");
                seq.range(&topic, seen + 1, end).await;
            }
            Some(_) => {}
            // First sight: listeners started at or after this point (they read the end
            // themselves), so only later losses need recovering.
            None => seq.range(&topic, end, end).await,
        }
    }
    Ok(())
}
