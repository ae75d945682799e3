//! Ownership: each unit of server-side work (a webhook subscription) has exactly one owner
//! node. The owner holds a Postgres session advisory lock on a dedicated connection (never the
//! pool, and never through a transaction-mode pooler, which would hand the session to someone
//! else). The node checks that connection every tick (half a second) and, the moment it fails,
//! abandons every lease: the server freed the locks with the session, so another node may
//! already own the work. Because that can be noticed late, each acquisition also bumps a
//! fencing epoch that every cursor write checks (see `delivery::store`).
//!
//! Which node *should* own what is decided by rendezvous hashing over live nodes; a node only
//! tries the locks of work it should own and lets go of work that has moved away, so the lock
//! settles ownership and the hash spreads it evenly with little movement.
//!
//! A node runs one manager per kind of work ([`Workload::KIND`]: webhook subscriptions, topic
//! pruners), each with its own lock connection; the kind namespaces the lock keys. Only the
//! first manager writes the node's heartbeat (see [`Ownership::sharing_heartbeat`]).

use super::membership::{self, NodeId, rendezvous_owner};
use crate::error::Result;
use crate::metrics::Metrics;
use sha2::{Digest, Sha256};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{Connection, PgPool};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

/// How often the lock connection is checked, the heartbeat written and ownership rebalanced.
pub const TICK: Duration = Duration::from_millis(500);
/// Longest wait for the lock connection to answer a check.
const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// The right to run one unit of work, under one epoch.
#[derive(Clone, Debug)]
pub struct Lease {
    /// The work (subscription id).
    pub id: Uuid,
    /// Fencing epoch of this acquisition.
    pub epoch: i64,
    /// Stop after the step in flight (rebalancing, pause, graceful shutdown).
    pub stop: CancellationToken,
    /// The lock is gone: stop at once, abandoning the step in flight.
    pub lost: CancellationToken,
}

/// Work that needs exactly one owner.
#[async_trait::async_trait]
pub trait Workload: Send + Sync + 'static {
    /// What the work is: namespaces its lock keys and names it in logs and metrics.
    const KIND: &'static str = "subscription";
    /// Ids of the work that needs an owner now.
    async fn candidates(&self) -> Result<Vec<Uuid>>;
    /// Called with the lock held: records the new owner and returns the new fencing epoch,
    /// or `None` if the work no longer exists.
    async fn acquire(&self, id: Uuid, node: Uuid) -> Result<Option<i64>>;
    /// Runs the work until the lease ends (or the work itself stops).
    async fn run(&self, lease: Lease);
}

struct Held {
    key: i64,
    lease: Lease,
    handle: JoinHandle<()>,
}

/// The ownership manager of one node; [`Ownership::run`] is its loop.
pub struct Ownership<W: Workload> {
    pool: PgPool,
    lock_options: PgConnectOptions,
    node: NodeId,
    node_ttl: Duration,
    workload: Arc<W>,
    tracker: TaskTracker,
    metrics: Metrics,
    conn: Option<PgConnection>,
    held: HashMap<Uuid, Held>,
    heartbeat: bool,
}

impl<W: Workload> Ownership<W> {
    /// A manager; `lock_options` must reach Postgres directly (session locks).
    pub fn new(
        pool: PgPool,
        lock_options: PgConnectOptions,
        node: NodeId,
        node_ttl: Duration,
        workload: Arc<W>,
        tracker: TaskTracker,
        metrics: Metrics,
    ) -> Self {
        // Server-side keepalives: if this host vanishes, Postgres ends the session (and frees
        // the locks) within about ten seconds instead of waiting for a long TCP timeout.
        let lock_options = lock_options.application_name("eventrelay-locks").options([
            ("tcp_keepalives_idle", "5"),
            ("tcp_keepalives_interval", "2"),
            ("tcp_keepalives_count", "3"),
            ("statement_timeout", "5s"),
        ]);
        Ownership {
            pool,
            lock_options,
            node,
            node_ttl,
            workload,
            tracker,
            metrics,
            conn: None,
            held: HashMap::new(),
            heartbeat: true,
        }
    }

    /// A manager that leaves the node's heartbeat to another manager of the same node.
    pub fn sharing_heartbeat(mut self) -> Self {
        self.heartbeat = false;
        self
    }

    /// Runs until `shutdown`, then hands everything over: leaves the membership table, lets
    /// in-flight work finish (at most `grace`), and closes the lock connection.
    pub async fn run(mut self, shutdown: CancellationToken, grace: Duration) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            if self.heartbeat
                && let Err(e) = membership::heartbeat(&self.pool, &self.node).await
            {
                tracing::warn!(error = %e, "cluster heartbeat failed");
            }
            self.check_lock_connection().await;
            if let Err(e) = self.rebalance().await {
                tracing::warn!(error = %e, "ownership rebalance failed");
            }
        }
        self.hand_over(grace).await;
    }

    /// Pings the lock connection; on failure abandons every lease, then reconnects.
    async fn check_lock_connection(&mut self) {
        if let Some(conn) = self.conn.as_mut() {
            let ok = matches!(
                tokio::time::timeout(CHECK_TIMEOUT, conn.ping()).await,
                Ok(Ok(()))
            );
            if !ok {
                tracing::warn!(
                    kind = W::KIND,
                    "lock connection lost: stopping every owned unit"
                );
                self.lose_all();
            }
        }
        if self.conn.is_none() {
            match tokio::time::timeout(
                Duration::from_secs(5),
                PgConnection::connect_with(&self.lock_options),
            )
            .await
            {
                Ok(Ok(c)) => self.conn = Some(c),
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot open the lock connection"),
                Err(_) => tracing::warn!("opening the lock connection timed out"),
            }
        }
    }

    fn lose_all(&mut self) {
        for (_, h) in self.held.drain() {
            h.lease.lost.cancel();
            h.lease.stop.cancel();
        }
        self.conn = None;
        self.metrics.owned(W::KIND, 0);
    }

    /// Releases finished or moved work and takes work this node should own.
    async fn rebalance(&mut self) -> Result<()> {
        if self.conn.is_none() {
            return Ok(());
        }
        let finished: Vec<Uuid> = self
            .held
            .iter()
            .filter(|(_, h)| h.handle.is_finished())
            .map(|(id, _)| *id)
            .collect();
        for id in finished {
            if let Some(h) = self.held.remove(&id) {
                self.unlock(h.key).await;
            }
        }
        let mut nodes = membership::live_nodes(&self.pool, self.node_ttl).await?;
        if !nodes.contains(&self.node.id) {
            nodes.push(self.node.id);
        }
        let desired: HashSet<Uuid> = self
            .workload
            .candidates()
            .await?
            .into_iter()
            .filter(|w| rendezvous_owner(&nodes, *w) == Some(self.node.id))
            .collect();
        for (id, h) in &self.held {
            if !desired.contains(id) && !h.lease.stop.is_cancelled() {
                tracing::info!(kind = W::KIND, %id, "handing over");
                h.lease.stop.cancel();
            }
        }
        for id in desired {
            if !self.held.contains_key(&id) {
                self.try_take(id).await?;
            }
        }
        self.metrics.owned(W::KIND, self.held.len());
        Ok(())
    }

    async fn try_take(&mut self, id: Uuid) -> Result<()> {
        let key = lock_key_of(W::KIND, id);
        let Some(conn) = self.conn.as_mut() else {
            return Ok(());
        };
        let got: bool = match sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(key)
            .fetch_one(&mut *conn)
            .await
        {
            Ok(got) => got,
            Err(e) => {
                self.lose_all();
                return Err(e.into());
            }
        };
        if !got {
            return Ok(());
        }
        match self.workload.acquire(id, self.node.id).await {
            Ok(Some(epoch)) => {
                let lease = Lease {
                    id,
                    epoch,
                    stop: CancellationToken::new(),
                    lost: CancellationToken::new(),
                };
                tracing::info!(kind = W::KIND, %id, epoch, "acquired");
                let workload = self.workload.clone();
                let handle = self.tracker.spawn({
                    let lease = lease.clone();
                    async move { workload.run(lease).await }
                });
                self.held.insert(id, Held { key, lease, handle });
                Ok(())
            }
            Ok(None) => {
                self.unlock(key).await;
                Ok(())
            }
            Err(e) => {
                self.unlock(key).await;
                Err(e)
            }
        }
    }

    async fn unlock(&mut self, key: i64) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let r = sqlx::query_scalar::<_, bool>("SELECT pg_advisory_unlock($1)")
            .bind(key)
            .fetch_one(&mut *conn)
            .await;
        if r.is_err() {
            self.lose_all();
        }
    }

    async fn hand_over(mut self, grace: Duration) {
        if let Err(e) = membership::leave(&self.pool, &self.node).await {
            tracing::warn!(error = %e, "could not leave the membership table");
        }
        for h in self.held.values() {
            h.lease.stop.cancel();
        }
        let handles: Vec<_> = self.held.values_mut().map(|h| &mut h.handle).collect();
        if tokio::time::timeout(grace, futures::future::join_all(handles))
            .await
            .is_err()
        {
            tracing::warn!(
                kind = W::KIND,
                "owned work did not finish in time: abandoning it"
            );
        }
        self.lose_all_and_close().await;
        tracing::info!(kind = W::KIND, "owned work handed over");
    }

    async fn lose_all_and_close(&mut self) {
        let conn = self.conn.take();
        self.lose_all();
        if let Some(conn) = conn {
            // Closing the session frees every lock it holds at once.
            let _ = conn.close().await;
        }
    }
}

/// The advisory lock key of a webhook subscription (see [`lock_key_of`]).
pub fn lock_key(id: Uuid) -> i64 {
    lock_key_of("subscription", id)
}

/// The advisory lock key of a unit of work of `kind`: 64 bits of a hash, namespaced so it
/// cannot meet the keys of other kinds, or those other software (or sqlx's migrator) uses in
/// practice.
pub fn lock_key_of(kind: &str, id: Uuid) -> i64 {
    let d = Sha256::new()
        .chain_update(b"eventrelay:")
        .chain_update(kind.as_bytes())
        .chain_update(b":")
        .chain_update(id.as_bytes())
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&d[..8]);
    i64::from_be_bytes(first)
}
