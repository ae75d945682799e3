//! Chaos: two producers publish batches with idempotency keys through three node processes
//! for about a minute (`ER_CHAOS_SECONDS`, default 60) while a node is killed with SIGKILL
//! and started again every few seconds. A producer retries a batch that got no answer on the
//! next node, and moves on only once it is answered. At the end every key is stored exactly
//! once, and each producer's events are stored in its own order.

use crate::helpers::*;
use eventrelay::proto::CreateTopicRequest;
use eventrelay_testkit::NodeProcess;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::RwLock;

/// Events per batch.
const BATCH: usize = 5;
/// Node processes.
const NODES: usize = 3;

/// A node process of this test's database.
async fn node(db_url: &str) -> NodeProcess {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_eventrelay"));
    cmd.env_clear()
        .env("DATABASE_URL", db_url)
        .env("ER_JWT_SECRET", "chaos-".repeat(8))
        .env("ER_DB_POOL_SIZE", "4")
        .env("ER_WRITERS", "2")
        .env("RUST_LOG", "error")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    NodeProcess::start(cmd).await.expect("a node process")
}

/// The gRPC addresses of the nodes now running (`None`: being restarted).
type Live = Arc<RwLock<Vec<Option<SocketAddr>>>>;

/// Publishes batches of keyed events until `stop`, each until answered; returns how many.
async fn produce(
    p: usize,
    live: Live,
    admin: String,
    stop: tokio_util::sync::CancellationToken,
) -> u64 {
    let mut seq = 0u64;
    let mut attempt = p;
    while !stop.is_cancelled() {
        let events = (0..BATCH)
            .map(|i| {
                let n = seq + i as u64 + 1;
                eventrelay::proto::NewEvent {
                    idempotency_key: format!("p{p}-{n}"),
                    ..event(
                        "chaos",
                        &format!(r#"{{"k": "p{p}-{n}", "p": {p}, "seq": {n}}}"#),
                    )
                }
            })
            .collect::<Vec<_>>();
        loop {
            attempt += 1;
            let addr = live.read().await[attempt % NODES];
            let Some(addr) = addr else {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            let call = async {
                let mut client = eventrelay_testkit::connect(addr).await?;
                let r = client
                    .publish_events(authed(&admin, durable("chaos", events.clone())))
                    .await?;
                anyhow::Ok(r.into_inner())
            };
            // A bound on one attempt (a killed node's connection may hang), not a timing.
            match tokio::time::timeout(Duration::from_secs(10), call).await {
                Ok(Ok(r)) => {
                    assert_eq!(r.events.len(), BATCH, "every event answered");
                    break;
                }
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        seq += BATCH as u64;
    }
    seq
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producers_through_nodes_killed_and_restarted_store_every_key_once_in_order() {
    let seconds: u64 = std::env::var("ER_CHAOS_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    // One in-process node migrates the database and makes the admin key; the producers use
    // only the processes.
    let c = TestCluster::start(1).await;
    let mut nodes = Vec::new();
    for _ in 0..NODES {
        nodes.push(Some(node(&c.db.url).await));
    }
    let mut client = nodes[0].as_ref().unwrap().client().await.unwrap();
    client
        .create_topic(authed(
            &c.admin,
            CreateTopicRequest {
                name: "chaos".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    let live: Live = Arc::new(RwLock::new(
        nodes.iter().map(|n| n.as_ref().map(|n| n.grpc)).collect(),
    ));
    let stop = tokio_util::sync::CancellationToken::new();
    let producers: Vec<_> = (0..2)
        .map(|p| tokio::spawn(produce(p, live.clone(), c.admin.clone(), stop.clone())))
        .collect();
    // Kill one node after another with SIGKILL and start it again, until the time is up.
    let end = tokio::time::Instant::now() + Duration::from_secs(seconds);
    let mut victim = 0;
    let mut kills = 0;
    while tokio::time::Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        live.write().await[victim] = None;
        drop(nodes[victim].take()); // SIGKILL
        kills += 1;
        let fresh = node(&c.db.url).await;
        live.write().await[victim] = Some(fresh.grpc);
        nodes[victim] = Some(fresh);
        victim = (victim + 1) % NODES;
    }
    stop.cancel();
    let mut published = Vec::new();
    for p in producers {
        published.push(p.await.unwrap());
    }
    assert!(kills >= 3, "only {kills} kills");
    let total: u64 = published.iter().sum();
    assert!(total > 0);
    let (rows, keys) = stored_rows(&c, "chaos").await;
    assert_eq!(
        (rows, keys),
        (total as i64, total as i64),
        "every key exactly once"
    );
    for (p, &n) in published.iter().enumerate() {
        let seqs: Vec<i64> = sqlx::query_scalar(
            "SELECT (data->>'seq')::bigint FROM chaos_events WHERE (data->>'p')::int = $1
             ORDER BY \"offset\"",
        )
        .bind(p as i32)
        .fetch_all(&c.pool)
        .await
        .unwrap();
        let expected: Vec<i64> = (1..=n as i64).collect();
        assert_eq!(seqs, expected, "producer {p}'s events in its own order");
    }
}
