//! The retention metrics of `/metrics`: per-topic gauges (events retained, first retained
//! offset, time of the oldest retained event, bytes on disk, events and attempts pruned), the
//! housekeeping totals and the number of topics this node prunes. The values are the
//! cluster's, read from Postgres at each scrape, so every node reports the same ones:
//! aggregate across nodes with `max`, not `sum`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TopicLabel {
    topic: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct What {
    table: String,
}

/// One topic's values, as [`crate::metrics::Metrics::set_topic_gauges`] takes them.
#[derive(Clone, Debug)]
pub struct TopicGauges {
    /// Topic name.
    pub topic: String,
    /// Events retained (exact: offsets are contiguous).
    pub events: i64,
    /// First retained offset.
    pub first_offset: i64,
    /// Unix time of the oldest retained event, as of the last prune.
    pub oldest_event_seconds: Option<f64>,
    /// Bytes on disk of the topic's tables.
    pub bytes: i64,
    /// Events removed by retention so far.
    pub pruned_events: i64,
    /// Attempt records removed by retention so far.
    pub pruned_attempts: i64,
}

/// The metric families, registered once.
pub struct TopicFamilies {
    events: Family<TopicLabel, Gauge>,
    first_offset: Family<TopicLabel, Gauge>,
    oldest: Family<TopicLabel, Gauge<f64, AtomicU64>>,
    bytes: Family<TopicLabel, Gauge>,
    pruned_events: Family<TopicLabel, Gauge>,
    pruned_attempts: Family<TopicLabel, Gauge>,
    pruned_rows: Family<What, Gauge>,
    owned: Gauge,
}

impl TopicFamilies {
    /// Registers every family in `r`.
    pub fn register(r: &mut Registry) -> Self {
        let f = TopicFamilies {
            events: Family::default(),
            first_offset: Family::default(),
            oldest: Family::default(),
            bytes: Family::default(),
            pruned_events: Family::default(),
            pruned_attempts: Family::default(),
            pruned_rows: Family::default(),
            owned: Gauge::default(),
        };
        r.register(
            "topic_events",
            "Events a topic retains (cluster-wide)",
            f.events.clone(),
        );
        r.register(
            "topic_first_offset",
            "First retained offset of a topic: readers start here (cluster-wide)",
            f.first_offset.clone(),
        );
        r.register(
            "topic_oldest_event_timestamp_seconds",
            "When a topic's oldest retained event was stored, unix seconds (as of its last prune)",
            f.oldest.clone(),
        );
        r.register(
            "topic_bytes",
            "Bytes on disk of a topic's tables, every partition with its indexes (as of its last prune)",
            f.bytes.clone(),
        );
        r.register(
            "topic_pruned_events",
            "Events of a topic removed by retention so far (cluster-wide)",
            f.pruned_events.clone(),
        );
        r.register(
            "topic_pruned_attempts",
            "Webhook attempt records of a topic removed by retention so far (cluster-wide)",
            f.pruned_attempts.clone(),
        );
        r.register(
            "retention_pruned_rows",
            "Rows housekeeping removed so far, by table (dead_letters, live_spill; cluster-wide)",
            f.pruned_rows.clone(),
        );
        r.register(
            "owned_topics",
            "Topics whose pruner runs on this node",
            f.owned.clone(),
        );
        f
    }

    pub(crate) fn set(&self, topics: impl Iterator<Item = TopicGauges>) {
        self.events.clear();
        self.first_offset.clear();
        self.oldest.clear();
        self.bytes.clear();
        self.pruned_events.clear();
        self.pruned_attempts.clear();
        for t in topics {
            let l = TopicLabel { topic: t.topic };
            self.events.get_or_create(&l).set(t.events);
            self.first_offset.get_or_create(&l).set(t.first_offset);
            if let Some(s) = t.oldest_event_seconds {
                self.oldest.get_or_create(&l).set(s);
            }
            self.bytes.get_or_create(&l).set(t.bytes);
            self.pruned_events.get_or_create(&l).set(t.pruned_events);
            self.pruned_attempts
                .get_or_create(&l)
                .set(t.pruned_attempts);
        }
    }

    pub(crate) fn pruned(&self, what: &str, rows: i64) {
        self.pruned_rows
            .get_or_create(&What {
                table: what.to_owned(),
            })
            .set(rows);
    }

    pub(crate) fn owned(&self, n: usize) {
        self.owned.set(i64::try_from(n).unwrap_or(i64::MAX));
    }
}
