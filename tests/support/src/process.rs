//! A node as a child process: the real `eventrelay serve` on two free loopback ports, ready
//! once `/readyz` answers 200, killed when dropped. For what an in-process [`crate::Node`]
//! cannot show: a separate process' memory, its own runtime and threads, SIGKILL.

use anyhow::{Context, Result, bail};
use eventrelay::proto::event_relay_client::EventRelayClient;
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus};
use std::time::Duration;
use tonic::transport::Channel;

/// How long a node may take to become ready (it migrates a fresh database first).
const READY_LIMIT: Duration = Duration::from_secs(20);

/// A node process, killed on drop.
pub struct NodeProcess {
    child: Child,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
}

/// A loopback address that was free a moment ago (the child binds it).
fn free_addr() -> Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

impl NodeProcess {
    /// Runs `command` (the `eventrelay` binary with the node's environment, and its standard
    /// streams as the caller wants them) as `serve` on two free loopback ports
    /// (`ER_GRPC_ADDR`, `ER_HTTP_ADDR`), and waits until the node is ready.
    pub async fn start(mut command: Command) -> Result<NodeProcess> {
        eventrelay::install_crypto_provider();
        let (grpc, http) = (free_addr()?, free_addr()?);
        let child = command
            .arg("serve")
            .env("ER_GRPC_ADDR", grpc.to_string())
            .env("ER_HTTP_ADDR", http.to_string())
            .spawn()
            .with_context(|| format!("starting {:?}", command.get_program()))?;
        // Owned at once, so a failure below still kills the process.
        let mut node = NodeProcess { child, grpc, http };
        let url = format!("http://{http}/readyz");
        let deadline = tokio::time::Instant::now() + READY_LIMIT;
        while tokio::time::Instant::now() < deadline {
            if let Some(status) = node.child.try_wait()? {
                bail!("the node exited before it was ready ({status})");
            }
            if reqwest::get(&url)
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return Ok(node);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("node did not become ready at {url} within {READY_LIMIT:?}")
    }

    /// The process id (for `/proc/<pid>/...` and signals).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (`"-TERM"`, `"-KILL"`, ...) with `kill(1)`.
    pub fn signal(&self, signal: &str) -> Result<()> {
        let pid = self.pid().to_string();
        let status = Command::new("kill").args([signal, &pid]).status()?;
        if !status.success() {
            bail!("kill {signal} {pid}: {status}");
        }
        Ok(())
    }

    /// SIGTERM: the node drains and exits by itself.
    pub fn terminate(&self) -> Result<()> {
        self.signal("-TERM")
    }

    /// SIGKILL, then reaps the process: no drain, no hand-over, its connections just drop.
    pub fn kill(&mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// The exit status, if the process has exited.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        Ok(self.child.try_wait()?)
    }

    /// A gRPC client of this node ([`crate::connect`]).
    pub async fn client(&self) -> Result<EventRelayClient<Channel>> {
        crate::connect(self.grpc).await
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
