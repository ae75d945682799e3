//! Live fan-out to local listeners (websocket clients, gRPC streams, webhook owners).
//!
//! This node-local hub is the interface the publish path talks to: after a durable write
//! commits, or when a non-durable event is accepted, the events are handed to
//! [`Live::published`]. Listeners subscribe per topic and get a bounded broadcast receiver;
//! one that lags is told so (and a transport drops it), never slowing the publisher.

use crate::events::Event;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

/// Events buffered per topic for slow listeners before they are considered lagging.
pub const TOPIC_BUFFER: usize = 4_096;

/// A batch of events of one topic, shared by every listener.
pub type Batch = Arc<[Event]>;

/// The local listener hub.
#[derive(Clone, Default)]
pub struct Live {
    // A std mutex: held only to look up or create a topic's sender.
    topics: Arc<Mutex<HashMap<String, broadcast::Sender<Batch>>>>,
}

impl Live {
    /// An empty hub.
    pub fn new() -> Self {
        Self::default()
    }

    /// Hands committed (or non-durable) events of one topic to local listeners. Never blocks.
    pub fn published(&self, topic: &str, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        let sender = {
            let topics = self.topics.lock().unwrap_or_else(|e| e.into_inner());
            topics.get(topic).cloned()
        };
        if let Some(s) = sender {
            // An error only means nobody is listening right now.
            let _ = s.send(events.into());
        }
    }

    /// Listens to a topic's events from now on.
    pub fn subscribe(&self, topic: &str) -> broadcast::Receiver<Batch> {
        let mut topics = self.topics.lock().unwrap_or_else(|e| e.into_inner());
        // Drop senders nobody listens to any more, so the map tracks live interest only.
        topics.retain(|_, s| s.receiver_count() > 0);
        topics
            .entry(topic.to_owned())
            .or_insert_with(|| broadcast::channel(TOPIC_BUFFER).0)
            .subscribe()
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
}
