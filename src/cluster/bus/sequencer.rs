//! Puts durable events into the local hub in offset order, each once, whichever way they
//! came (a local commit, Redis, NOTIFY, the sweep).
//!
//! Announcements can overtake each other: requests that share one group commit report back in
//! any order, and two nodes' messages race. Handing such a batch to the hub as is would make
//! every client's feed see a gap and read it from Postgres at once (a thundering herd). So a
//! batch that starts beyond the next expected offset is held for up to [`HOLD`]; if the
//! missing batch arrives meanwhile both go in order, otherwise the gap is read from Postgres
//! once for the whole node. Feeds still fill any gap themselves, so nothing here is needed for
//! correctness, only for keeping clients on the fast path.

use crate::events::{Event, read_after};
use crate::live::{Batch, Live};
use crate::topics::{TopicName, TopicRef};
use sqlx::PgPool;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use tokio::time::Instant;

/// Most events a receiver fetches for one announcement or sweep; listeners further behind
/// read the rest from Postgres themselves.
const FETCH_TAIL: i64 = 1_000;

/// Longest a batch waits for the batches before it.
pub(super) const HOLD: Duration = Duration::from_millis(20);

struct Held {
    since: Instant,
    /// Batches by their first offset.
    batches: BTreeMap<i64, Batch>,
}

/// Per-topic ordering state of one node's hub.
pub(super) struct Sequencer {
    live: Live,
    pool: PgPool,
    /// Highest durable offset handed to the hub, per topic.
    seen: HashMap<String, i64>,
    held: HashMap<String, Held>,
    /// Batches ready for the hub, merged per topic on [`Sequencer::flush`]: under load many
    /// small announcements queue up, and one hub batch wakes each client once for all of them.
    ready: Vec<(String, Batch)>,
}

fn bounds(b: &[Event]) -> (i64, i64) {
    let first = b.first().map_or(0, |e| e.offset);
    let last = b.last().map_or(0, |e| e.offset);
    (first, last)
}

impl Sequencer {
    pub(super) fn new(live: Live, pool: PgPool) -> Self {
        Sequencer {
            live,
            pool,
            seen: HashMap::new(),
            held: HashMap::new(),
            ready: Vec::new(),
        }
    }

    pub(super) fn live(&self) -> &Live {
        &self.live
    }

    /// The highest offset handed over for `topic`, if any.
    pub(super) fn seen(&self, topic: &str) -> Option<i64> {
        self.seen.get(topic).copied()
    }

    /// A batch of durable events of one topic, contiguous and ascending.
    pub(super) fn durable(&mut self, topic: &str, batch: Batch) {
        let (first, last) = bounds(&batch);
        match self.seen(topic) {
            // First sight: nothing to order against.
            None => self.hand(topic, batch),
            Some(seen) if last <= seen => {}
            Some(seen) if first <= seen + 1 => {
                self.hand(topic, trim(batch, seen));
                self.release(topic);
            }
            Some(_) => {
                let held = self.held.entry(topic.to_owned()).or_insert_with(|| Held {
                    since: Instant::now(),
                    batches: BTreeMap::new(),
                });
                held.batches.insert(first, batch);
            }
        }
    }

    /// An announced offset range without its events: reads them, then as [`Self::durable`].
    pub(super) async fn range(&mut self, topic: &str, first: i64, last: i64) {
        let seen = self.seen(topic).unwrap_or(0);
        if last <= seen {
            return;
        }
        let from = (first - 1).max(seen).max(last - FETCH_TAIL);
        match fetch(&self.pool, topic, from).await {
            Ok(events) if !events.is_empty() => self.durable(topic, events.into()),
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, topic, "fetching announced events failed"),
        }
    }

    /// Non-durable events: live only, in arrival order with the rest.
    pub(super) fn non_durable(&mut self, topic: &str, batch: Batch) {
        if !batch.is_empty() {
            self.ready.push((topic.to_owned(), batch));
        }
    }

    /// When the oldest held batch stops waiting.
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.held.values().map(|h| h.since + HOLD).min()
    }

    /// Reads the gaps of batches held too long from Postgres and releases them.
    pub(super) async fn expire(&mut self) {
        let now = Instant::now();
        let due: Vec<String> = self
            .held
            .iter()
            .filter(|(_, h)| h.since + HOLD <= now)
            .map(|(t, _)| t.clone())
            .collect();
        for topic in due {
            let seen = self.seen(&topic).unwrap_or(0);
            let next = self
                .held
                .get(&topic)
                .and_then(|h| h.batches.keys().next().copied())
                .unwrap_or(seen + 1);
            if let Ok(gap) = fetch(&self.pool, &topic, seen.max(next - 1 - FETCH_TAIL)).await {
                let gap: Vec<Event> = gap.into_iter().filter(|e| e.offset < next).collect();
                if !gap.is_empty() {
                    self.hand(&topic, gap.into());
                }
            }
            // Whatever is still missing, clients read it themselves: release in any case.
            if let Some(s) = self.seen.get_mut(&topic) {
                *s = (*s).max(next - 1);
            }
            self.release(&topic);
        }
    }

    /// Forgets topics nobody listens to any more, so the maps stay bounded.
    pub(super) fn retain_listened(&mut self) {
        let live = self.live.clone();
        self.seen.retain(|t, _| live.has_listeners(t));
        self.held.retain(|t, _| live.has_listeners(t));
    }

    fn hand(&mut self, topic: &str, batch: Batch) {
        let (_, last) = bounds(&batch);
        if batch.is_empty() {
            return;
        }
        let seen = self.seen.entry(topic.to_owned()).or_insert(last);
        *seen = (*seen).max(last);
        self.ready.push((topic.to_owned(), batch));
    }

    /// Hands what is ready to the hub, consecutive batches of a topic as one.
    pub(super) fn flush(&mut self) {
        let mut ready = std::mem::take(&mut self.ready).into_iter().peekable();
        // Durable and non-durable batches never mix: feeds tell them apart by the first event.
        let durable = |b: &Batch| b.first().is_some_and(|e| e.offset > 0);
        while let Some((topic, batch)) = ready.next() {
            let joins = |(t, b): &(String, Batch)| *t == topic && durable(b) && durable(&batch);
            if ready.peek().is_none_or(|n| !joins(n)) {
                self.live.publish_batch(&topic, batch);
                continue;
            }
            let mut merged: Vec<Event> = batch.to_vec();
            while let Some((_, b)) = ready.next_if(joins) {
                merged.extend(b.iter().cloned());
            }
            self.live.publish_batch(&topic, merged.into());
        }
    }

    /// Hands over held batches that have become contiguous.
    fn release(&mut self, topic: &str) {
        loop {
            let seen = self.seen(topic).unwrap_or(0);
            let Some(held) = self.held.get_mut(topic) else {
                return;
            };
            let Some((&first, _)) = held.batches.iter().next() else {
                self.held.remove(topic);
                return;
            };
            if first > seen + 1 {
                held.since = Instant::now(); // a new gap: wait for it afresh
                return;
            }
            if let Some(batch) = held.batches.remove(&first) {
                let (_, last) = bounds(&batch);
                if last > seen {
                    self.hand(topic, trim(batch, seen));
                }
            }
        }
    }
}

/// The part of a batch after `seen` (shared when nothing is cut).
fn trim(batch: Batch, seen: i64) -> Batch {
    if batch.first().is_none_or(|e| e.offset > seen) {
        return batch;
    }
    batch.iter().filter(|e| e.offset > seen).cloned().collect()
}

/// Up to [`FETCH_TAIL`] stored events of a topic after `after`, every identifier.
async fn fetch(pool: &PgPool, topic: &str, after: i64) -> crate::error::Result<Vec<Event>> {
    let topic = TopicRef {
        name: TopicName::parse(topic)?,
        identifier: None,
    };
    read_after(pool, &topic, after, FETCH_TAIL, &[]).await
}
