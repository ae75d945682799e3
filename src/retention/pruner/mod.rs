//! The pruner: one per topic in the cluster, owned like a webhook subscription (advisory lock
//! with a fencing epoch, rendezvous spread, takeover when the owner dies; see
//! `cluster::ownership`). [`Pruner::step`] is its single step, which tests drive directly; the
//! loop around it runs the step every `ER_RETENTION_INTERVAL_MS` and, between steps, keeps
//! partitions made ahead of the topic's end.
//!
//! A step, each part safe to repeat and to resume on another node after a crash:
//! 1. convert plain tables of an older topic (`topics::layout`), a step at a time;
//! 2. make events partitions ahead of need, and attempt partitions for the days attempts of
//!    this topic's webhooks will expire on;
//! 3. move the low-water mark (`cut.rs`; fenced by the epoch);
//! 4. detach and drop events partitions wholly below the mark (finishing any detach a dead
//!    owner left half done) and attempt partitions whose day has passed;
//! 5. record the statistics.
//!
//! Files: this one (the step, making partitions ahead, and the owner's loop) and `drops.rs`
//! (step 4's detaches and drops).

mod drops;

use super::cut::{self, Moved};
use super::{Policy, RetentionConfig, housekeeping, size, stats};
use crate::cluster::ownership::{Lease, Workload};
use crate::error::Result;
use crate::topics::layout::{self, Progress};
use crate::topics::{self, TopicName, partitions};
use chrono::{NaiveDate, Utc};
use sqlx::PgPool;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// The unit of work that sweeps the cluster-wide tables (`housekeeping.rs`).
pub const HOUSEKEEPING: Uuid = Uuid::from_u128(0x6576_656e_7472_656c_6179_2d68_6f75_7365);

/// Partitions kept made beyond the topic's end (the current one and this many more).
const AHEAD: i64 = 2;
/// How often the owner checks, between steps, that partitions are made ahead.
const ENSURE_EVERY: Duration = Duration::from_secs(2);
/// Conversion steps per prune step at most (there are four).
const CONVERT_STEPS: usize = 6;
/// Offsets a plain events table may receive while it is being converted, in partitions.
const CONVERT_HEADROOM_PARTITIONS: i64 = 10;
/// Pause before giving back a topic that cannot be pruned (it vanished, or errors).
const BACKOFF: Duration = Duration::from_secs(5);

/// What one step did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StepReport {
    /// Another pruner owns the topic (or it is gone): the step stopped without writing.
    pub fenced: bool,
    /// The first retained offset after the step.
    pub first_offset: i64,
    /// Offsets the mark moved by.
    pub pruned: i64,
    /// Partitions made.
    pub made: usize,
    /// Partitions detached and dropped.
    pub dropped: usize,
    /// A table is still being converted to partitions.
    pub converting: bool,
    /// A partition could not be removed yet (a detach waits for an old reader).
    pub waiting: bool,
}

/// The pruners of one node.
#[derive(Clone)]
pub struct Pruner {
    pool: PgPool,
    settings: Arc<RetentionConfig>,
}

impl Pruner {
    /// The pruner over the node's pool.
    pub fn new(pool: PgPool, settings: RetentionConfig) -> Self {
        Pruner {
            pool,
            settings: Arc::new(settings),
        }
    }

    /// One step for `topic` under ownership `epoch` (see the module header).
    #[tracing::instrument(skip(self), fields(topic = %topic))]
    pub async fn step(&self, topic: &TopicName, epoch: i64) -> Result<StepReport> {
        let mut report = StepReport::default();
        let Some((current, policy)) = self.state(topic).await? else {
            report.fenced = true;
            return Ok(report);
        };
        if current != epoch {
            report.fenced = true;
            return Ok(report);
        }
        report.converting = !self.convert(topic).await?;
        report.made += self.ensure_ahead(topic).await?;
        report.made += self.ensure_attempt_days(topic).await?;

        let b = topics::bounds(&self.pool, topic.as_str()).await?;
        if policy.max_bytes.is_some() {
            size::forget_below(&self.pool, topic, b.first).await?;
            size::account(&self.pool, topic, b.last).await?;
        }
        let target = cut::target(&self.pool, topic, &policy, b).await?;
        let first = match cut::apply(&self.pool, topic, epoch, target).await? {
            Moved::Fenced => {
                report.fenced = true;
                return Ok(report);
            }
            Moved::To(old, new) => {
                report.pruned = new - old;
                new
            }
        };
        report.first_offset = first;
        if policy.max_bytes.is_some() && report.pruned > 0 {
            size::forget_below(&self.pool, topic, first).await?;
        }
        // The mark has moved: readers are done with what lies below it. A detach that has to
        // wait for an old reader's snapshot gives up after a while and is finished by a later
        // step, so the step goes on to its statistics either way.
        match self.drop_physically(topic, first).await {
            Ok(n) => report.dropped += n,
            Err(e) => {
                report.waiting = true;
                tracing::info!(error = %e, "a partition could not be removed yet; retried next step");
            }
        }
        stats::record(&self.pool, topic).await?;
        if report.pruned > 0 || report.dropped > 0 {
            tracing::info!(
                first_offset = first,
                pruned = report.pruned,
                dropped = report.dropped,
                "pruned"
            );
        }
        Ok(report)
    }

    /// The ownership epoch and policy of a topic; `None` when it is gone.
    async fn state(&self, topic: &TopicName) -> Result<Option<(i64, Policy)>> {
        let row: Option<(i64, i64, i64, i64, bool)> = sqlx::query_as(
            "SELECT epoch, max_age_seconds, max_events, max_bytes, drop_undelivered
             FROM topic_retention WHERE name = $1",
        )
        .bind(topic.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|(e, a, n, b, d)| Ok((e, Policy::from_parts(a, n, b, d)?)))
            .transpose()
    }

    /// Converts plain tables a few steps at a time; true when both are partitioned.
    async fn convert(&self, topic: &TopicName) -> Result<bool> {
        let span: i64 =
            sqlx::query_scalar("SELECT partition_span FROM topic_retention WHERE name = $1")
                .bind(topic.as_str())
                .fetch_one(&self.pool)
                .await?;
        let headroom = span.saturating_mul(CONVERT_HEADROOM_PARTITIONS);
        let horizon = self.settings.attempts_horizon();
        let mut events = Progress::Stepped;
        let mut deliveries = Progress::Stepped;
        for _ in 0..CONVERT_STEPS {
            if events == Progress::Stepped {
                events = layout::convert_events(&self.pool, topic, headroom).await?;
            }
            if deliveries == Progress::Stepped {
                deliveries = layout::convert_deliveries(&self.pool, topic, horizon).await?;
            }
            if events != Progress::Stepped && deliveries != Progress::Stepped {
                break;
            }
        }
        Ok(events == Progress::Done && deliveries == Progress::Done)
    }

    /// Makes events partitions up to [`AHEAD`] partitions past the topic's reservation.
    pub async fn ensure_ahead(&self, topic: &TopicName) -> Result<usize> {
        let row: Option<(i64, i64)> = sqlx::query_as(
            "SELECT GREATEST(t.last_offset, COALESCE(o.reserved, 0)), r.partition_span
             FROM topics t JOIN topic_retention r ON r.name = t.name
             LEFT JOIN topic_offsets o ON o.name = t.name WHERE t.name = $1",
        )
        .bind(topic.as_str())
        .fetch_optional(&self.pool)
        .await?;
        let Some((end, span)) = row else {
            return Ok(0);
        };
        partitions::ensure_events(
            &self.pool,
            topic,
            end.saturating_add(1),
            end.saturating_add(AHEAD * span),
        )
        .await
    }

    /// Makes the attempt partitions of the days this topic's attempts will expire on (today
    /// plus each retention, and the day after), when the topic has webhook subscriptions.
    async fn ensure_attempt_days(&self, topic: &TopicName) -> Result<usize> {
        let webhooks: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM subscriptions
                            WHERE topic_name = $1 AND subscription_type = 'webhook')",
        )
        .bind(topic.as_str())
        .fetch_one(&self.pool)
        .await?;
        if !webhooks {
            return Ok(0);
        }
        let have: HashSet<Option<NaiveDate>> =
            partitions::children(&self.pool, &topic.deliveries_table())
                .await?
                .iter()
                .filter_map(|c| partitions::deliveries_day(topic, &c.table))
                .collect();
        let now = Utc::now();
        // 30 days: the default expiry nodes of an earlier version give their attempts.
        let keeps = [
            self.settings.delivered_attempts,
            self.settings.failed_attempts,
            Duration::from_secs(30 * 86_400),
        ];
        let mut made = 0;
        for keep in keeps {
            for extra in [0, 1] {
                let at = now
                    + chrono::Duration::from_std(keep).unwrap_or_default()
                    + chrono::Duration::days(extra);
                if !have.contains(&Some(at.date_naive()))
                    && partitions::ensure_deliveries(&self.pool, topic, at).await?
                {
                    made += 1;
                }
            }
        }
        Ok(made)
    }

    async fn topic_of(&self, id: Uuid) -> Result<Option<TopicName>> {
        let name: Option<String> = sqlx::query_scalar("SELECT name FROM topics WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        name.map(|n| TopicName::parse(&n)).transpose()
    }

    /// Steps `topic` until the lease ends; partitions are kept ahead between steps.
    async fn run_topic(&self, topic: TopicName, lease: Lease) {
        let interval = self.settings.interval;
        // Spread the steps of many topics over the interval instead of running them at once.
        let mut next_step = tokio::time::Instant::now()
            + interval
                .mul_f64(rand::random::<f64>())
                .min(Duration::from_secs(1));
        let mut next_ensure = tokio::time::Instant::now();
        loop {
            let wake = next_step.min(next_ensure);
            tokio::select! {
                _ = lease.lost.cancelled() => return,
                _ = lease.stop.cancelled() => return,
                _ = tokio::time::sleep_until(wake) => {}
            }
            let now = tokio::time::Instant::now();
            if now >= next_step {
                next_step = now + interval;
                next_ensure = now + ENSURE_EVERY.min(interval);
                let step = tokio::select! {
                    // A lost lock abandons the step at once; a detach in flight finishes in
                    // Postgres or is left half done, for the next owner to finish.
                    _ = lease.lost.cancelled() => return,
                    r = self.step(&topic, lease.epoch) => r,
                };
                match step {
                    Ok(r) if r.fenced => return,
                    Ok(_) => {}
                    Err(e) => tracing::warn!(topic = %topic, error = %e, "prune step failed"),
                }
            } else {
                next_ensure = now + ENSURE_EVERY.min(interval);
                if let Err(e) = self.ensure_ahead(&topic).await {
                    tracing::warn!(topic = %topic, error = %e, "making partitions ahead failed");
                }
            }
        }
    }

    async fn run_housekeeping(&self, lease: Lease) {
        let mut tick = tokio::time::interval(self.settings.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = lease.lost.cancelled() => return,
                _ = lease.stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            match housekeeping::sweep(&self.pool, &self.settings).await {
                Ok(s) if s != housekeeping::Swept::default() => {
                    tracing::info!(?s, "housekeeping removed expired rows")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = ?e, "housekeeping failed"),
            }
        }
    }
}

#[async_trait::async_trait]
impl Workload for Pruner {
    const KIND: &'static str = "topic";

    async fn candidates(&self) -> Result<Vec<Uuid>> {
        // Topics made by nodes of an earlier version (during a rolling upgrade) get their
        // retention row here: the default policy, forever.
        sqlx::query(
            "INSERT INTO topic_retention (name, partition_span)
             SELECT t.name, $1 FROM topics t
             WHERE NOT EXISTS (SELECT 1 FROM topic_retention r WHERE r.name = t.name)
             ON CONFLICT DO NOTHING",
        )
        .bind(self.settings.defaults.partition_span)
        .execute(&self.pool)
        .await?;
        let mut ids: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM topics")
            .fetch_all(&self.pool)
            .await?;
        ids.push(HOUSEKEEPING);
        Ok(ids)
    }

    async fn acquire(&self, id: Uuid, node: Uuid) -> Result<Option<i64>> {
        if id == HOUSEKEEPING {
            // Sweeps are idempotent deletes of expired rows: nothing to fence.
            return Ok(Some(0));
        }
        Ok(sqlx::query_scalar(
            "UPDATE topic_retention r SET epoch = r.epoch + 1, owner_node = $2
             FROM topics t WHERE t.id = $1 AND r.name = t.name
             RETURNING r.epoch",
        )
        .bind(id)
        .bind(node)
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn run(&self, lease: Lease) {
        if lease.id == HOUSEKEEPING {
            return self.run_housekeeping(lease).await;
        }
        match self.topic_of(lease.id).await {
            Ok(Some(topic)) => self.run_topic(topic, lease).await,
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(topic = %lease.id, error = %e, "cannot start the pruner");
                tokio::select! {
                    _ = lease.stop.cancelled() => {}
                    _ = lease.lost.cancelled() => {}
                    _ = tokio::time::sleep(BACKOFF) => {}
                }
            }
        }
    }
}
