//! The set-up that EventRelay's integration tests and benchmarks share, so that it is written
//! once: a fresh database per test or run, dropped afterwards ([`TestDb`]); a node on port 0,
//! in this process ([`Node`]) or as a child process of the `eventrelay` binary
//! ([`NodeProcess`]); an admin key made straight in the database ([`admin_key`]); and a gRPC
//! client with the limits the tests need ([`connect`], [`authed`]).
//!
//! Tests call the panicking forms (`TestDb::create`, `Node::start`), benchmarks the fallible
//! ones (`TestDb::create_on`, `Node::try_start`), which report instead of panicking so that a
//! run always cleans up.

mod client;
mod db;
mod env;
mod node;
mod process;

pub use client::{MAX_MESSAGE, authed, connect};
pub use db::{BENCH_PREFIX, TEST_PREFIX, TestDb, admin_key, quiet_connection};
pub use env::{DEFAULT_ADMIN_URL, DEFAULT_REDIS_URL, admin_url, redis_url, unique_cluster_name};
pub use node::Node;
pub use process::NodeProcess;
