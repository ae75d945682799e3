//! Webhook ownership across nodes that are separate processes (the real binary), killed with
//! SIGKILL mid-stream: every event is still delivered in order (an in-flight event may repeat),
//! delivery resumes within the required 10 seconds, and a node that comes back never makes two
//! nodes deliver one subscription at once (checked at the receiver and by the fencing epochs).

use crate::helpers::*;
use crate::receiver::{Receiver, in_order_at_least_once};
use crate::webhooks::events;
use eventrelay::auth::{ApiKeys, KeyType};
use eventrelay::cluster::membership;
use eventrelay::proto::{self, event_relay_client::EventRelayClient};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The product requirement: a dead owner's subscriptions are delivered again within this.
const TAKEOVER: Duration = Duration::from_secs(10);
/// The nodes' default ER_NODE_TTL_SECONDS: a node silent for longer is dead.
const NODE_TTL: Duration = Duration::from_secs(5);

/// A node as a child process of the real binary (shared with `retention_cluster`), named.
pub(crate) struct ProcNode {
    name: String,
    node: NodeProcess,
    grpc: SocketAddr,
}

impl ProcNode {
    async fn spawn(db_url: &str, name: &str) -> ProcNode {
        Self::spawn_with(db_url, name, &[]).await
    }

    /// A node with extra environment settings.
    pub(crate) async fn spawn_with(db_url: &str, name: &str, env: &[(&str, &str)]) -> ProcNode {
        let mut command = Command::new(env!("CARGO_BIN_EXE_eventrelay"));
        command
            .env_clear()
            .env("DATABASE_URL", db_url)
            .env("ER_NODE_NAME", name)
            .env("ER_JWT_SECRET", jwt_secret())
            .env("ER_DB_POOL_SIZE", "6")
            .env("ER_WEBHOOK_ALLOWED_NETWORKS", "127.0.0.0/8")
            .env("ER_WEBHOOK_POLL_MS", "200")
            .env("ER_SHUTDOWN_GRACE_SECONDS", "5")
            .env(
                "RUST_LOG",
                std::env::var("ER_TEST_NODE_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let node = NodeProcess::start(command)
            .await
            .unwrap_or_else(|e| panic!("node {name}: {e:#}"));
        ProcNode {
            name: name.into(),
            grpc: node.grpc,
            node,
        }
    }

    pub(crate) async fn client(&self) -> EventRelayClient<tonic::transport::Channel> {
        self.node.client().await.expect("connect")
    }

    /// SIGKILL: no drain, no hand-over, the lock connection just drops.
    pub(crate) fn kill(&mut self) {
        self.node.kill().expect("kill -9");
    }

    fn terminate(&mut self) {
        self.node.terminate().expect("kill -TERM");
    }
}

// Fields drop in order: the nodes die before their database is dropped.
struct Setup {
    nodes: Vec<ProcNode>,
    pool: sqlx::PgPool,
    admin: String,
    rx: Receiver,
    db: TestDb,
}

async fn setup(n: usize, subs: usize) -> (Setup, Vec<String>) {
    let db = TestDb::create().await;
    let mut nodes = Vec::new();
    for i in 0..n {
        nodes.push(ProcNode::spawn(&db.url, &format!("node-{i}")).await);
    }
    let pool = eventrelay::db::connect(&db.url, 4).await.unwrap();
    let admin = ApiKeys::new(pool.clone())
        .create(KeyType::Admin, "admin", &[], &[])
        .await
        .unwrap()
        .bearer_token()
        .unwrap();
    let rx = Receiver::start_with_delay(Duration::from_millis(3)).await;
    let mut cl = nodes[0].client().await;
    cl.create_topic(authed(
        &admin,
        proto::CreateTopicRequest {
            name: "orders".into(),
            ..Default::default()
        },
    ))
    .await
    .unwrap();
    let mut ids = Vec::new();
    for i in 0..subs {
        let config: BTreeMap<String, String> =
            [("endpoint_url".to_string(), rx.url(&format!("/s{i}")))].into();
        let s = cl
            .create_subscription(authed(
                &admin,
                proto::CreateSubscriptionRequest {
                    subscription: Some(proto::NewSubscription {
                        name: format!("hook_{i}"),
                        topic_name: "orders".into(),
                        subscription_type: "webhook".into(),
                        config: config.into_iter().collect(),
                        ..Default::default()
                    }),
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .subscription
            .unwrap();
        ids.push(s.id);
    }
    let s = Setup {
        db,
        pool,
        admin,
        nodes,
        rx,
    };
    (s, ids)
}

impl Setup {
    /// Owner node name of each subscription, once every one has an owner.
    async fn owners(&self, ids: &[String]) -> HashMap<String, String> {
        for _ in 0..200 {
            let rows: Vec<(Uuid, String)> = sqlx::query_as(
                "SELECT c.subscription_id, n.name FROM subscription_cursors c
                 JOIN cluster_nodes n ON n.id = c.owner_node",
            )
            .fetch_all(&self.pool)
            .await
            .unwrap();
            if rows.len() == ids.len() {
                return rows.into_iter().map(|(i, n)| (i.to_string(), n)).collect();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("not every subscription got an owner");
    }

    /// Waits until `nodes` nodes are live and every subscription is owned by the node that
    /// rendezvous hashing over them names: the cluster settles after a join.
    async fn assert_settles_on_rendezvous(&self, ids: &[String], nodes: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let live = membership::live_nodes(&self.pool, NODE_TTL).await.unwrap();
            let owned: HashMap<Uuid, Uuid> = sqlx::query_as(
                "SELECT subscription_id, owner_node FROM subscription_cursors
                 WHERE owner_node IS NOT NULL",
            )
            .fetch_all(&self.pool)
            .await
            .unwrap()
            .into_iter()
            .collect();
            let settled = live.len() == nodes
                && ids.iter().all(|id| {
                    let id = Uuid::parse_str(id).unwrap();
                    owned.get(&id).copied() == membership::rendezvous_owner(&live, id)
                });
            if settled {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "ownership did not settle on {live:?}: {owned:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Publishes `total` events, 5 at a time, through node `via`, in the background.
    fn publisher(
        &self,
        via: SocketAddr,
        total: i64,
        published: Arc<AtomicI64>,
    ) -> tokio::task::JoinHandle<()> {
        let admin = self.admin.clone();
        tokio::spawn(async move {
            let mut cl = EventRelayClient::connect(format!("http://{via}"))
                .await
                .unwrap();
            while published.load(Ordering::SeqCst) < total {
                let r = proto::PublishEventsRequest {
                    topic: "orders".into(),
                    events: events(5, "load"),
                    durable: true,
                    ..Default::default()
                };
                cl.publish_events(authed(&admin, r)).await.expect("publish");
                published.fetch_add(5, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
    }

    /// Fails unless each subscription gets a request that started after `since` within
    /// the takeover limit.
    async fn assert_resumes_within_takeover(&self, ids: &[&String], since: Instant) {
        let deadline = since + TAKEOVER;
        loop {
            let log = self.rx.log();
            let waiting: Vec<_> = ids
                .iter()
                .filter(|id| !log.iter().any(|r| &&r.subscription == *id && r.at > since))
                .collect();
            if waiting.is_empty() {
                eprintln!("delivery resumed {:?} after the kill", since.elapsed());
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no delivery within {TAKEOVER:?} of the owner's death for {waiting:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every subscription received 1..=total in order (an event may repeat right after
    /// itself), never two requests at once, and its attempts' epochs never go back.
    async fn assert_complete_and_ordered(&self, ids: &[String], total: i64) {
        for id in ids {
            self.rx
                .wait_for(60, "every event", |_| {
                    self.rx.acked_offsets(id).last().copied() == Some(total)
                })
                .await;
            let offsets = self.rx.offsets(id);
            assert!(
                in_order_at_least_once(&offsets, 1, total),
                "{id}: {offsets:?}"
            );
            assert_eq!(self.rx.max_in_flight(id), 1, "{id}: two deliveries at once");
            let epochs: Vec<i64> = sqlx::query_scalar(
                r#"SELECT epoch FROM "orders_deliveries" WHERE subscription_id = $1 ORDER BY attempted_at, id"#,
            )
            .bind(Uuid::parse_str(id).unwrap())
            .fetch_all(&self.pool)
            .await
            .unwrap();
            assert!(
                epochs.windows(2).all(|w| w[0] <= w[1]),
                "{id}: epochs interleave: {epochs:?}"
            );
        }
    }
}

#[tokio::test]
async fn two_nodes_owner_killed_mid_stream_hands_over_in_order() {
    let (mut s, ids) = setup(2, 2).await;
    let owners = s.owners(&ids).await;
    let victim_name = owners[&ids[0]].clone();
    let victim = s.nodes.iter().position(|n| n.name == victim_name).unwrap();
    let survivor = 1 - victim;
    let total = 400;
    let published = Arc::new(AtomicI64::new(0));
    let publisher = s.publisher(s.nodes[survivor].grpc, total, published.clone());
    s.rx.wait_for(30, "delivery under way", |_| {
        s.rx.acked_offsets(&ids[0]).len() >= 60
    })
    .await;
    s.nodes[victim].kill();
    let killed_at = Instant::now();
    assert!(
        published.load(Ordering::SeqCst) < total,
        "killed mid-stream"
    );
    let victims: Vec<&String> = ids.iter().filter(|i| owners[*i] == victim_name).collect();
    s.assert_resumes_within_takeover(&victims, killed_at).await;
    publisher.await.unwrap();
    s.assert_complete_and_ordered(&ids, total).await;
    let owners = s.owners(&ids).await;
    assert!(owners.values().all(|n| *n == s.nodes[survivor].name));
}

#[tokio::test]
async fn three_nodes_spread_survive_a_kill_and_a_comeback_without_double_ownership() {
    let (mut s, ids) = setup(3, 9).await;
    let owners = s.owners(&ids).await;
    let mut per_node: HashMap<&String, usize> = HashMap::new();
    for n in owners.values() {
        *per_node.entry(n).or_default() += 1;
    }
    assert!(
        per_node.len() >= 2,
        "subscriptions are spread: {per_node:?}"
    );
    let victim_name = owners[&ids[0]].clone();
    let victim = s.nodes.iter().position(|n| n.name == victim_name).unwrap();
    let via = (victim + 1) % 3;
    let total = 300;
    let published = Arc::new(AtomicI64::new(0));
    let publisher = s.publisher(s.nodes[via].grpc, total, published.clone());
    s.rx.wait_for(30, "delivery under way", |_| {
        s.rx.acked_offsets(&ids[0]).len() >= 40
    })
    .await;
    s.nodes[victim].kill();
    let killed_at = Instant::now();
    let victims: Vec<&String> = ids.iter().filter(|i| owners[*i] == victim_name).collect();
    s.assert_resumes_within_takeover(&victims, killed_at).await;

    // The node comes back (a new process, same name, a new id) while events keep flowing.
    // Ownership must settle on the rendezvous spread over the three live nodes again; that
    // the returning node's share is not empty depends on its random id (it is empty in about
    // one run in forty with nine subscriptions), so the test checks the spread itself.
    let db_url = s.db.url.clone();
    s.nodes[victim] = ProcNode::spawn(&db_url, &victim_name).await;
    s.assert_settles_on_rendezvous(&ids, 3).await;
    publisher.await.unwrap();
    s.assert_complete_and_ordered(&ids, total).await;
}

#[tokio::test]
async fn graceful_shutdown_hands_subscriptions_over_at_once() {
    let (mut s, ids) = setup(2, 4).await;
    let owners = s.owners(&ids).await;
    let leaving_name = owners[&ids[0]].clone();
    let leaving = s.nodes.iter().position(|n| n.name == leaving_name).unwrap();
    let staying = 1 - leaving;
    let total = 200;
    let published = Arc::new(AtomicI64::new(0));
    let publisher = s.publisher(s.nodes[staying].grpc, total, published.clone());
    s.rx.wait_for(30, "delivery under way", |_| {
        s.rx.acked_offsets(&ids[0]).len() >= 30
    })
    .await;
    s.nodes[leaving].terminate();
    let stopped_at = Instant::now();
    // Wait without blocking the runtime: the receiver must keep answering the node's
    // in-flight attempts while it drains.
    let status = loop {
        if let Some(status) = s.nodes[leaving].node.try_wait().unwrap() {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "clean exit: {status}");
    let moved: Vec<&String> = ids.iter().filter(|i| owners[*i] == leaving_name).collect();
    s.assert_resumes_within_takeover(&moved, stopped_at).await;
    publisher.await.unwrap();
    s.assert_complete_and_ordered(&ids, total).await;
    // It left the membership table itself, instead of waiting for its heartbeat to expire.
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM cluster_nodes WHERE name = $1")
        .bind(&leaving_name)
        .fetch_one(&s.pool)
        .await
        .unwrap();
    assert_eq!(left, 0, "the leaving node removed its heartbeat row");
    // The attempts in flight finished before the hand-over, so nothing was delivered twice.
    for id in &ids {
        assert_eq!(s.rx.offsets(id), (1..=total).collect::<Vec<_>>(), "{id}");
    }
}
