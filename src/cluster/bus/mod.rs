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

use crate::config::Config;
use crate::events::{Event, read_after};
use crate::live::{Batch, Live};
use crate::topics::{TopicName, TopicRef};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
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
/// Most events a receiver fetches for one announcement or sweep; listeners further behind
/// read the rest from Postgres themselves.
const FETCH_TAIL: i64 = 1_000;

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
        }
    }
}

/// The bus of one node. Cheap to clone.
#[derive(Clone)]
pub struct Bus {
    inner: Arc<Inner>,
}

struct Inner {
    node: Uuid,
    live: Live,
    outgoing: mpsc::Sender<(String, Batch)>,
    // Highest durable offset per topic handed to the local hub. A std mutex: held only for a
    // map update, never across an await.
    seen: Mutex<HashMap<String, i64>>,
}

impl Bus {
    /// Starts the announcer, the receivers (LISTEN always, Redis when configured) and the
    /// sweep on `tracker`; they stop when `stop` is cancelled. `redis` is the node's client
    /// for publishing; a separate subscriber connection is opened from `config.redis_url`.
    pub fn start(
        config: &Config,
        pool: PgPool,
        live: Live,
        redis: Option<fred::clients::Client>,
        tracker: &TaskTracker,
        stop: CancellationToken,
    ) -> anyhow::Result<Bus> {
        let (outgoing, out_rx) = mpsc::channel(ANNOUNCE_QUEUE);
        let (in_tx, in_rx) = mpsc::channel(INCOMING_QUEUE);
        let inner = Arc::new(Inner {
            node: Uuid::new_v4(),
            live: live.clone(),
            outgoing,
            seen: Mutex::default(),
        });
        let prefix = format!("{}:live:", config.cluster_name);
        tracker.spawn(notify::listen(
            config.database_url.clone(),
            in_tx.clone(),
            stop.clone(),
        ));
        if let Some(url) = &config.redis_url {
            let subscriber = pubsub::subscriber(url)?;
            tracker.spawn(pubsub::receive(
                subscriber,
                prefix.clone(),
                live,
                in_tx,
                stop.clone(),
            ));
        }
        tracker.spawn(announce(
            inner.node,
            out_rx,
            redis,
            prefix,
            pool.clone(),
            stop.clone(),
        ));
        tracker.spawn(receive(inner.clone(), pool, in_rx, stop));
        Ok(Bus { inner })
    }

    /// Hands events of `topic` (committed, or non-durable) to local listeners and announces
    /// them to the other nodes. Never blocks.
    pub fn published(&self, topic: &str, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        let batch: Batch = events.into();
        self.inner.advance(topic, &batch);
        self.inner.live.publish_batch(topic, batch.clone());
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

impl Inner {
    /// Records durable offsets handed to the hub; returns the previous high mark.
    fn advance(&self, topic: &str, batch: &[Event]) -> Option<i64> {
        let last = batch.iter().map(|e| e.offset).max().unwrap_or(0);
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let before = seen.get(topic).copied();
        if last > 0 && before.is_none_or(|b| last > b) {
            seen.insert(topic.to_owned(), last);
        }
        before
    }

    fn seen(&self, topic: &str) -> Option<i64> {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.get(topic).copied()
    }
}

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
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            n = rx.recv_many(&mut queued, 512) => if n == 0 { return },
        }
        let failed = match &redis {
            Some(client) => pubsub::publish(client, &prefix, node, &mut queued).await,
            None => std::mem::take(&mut queued),
        };
        if !failed.is_empty() {
            notify::send(&pool, node, &failed).await;
        }
        queued.clear();
    }
}

/// Feeds the hub from received announcements, and sweeps once a second.
async fn receive(
    inner: Arc<Inner>,
    pool: PgPool,
    mut rx: mpsc::Receiver<Announcement>,
    stop: CancellationToken,
) {
    let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            a = rx.recv() => match a {
                Some(a) => deliver(&inner, &pool, a).await,
                None => return,
            },
            _ = sweep.tick() => {
                if let Err(e) = self::sweep(&inner, &pool).await {
                    tracing::debug!(error = %e, "live sweep failed; retrying next tick");
                }
            }
        }
    }
}

/// Hands one announcement from another node to the local hub.
async fn deliver(inner: &Inner, pool: &PgPool, a: Announcement) {
    if a.node == inner.node || !inner.live.has_listeners(&a.topic) {
        return;
    }
    if a.last == 0 {
        inner.live.published(&a.topic, a.events);
        return;
    }
    let seen = inner.seen(&a.topic).unwrap_or(0);
    if a.last <= seen {
        return; // already handed over (by a local publish, the sweep or the other transport)
    }
    let events = if a.events.is_empty() {
        let from = (a.first - 1).max(seen).max(a.last - FETCH_TAIL);
        match fetch(pool, &a.topic, from).await {
            Ok(events) => events,
            Err(e) => {
                tracing::debug!(error = %e, topic = a.topic, "fetching announced events failed");
                return;
            }
        }
    } else {
        a.events.into_iter().filter(|e| e.offset > seen).collect()
    };
    if !events.is_empty() {
        inner.advance(&a.topic, &events);
        inner.live.published(&a.topic, events);
    }
}

/// Compares each listened topic's committed end with what the hub has seen and hands over
/// the tail that the transports lost.
async fn sweep(inner: &Inner, pool: &PgPool) -> crate::error::Result<()> {
    let topics = inner.live.topics();
    if topics.is_empty() {
        return Ok(());
    }
    let ends: Vec<(String, i64)> =
        sqlx::query_as("SELECT name, last_offset FROM topics WHERE name = ANY($1)")
            .bind(&topics)
            .fetch_all(pool)
            .await?;
    for (topic, end) in ends {
        match inner.seen(&topic) {
            Some(seen) if end > seen => {
                let events = fetch(pool, &topic, seen.max(end - FETCH_TAIL)).await?;
                if !events.is_empty() {
                    tracing::debug!(topic, seen, end, "sweep recovered events the bus missed");
                    inner.advance(&topic, &events);
                    inner.live.published(&topic, events);
                }
            }
            Some(_) => {}
            None => {
                // First sight of this topic: listeners started at or after this point
                // (they read the end themselves), so only later losses need recovering.
                let mut seen = inner.seen.lock().unwrap_or_else(|e| e.into_inner());
                seen.entry(topic).or_insert(end);
            }
        }
    }
    Ok(())
}

/// Up to [`FETCH_TAIL`] stored events of a topic after `after`, every identifier.
async fn fetch(pool: &PgPool, topic: &str, after: i64) -> crate::error::Result<Vec<Event>> {
    let topic = TopicRef {
        name: TopicName::parse(topic)?,
        identifier: None,
    };
    read_after(pool, &topic, after, FETCH_TAIL, &[]).await
}
