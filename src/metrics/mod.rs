//! Prometheus metrics of one node, in one registry, rendered at `/metrics`. Labels are kept
//! to bounded sets (RPC names, status codes, topic names) so cardinality cannot run away.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabels {
    rpc: &'static str,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcName {
    rpc: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TopicLabel {
    topic: String,
}

mod retention;

pub use retention::TopicGauges;

/// The node's metrics; cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    rpc_requests: Family<RpcLabels, Counter>,
    rpc_seconds: Family<RpcName, Histogram>,
    events_stored: Family<TopicLabel, Counter>,
    dead_letters: Counter,
    commit_batch_events: Histogram,
    rate_limited: Family<KindLabel, Counter>,
    webhook_attempts: Family<OutcomeLabel, Counter>,
    webhook_seconds: Histogram,
    owned_subscriptions: Gauge,
    topics: retention::TopicFamilies,
    bus_lag: Histogram,
    live_connections: prometheus_client::metrics::gauge::Gauge,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("eventrelay");
        let rpc_requests = Family::<RpcLabels, Counter>::default();
        registry.register(
            "grpc_requests",
            "gRPC calls by method and status code",
            rpc_requests.clone(),
        );
        let rpc_seconds = Family::<RpcName, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        registry.register(
            "grpc_request_duration_seconds",
            "gRPC call latency by method",
            rpc_seconds.clone(),
        );
        let events_stored = Family::<TopicLabel, Counter>::default();
        registry.register(
            "events_stored",
            "Durable events committed, by topic",
            events_stored.clone(),
        );
        let dead_letters = Counter::default();
        registry.register(
            "dead_letters",
            "Events refused into the dead-letter table",
            dead_letters.clone(),
        );
        let commit_batch_events = Histogram::new(exponential_buckets(1.0, 2.0, 14));
        registry.register(
            "publish_commit_batch_events",
            "Events per group-committed publish transaction",
            commit_batch_events.clone(),
        );
        let rate_limited = Family::<KindLabel, Counter>::default();
        registry.register(
            "rate_limited",
            "Calls refused by rate limits, by kind of call",
            rate_limited.clone(),
        );
        let webhook_attempts = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "webhook_attempts",
            "Webhook attempts by outcome (delivered, failed, undeliverable, gone)",
            webhook_attempts.clone(),
        );
        let webhook_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "webhook_attempt_duration_seconds",
            "Webhook attempt latency, connect to capped response body",
            webhook_seconds.clone(),
        );
        let owned_subscriptions = Gauge::default();
        registry.register(
            "owned_subscriptions",
            "Webhook subscriptions this node owns",
            owned_subscriptions.clone(),
        );
        let topics = retention::TopicFamilies::register(&mut registry);
        let bus_lag = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        registry.register(
            "bus_lag_seconds",
            "Time from a node announcing committed events to another node receiving them",
            bus_lag.clone(),
        );
        let live_connections = prometheus_client::metrics::gauge::Gauge::default();
        registry.register(
            "live_connections",
            "Open websocket connections and gRPC streams on this node",
            live_connections.clone(),
        );
        Metrics {
            inner: Arc::new(Inner {
                bus_lag,
                live_connections,
                rate_limited,
                registry,
                rpc_requests,
                rpc_seconds,
                events_stored,
                dead_letters,
                commit_batch_events,
                webhook_attempts,
                webhook_seconds,
                owned_subscriptions,
                topics,
            }),
        }
    }

    /// Records one gRPC call.
    pub fn rpc(&self, rpc: &'static str, code: &'static str, took: Duration) {
        self.inner
            .rpc_requests
            .get_or_create(&RpcLabels { rpc, code })
            .inc();
        self.inner
            .rpc_seconds
            .get_or_create(&RpcName { rpc })
            .observe(took.as_secs_f64());
    }

    /// Records one committed publish transaction.
    pub fn committed(&self, topic: &str, events: usize) {
        self.inner
            .events_stored
            .get_or_create(&TopicLabel {
                topic: topic.to_owned(),
            })
            .inc_by(events as u64);
        self.inner.commit_batch_events.observe(events as f64);
    }

    /// Records dead-lettered events.
    pub fn dead_lettered(&self, n: usize) {
        self.inner.dead_letters.inc_by(n as u64);
    }

    /// Records a call refused by a rate limit.
    pub fn rate_limited(&self, kind: &'static str) {
        self.inner
            .rate_limited
            .get_or_create(&KindLabel { kind })
            .inc();
    }

    /// Records one webhook attempt.
    pub fn webhook_attempt(&self, outcome: &'static str, took: Duration) {
        self.inner
            .webhook_attempts
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
        self.inner.webhook_seconds.observe(took.as_secs_f64());
    }

    /// Sets the number of subscriptions this node owns.
    pub fn owned_subscriptions(&self, n: usize) {
        self.inner
            .owned_subscriptions
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Sets how many units of a kind of owned work (`subscription`, `topic`) this node owns.
    pub fn owned(&self, kind: &str, n: usize) {
        match kind {
            "subscription" => self.owned_subscriptions(n),
            _ => self.inner.topics.owned(n),
        }
    }

    /// Replaces every topic's retention gauges (topics gone since the last call disappear).
    pub fn set_topic_gauges(&self, topics: impl Iterator<Item = TopicGauges>) {
        self.inner.topics.set(topics);
    }

    /// Sets the cluster-wide count of rows housekeeping removed from `what`.
    pub fn set_retention_pruned(&self, what: &str, rows: i64) {
        self.inner.topics.pruned(what, rows);
    }

    /// Records how long an announcement took from its sending node to this one.
    pub fn bus_lag(&self, ms: i64) {
        self.inner.bus_lag.observe(ms.max(0) as f64 / 1000.0);
    }

    /// Sets the number of open websocket connections and gRPC streams.
    pub fn set_live_connections(&self, n: usize) {
        self.inner.live_connections.set(n as i64);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.inner.registry).is_err() {
            tracing::error!("rendering metrics failed");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_recorded_values() {
        let m = Metrics::new();
        m.rpc("PublishEvents", "ok", Duration::from_millis(3));
        m.committed("users", 5);
        m.dead_lettered(2);
        let text = m.render();
        assert!(
            text.contains(r#"eventrelay_grpc_requests_total{rpc="PublishEvents",code="ok"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"eventrelay_events_stored_total{topic="users"} 5"#),
            "{text}"
        );
        assert!(text.contains("eventrelay_dead_letters_total 2"), "{text}");
    }
}
