//! The processes of `er-live-bench`: release nodes of `eventrelay` as child processes (killed
//! when dropped), and the signal that ends a run early so that dropping it leaves none behind.

use crate::JWT_SECRET;
use anyhow::{Context, Result, bail};
use eventrelay::proto::event_relay_client::EventRelayClient;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
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

/// A node as a child process, killed on drop.
pub(crate) struct Server {
    child: Child,
    pub(crate) grpc: SocketAddr,
    pub(crate) http: SocketAddr,
}

fn free_port() -> Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

impl Server {
    pub(crate) async fn start(
        bin: &std::path::Path,
        db: &str,
        redis: &str,
        cluster: &str,
        name: &str,
    ) -> Result<Server> {
        let (grpc, http) = (free_port()?, free_port()?);
        let child = Command::new(bin)
            .arg("serve")
            .env("DATABASE_URL", db)
            .env("REDIS_URL", redis)
            .env("ER_CLUSTER_NAME", cluster)
            .env("ER_NODE_NAME", name)
            .env("ER_GRPC_ADDR", grpc.to_string())
            .env("ER_HTTP_ADDR", http.to_string())
            .env("ER_JWT_SECRET", JWT_SECRET)
            .env("ER_RATE_LIMIT_DURABLE_PUBLISH_PER_SECOND", "0")
            .env("RUST_LOG", "warn,sqlx=error")
            .stdout(Stdio::null())
            .spawn()?;
        let s = Server { child, grpc, http };
        for _ in 0..200 {
            let ready = reqwest::get(format!("http://{http}/readyz")).await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return Ok(s);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("node {name} did not become ready")
    }

    pub(crate) async fn client(&self) -> Result<EventRelayClient<Channel>> {
        Ok(EventRelayClient::connect(format!("http://{}", self.grpc)).await?)
    }

    pub(crate) fn rss_kib(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .context("VmRSS")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
