//! Events: publishing (validation, dead letters, durable group-committed writes, live
//! hand-off) and reading (pulls with filters). Authorization is checked here, so every
//! transport enforces the same policy.

mod answer;
mod dead_letters;
mod filter;
mod guard;
mod insert;
mod keyed;
mod model;
mod publish;
mod queue;
mod read;
mod writer;

pub use dead_letters::DeadLetter;
pub use filter::Filter;
pub use filter::{MAX_FILTERS, parse_filters};
pub use guard::{Guard, MAX_PRODUCER_ID_BYTES, ProducerEpoch};
pub use model::{
    Event, MAX_IDEMPOTENCY_KEY_BYTES, NewEvent, Refused, ValidEvent, format_time, parse_time,
    validate,
};
pub use publish::{Publish, Published};
pub use queue::{Stored, WriteError};
pub use read::{
    COUNT_CAP, DEFAULT_BATCH, DEFAULT_TIMEOUT as READ_TIMEOUT, MAX_BATCH, PullBatch, PullQuery,
    read_after, read_before, scoped,
};
pub use writer::{DEFAULT_DEDUPE_WINDOW_SECONDS, Writer};

use crate::auth::Principal;
use crate::config::PublishLimits;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::page::{Page, PageRequest};
use crate::topics::TopicName;
use sqlx::PgPool;
use std::sync::Arc;

/// The message of the original for a publish without a topic.
pub const NO_TOPIC_MESSAGE: &str = "A topic must be provided to publish_events";

/// Where accepted events go: the local listeners and the other nodes (the cluster bus
/// implements it). The events service only knows this interface, so the bus, which reads
/// stored events itself, sits above the events module instead of beside it.
pub trait Fanout: Send + Sync + 'static {
    /// Hands events of `topic` (committed, or non-durable) on; never blocks.
    fn published(&self, topic: &str, events: Vec<Event>);
}

/// The events service.
#[derive(Clone)]
pub struct Events {
    pool: PgPool,
    writer: Writer,
    fanout: Arc<dyn Fanout>,
    limits: PublishLimits,
    metrics: Metrics,
    pull_timeout: std::time::Duration,
}

impl Events {
    /// The most events one publish request may hold.
    pub fn max_events_per_request(&self) -> usize {
        self.limits.max_events_per_request
    }

    /// The service. Accepted events go to `fanout`: the local hub and the other nodes.
    pub fn new(
        pool: PgPool,
        writer: Writer,
        fanout: Arc<dyn Fanout>,
        limits: PublishLimits,
        metrics: Metrics,
    ) -> Self {
        Events {
            pool,
            writer,
            fanout,
            limits,
            metrics,
            pull_timeout: read::DEFAULT_TIMEOUT,
        }
    }

    /// The statement timeout of scoped and filtered pulls (`ER_PULL_TIMEOUT_MS`).
    pub fn with_pull_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.pull_timeout = timeout;
        self
    }

    /// The statement timeout of scoped and filtered reads.
    pub fn pull_timeout(&self) -> std::time::Duration {
        self.pull_timeout
    }

    /// Stores refused events in the dead-letter table and counts them.
    async fn dead_letter(&self, topic: &str, refused: &[Refused]) -> Result<()> {
        dead_letters::record(&self.pool, topic, refused).await?;
        self.metrics.dead_lettered(refused.len());
        Ok(())
    }

    fn check_limits(&self, events: &[NewEvent]) -> Result<()> {
        if events.is_empty() {
            return Err(Error::invalid("events must contain at least one event"));
        }
        let max = self.limits.max_events_per_request;
        if events.len() > max {
            return Err(Error::invalid(format!(
                "too many events: {} in one request, at most {max} allowed",
                events.len()
            )));
        }
        let max = self.limits.max_event_bytes;
        if let Some((i, e)) = events.iter().enumerate().find(|(_, e)| e.size() > max) {
            return Err(Error::invalid(format!(
                "event {i} is {} bytes, more than the limit of {max} bytes",
                e.size()
            )));
        }
        Ok(())
    }

    async fn topic_exists(&self, name: &TopicName) -> Result<bool> {
        Ok(
            sqlx::query_scalar::<_, bool>("SELECT EXISTS (SELECT 1 FROM topics WHERE name = $1)")
                .bind(name.as_str())
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// Reads a batch of stored events.
    #[tracing::instrument(skip(self, principal), fields(topic = %q.topic, after = q.after))]
    pub async fn pull(&self, principal: &Principal, q: &PullQuery) -> Result<PullBatch> {
        principal.authorize_read(&q.topic)?;
        read::pull(&self.pool, q, self.pull_timeout).await
    }

    /// A batch of stored events newest first, before offset `before` (0: from the newest);
    /// `q.after` is ignored. For browsing (the admin UI).
    pub async fn pull_newest(
        &self,
        principal: &Principal,
        q: &PullQuery,
        before: i64,
    ) -> Result<Vec<Event>> {
        principal.authorize_read(&q.topic)?;
        if q.is_indexed() {
            return read::read_before(&self.pool, &q.topic, before, q.batch_size, &q.filters).await;
        }
        let mut tx = read::scoped(&self.pool, self.pull_timeout).await?;
        let events =
            read::read_before(&mut *tx, &q.topic, before, q.batch_size, &q.filters).await?;
        tx.commit().await?;
        Ok(events)
    }

    /// Lists dead letters (admins only), optionally of one topic name.
    pub async fn dead_letters(
        &self,
        principal: &Principal,
        topic_name: &str,
        req: PageRequest,
    ) -> Result<Page<DeadLetter>> {
        principal.require_admin("list dead letters")?;
        dead_letters::list(&self.pool, topic_name, req).await
    }
}
