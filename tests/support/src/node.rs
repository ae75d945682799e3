//! A node in this process: `eventrelay::run` on two loopback listeners bound to port 0, ready
//! once `/readyz` answers 200, stopped gracefully by [`Node::stop`] or cut off when dropped.

use anyhow::{Context, Result, anyhow, bail};
use eventrelay::proto::event_relay_client::EventRelayClient;
use eventrelay::{Config, Listeners};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// How long a node may take to become ready (it migrates a fresh database first).
const READY_LIMIT: Duration = Duration::from_secs(15);
/// How long [`Node::stop`] waits for the drain (far above the nodes' grace periods).
const STOP_LIMIT: Duration = Duration::from_secs(120);

/// One running node.
pub struct Node {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub shutdown: CancellationToken,
    pub handle: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Node {
    /// Starts a node with `config` and waits until it is ready; panics if it is not.
    pub async fn start(config: Config) -> Node {
        Self::try_start(config).await.expect("start a node")
    }

    /// Starts a node with `config` and waits until it is ready, or returns why it is not (the
    /// node's own error when it stopped).
    pub async fn try_start(config: Config) -> Result<Node> {
        eventrelay::install_crypto_provider();
        let grpc = TcpListener::bind("127.0.0.1:0")
            .await
            .context("bind gRPC")?;
        let http = TcpListener::bind("127.0.0.1:0")
            .await
            .context("bind HTTP")?;
        let (grpc_addr, http_addr) = (grpc.local_addr()?, http.local_addr()?);
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(eventrelay::run(
            config,
            Listeners { grpc, http },
            shutdown.clone(),
        ));
        let mut node = Node {
            grpc: grpc_addr,
            http: http_addr,
            shutdown,
            handle: Some(handle),
        };
        match node.wait_ready().await {
            Ok(()) => Ok(node),
            Err(e) => {
                // The node's own error says more than the timeout.
                node.try_stop(Duration::from_secs(10))
                    .await
                    .context("the node failed to start")?;
                Err(e)
            }
        }
    }

    async fn wait_ready(&self) -> Result<()> {
        let url = format!("http://{}/readyz", self.http);
        let deadline = tokio::time::Instant::now() + READY_LIMIT;
        while tokio::time::Instant::now() < deadline {
            if self.handle.as_ref().is_none_or(|h| h.is_finished()) {
                bail!("the node stopped before it was ready");
            }
            if reqwest::get(&url)
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("node did not become ready at {url} within {READY_LIMIT:?}")
    }

    /// A gRPC client of this node ([`crate::connect`]); panics if it cannot connect.
    pub async fn client(&self) -> EventRelayClient<Channel> {
        crate::connect(self.grpc).await.expect("connect gRPC")
    }

    /// Graceful stop: drain and wait; panics if the node ends with an error.
    pub async fn stop(&mut self) {
        self.try_stop(STOP_LIMIT).await.expect("node run");
    }

    /// Graceful stop: drain and wait up to `limit`; the node's error, if it ended with one.
    pub async fn try_stop(&mut self, limit: Duration) -> Result<()> {
        self.shutdown.cancel();
        let Some(mut handle) = self.handle.take() else {
            return Ok(());
        };
        match tokio::time::timeout(limit, &mut handle).await {
            Ok(Ok(run)) => run,
            Ok(Err(e)) => Err(anyhow!("node task: {e}")),
            Err(_) => {
                handle.abort();
                Err(anyhow!("the node did not stop within {limit:?}"))
            }
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(h) = self.handle.take() {
            h.abort();
        }
    }
}
