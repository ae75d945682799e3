//! Live fan-out to local listeners (websocket clients, gRPC streams, webhook owners).
//!
//! This node-local hub is the interface the publish path talks to: after a durable write
//! commits, or when a non-durable event is accepted, the events are handed to
//! [`Live::published`] (by the cluster bus, which also announces them to the other nodes and
//! feeds the hub with theirs). Listeners subscribe per topic and get a bounded broadcast
//! receiver; one that lags is told so (and a transport drops it), never slowing the publisher.
//! [`Feed`] turns a receiver into an ordered, gap-free, resumable stream for one client.

mod access;
mod batch;
mod feed;

pub use access::{ACCESS_CHECK, Access, Lost, Target};
pub use batch::Batch;
pub use feed::{Feed, REPLAY_BATCH};

use crate::events::Event;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, broadcast};

/// Batches buffered per topic for slow listeners before they are considered lagging (the
/// default of `ER_LIVE_BUFFER`).
pub const TOPIC_BUFFER: usize = 4_096;

/// Most websocket connections, gRPC streams and SSE streams one node serves at once.
pub const MAX_LISTENERS: usize = 50_000;

/// Replay reads running at once per node (the default of `ER_LIVE_REPLAY_CONCURRENCY`).
pub const REPLAY_CONCURRENCY: usize = 4;

/// The local listener hub.
#[derive(Clone)]
pub struct Live {
    // A std mutex: held only to look up or create a topic's sender.
    topics: Arc<Mutex<HashMap<String, broadcast::Sender<Batch>>>>,
    // Woken when a topic gains its first listener, so the bus subscribes to it at once.
    interest: Arc<Notify>,
    listeners: Arc<Semaphore>,
    buffer: usize,
    // Turns to read Postgres for replays (see Feed): a reconnect storm waits here.
    replays: Arc<Semaphore>,
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
        Live {
            topics: Arc::default(),
            interest: Arc::default(),
            listeners: Arc::new(Semaphore::new(MAX_LISTENERS)),
            buffer: buffer.max(1),
            replays: Arc::new(Semaphore::new(REPLAY_CONCURRENCY)),
        }
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
        let sender = {
            let topics = self.topics.lock().unwrap_or_else(|e| e.into_inner());
            topics.get(topic).cloned()
        };
        if let Some(s) = sender {
            // An error only means nobody is listening right now.
            let _ = s.send(batch);
        }
    }

    /// Listens to a topic's events from now on.
    pub fn subscribe(&self, topic: &str) -> broadcast::Receiver<Batch> {
        let mut topics = self.topics.lock().unwrap_or_else(|e| e.into_inner());
        // Drop senders nobody listens to any more, so the map tracks live interest only.
        topics.retain(|_, s| s.receiver_count() > 0);
        let mut created = false;
        let rx = topics
            .entry(topic.to_owned())
            .or_insert_with(|| {
                created = true;
                broadcast::channel(self.buffer).0
            })
            .subscribe();
        if created {
            self.interest.notify_one();
        }
        rx
    }

    /// Topics with at least one local listener.
    pub fn topics(&self) -> Vec<String> {
        let topics = self.topics.lock().unwrap_or_else(|e| e.into_inner());
        topics
            .iter()
            .filter(|(_, s)| s.receiver_count() > 0)
            .map(|(t, _)| t.clone())
            .collect()
    }

    /// Whether the topic has a local listener.
    pub fn has_listeners(&self, topic: &str) -> bool {
        let topics = self.topics.lock().unwrap_or_else(|e| e.into_inner());
        topics.get(topic).is_some_and(|s| s.receiver_count() > 0)
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
}
