//! Cluster concerns, in one place: membership (node heartbeats), ownership (advisory locks
//! with fencing) and the bus (Redis pub/sub with a Postgres LISTEN/NOTIFY fallback).

pub mod bus;
pub mod membership;
pub mod ownership;
pub mod status;
