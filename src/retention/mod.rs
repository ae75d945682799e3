//! Retention: bounded growth of every table that grows with traffic.
//!
//! - Per topic, a [`Policy`] (by age, count, size, or forever) moves the topic's low-water
//!   mark, `topic_retention.first_offset`: the first retained offset, where every reader
//!   starts (pulls, streams, websocket joins, webhook cursors). Moving it is exact and costs
//!   one row update; physically, whole partitions wholly below it are detached concurrently
//!   and dropped, so neither readers nor writers wait for a prune (`topics::partitions`).
//! - One pruner per topic in the cluster ([`Pruner`], elected by the same ownership as the
//!   webhook workers) also keeps partitions made ahead of need, converts plain tables of
//!   older topics online, drops expired attempt records, and keeps the statistics `/metrics`
//!   and the UI show. One more unit of the same ownership sweeps dead letters and the live
//!   spill (`housekeeping.rs`).
//!
//! Files (the typed policy is `topics::policy`, the node-wide settings the configuration's
//! `Retention` section): `cut.rs` (where the mark moves), `size.rs` (bytes
//! per chunk of offsets, for retention by size), `pruner/` (the owner's step and loop, and
//! the step's drops in `pruner/drops.rs`), `housekeeping.rs`, `stats.rs` (what the UI, the
//! API and `/metrics` read).

mod cut;
mod housekeeping;
mod pruner;
mod size;
mod stats;

pub use crate::config::RetentionConfig;
pub use crate::topics::policy::{self, DEFAULT_PARTITION_SPAN, Policy, TopicDefaults};
pub use housekeeping::{Swept, sweep as housekeeping_step};
pub use pruner::{HOUSEKEEPING, Pruner, StepReport};
pub use stats::{TopicRetention, TopicStats};

use crate::auth::Principal;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::topics::Topic;
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

impl RetentionConfig {
    /// When an attempt record with `status`, made at `at`, expires.
    pub fn attempt_expiry(&self, status: &str, at: DateTime<Utc>) -> DateTime<Utc> {
        let keep = if status == "delivered" {
            self.delivered_attempts
        } else {
            self.failed_attempts
        };
        at + chrono::Duration::from_std(keep).unwrap_or(chrono::Duration::days(30))
    }

    /// The longest attempt retention (partitions ahead are made up to it).
    pub fn attempts_horizon(&self) -> Duration {
        self.delivered_attempts.max(self.failed_attempts)
    }
}

/// Retention policies and statistics, on any node; cheap to clone.
#[derive(Clone)]
pub struct Retention {
    pool: PgPool,
    settings: Arc<RetentionConfig>,
}

impl Retention {
    /// The service.
    pub fn new(pool: PgPool, settings: RetentionConfig) -> Self {
        Retention {
            pool,
            settings: Arc::new(settings),
        }
    }

    /// The node's settings.
    pub fn settings(&self) -> &RetentionConfig {
        &self.settings
    }

    /// A topic's retention and statistics. NOT_FOUND without the topic.
    pub async fn topic(&self, name: &str) -> Result<TopicRetention> {
        self.for_topics(&[name.to_owned()])
            .await?
            .remove(name)
            .ok_or_else(|| Error::not_found("Topic not found"))
    }

    /// Retention and statistics of several topics at once (missing ones are left out).
    pub async fn for_topics(&self, names: &[String]) -> Result<HashMap<String, TopicRetention>> {
        stats::for_topics(&self.pool, names).await
    }

    /// Changes a topic's retention (admins only). It applies at the topic's next prune.
    #[tracing::instrument(skip(self, p))]
    pub async fn update(&self, p: &Principal, id: Uuid, policy: Policy) -> Result<Topic> {
        p.require_admin("update topics")?;
        let topic: Option<Topic> = sqlx::query_as(
            "WITH t AS (SELECT id, name FROM topics WHERE id = $1), u AS (
               INSERT INTO topic_retention AS r (name, max_age_seconds, max_events, max_bytes,
                   drop_undelivered, partition_span)
               SELECT name, $2, $3, $4, $5, $6 FROM t
               ON CONFLICT (name) DO UPDATE SET max_age_seconds = $2, max_events = $3,
                   max_bytes = $4, drop_undelivered = $5, updated_at = now()
             )
             SELECT id, name FROM t",
        )
        .bind(id)
        .bind(policy.max_age_seconds())
        .bind(policy.max_events.unwrap_or(0))
        .bind(policy.max_bytes.unwrap_or(0))
        .bind(policy.drop_undelivered)
        .bind(self.settings.defaults.partition_span)
        .fetch_optional(&self.pool)
        .await?;
        topic.ok_or_else(|| Error::not_found("Topic not found"))
    }

    /// Puts every topic's statistics, and the housekeeping totals, into `metrics` (for a
    /// scrape of `/metrics`: one query; every node reports the same cluster-wide values).
    pub async fn refresh_metrics(&self, metrics: &Metrics) -> Result<()> {
        stats::refresh_metrics(&self.pool, metrics).await
    }
}
