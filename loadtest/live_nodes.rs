//! The processes of `er-live-bench`: release nodes of `eventrelay` as child processes (killed
//! when dropped), and the signal that ends a run early so that dropping it leaves none behind.

use crate::JWT_SECRET;
use anyhow::{Context, Result};
use eventrelay::proto::event_relay_client::EventRelayClient;
use eventrelay_testkit::NodeProcess;
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

    pub(crate) fn rss_kib(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.node.pid()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .context("VmRSS")
    }
}
