//! The gRPC listener: one accept loop on the node's runtime hands each connection to one of a
//! few threads, each running a current-thread runtime with its own tonic server.
//!
//! Why not one tonic server on the multi-thread runtime: hyper runs every call as a task of
//! its own beside its connection's task, and on a multi-thread runtime each hand-off between
//! the two is a cross-thread wake-up. On a thread of its own a connection's calls and its
//! connection task take turns: the replies of the calls that became ready together are
//! written together (with [`Unvectored`], in one write). Connections are spread over the
//! threads round-robin, so a node still uses every core for gRPC.

use crate::rt::ThreadRuntime;
use anyhow::Context;
use std::future::Future;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

/// Connections waiting for their thread; the accept loop waits when a thread falls behind.
const HANDOFF_QUEUE: usize = 64;

/// The server threads, idle once their servers have drained. Keep them until the node's pool
/// is closed: a pooled connection a call opened on one of them is registered with that
/// thread's reactor, and stopping the thread first breaks it under whoever uses it next (the
/// hand-over's leave of the membership table failed that way, so other nodes waited out the
/// node's TTL instead of taking its subscriptions at once).
pub struct ServerThreads {
    _threads: Vec<ThreadRuntime>,
}

/// Serves `routes` on `listener` with `threads` server threads until `stop` fires, then lets
/// the calls in flight finish. The returned future ends when every thread's server has, and
/// hands back the threads, still running.
pub fn serve(
    routes: Routes,
    listener: TcpListener,
    threads: usize,
    keepalive: Duration,
    stop: CancellationToken,
) -> anyhow::Result<impl Future<Output = anyhow::Result<ServerThreads>>> {
    let mut senders = Vec::with_capacity(threads);
    let mut servers = Vec::with_capacity(threads);
    for i in 0..threads.max(1) {
        let (tx, rx) = mpsc::channel::<std::net::TcpStream>(HANDOFF_QUEUE);
        let thread = ThreadRuntime::start(format!("er-grpc-{i}"))?;
        let server =
            thread
                .handle()
                .spawn(server_thread(routes.clone(), rx, keepalive, stop.clone()));
        senders.push(tx);
        servers.push((thread, server));
    }
    let accept = accept(listener, senders, stop);
    Ok(async move {
        accept.await;
        let mut threads = Vec::with_capacity(servers.len());
        for (thread, server) in servers {
            server.await.context("a gRPC thread's server panicked")??;
            threads.push(thread);
        }
        Ok(ServerThreads { _threads: threads })
    })
}

/// Accepts until `stop` fires and hands each connection to the next thread. Dropping the
/// senders at the end ends each thread's stream of connections.
async fn accept(
    listener: TcpListener,
    senders: Vec<mpsc::Sender<std::net::TcpStream>>,
    stop: CancellationToken,
) {
    let mut next = 0usize;
    loop {
        let conn = tokio::select! {
            _ = stop.cancelled() => return,
            conn = listener.accept() => conn,
        };
        let stream = match conn {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accepting a gRPC connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // TCP_NODELAY: small replies (a one-event publish) must not wait for the client's
        // delayed ACK (~40 ms) under Nagle's algorithm.
        let std = stream.set_nodelay(true).and_then(|_| stream.into_std());
        let Ok(std) = std else { continue };
        let sender = &senders[next % senders.len()];
        next = next.wrapping_add(1);
        if sender.send(std).await.is_err() {
            return; // that thread is gone: the node is stopping
        }
    }
}

async fn server_thread(
    routes: Routes,
    rx: mpsc::Receiver<std::net::TcpStream>,
    keepalive: Duration,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    // Publishes made here are answered in bulk, one wake-up of this thread per batch.
    crate::events::install_mailbox();
    // Each connection is registered with this thread's reactor, so its I/O and its calls stay
    // on this thread.
    let incoming =
        tokio_stream::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(rx), |s| {
            tokio::net::TcpStream::from_std(s).map(Unvectored)
        });
    tonic::transport::Server::builder()
        .trace_fn(crate::telemetry::grpc_span)
        .concurrency_limit_per_connection(256)
        // HTTP/2 pings on idle connections (ER_KEEPALIVE_SECONDS): proxies and load balancers
        // see traffic on an idle StreamEvents call, and a dead peer is noticed.
        .http2_keepalive_interval(Some(keepalive))
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, async move { stop.cancelled().await })
        .await
        .context("serving gRPC")
}

/// A connection that says it cannot write vectored. h2 then copies a frame payload under
/// 1 KiB into its write buffer instead of chaining it as a separate slice (it chains from
/// 256 bytes when the I/O writes vectored), and a chained payload must be flushed before the
/// next frame is buffered. A one-event reply (~280 bytes) is such a payload: with vectored
/// writes every reply costs two `writev` calls (HEADERS + DATA, then the trailers), here the
/// replies of every call ready at once share one `write`.
struct Unvectored(tokio::net::TcpStream);

impl tokio::io::AsyncRead for Unvectored {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Unvectored {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
    // `is_write_vectored` keeps its default, false: that is the point of this type.
}

impl tonic::transport::server::Connected for Unvectored {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.0.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// A route whose calls open a TCP connection on the server thread (as a call that grows
    /// the node's pool does) and hand it out.
    #[derive(Clone)]
    struct Opener {
        to: SocketAddr,
        out: mpsc::UnboundedSender<TcpStream>,
    }

    impl tonic::server::NamedService for Opener {
        const NAME: &'static str = "probe.Opener";
    }

    impl tower::Service<http::Request<tonic::body::Body>> for Opener {
        type Response = http::StatusCode;
        type Error = Infallible;
        type Future = futures::future::BoxFuture<'static, Result<http::StatusCode, Infallible>>;

        fn poll_ready(
            &mut self,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), Infallible>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: http::Request<tonic::body::Body>) -> Self::Future {
            let (to, out) = (self.to, self.out.clone());
            Box::pin(async move {
                let stream = TcpStream::connect(to).await.expect("connect");
                out.send(stream).expect("hand out");
                Ok(http::StatusCode::OK)
            })
        }
    }

    #[tokio::test]
    async fn threads_outlive_their_servers_until_dropped() {
        crate::install_crypto_provider();
        let target = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (tx, mut opened) = mpsc::unbounded_channel();
        let routes = Routes::new(Opener {
            to: target.local_addr().unwrap(),
            out: tx,
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/probe.Opener/Open",
            listener.local_addr().unwrap()
        );
        let stop = CancellationToken::new();
        let served = tokio::spawn(
            serve(routes, listener, 1, Duration::from_secs(25), stop.clone()).unwrap(),
        );
        let client = reqwest::Client::builder()
            .http2_prior_knowledge()
            .build()
            .unwrap();
        assert_eq!(client.post(&url).send().await.unwrap().status(), 200);
        drop(client);
        let mut stream = opened
            .recv()
            .await
            .expect("a stream opened on the server thread");
        let (mut peer, _) = target.accept().await.unwrap();

        stop.cancel();
        let threads = served.await.unwrap().expect("servers drained");
        // The servers are done and the thread must stay. Had it been let go, it would end
        // within moments: give it a second to (a bound, not a timing) before using the stream.
        for _ in 0..100 {
            assert!(
                server_thread_running(),
                "the server thread ended with its server"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stream
            .write_all(b"x")
            .await
            .expect("usable while the threads are held");
        let mut byte = [0u8; 1];
        peer.read_exact(&mut byte).await.unwrap();
        assert_eq!(&byte, b"x");

        // Without them it breaks (their runtimes shut down as their threads end): what the
        // hand-over's leave of the membership table ran into when the threads went first.
        drop(threads);
        for _ in 0..500 {
            if !server_thread_running() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!server_thread_running(), "dropping the threads ends them");
        assert!(
            stream.write_all(b"y").await.is_err(),
            "a stream of an ended thread's reactor kept working"
        );
    }

    /// Whether this process has the server thread (only this test starts one in the unit
    /// tests' process).
    fn server_thread_running() -> bool {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .any(|name| name.trim() == "er-grpc-0")
    }
}
