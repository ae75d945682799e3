//! The processes of `er-live-bench`: release nodes of `eventrelay` as child processes (killed
//! when dropped), the topic and websocket subscription every run streams, and the signal that
//! ends a run early so that dropping it leaves none behind.

use crate::JWT_SECRET;
use anyhow::{Context, Result};
use eventrelay::auth::{ApiKeys, KeyType};
use eventrelay::proto::{self, event_relay_client::EventRelayClient};
use eventrelay_testkit::{NodeProcess, admin_key, authed};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use tonic::transport::Channel;

/// Resolves on Ctrl-C or SIGTERM, with the signal's name.
pub(crate) async fn interrupted() -> &'static str {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(t) => t,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

/// A node as a child process (eventrelay-testkit's), killed on drop.
pub(crate) struct Server {
    node: NodeProcess,
    pub(crate) grpc: SocketAddr,
    pub(crate) http: SocketAddr,
}

impl Server {
    pub(crate) async fn start(
        bin: &std::path::Path,
        db: &str,
        redis: &str,
        cluster: &str,
        name: &str,
    ) -> Result<Server> {
        Server::start_with(bin, db, redis, cluster, name, &[]).await
    }

    /// [`Server::start`] with more environment for the node (settings under test).
    pub(crate) async fn start_with(
        bin: &std::path::Path,
        db: &str,
        redis: &str,
        cluster: &str,
        name: &str,
        env: &[(&str, String)],
    ) -> Result<Server> {
        let mut command = Command::new(bin);
        command
            .env("DATABASE_URL", db)
            .env("REDIS_URL", redis)
            .env("ER_CLUSTER_NAME", cluster)
            .env("ER_NODE_NAME", name)
            .env("ER_JWT_SECRET", JWT_SECRET)
            .env("ER_RATE_LIMIT_DURABLE_PUBLISH_PER_SECOND", "0")
            .env("RUST_LOG", "warn,sqlx=error")
            .stdout(Stdio::null());
        // After the defaults, so that the caller's settings win.
        command.envs(env.iter().map(|(k, v)| (k, v)));
        let node = NodeProcess::start(command)
            .await
            .with_context(|| format!("node {name}"))?;
        Ok(Server {
            grpc: node.grpc,
            http: node.http,
            node,
        })
    }

    pub(crate) async fn client(&self) -> Result<EventRelayClient<Channel>> {
        self.node.client().await
    }

    /// Sends SIGTERM: the node drains.
    pub(crate) fn terminate(&self) -> Result<()> {
        let pid = self.node.pid().to_string();
        let ok = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .is_ok_and(|s| s.success());
        anyhow::ensure!(ok, "kill -TERM {pid} failed");
        Ok(())
    }

    /// The node's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.node.pid()
    }

    pub(crate) fn rss_kib(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.node.pid()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .context("VmRSS")
    }
}

/// Whether process `pid` has exited (a zombie until its `Server` is dropped, or gone).
pub(crate) fn exited(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"));
    stat.map_or(true, |s| {
        s.rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']))
    })
}

/// What the clients and the publisher of a run need: an admin key's token, the websocket
/// subscription of topic `bench`, and a consumer JWT for it that does not expire.
pub(crate) struct Streamed {
    pub(crate) admin: String,
    pub(crate) sub: String,
    pub(crate) jwt: String,
}

/// Creates topic `bench` and its websocket subscription through `node`.
pub(crate) async fn streamed(node: &Server, db_url: &str) -> Result<Streamed> {
    let pool = eventrelay::db::connect(db_url, 1).await?;
    let keys = ApiKeys::new(pool.clone());
    let admin = admin_key(db_url, "bench").await?;
    let mut grpc = node.client().await?;
    let topic = proto::CreateTopicRequest {
        name: "bench".into(),
        ..Default::default()
    };
    grpc.create_topic(authed(&admin, topic)).await?;
    let sub = proto::NewSubscription {
        name: "bench_ws".into(),
        topic_name: "bench".into(),
        subscription_type: "websocket".into(),
        ..Default::default()
    };
    let request = proto::CreateSubscriptionRequest {
        subscription: Some(sub),
    };
    let sub = grpc
        .create_subscription(authed(&admin, request))
        .await?
        .into_inner()
        .subscription
        .context("subscription")?
        .id;
    let consumer = keys
        .create(KeyType::Consumer, "bench", &[], &[sub.parse()?])
        .await?
        .bearer_token()
        .context("consumer token")?;
    let jwt = grpc
        .create_jwt(authed(&consumer, proto::CreateJwtRequest { expiration: 0 }))
        .await?
        .into_inner()
        .jwt;
    pool.close().await;
    Ok(Streamed { admin, sub, jwt })
}
