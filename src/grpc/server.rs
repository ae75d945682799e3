//! The gRPC listener: tonic's server on the node's runtime, with the node's connection
//! settings. Routes and their middleware are assembled in `node.rs`.

use crate::config::{ConnectionAge, Grpc};
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

/// The age this node ends its connections at: drawn once between 80% and 100% of the
/// configured age. Tonic applies one age to every connection of a server, and connections
/// open at different moments anyway; the draw keeps the nodes of a fleet, started together by
/// a rollout, from ending theirs in step.
fn drawn(age: ConnectionAge) -> ConnectionAge {
    let drawn = age.age.mul_f64(rand::random_range(0.8..=1.0));
    ConnectionAge {
        age: drawn.max(Duration::from_secs(1)),
        grace: age.grace,
    }
}

/// Serves `routes` on `listener` until `stop` fires, then lets the calls in flight finish.
pub async fn serve(
    routes: Routes,
    listener: TcpListener,
    settings: Grpc,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    // TCP_NODELAY: small replies (a one-event publish) must not wait for the client's delayed
    // ACK (~40 ms) under Nagle's algorithm.
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let mut server = tonic::transport::Server::builder();
    if let Some(ConnectionAge { age, grace }) = settings.max_connection_age.map(drawn) {
        // GOAWAY after `age`: the client finishes its calls on this connection and opens its
        // next one through the load balancer, which may pick a newer node.
        server = server
            .max_connection_age(age)
            .max_connection_age_grace(grace);
    }
    server
        .trace_fn(crate::telemetry::grpc_span)
        .concurrency_limit_per_connection(MAX_STREAMS_PER_CONNECTION as usize)
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .http2_max_header_list_size(MAX_HEADER_LIST)
        // HTTP/2 pings on idle connections (ER_KEEPALIVE_SECONDS): proxies and load balancers
        // see traffic on an idle StreamEvents call, and a dead peer is noticed.
        .http2_keepalive_interval(Some(settings.keepalive))
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
        .await
        .context("serving gRPC")
}
