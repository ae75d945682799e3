//! Node configuration: every setting, its environment variable and its default, in one
//! place. `main` parses it with clap (flags or environment; values that have a type, such as
//! addresses, networks and the retry schedule, are parsed by clap's value parsers); tests
//! build it with [`Config::for_database`] (`defaults.rs`, with the `Debug` that hides
//! secrets) and change fields directly. [`Config::settings`] checks it once (`parse.rs`) and
//! turns it into the typed sections the node's modules are handed (`sections.rs`).

mod defaults;
mod parse;
mod schedule;
mod sections;

pub use schedule::{DEFAULT_SCHEDULE, RetrySchedule};
pub use sections::{
    AuthConfig, ConnectionAge, Db, DeliveryConfig, Grpc, Http, LiveConfig, Node, PublishLimits,
    RateLimits, RetentionConfig, Settings, WebSocketLimits,
};

use std::net::SocketAddr;

/// Published batches a node keeps per topic for its live listeners, by default.
pub const DEFAULT_LIVE_BUFFER: usize = 4_096;
/// Event bytes a node keeps per topic for its live listeners, by default.
pub const DEFAULT_LIVE_BUFFER_BYTES: usize = 32 * 1024 * 1024;

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines, for a terminal.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Settings of one node. Secrets (`database_url`, `redis_url`, `jwt_secret`) are never logged:
/// `Debug` is implemented by hand below.
#[derive(Clone, clap::Args)]
pub struct Config {
    /// Postgres connection URL (direct, not through a transaction-mode pooler).
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,

    /// Redis URL for cross-node fan-out and shared rate limits; unset runs without Redis.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,

    /// gRPC listen address.
    #[arg(long, env = "ER_GRPC_ADDR", default_value = "0.0.0.0:50051")]
    pub grpc_addr: SocketAddr,

    /// HTTP listen address (health, websockets, UI; and metrics unless `ER_METRICS_ADDR`).
    #[arg(long, env = "ER_HTTP_ADDR", default_value = "0.0.0.0:9000")]
    pub http_addr: SocketAddr,

    /// Separate listen address for `/metrics` (then not served on `ER_HTTP_ADDR`), so an
    /// ingress in front of the HTTP port never exposes it. Unset: metrics on the HTTP port.
    #[arg(long, env = "ER_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,

    /// Largest gRPC request message accepted, in bytes; larger ones are refused before they
    /// are decoded.
    #[arg(long, env = "ER_GRPC_MAX_MESSAGE_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub grpc_max_message_bytes: usize,

    /// Secret for signing JWTs (HS256), at least 32 bytes. Required by `serve` unless
    /// `ER_INSECURE_DEV_JWT=true`.
    #[arg(long, env = "ER_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// Let `serve` start without `ER_JWT_SECRET`, on a public development secret anyone can
    /// forge tokens with. Only for a private development machine.
    #[arg(long, env = "ER_INSECURE_DEV_JWT", default_value_t = false, action = clap::ArgAction::Set)]
    pub insecure_dev_jwt: bool,

    /// Require API keys on every gRPC call. Turn off only on a private development machine.
    #[arg(long, env = "ER_AUTH_ENABLED", default_value_t = true, action = clap::ArgAction::Set)]
    pub auth_enabled: bool,

    /// Name of this cluster; namespaces Redis keys and channels so clusters can share a Redis.
    #[arg(long, env = "ER_CLUSTER_NAME", default_value = "eventrelay")]
    pub cluster_name: String,

    /// Name of this node in logs and cluster state (default: the host name).
    #[arg(long, env = "ER_NODE_NAME")]
    pub node_name: Option<String>,

    /// Largest accepted event (name, data, keys and context together), in bytes.
    #[arg(long, env = "ER_MAX_EVENT_BYTES", default_value_t = 1024 * 1024)]
    pub max_event_bytes: usize,

    /// Most events in one publish request.
    #[arg(long, env = "ER_MAX_EVENTS_PER_REQUEST", default_value_t = 1000)]
    pub max_events_per_request: usize,

    /// Statement timeout of a pull's queries, in milliseconds; a pull that takes longer is
    /// refused with RESOURCE_EXHAUSTED.
    #[arg(long, env = "ER_PULL_TIMEOUT_MS", default_value_t = 5_000)]
    pub pull_timeout_ms: u64,

    /// Published batches a node keeps per topic for its websocket clients and gRPC streams;
    /// a client that falls further behind is disconnected as slow.
    #[arg(long, env = "ER_LIVE_BUFFER", default_value_t = DEFAULT_LIVE_BUFFER)]
    pub live_buffer: usize,

    /// Event bytes a node keeps per topic for its live listeners (with `ER_LIVE_BUFFER`,
    /// whichever is reached first): a listener further behind is disconnected as slow.
    #[arg(long, env = "ER_LIVE_BUFFER_BYTES", default_value_t = DEFAULT_LIVE_BUFFER_BYTES)]
    pub live_buffer_bytes: usize,
    /// Largest websocket message a client may send, in bytes (a whole `publish_events`);
    /// larger closes the socket with code 1009. Before a socket joins a channel the limit is
    /// 64 KiB at most (a join is a few hundred bytes).
    #[arg(long, env = "ER_WS_MAX_MESSAGE_BYTES", default_value_t = 2 * 1024 * 1024)]
    pub ws_max_message_bytes: usize,

    /// Seconds a new websocket has to join a channel; then it is closed (code 1008).
    #[arg(long, env = "ER_WS_JOIN_TIMEOUT_SECONDS", default_value_t = 5)]
    pub ws_join_timeout_seconds: u64,

    /// Seconds between keepalives on idle long-lived connections: websocket pings, SSE
    /// comments and HTTP/2 pings on gRPC connections. Keep it under the load balancers' idle
    /// timeouts (60 s is common).
    #[arg(long, env = "ER_KEEPALIVE_SECONDS", default_value_t = 25)]
    pub keepalive_seconds: u64,

    /// Seconds a websocket may stay silent (no message, no heartbeat, no pong) before the
    /// node closes it (code 1008): half-open connections must not hold places.
    #[arg(long, env = "ER_WS_IDLE_TIMEOUT_SECONDS", default_value_t = 60)]
    pub ws_idle_timeout_seconds: u64,

    /// Websockets and SSE streams one source address may hold open on a node at once (an
    /// IPv6 source counts by its /64); 0 = no limit.
    #[arg(long, env = "ER_MAX_CONNECTIONS_PER_ADDRESS", default_value_t = 1_000)]
    pub max_connections_per_address: usize,

    /// Seconds after which a websocket is closed (code 1001) so its client reconnects,
    /// possibly to a newer node; each socket's age is drawn between 80 % and 100 % of this.
    /// 0 = never.
    #[arg(long, env = "ER_WS_MAX_CONNECTION_AGE_SECONDS", default_value_t = 0)]
    pub ws_max_connection_age_seconds: u64,

    /// Seconds after which the node ends a gRPC connection (HTTP/2 GOAWAY, then up to
    /// ER_GRPC_MAX_CONNECTION_AGE_GRACE_SECONDS for its calls in flight), so clients reconnect
    /// through the load balancer and spread onto new nodes; each node draws its age once
    /// between 80 % and 100 % of this. 0 = never.
    #[arg(long, env = "ER_GRPC_MAX_CONNECTION_AGE_SECONDS", default_value_t = 0)]
    pub grpc_max_connection_age_seconds: u64,

    /// Seconds a gRPC connection past its age may take to finish its calls (a StreamEvents
    /// call is ended then, and its client resumes after its last offset).
    #[arg(
        long,
        env = "ER_GRPC_MAX_CONNECTION_AGE_GRACE_SECONDS",
        default_value_t = 30
    )]
    pub grpc_max_connection_age_grace_seconds: u64,

    /// Default seconds an idempotency key is remembered in a topic (its dedupe window), for
    /// topics without a window of their own; at most 30 days.
    #[arg(long, env = "ER_DEDUPE_WINDOW_SECONDS", default_value_t = 86_400)]
    pub dedupe_window_seconds: u64,

    /// Postgres reads replaying stored events to (re)joining clients that run at once on a
    /// node; more wait for a turn, so a reconnect storm cannot swamp Postgres.
    #[arg(long, env = "ER_LIVE_REPLAY_CONCURRENCY", default_value_t = 4)]
    pub live_replay_concurrency: usize,

    /// Seconds over which a draining node spreads the closing of its websockets, gRPC
    /// streams and SSE streams (each at a random moment), so clients do not all reconnect at
    /// once; at most half of ER_SHUTDOWN_GRACE_SECONDS.
    #[arg(long, env = "ER_DRAIN_SPREAD_SECONDS", default_value_t = 10)]
    pub drain_spread_seconds: u64,

    /// Postgres connections in this node's pool.
    #[arg(long, env = "ER_DB_POOL_SIZE", default_value_t = 20)]
    pub db_pool_size: u32,

    /// Transactions storing published events that may run at once on this node; each topic
    /// belongs to one of them, which stores everything queued for its topics together.
    #[arg(long, env = "ER_WRITERS", default_value_t = 4)]
    pub writers: usize,

    /// Seconds a node may take to drain after SIGTERM before it stops hard.
    #[arg(long, env = "ER_SHUTDOWN_GRACE_SECONDS", default_value_t = 25)]
    pub shutdown_grace_seconds: u64,

    /// Log format.
    #[arg(long, env = "ER_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// OTLP/gRPC endpoint for traces (for example http://otel-collector:4317); unset = off.
    #[arg(long, env = "ER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// Seconds without a heartbeat after which a node counts as dead and its webhook
    /// subscriptions move to other nodes.
    #[arg(long, env = "ER_NODE_TTL_SECONDS", default_value_t = 5)]
    pub node_ttl_seconds: u64,

    /// Networks webhook endpoints may resolve to even though they are private, loopback or
    /// link-local (comma-separated CIDRs, e.g. `10.0.0.0/8,127.0.0.0/8`).
    #[arg(long, env = "ER_WEBHOOK_ALLOWED_NETWORKS", value_delimiter = ',')]
    pub webhook_allowed_networks: Vec<ipnet::IpNet>,

    /// Default delays before each webhook attempt, in seconds; the last repeats.
    #[arg(long, env = "ER_WEBHOOK_RETRY_SCHEDULE", default_value = DEFAULT_SCHEDULE, value_parser = RetrySchedule::parse_setting)]
    pub webhook_retry_schedule: RetrySchedule,

    /// Default attempts per event before it is marked undeliverable.
    #[arg(long, env = "ER_WEBHOOK_MAX_ATTEMPTS", default_value_t = 20)]
    pub webhook_max_attempts: u32,

    /// Pause a subscription (instead of skipping the event) when an event is undeliverable.
    #[arg(long, env = "ER_WEBHOOK_PAUSE_ON_EXHAUSTED", default_value_t = false, action = clap::ArgAction::Set)]
    pub webhook_pause_on_exhausted: bool,

    /// Webhook connect timeout, in milliseconds.
    #[arg(long, env = "ER_WEBHOOK_CONNECT_TIMEOUT_MS", default_value_t = 5_000)]
    pub webhook_connect_timeout_ms: u64,

    /// Default total timeout of one webhook attempt, in milliseconds.
    #[arg(long, env = "ER_WEBHOOK_TIMEOUT_MS", default_value_t = 15_000)]
    pub webhook_timeout_ms: u64,

    /// Webhook requests in flight at once on this node, over all subscriptions.
    #[arg(long, env = "ER_WEBHOOK_MAX_CONCURRENCY", default_value_t = 64)]
    pub webhook_max_concurrency: usize,

    /// Default deliveries per second per subscription; 0 is unlimited.
    #[arg(long, env = "ER_WEBHOOK_RATE_LIMIT", default_value_t = 0.0)]
    pub webhook_rate_limit: f64,

    /// Backstop poll of an idle webhook subscription, in milliseconds (new events wake it
    /// at once; the poll only covers missed wake-ups).
    #[arg(long, env = "ER_WEBHOOK_POLL_MS", default_value_t = 2_000)]
    pub webhook_poll_ms: u64,

    /// Mark admin UI session cookies `Secure` even when the request did not arrive over https
    /// (set it behind a TLS-terminating proxy that does not send `X-Forwarded-Proto`).
    #[arg(long, env = "ER_UI_SECURE_COOKIES", default_value_t = false, action = clap::ArgAction::Set)]
    pub ui_secure_cookies: bool,

    /// Proxies whose `X-Forwarded-For` is believed (comma-separated CIDRs): the source address
    /// of a connection from one of them is the rightmost address in that header that is not
    /// itself a trusted proxy; from anyone else it is the peer address. Sign-in throttling and
    /// the per-address connection limit count that address.
    #[arg(long, env = "ER_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<ipnet::IpNet>,

    /// Hours an admin UI session lasts after sign-in (1 to 720).
    #[arg(long, env = "ER_UI_SESSION_HOURS", default_value_t = 12)]
    pub ui_session_hours: u64,

    /// Durable PublishEvents calls per second per API key (cluster-wide with Redis); 0 = no limit.
    #[arg(
        long,
        env = "ER_RATE_LIMIT_DURABLE_PUBLISH_PER_SECOND",
        default_value_t = 10_000
    )]
    pub rate_limit_durable_publish: u64,

    /// Non-durable PublishEvents calls per second per API key; 0 = no limit.
    #[arg(
        long,
        env = "ER_RATE_LIMIT_LIVE_PUBLISH_PER_SECOND",
        default_value_t = 20_000
    )]
    pub rate_limit_live_publish: u64,

    /// PullEvents and stream calls per second per API key; 0 = no limit.
    #[arg(long, env = "ER_RATE_LIMIT_PULL_PER_SECOND", default_value_t = 10_000)]
    pub rate_limit_pull: u64,

    /// Other (admin) calls per second per API key; 0 = no limit.
    #[arg(long, env = "ER_RATE_LIMIT_ADMIN_PER_SECOND", default_value_t = 1_000)]
    pub rate_limit_admin: u64,

    /// Retention of topics created without one: remove events stored longer ago than this
    /// many seconds; 0 = no limit by age.
    #[arg(long, env = "ER_RETENTION_MAX_AGE_SECONDS", default_value_t = 0)]
    pub retention_max_age_seconds: u64,

    /// Retention of topics created without one: keep only the newest this many events;
    /// 0 = no limit by count.
    #[arg(long, env = "ER_RETENTION_MAX_EVENTS", default_value_t = 0)]
    pub retention_max_events: u64,

    /// Retention of topics created without one: keep only the newest events whose stored
    /// rows add up to at most this many bytes; 0 = no limit by size.
    #[arg(long, env = "ER_RETENTION_MAX_BYTES", default_value_t = 0)]
    pub retention_max_bytes: u64,

    /// Retention of topics created without one: may remove events a webhook subscription has
    /// not delivered yet (the subscription records the skip). false: retention waits for it.
    #[arg(long, env = "ER_RETENTION_DROP_UNDELIVERED", default_value_t = false, action = clap::ArgAction::Set)]
    pub retention_drop_undelivered: bool,

    /// Offsets per events partition of new topics: retention removes whole partitions, so a
    /// topic keeps at most one partition beyond its policy on disk.
    #[arg(
        long,
        env = "ER_RETENTION_PARTITION_EVENTS",
        default_value_t = 1_000_000
    )]
    pub retention_partition_events: u64,

    /// How often each topic's pruner applies its retention, in milliseconds.
    #[arg(long, env = "ER_RETENTION_INTERVAL_MS", default_value_t = 10_000)]
    pub retention_interval_ms: u64,

    /// Pause between two partition drops of one topic, in milliseconds: a backlog of drops
    /// (retention set on a large topic) is spread out instead of hitting the disk at once.
    #[arg(long, env = "ER_RETENTION_DROP_PAUSE_MS", default_value_t = 10_000)]
    pub retention_drop_pause_ms: u64,

    /// Days webhook attempt records that delivered are kept.
    #[arg(
        long,
        env = "ER_RETENTION_DELIVERED_ATTEMPTS_DAYS",
        default_value_t = 7
    )]
    pub retention_delivered_attempts_days: u64,

    /// Days other webhook attempt records (failed, undeliverable, gone, skipped) are kept.
    #[arg(long, env = "ER_RETENTION_FAILED_ATTEMPTS_DAYS", default_value_t = 30)]
    pub retention_failed_attempts_days: u64,

    /// Days dead letters are kept.
    #[arg(long, env = "ER_RETENTION_DEAD_LETTERS_DAYS", default_value_t = 30)]
    pub retention_dead_letters_days: u64,

    /// Seconds spilled live announcements (large non-durable events sent over NOTIFY) are kept.
    #[arg(long, env = "ER_RETENTION_SPILL_SECONDS", default_value_t = 60)]
    pub retention_spill_seconds: u64,
}

/// The secret used when `ER_JWT_SECRET` is unset and `ER_INSECURE_DEV_JWT=true`. Public by
/// construction: development only.
pub const DEV_JWT_SECRET: &str = "eventrelay-development-secret-do-not-use-in-production";

/// Shortest accepted `ER_JWT_SECRET`, in bytes (HS256 keys should carry 256 bits).
pub const MIN_JWT_SECRET_BYTES: usize = 32;
