//! Integration tests: real nodes on port 0 against real Postgres (a fresh database per
//! test), called over real gRPC and HTTP sockets. One binary, shared helpers in `helpers`.

#![allow(clippy::unwrap_used)]

mod helpers;
mod live_support;
mod receiver;

mod atomic;
mod auth;
mod auth_keys;
mod auth_matrix;
mod chaos;
mod cli;
mod conditional;
mod connection_age;
mod group_commit;
mod grpc_connections;
mod health;
mod hostile;
mod hostile_ui;
mod idempotent;
mod key_digests;
mod live_access;
mod live_bus;
mod live_grpc;
mod live_ws;
mod offsets;
mod proxies;
mod publish;
mod pull;
mod races;
mod ratelimit;
mod retention;
mod retention_cluster;
mod retention_physical;
mod rolling;
mod subscriptions;
mod topics;
mod tracing;
mod ui;
mod ui_admin;
mod ui_browser;
mod ui_controls;
mod visibility;
mod webhook_cluster;
mod webhook_control;
mod webhook_fencing;
mod webhooks;
mod ws_limits;
mod ws_rollout;
