//! The gRPC client of tests and benchmarks: a connection to a node with message limits large
//! enough for big batches, and requests carrying a bearer token.

use anyhow::{Context, Result};
use eventrelay::proto::event_relay_client::EventRelayClient;
use std::net::SocketAddr;
use tonic::transport::Channel;

/// Largest gRPC message the clients send or accept (big publish batches and pulls).
pub const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// A client of the node whose gRPC listener is `grpc`.
pub async fn connect(grpc: SocketAddr) -> Result<EventRelayClient<Channel>> {
    Ok(EventRelayClient::connect(format!("http://{grpc}"))
        .await
        .with_context(|| format!("connecting to gRPC at {grpc}"))?
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE))
}

/// A request carrying a bearer token (panics if the token is not a header value: tokens here
/// are made by the server or written by the test).
pub fn authed<T>(token: &str, msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("metadata value"),
    );
    r
}
