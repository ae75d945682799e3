//! The gRPC listener: tonic's server on the node's runtime, with the node's connection
//! settings. Routes and their middleware are assembled in `app.rs`.

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

/// The listener's connection settings.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// HTTP/2 ping interval on idle connections (ER_KEEPALIVE_SECONDS).
    pub keepalive: Duration,
    /// Age after which a connection is ended with GOAWAY, and the grace its calls then
    /// have; `None`: connections live as long as their clients keep them.
    pub max_age: Option<(Duration, Duration)>,
}

impl Settings {
    /// From the node's configuration: the age (ER_GRPC_MAX_CONNECTION_AGE_SECONDS) drawn
    /// once between 80 % and 100 % of the setting. Tonic applies one age to every connection
    /// of a server, and connections open at different moments anyway; the draw keeps the
    /// nodes of a fleet, started together by a rollout, from ending theirs in step.
    pub fn from_config(c: &crate::Config) -> Self {
        let max_age = (c.grpc_max_connection_age_seconds > 0).then(|| {
            let full = Duration::from_secs(c.grpc_max_connection_age_seconds);
            let age = full.mul_f64(rand::random_range(0.8..=1.0));
            let grace = Duration::from_secs(c.grpc_max_connection_age_grace_seconds);
            (age.max(Duration::from_secs(1)), grace)
        });
        Settings {
            keepalive: c.keepalive(),
            max_age,
        }
    }
}

/// Serves `routes` on `listener` until `stop` fires, then lets the calls in flight finish.
pub async fn serve(
    routes: Routes,
    listener: TcpListener,
    settings: Settings,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    // TCP_NODELAY: small replies (a one-event publish) must not wait for the client's delayed
    // ACK (~40 ms) under Nagle's algorithm.
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let mut server = tonic::transport::Server::builder();
    if let Some((age, grace)) = settings.max_age {
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
