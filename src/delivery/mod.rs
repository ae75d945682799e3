//! Webhook delivery: each active webhook subscription is delivered by its owner node (see
//! `cluster::ownership`), one event at a time in offset order, from a cursor kept in Postgres.
//! At least once: an event is acknowledged by a 2xx and only then does the cursor move, so a
//! new owner repeats at most the one event that was in flight; receivers dedupe on
//! `webhook-id` (the event id).
//!
//! Files: [`settings`] (retry schedule, limits), [`signing`] (Standard Webhooks signatures),
//! [`client`] (HTTP with address checks), [`store`] (cursor and attempt records),
//! [`worker`] (the step and its loop; what an attempt's outcome means in `worker/outcome.rs`),
//! [`control`] (pause, resume, replay, list attempts).

pub mod client;
pub mod control;
mod guard;
pub mod settings;
pub mod signing;
pub mod store;
pub mod worker;

pub use crate::cluster::ownership::Lease;
pub use settings::{DeliverySettings, OnExhausted, RetrySchedule};
pub use store::DeliveryRecord;
pub use worker::{Step, StopReason, Worker};

use crate::config;
use crate::error::{Error, Result};
use crate::live::Live;
use crate::metrics::Metrics;
use crate::subscriptions::{SubscriptionType, Subscriptions};
use client::{NetworkPolicy, WebhookClient};
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use uuid::Uuid;

/// The delivery service of one node; cheap to clone.
#[derive(Clone)]
pub struct Delivery {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    client: WebhookClient,
    defaults: DeliverySettings,
    permits: Semaphore,
    live: Live,
    metrics: Metrics,
    subscriptions: Subscriptions,
    poll: Duration,
    retention: crate::retention::RetentionConfig,
}

impl Delivery {
    /// The service; fails only if the HTTP client cannot be built. `retention` says how long
    /// attempt records are kept.
    pub fn new(
        pool: PgPool,
        config: &config::DeliveryConfig,
        retention: crate::retention::RetentionConfig,
        live: Live,
        metrics: Metrics,
    ) -> Result<Self> {
        let client = WebhookClient::new(
            config.connect_timeout,
            NetworkPolicy::new(config.allowed_networks.clone()),
        )
        .map_err(|e| Error::Internal(e.into()))?;
        Ok(Delivery {
            inner: Arc::new(Inner {
                subscriptions: Subscriptions::new(pool.clone()),
                pool,
                client,
                defaults: DeliverySettings::defaults(config),
                permits: Semaphore::new(config.max_concurrency),
                live,
                metrics,
                poll: config.poll,
                retention,
            }),
        })
    }

    /// A worker for a subscription under `epoch` (the owner's, or a test's).
    pub async fn worker(&self, subscription: Uuid, epoch: i64) -> Result<Worker> {
        let s = self.inner.subscriptions.find(subscription).await?;
        if s.kind != SubscriptionType::Webhook {
            return Err(Error::FailedPrecondition(
                "only webhook subscriptions are delivered".into(),
            ));
        }
        Worker::new(self.clone(), s, epoch)
    }

    pub(crate) fn pool(&self) -> &PgPool {
        &self.inner.pool
    }
    pub(crate) fn client(&self) -> &WebhookClient {
        &self.inner.client
    }
    pub(crate) fn defaults(&self) -> &DeliverySettings {
        &self.inner.defaults
    }
    pub(crate) fn permits(&self) -> &Semaphore {
        &self.inner.permits
    }
    pub(crate) fn live(&self) -> &Live {
        &self.inner.live
    }
    pub(crate) fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }
    pub(crate) fn poll_interval(&self) -> Duration {
        self.inner.poll
    }
    pub(crate) fn subscriptions(&self) -> &Subscriptions {
        &self.inner.subscriptions
    }
    pub(crate) fn retention(&self) -> &crate::retention::RetentionConfig {
        &self.inner.retention
    }
}

#[async_trait::async_trait]
impl crate::cluster::ownership::Workload for Delivery {
    async fn candidates(&self) -> Result<Vec<Uuid>> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM subscriptions WHERE subscription_type = 'webhook' AND NOT paused",
        )
        .fetch_all(self.pool())
        .await?)
    }

    async fn acquire(&self, id: Uuid, node: Uuid) -> Result<Option<i64>> {
        store::acquire(self.pool(), id, node).await
    }

    async fn run(&self, lease: Lease) {
        match self.worker(lease.id, lease.epoch).await {
            Ok(w) => w.run(lease).await,
            Err(e) => {
                tracing::warn!(subscription = %lease.id, error = %e, "cannot start delivery");
                // Do not spin on a subscription that cannot start: wait before giving it back.
                tokio::select! {
                    _ = lease.stop.cancelled() => {}
                    _ = lease.lost.cancelled() => {}
                    _ = tokio::time::sleep(Duration::from_secs(10)) => {}
                }
            }
        }
    }
}
