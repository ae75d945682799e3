//! The Redis client of a node. Redis is an accelerator, never a dependency: the client
//! reconnects in the background forever, commands time out quickly, and callers fall back
//! to Postgres or to node-local state while it is away.

use fred::prelude::*;
use std::time::Duration;

/// How long one Redis command may take before the caller falls back.
pub const COMMAND_TIMEOUT: Duration = Duration::from_millis(250);

/// Where a node's Redis stands, as readiness and the UI report it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RedisState {
    /// `REDIS_URL` is not set.
    Disabled,
    /// The client is connected.
    Connected,
    /// The client is reconnecting in the background.
    Disconnected,
}

impl RedisState {
    /// The state of `client` (None: not configured).
    pub fn of(client: Option<&Client>) -> Self {
        match client {
            None => RedisState::Disabled,
            Some(c) if c.is_connected() => RedisState::Connected,
            Some(_) => RedisState::Disconnected,
        }
    }

    /// As `/readyz` reports it: "disabled", "connected" or "disconnected".
    pub fn as_str(self) -> &'static str {
        match self {
            RedisState::Disabled => "disabled",
            RedisState::Connected => "connected",
            RedisState::Disconnected => "disconnected",
        }
    }
}

/// A client for `url` that starts connecting in the background (the node starts even when
/// Redis is down) and reconnects every half second after a loss.
pub fn connect(url: &str) -> Result<Client, fred::error::Error> {
    let mut config = Config::from_url(url)?;
    config.fail_fast = false;
    let client = Builder::from_config(config)
        .with_performance_config(|p| p.default_command_timeout = COMMAND_TIMEOUT)
        .with_connection_config(|c| c.connection_timeout = Duration::from_secs(2))
        .set_policy(ReconnectPolicy::new_constant(0, 500))
        .build()?;
    // Dropping the handle detaches the connection task (it keeps running until the client
    // quits); connection errors are retried by the policy.
    drop(client.connect());
    Ok(client)
}
