//! The configuration in typed sections, as [`super::Config::settings`] builds them once
//! (`parse.rs`): durations, policies and the retry schedule have their types, and each module
//! is handed the section it needs instead of the whole configuration.

use super::RetrySchedule;
use crate::topics::TopicDefaults;
use std::net::SocketAddr;
use std::time::Duration;

/// Every section of a node's configuration.
#[derive(Clone, Debug)]
pub struct Settings {
    /// This node in its cluster.
    pub node: Node,
    /// Authentication.
    pub auth: AuthConfig,
    /// Postgres.
    pub db: Db,
    /// Redis URL, when set; a secret (not in `Debug`).
    pub redis_url: Option<String>,
    /// The gRPC listener and its calls.
    pub grpc: Grpc,
    /// The HTTP listener: websockets, SSE, the admin UI.
    pub http: Http,
    /// What one publish may carry.
    pub publish: PublishLimits,
    /// Calls per second per key and kind.
    pub rate_limits: RateLimits,
    /// The live hub.
    pub live: LiveConfig,
    /// Webhook delivery.
    pub delivery: DeliveryConfig,
    /// Retention.
    pub retention: RetentionConfig,
}

/// This node in its cluster.
#[derive(Clone, Debug)]
pub struct Node {
    /// The node's name: `ER_NODE_NAME`, else the host name, else "node".
    pub name: String,
    /// The cluster's name, namespacing Redis keys and channels.
    pub cluster: String,
    /// How long a node without a heartbeat still counts as alive.
    pub ttl: Duration,
    /// The drain deadline.
    pub shutdown_grace: Duration,
    /// The window over which a drain spreads the closing of long-lived connections.
    pub drain_spread: Duration,
}

/// Authentication.
#[derive(Clone)]
pub struct AuthConfig {
    /// The JWT secret in force.
    pub jwt_secret: String,
    /// Whether API keys are required (false: every caller is an admin).
    pub enabled: bool,
    /// Whether the secret is the public development one.
    pub insecure_dev_jwt: bool,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("jwt_secret", &"<secret>")
            .field("enabled", &self.enabled)
            .finish()
    }
}

/// Postgres.
#[derive(Clone)]
pub struct Db {
    /// Connection URL (a secret: not in `Debug`).
    pub url: String,
    /// Connections in the node's pool.
    pub pool_size: u32,
    /// Group-commit writers.
    pub writers: usize,
    /// Statement timeout of scoped and filtered pulls.
    pub pull_timeout: Duration,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("url", &"<secret>")
            .field("pool_size", &self.pool_size)
            .field("writers", &self.writers)
            .field("pull_timeout", &self.pull_timeout)
            .finish()
    }
}

/// The gRPC listener and its calls.
#[derive(Clone, Copy, Debug)]
pub struct Grpc {
    /// Listen address.
    pub addr: SocketAddr,
    /// Largest request message accepted.
    pub max_message_bytes: usize,
    /// HTTP/2 ping interval, and the keepalive of streams that ask for one.
    pub keepalive: Duration,
    /// When connections are ended with GOAWAY so clients spread onto other nodes.
    pub max_connection_age: Option<ConnectionAge>,
}

/// The age after which a gRPC connection is ended, and the time its calls then have.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ConnectionAge {
    /// The configured age (each node draws its own between 80% and 100% of it).
    pub age: Duration,
    /// How long calls in flight may go on after the GOAWAY.
    pub grace: Duration,
}

/// The HTTP listener.
#[derive(Clone, Debug)]
pub struct Http {
    /// Listen address.
    pub addr: SocketAddr,
    /// Separate address for `/metrics`, if any.
    pub metrics_addr: Option<SocketAddr>,
    /// Keepalive of SSE streams and websockets.
    pub keepalive: Duration,
    /// Limits of one websocket.
    pub websocket: WebSocketLimits,
    /// Lifetime of a websocket before it is recycled, if any.
    pub ws_max_connection_age: Option<Duration>,
    /// Long-lived connections per source address (0: no limit).
    pub max_connections_per_address: usize,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Mark UI cookies `Secure` whatever the request's scheme.
    pub ui_secure_cookies: bool,
    /// How long a UI session lasts.
    pub ui_session_ttl: Duration,
}

/// The limits of one websocket connection.
#[derive(Clone, Copy, Debug)]
pub struct WebSocketLimits {
    /// Largest message accepted from the client.
    pub max_message: usize,
    /// Time a socket has to join its first channel.
    pub join_timeout: Duration,
    /// Interval of the server's pings.
    pub keepalive: Duration,
    /// Silence after which the socket is closed.
    pub idle_timeout: Duration,
}

/// What one publish request may carry.
#[derive(Clone, Copy, Debug)]
pub struct PublishLimits {
    /// Largest event in bytes.
    pub max_event_bytes: usize,
    /// Most events per request.
    pub max_events_per_request: usize,
    /// How long a topic without a window of its own remembers idempotency keys.
    pub dedupe_window: Duration,
}

/// Calls per second per key for each kind; 0 means unlimited.
#[derive(Clone, Copy, Debug)]
pub struct RateLimits {
    /// Durable publishes.
    pub durable_publish: u64,
    /// Live (non-durable) publishes.
    pub live_publish: u64,
    /// Pulls and streams.
    pub pull: u64,
    /// Admin calls.
    pub admin: u64,
}

/// The live hub of a node.
#[derive(Clone, Copy, Debug)]
pub struct LiveConfig {
    /// Batches kept per topic.
    pub buffer: usize,
    /// Event bytes kept per topic.
    pub buffer_bytes: usize,
    /// Replays from Postgres that run at once.
    pub replay_concurrency: usize,
}

/// Webhook delivery.
#[derive(Clone, Debug)]
pub struct DeliveryConfig {
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Networks endpoints may resolve to although internal.
    pub allowed_networks: Vec<ipnet::IpNet>,
    /// Requests in flight at once on the node.
    pub max_concurrency: usize,
    /// Backstop poll of an idle subscription.
    pub poll: Duration,
    /// Default delays before each attempt.
    pub retry_schedule: RetrySchedule,
    /// Default attempts per event.
    pub max_attempts: u32,
    /// Default: pause (instead of skip) at an undeliverable event.
    pub pause_on_exhausted: bool,
    /// Default total time of one attempt.
    pub timeout: Duration,
    /// Default deliveries per second per subscription; `None` is unlimited.
    pub rate_limit: Option<f64>,
}

/// Node-wide retention settings.
#[derive(Clone, Debug)]
pub struct RetentionConfig {
    /// What new topics get.
    pub defaults: TopicDefaults,
    /// How often each topic's pruner runs its step.
    pub interval: Duration,
    /// Pause between two partition drops of one topic.
    pub drop_pause: Duration,
    /// How long attempt records that delivered are kept.
    pub delivered_attempts: Duration,
    /// How long other attempt records (failed, undeliverable, gone, skipped) are kept.
    pub failed_attempts: Duration,
    /// How long dead letters are kept.
    pub dead_letters: Duration,
    /// How long spilled live announcements are kept.
    pub spill: Duration,
}

const DAY: u64 = 86_400;

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            defaults: TopicDefaults::default(),
            interval: Duration::from_secs(10),
            drop_pause: Duration::from_secs(10),
            delivered_attempts: Duration::from_secs(7 * DAY),
            failed_attempts: Duration::from_secs(30 * DAY),
            dead_letters: Duration::from_secs(30 * DAY),
            spill: Duration::from_secs(60),
        }
    }
}
