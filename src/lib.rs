//! EventRelay: an event streaming and storage server on Postgres.
//!
//! The library holds everything; `main.rs` only parses the command line and calls [`run`].
//! Layers, each knowing only the ones below it (no module cycles; `scripts/module-cycles`):
//! the node ([`node`]: listeners, wiring, drain) → transports ([`grpc`], [`http`]) → the
//! node's services ([`app`]) → domain services ([`topics`], [`events`], [`subscriptions`],
//! [`delivery`], [`retention`], [`auth`], [`live`]) → [`cluster`] → infrastructure ([`db`],
//! [`config`], [`telemetry`], [`metrics`]). `docs/architecture.md` maps every module.

pub mod app;
pub mod auth;
pub mod cache;
pub mod cluster;
pub mod config;
pub mod db;
pub mod delivery;
pub mod drain;
pub mod error;
pub mod events;
pub mod grpc;
pub mod health;
pub mod http;
pub mod live;
pub mod metrics;
pub mod node;
pub mod page;
pub mod ratelimit;
pub mod redis;
pub mod retention;
pub mod subscriptions;
pub mod telemetry;
pub mod topics;
pub mod usecases;
pub mod users;

/// Generated protobuf and gRPC code for package `eventrelay`.
pub mod proto {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("eventrelay");

    /// Encoded file descriptor set, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/eventrelay_descriptor.bin"));
}

/// mimalloc for every binary that links the library (the server, the benchmarks, the tests).
/// Under load glibc malloc's free-list upkeep (`malloc_consolidate`, `_int_free`) was the
/// largest single cost of a small publish in profiles; mimalloc's thread-local pages avoid it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub use app::App;
pub use config::Config;
pub use error::{Error, Result};
pub use node::{Listeners, run};

/// Installs the process-wide TLS crypto provider (ring) once; later calls do nothing.
/// reqwest and sqlx use rustls without a built-in provider, to avoid building aws-lc.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
