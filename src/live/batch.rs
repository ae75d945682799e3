//! [`Batch`]: events of one topic handed to every local listener at once, shared (never
//! copied per listener), with each event's JSON form encoded at most once for all of them.
//! The hub's channels carry [`WeakBatch`]es, so the hub alone decides how long a batch stays
//! in memory (see [`super::Live`]).

use crate::events::Event;
use std::ops::Deref;
use std::sync::{Arc, OnceLock, Weak};

/// A batch of events of one topic, shared by every listener. Derefs to the events.
#[derive(Clone)]
pub struct Batch(Arc<Shared>);

struct Shared {
    events: Box<[Event]>,
    /// What the events occupy in memory, roughly (their text and a fixed overhead each).
    bytes: usize,
    /// Each event's [`Event::to_json`] text, made by the first listener that asks. A thousand
    /// websocket clients of a topic push the same payloads; encoding them once per batch
    /// instead of once per client (or a lookup per event in a shared cache, as before) is a
    /// measurable part of a fan-out's CPU.
    json: OnceLock<Box<[Arc<str>]>>,
}

impl Batch {
    fn new(events: Box<[Event]>, json: Option<Box<[Arc<str>]>>) -> Batch {
        let cell = OnceLock::new();
        if let Some(j) = json {
            let _ = cell.set(j);
        }
        let bytes = events.iter().map(event_bytes).sum();
        Batch(Arc::new(Shared {
            events,
            bytes,
            json: cell,
        }))
    }

    /// What the batch occupies in memory, roughly: the bytes the live buffer counts.
    pub fn bytes(&self) -> usize {
        self.0.bytes
    }

    /// A handle that does not keep the events alive.
    pub(super) fn downgrade(&self) -> WeakBatch {
        WeakBatch(Arc::downgrade(&self.0))
    }

    /// Each event's JSON text, in order (encoded on the first call, then shared).
    pub fn json(&self) -> &[Arc<str>] {
        self.0.json.get_or_init(|| {
            self.0
                .events
                .iter()
                .map(|e| e.to_json().to_string().into())
                .collect()
        })
    }

    /// The events for which `keep` holds, as a new batch; it shares the JSON already encoded.
    pub fn pick(&self, keep: impl Fn(&Event) -> bool) -> Batch {
        let kept: Vec<usize> = (0..self.len()).filter(|&i| keep(&self[i])).collect();
        let events = kept.iter().map(|&i| self[i].clone()).collect();
        let json = self
            .0
            .json
            .get()
            .map(|j| kept.iter().map(|&i| j[i].clone()).collect());
        Batch::new(events, json)
    }
}

/// An event's text and a fixed overhead for its struct.
fn event_bytes(e: &Event) -> usize {
    let text = [
        &e.topic_name,
        &e.topic_identifier,
        &e.name,
        &e.data,
        &e.source,
        &e.group_key,
        &e.reference_key,
        &e.trace_key,
        &e.user_id,
        &e.anonymous_id,
    ];
    let context: usize = e.context.iter().map(|(k, v)| k.len() + v.len() + 64).sum();
    std::mem::size_of::<Event>() + text.iter().map(|t| t.len()).sum::<usize>() + context
}

/// A batch as the hub's channels carry it: gone once the hub let it go.
#[derive(Clone)]
pub(super) struct WeakBatch(Weak<Shared>);

impl WeakBatch {
    /// The batch, unless the hub has already dropped it.
    pub(super) fn upgrade(&self) -> Option<Batch> {
        self.0.upgrade().map(Batch)
    }
}

impl Deref for Batch {
    type Target = [Event];

    fn deref(&self) -> &[Event] {
        &self.0.events
    }
}

impl From<Vec<Event>> for Batch {
    fn from(events: Vec<Event>) -> Batch {
        Batch::new(events.into(), None)
    }
}

impl FromIterator<Event> for Batch {
    fn from_iter<I: IntoIterator<Item = Event>>(iter: I) -> Batch {
        iter.into_iter().collect::<Vec<_>>().into()
    }
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.events.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(offset: i64, identifier: &str) -> Event {
        Event {
            id: uuid::Uuid::new_v4(),
            topic_name: "t".into(),
            topic_identifier: identifier.into(),
            name: "e".into(),
            data: format!("{{\"n\":{offset}}}"),
            source: String::new(),
            group_key: String::new(),
            reference_key: String::new(),
            trace_key: String::new(),
            user_id: String::new(),
            anonymous_id: String::new(),
            occurred_at: chrono::Utc::now(),
            context: Default::default(),
            offset,
        }
    }

    fn encoded(events: &[Event]) -> Vec<String> {
        events.iter().map(|e| e.to_json().to_string()).collect()
    }

    #[test]
    fn bytes_count_the_text_and_a_weak_handle_does_not_keep_it() {
        let batch: Batch = vec![event(1, "a"), event(2, "b")].into();
        let one = event_bytes(&batch[0]);
        assert!(one > std::mem::size_of::<Event>() + batch[0].data.len());
        assert_eq!(batch.bytes(), one + event_bytes(&batch[1]));
        let weak = batch.downgrade();
        assert!(weak.upgrade().is_some());
        drop(batch);
        assert!(weak.upgrade().is_none());
    }

    #[test]
    fn json_is_each_events_and_a_pick_shares_it() {
        let batch: Batch = vec![event(1, "a"), event(2, "b"), event(3, "a")].into();
        let json: Vec<String> = batch.json().iter().map(|j| j.to_string()).collect();
        assert_eq!(json, encoded(&batch));
        let picked = batch.pick(|e| e.topic_identifier == "a");
        assert_eq!(picked.iter().map(|e| e.offset).collect::<Vec<_>>(), [1, 3]);
        assert!(
            Arc::ptr_eq(&picked.json()[1], &batch.json()[2]),
            "encoded again"
        );
        // A pick before anything was encoded encodes its own events.
        let fresh: Batch = vec![event(5, "a"), event(6, "b")].into();
        let picked = fresh.pick(|e| e.offset == 6);
        assert_eq!(picked.json()[0].as_ref(), encoded(&picked)[0]);
    }
}
