//! Cluster membership: which nodes are alive, from a heartbeat table in Postgres. Each node
//! upserts its row every tick; a row whose heartbeat is older than the node TTL belongs to a
//! dead node. Work is spread over live nodes by rendezvous (highest random weight) hashing,
//! so when a node joins or leaves only the work it gains or loses moves.

use crate::error::Result;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use std::time::Duration;
use uuid::Uuid;

/// Rows of nodes dead for longer than this are deleted (by any node), so the table stays small.
const FORGET_AFTER: Duration = Duration::from_secs(600);

/// This node in the cluster. The id is new for every process, so a restarted node is a new
/// member and can never be mistaken for its previous life.
#[derive(Clone, Debug)]
pub struct NodeId {
    /// Random per process.
    pub id: Uuid,
    /// Configured (or host) name, for operators.
    pub name: String,
}

impl NodeId {
    /// A fresh identity for this process.
    pub fn new(name: String) -> Self {
        NodeId {
            id: Uuid::new_v4(),
            name,
        }
    }
}

/// Records that this node is alive now, and forgets long-dead nodes.
pub async fn heartbeat(pool: &PgPool, node: &NodeId) -> Result<()> {
    sqlx::query(
        "INSERT INTO cluster_nodes (id, name) VALUES ($1, $2)
         ON CONFLICT (id) DO UPDATE SET heartbeat_at = now()",
    )
    .bind(node.id)
    .bind(&node.name)
    .execute(pool)
    .await?;
    sqlx::query("DELETE FROM cluster_nodes WHERE heartbeat_at < now() - make_interval(secs => $1)")
        .bind(FORGET_AFTER.as_secs_f64())
        .execute(pool)
        .await?;
    Ok(())
}

/// Removes this node at graceful shutdown, so others take its work without waiting for the TTL.
pub async fn leave(pool: &PgPool, node: &NodeId) -> Result<()> {
    sqlx::query("DELETE FROM cluster_nodes WHERE id = $1")
        .bind(node.id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Ids of nodes whose heartbeat is younger than `ttl` (Postgres time, so node clocks do not
/// matter), sorted.
pub async fn live_nodes(pool: &PgPool, ttl: Duration) -> Result<Vec<Uuid>> {
    Ok(sqlx::query_scalar(
        "SELECT id FROM cluster_nodes WHERE heartbeat_at > now() - make_interval(secs => $1)
         ORDER BY id",
    )
    .bind(ttl.as_secs_f64())
    .fetch_all(pool)
    .await?)
}

/// The node that should own `work`: the one with the highest hash of (node, work).
pub fn rendezvous_owner(nodes: &[Uuid], work: Uuid) -> Option<Uuid> {
    nodes.iter().copied().max_by_key(|n| score(*n, work))
}

fn score(node: Uuid, work: Uuid) -> u64 {
    let mut h = Sha256::new();
    h.update(node.as_bytes());
    h.update(work.as_bytes());
    let d = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&d[..8]);
    u64::from_be_bytes(first)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn owners(nodes: &[Uuid], work: &[Uuid]) -> HashMap<Uuid, Uuid> {
        work.iter()
            .map(|w| (*w, rendezvous_owner(nodes, *w).unwrap()))
            .collect()
    }

    #[test]
    fn spreads_evenly_and_moves_only_what_it_must() {
        let nodes: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
        let work: Vec<Uuid> = (0..3000).map(|_| Uuid::new_v4()).collect();
        let before = owners(&nodes, &work);
        for n in &nodes {
            let count = before.values().filter(|o| *o == n).count();
            assert!((800..=1200).contains(&count), "uneven: {count} of 3000");
        }
        // A fourth node joins: only work it now owns moves, about a quarter of it.
        let mut four = nodes.clone();
        four.push(Uuid::new_v4());
        let after = owners(&four, &work);
        let moved: Vec<_> = work.iter().filter(|w| before[w] != after[w]).collect();
        assert!(moved.iter().all(|w| after[w] == four[3]));
        assert!((600..=900).contains(&moved.len()), "moved {}", moved.len());
        // A node leaves: only its own work moves.
        let two = &nodes[1..];
        let after = owners(two, &work);
        assert!(
            work.iter()
                .all(|w| before[w] == nodes[0] || before[w] == after[w])
        );
        assert_eq!(rendezvous_owner(&[], work[0]), None);
    }
}
