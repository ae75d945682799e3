//! The gRPC listener: tonic's server on the node's runtime, with the node's connection
//! settings. Routes and their middleware are assembled in `app.rs`.

use anyhow::Context;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic::transport::server::TcpIncoming;

/// Calls one connection may have in flight at once.
const CALLS_PER_CONNECTION: usize = 256;

/// Serves `routes` on `listener` until `stop` fires, then lets the calls in flight finish.
pub async fn serve(
    routes: Routes,
    listener: TcpListener,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    // TCP_NODELAY: small replies (a one-event publish) must not wait for the client's delayed
    // ACK (~40 ms) under Nagle's algorithm.
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        .trace_fn(crate::telemetry::grpc_span)
        .concurrency_limit_per_connection(CALLS_PER_CONNECTION)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
        .await
        .context("serving gRPC")
}
