//! Live fan-out to local listeners (websocket clients, gRPC streams, webhook owners).
//!
//! This node-local hub is the interface the publish path talks to: after a durable write
//! commits, or when a non-durable event is accepted, the events are handed to
//! [`Live::published`] (by the cluster bus, which also announces them to the other nodes and
//! feeds the hub with theirs). Listeners subscribe per topic and get a bounded [`Listener`];
//! one that lags is told so (and a transport drops it), never slowing the publisher.
//! [`Feed`] turns a listener into an ordered, gap-free, resumable stream for one client.
//!
//! The per-topic buffer is bounded twice: in batches (the broadcast channel's capacity) and in
//! bytes. The channels carry weak handles; the hub holds the batches themselves, only those
//! some listener has not read yet, and lets the oldest go once they exceed the byte budget. A
//! listener that reaches a batch the hub let go is told it lagged, like one that fell more
//! batches behind than the channel keeps. So a stalled client holds at most the byte budget
//! of a topic, however large the batches published meanwhile.

mod access;
mod batch;
mod feed;

pub use access::{ACCESS_CHECK, Access, Lost, Target};
pub use batch::Batch;
pub use feed::{Feed, Feeds, REPLAY_BATCH};

use crate::events::Event;
use batch::WeakBatch;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, broadcast, watch};

/// Batches and event bytes buffered per topic for slow listeners before they are considered
/// lagging, by default (`ER_LIVE_BUFFER`, `ER_LIVE_BUFFER_BYTES`).
pub use crate::config::{
    DEFAULT_LIVE_BUFFER as TOPIC_BUFFER, DEFAULT_LIVE_BUFFER_BYTES as TOPIC_BUFFER_BYTES,
};

/// One topic's channel and the batches some listener has not read yet.
struct TopicHub {
    tx: broadcast::Sender<WeakBatch>,
    held: VecDeque<Batch>,
    held_bytes: usize,
}

impl TopicHub {
    /// Lets go of batches every listener has read, then of the oldest while over `budget`
    /// (the newest always stays: a batch larger than the budget still reaches the listeners
    /// that keep up).
    fn trim(&mut self, budget: usize) {
        let queued = self.tx.len();
        while self.held.len() > queued || (self.held_bytes > budget && self.held.len() > 1) {
            match self.held.pop_front() {
                Some(b) => self.held_bytes -= b.bytes(),
                None => break,
            }
        }
    }
}

/// A listener of one topic: the batches published from when it subscribed.
pub struct Listener {
    rx: broadcast::Receiver<WeakBatch>,
}

impl Listener {
    /// The next batch. `Lagged` when the listener fell behind the topic's buffer (in batches
    /// or in bytes), `Closed` when the hub is gone.
    pub async fn recv(&mut self) -> Result<Batch, RecvError> {
        let weak = self.rx.recv().await?;
        weak.upgrade().ok_or(RecvError::Lagged(1))
    }
}

/// Most websocket connections, gRPC streams and SSE streams one node serves at once.
pub const MAX_LISTENERS: usize = 50_000;

/// Replay reads running at once per node (the default of `ER_LIVE_REPLAY_CONCURRENCY`).
pub const REPLAY_CONCURRENCY: usize = 4;

/// The local listener hub.
#[derive(Clone)]
pub struct Live {
    // A std mutex: held only to look up a topic and hand it a batch, or to create it.
    topics: Arc<Mutex<HashMap<String, TopicHub>>>,
    // Woken when a topic gains its first listener, so the bus subscribes to it at once.
    interest: Arc<Notify>,
    listeners: Arc<Semaphore>,
    buffer: usize,
    buffer_bytes: usize,
    // Turns to read Postgres for replays (see Feed): a reconnect storm waits here.
    replays: Arc<Semaphore>,
    // The topics the cross-node bus receives, when it receives per topic (Redis): `None`
    // until a bus says so, as without Redis every node hears every topic.
    carried: Arc<watch::Sender<Option<Arc<HashSet<String>>>>>,
}

impl Default for Live {
    fn default() -> Self {
        Self::with_buffer(TOPIC_BUFFER)
    }
}

impl Live {
    /// An empty hub.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty hub keeping `buffer` batches per topic for listeners that fall behind.
    pub fn with_buffer(buffer: usize) -> Self {
        Self::with_buffers(buffer, TOPIC_BUFFER_BYTES)
    }

    /// An empty hub keeping at most `buffer` batches and `bytes` event bytes per topic for
    /// listeners that fall behind.
    pub fn with_buffers(buffer: usize, bytes: usize) -> Self {
        Live {
            topics: Arc::default(),
            interest: Arc::default(),
            listeners: Arc::new(Semaphore::new(MAX_LISTENERS)),
            buffer: buffer.max(1),
            buffer_bytes: bytes,
            replays: Arc::new(Semaphore::new(REPLAY_CONCURRENCY)),
            carried: Arc::new(watch::channel(None).0),
        }
    }

    /// The hub the `Live` section of the configuration describes.
    pub fn configured(config: &crate::config::LiveConfig) -> Self {
        Self::with_buffers(config.buffer, config.buffer_bytes)
            .with_replay_budget(config.replay_concurrency)
    }

    /// The same hub with `n` replay reads at a time (`ER_LIVE_REPLAY_CONCURRENCY`).
    pub fn with_replay_budget(mut self, n: usize) -> Self {
        self.replays = Arc::new(Semaphore::new(n.max(1)));
        self
    }

    /// The node's replay budget: a feed holds one permit per Postgres read of a replay.
    pub(crate) fn replay_budget(&self) -> Arc<Semaphore> {
        self.replays.clone()
    }

    /// Batches kept per topic: a listener further behind is cut off as slow.
    pub fn buffer(&self) -> usize {
        self.buffer
    }

    /// Event bytes kept per topic: a listener further behind is cut off as slow.
    pub fn buffer_bytes(&self) -> usize {
        self.buffer_bytes
    }

    /// Hands committed (or non-durable) events of one topic to local listeners. Never blocks.
    pub fn published(&self, topic: &str, events: Vec<Event>) {
        if !events.is_empty() {
            self.publish_batch(topic, events.into());
        }
    }

    /// Like [`Live::published`], for a batch that is already shared (no copy).
    pub fn publish_batch(&self, topic: &str, batch: Batch) {
        if batch.is_empty() {
            return;
        }
        let mut topics = self.topics.lock().unwrap_or_else(|e| e.into_inner());
        let Some(t) = topics.get_mut(topic) else {
            return;
        };
        // An error only means nobody is listening right now.
        if t.tx.send(batch.downgrade()).is_ok() {
            t.held_bytes += batch.bytes();
            t.held.push_back(batch);
        }
        t.trim(self.buffer_bytes);
    }

    /// Listens to a topic's events from now on.
    pub fn subscribe(&self, topic: &str) -> Listener {
        let mut topics = self.topics.lock().unwrap_or_else(|e| e.into_inner());
        // Drop topics nobody listens to any more, so the map tracks live interest only.
        topics.retain(|_, t| t.tx.receiver_count() > 0);
        let mut created = false;
        let rx = topics
            .entry(topic.to_owned())
            .or_insert_with(|| {
                created = true;
                TopicHub {
                    tx: broadcast::channel(self.buffer).0,
                    held: VecDeque::new(),
                    held_bytes: 0,
                }
            })
            .tx
            .subscribe();
        if created {
            self.interest.notify_one();
        }
        Listener { rx }
    }

    /// Topics with at least one local listener.
    pub fn topics(&self) -> Vec<String> {
        let topics = self.topics.lock().unwrap_or_else(|e| e.into_inner());
        topics
            .iter()
            .filter(|(_, t)| t.tx.receiver_count() > 0)
            .map(|(t, _)| t.clone())
            .collect()
    }

    /// Whether the topic has a local listener.
    pub fn has_listeners(&self, topic: &str) -> bool {
        let topics = self.topics.lock().unwrap_or_else(|e| e.into_inner());
        topics.get(topic).is_some_and(|t| t.tx.receiver_count() > 0)
    }

    /// The bus receives these topics from other nodes (it subscribes per topic, and says so
    /// after each change).
    pub fn set_carried(&self, topics: HashSet<String>) {
        self.carried.send_replace(Some(Arc::new(topics)));
    }

    /// Waits, at most `bound`, until the bus receives `topic` from other nodes, so a client
    /// that joined hears what other nodes publish after its join was answered (non-durable
    /// events are never replayed). At once when the bus hears every topic anyway.
    pub async fn carried(&self, topic: &str, bound: std::time::Duration) {
        let mut rx = self.carried.subscribe();
        let heard = rx.wait_for(|c| c.as_ref().is_none_or(|set| set.contains(topic)));
        let _ = tokio::time::timeout(bound, heard).await;
    }

    /// Resolves when a topic gains its first local listener (for the bus's subscriptions).
    pub async fn interest_changed(&self) {
        self.interest.notified().await;
    }

    /// Websocket connections and gRPC streams open on this node now.
    pub fn connections(&self) -> usize {
        MAX_LISTENERS.saturating_sub(self.listeners.available_permits())
    }

    /// A place for one more long-lived listener (websocket or stream); `None` when the node
    /// is full. Dropping the permit frees the place.
    pub fn admit(&self) -> Option<OwnedSemaphorePermit> {
        self.listeners.clone().try_acquire_owned().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn feeds_wait_for_the_bus_to_carry_their_topic_but_not_for_ever() {
        let live = Live::new();
        let bound = std::time::Duration::from_secs(1);
        let start = tokio::time::Instant::now();
        // No per-topic bus (no Redis): every topic is heard already.
        live.carried("a", bound).await;
        assert_eq!(start.elapsed(), std::time::Duration::ZERO);
        live.set_carried(HashSet::new());
        let waiting = {
            let live = live.clone();
            tokio::spawn(async move { live.carried("a", bound).await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(!waiting.is_finished(), "waits for the subscription");
        live.set_carried(HashSet::from(["a".to_owned()]));
        waiting.await.unwrap();
        assert!(start.elapsed() < bound, "released by the subscription");
        // A topic the bus never takes up releases its feed at the bound.
        live.carried("b", bound).await;
        assert!(start.elapsed() >= bound);
    }

    #[test]
    fn tracks_interest_and_admits_up_to_the_cap() {
        let live = Live::new();
        assert!(!live.has_listeners("users"));
        let rx = live.subscribe("users");
        assert!(live.has_listeners("users"));
        assert_eq!(live.topics(), vec!["users".to_owned()]);
        drop(rx);
        assert!(!live.has_listeners("users"));
        let permits: Vec<_> = (0..MAX_LISTENERS).map_while(|_| live.admit()).collect();
        assert_eq!(permits.len(), MAX_LISTENERS);
        assert!(live.admit().is_none());
    }

    fn batch(offset: i64, data_bytes: usize) -> Vec<Event> {
        vec![Event {
            id: uuid::Uuid::new_v4(),
            topic_name: "t".into(),
            topic_identifier: String::new(),
            name: "e".into(),
            data: "x".repeat(data_bytes),
            source: String::new(),
            group_key: String::new(),
            reference_key: String::new(),
            trace_key: String::new(),
            user_id: String::new(),
            anonymous_id: String::new(),
            occurred_at: chrono::Utc::now(),
            context: Default::default(),
            offset,
        }]
    }

    #[tokio::test]
    async fn a_stalled_listener_holds_at_most_the_byte_budget() {
        // Plenty of batches, few bytes: the bytes decide.
        let live = Live::with_buffers(1000, 1 << 20);
        let mut slow = live.subscribe("t");
        let mut fast = live.subscribe("t");
        for i in 1..=20 {
            live.published("t", batch(i, 200 * 1024));
            assert_eq!(
                fast.recv().await.unwrap()[0].offset,
                i,
                "a listener that keeps up"
            );
        }
        let held = live.topics.lock().unwrap()["t"].held_bytes;
        assert!(
            held <= (1 << 20),
            "held {held} bytes for the stalled listener"
        );
        // The stalled listener is told it lagged, then reads what is still held.
        let (mut lagged, mut got) = (0, vec![]);
        while got.last() != Some(&20) {
            match slow.recv().await {
                Ok(b) => got.push(b[0].offset),
                Err(RecvError::Lagged(_)) => lagged += 1,
                Err(e) => panic!("{e}"),
            }
        }
        assert!(lagged > 0 && got.len() < 20, "lagged {lagged}, got {got:?}");
    }

    #[tokio::test]
    async fn batches_every_listener_read_are_let_go() {
        let live = Live::new();
        let mut rx = live.subscribe("t");
        for i in 1..=3 {
            live.published("t", batch(i, 10));
            rx.recv().await.unwrap();
        }
        live.published("t", batch(4, 10));
        // Only the unread batch is held.
        assert_eq!(live.topics.lock().unwrap()["t"].held.len(), 1);
    }
}
