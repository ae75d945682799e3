//! What operators see of the cluster (the admin UI's cluster and subscription pages): each
//! known node with its heartbeat and whether it counts as alive, and which webhook
//! subscriptions each one owns, as recorded by the owner when it took them (the fencing
//! epoch, not this view, is what keeps a deposed owner from writing).

use crate::error::Result;
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use std::time::Duration;
use uuid::Uuid;

/// A subscription a node owns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owned {
    /// Subscription id.
    pub id: Uuid,
    /// Its name.
    pub name: String,
    /// Its fencing epoch under this owner.
    pub epoch: i64,
}

/// One node as the membership table knows it.
#[derive(Clone, Debug)]
pub struct NodeStatus {
    /// Per-process id.
    pub id: Uuid,
    /// Configured or host name.
    pub name: String,
    /// When the process joined.
    pub started_at: DateTime<Utc>,
    /// Last heartbeat (Postgres time).
    pub heartbeat_at: DateTime<Utc>,
    /// Heartbeat younger than the node TTL.
    pub alive: bool,
    /// Webhook subscriptions it owns.
    pub owns: Vec<Owned>,
}

type NodeRow = (
    Uuid,
    String,
    DateTime<Utc>,
    DateTime<Utc>,
    bool,
    Vec<Uuid>,
    Vec<String>,
    Vec<i64>,
);

/// What operators see of the cluster, for a node whose heartbeat TTL is `ttl`; cheap to clone.
#[derive(Clone)]
pub struct ClusterStatus {
    pool: PgPool,
    ttl: Duration,
}

impl ClusterStatus {
    /// The view over a pool.
    pub fn new(pool: PgPool, ttl: Duration) -> Self {
        ClusterStatus { pool, ttl }
    }

    /// How long a node without a heartbeat still counts as alive.
    pub fn node_ttl(&self) -> Duration {
        self.ttl
    }

    /// Every node, alive first, with what each owns.
    pub async fn nodes(&self) -> Result<Vec<NodeStatus>> {
        nodes(&self.pool, self.ttl).await
    }

    /// The position and owner of one subscription.
    pub async fn position(&self, subscription: Uuid) -> Result<SubscriptionPosition> {
        position(&self.pool, subscription, self.ttl).await
    }
}

/// Every node in the membership table, alive first, with what each owns.
pub async fn nodes(pool: &PgPool, ttl: Duration) -> Result<Vec<NodeStatus>> {
    let rows: Vec<NodeRow> = sqlx::query_as(
        "SELECT n.id, n.name, n.started_at, n.heartbeat_at,
                n.heartbeat_at > now() - make_interval(secs => $1) AS alive,
                ARRAY(SELECT c.subscription_id FROM subscription_cursors c JOIN subscriptions s ON s.id = c.subscription_id
                      WHERE c.owner_node = n.id ORDER BY s.name),
                ARRAY(SELECT s.name FROM subscription_cursors c JOIN subscriptions s ON s.id = c.subscription_id
                      WHERE c.owner_node = n.id ORDER BY s.name),
                ARRAY(SELECT c.epoch FROM subscription_cursors c JOIN subscriptions s ON s.id = c.subscription_id
                      WHERE c.owner_node = n.id ORDER BY s.name)
         FROM cluster_nodes n ORDER BY alive DESC, n.name, n.started_at",
    )
    .bind(ttl.as_secs_f64())
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(id, name, started_at, heartbeat_at, alive, ids, names, epochs)| NodeStatus {
                id,
                name,
                started_at,
                heartbeat_at,
                alive,
                owns: ids
                    .into_iter()
                    .zip(names.into_iter().zip(epochs))
                    .map(|(id, (name, epoch))| Owned { id, name, epoch })
                    .collect(),
            },
        )
        .collect())
}

/// Where a subscription's delivery stands, for operators.
#[derive(Clone, Debug, Default)]
pub struct SubscriptionPosition {
    /// Owner node's name, when the recorded owner is alive.
    pub owner: Option<String>,
    /// Last offset acknowledged or given up on (`None`: no cursor yet).
    pub delivered_offset: Option<i64>,
    /// Failed attempts so far at the next event.
    pub attempts: i32,
    /// When the next attempt is due, if delivery is backing off.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The topic's last offset, for the lag.
    pub last_offset: i64,
}

impl SubscriptionPosition {
    /// Events not yet delivered.
    pub fn lag(&self) -> Option<i64> {
        self.delivered_offset.map(|d| (self.last_offset - d).max(0))
    }
}

/// The position and owner of one subscription.
pub async fn position(
    pool: &PgPool,
    subscription: Uuid,
    ttl: Duration,
) -> Result<SubscriptionPosition> {
    type Row = (
        Option<String>,
        Option<i64>,
        Option<i32>,
        Option<DateTime<Utc>>,
        i64,
    );
    let row: Option<Row> = sqlx::query_as(
        "SELECT n.name, c.delivered_offset, c.attempts, c.next_attempt_at, COALESCE(o.marked, 0)
         FROM subscriptions s LEFT JOIN topic_offsets o ON o.name = s.topic_name
         LEFT JOIN subscription_cursors c ON c.subscription_id = s.id
         LEFT JOIN cluster_nodes n ON n.id = c.owner_node
              AND n.heartbeat_at > now() - make_interval(secs => $2)
         WHERE s.id = $1",
    )
    .bind(subscription)
    .bind(ttl.as_secs_f64())
    .fetch_optional(pool)
    .await?;
    Ok(row
        .map(
            |(owner, delivered_offset, attempts, next_attempt_at, last_offset)| {
                SubscriptionPosition {
                    owner,
                    delivered_offset,
                    attempts: attempts.unwrap_or(0),
                    next_attempt_at,
                    last_offset,
                }
            },
        )
        .unwrap_or_default())
}
