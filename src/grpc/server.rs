//! The gRPC listener: tonic's server on the node's runtime, with the node's connection
//! settings. Routes and their middleware are assembled in `node.rs`.

use anyhow::Context;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic::transport::server::TcpIncoming;

/// Calls (HTTP/2 streams) one connection may have open at once. Tonic leaves hyper's stream
/// limit off unless told, so without it a client could open any number of streams, each with
/// its buffered headers, before a single call is authenticated.
const MAX_STREAMS_PER_CONNECTION: u32 = 256;
/// Largest header list of a call (the bearer token and a few gRPC headers fit many times).
const MAX_HEADER_LIST: u32 = 16 * 1024;

/// Serves `routes` on `listener` until `stop` fires, then lets the calls in flight finish.
pub async fn serve(
    routes: Routes,
    listener: TcpListener,
    keepalive: Duration,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    // TCP_NODELAY: small replies (a one-event publish) must not wait for the client's delayed
    // ACK (~40 ms) under Nagle's algorithm.
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        .trace_fn(crate::telemetry::grpc_span)
        .concurrency_limit_per_connection(MAX_STREAMS_PER_CONNECTION as usize)
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .http2_max_header_list_size(MAX_HEADER_LIST)
        // HTTP/2 pings on idle connections (ER_KEEPALIVE_SECONDS): proxies and load balancers
        // see traffic on an idle StreamEvents call, and a dead peer is noticed.
        .http2_keepalive_interval(Some(keepalive))
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
        .await
        .context("serving gRPC")
}
