//! The configuration in typed sections, built once from the flat [`Config`] the command line
//! and environment fill: every check is made here, every value gets its type here (durations,
//! policies, the retry schedule), and each module is handed the section it needs instead of
//! the whole configuration.

use super::{Config, DEV_JWT_SECRET, MIN_JWT_SECRET_BYTES, RetrySchedule};
use crate::topics::{DEFAULT_PARTITION_SPAN, Policy, TopicDefaults};
use std::net::SocketAddr;
use std::time::Duration;

/// Every section of a node's configuration.
#[derive(Clone, Debug)]
pub struct Settings {
    /// This node in its cluster.
    pub node: Node,
    /// Authentication.
    pub auth: Auth,
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
    pub live: Live,
    /// Webhook delivery.
    pub delivery: Delivery,
    /// Retention.
    pub retention: Retention,
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
pub struct Auth {
    /// The JWT secret in force.
    pub jwt_secret: String,
    /// Whether API keys are required (false: every caller is an admin).
    pub enabled: bool,
    /// Whether the secret is the public development one.
    pub insecure_dev_jwt: bool,
}

impl std::fmt::Debug for Auth {
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
pub struct Live {
    /// Batches kept per topic.
    pub buffer: usize,
    /// Event bytes kept per topic.
    pub buffer_bytes: usize,
    /// Replays from Postgres that run at once.
    pub replay_concurrency: usize,
}

/// Webhook delivery.
#[derive(Clone, Debug)]
pub struct Delivery {
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
pub struct Retention {
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

impl Default for Retention {
    fn default() -> Self {
        Retention {
            defaults: TopicDefaults::default(),
            interval: Duration::from_secs(10),
            drop_pause: Duration::from_secs(1),
            delivered_attempts: Duration::from_secs(7 * DAY),
            failed_attempts: Duration::from_secs(30 * DAY),
            dead_letters: Duration::from_secs(30 * DAY),
            spill: Duration::from_secs(60),
        }
    }
}

/// `Err` with `msg` unless `ok`.
fn check(ok: bool, msg: impl Into<String>) -> Result<(), String> {
    if ok { Ok(()) } else { Err(msg.into()) }
}

impl Config {
    /// The typed sections a node serves with; the message of an error names the variable to
    /// fix. Needs a JWT secret (`ER_JWT_SECRET`, or `ER_INSECURE_DEV_JWT=true`).
    pub fn settings(&self) -> Result<Settings, String> {
        self.serving_jwt_secret()?;
        self.sections()
    }

    /// Checks every value (a missing JWT secret is allowed: only `serve` needs one).
    pub fn validate(&self) -> Result<(), String> {
        self.sections().map(drop)
    }

    fn sections(&self) -> Result<Settings, String> {
        check(
            !self.database_url.trim().is_empty(),
            "DATABASE_URL is empty",
        )?;
        check(
            self.cluster_name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                && !self.cluster_name.is_empty(),
            "ER_CLUSTER_NAME must be letters, digits, - or _",
        )?;
        check(
            self.node_ttl_seconds >= 2,
            "ER_NODE_TTL_SECONDS must be at least 2",
        )?;
        if let Some(s) = &self.jwt_secret {
            check(
                s.len() >= MIN_JWT_SECRET_BYTES,
                format!(
                    "ER_JWT_SECRET must be at least {MIN_JWT_SECRET_BYTES} bytes \
                     (generate one with `openssl rand -hex 32`)"
                ),
            )?;
        }
        let shutdown_grace = Duration::from_secs(self.shutdown_grace_seconds);
        Ok(Settings {
            node: Node {
                name: self
                    .node_name
                    .clone()
                    .or_else(|| std::env::var("HOSTNAME").ok())
                    .unwrap_or_else(|| "node".into()),
                cluster: self.cluster_name.clone(),
                ttl: Duration::from_secs(self.node_ttl_seconds),
                shutdown_grace,
                drain_spread: Duration::from_secs(self.drain_spread_seconds)
                    .min(shutdown_grace / 2),
            },
            auth: Auth {
                jwt_secret: self.jwt_secret().to_owned(),
                enabled: self.auth_enabled,
                insecure_dev_jwt: self.jwt_secret.is_none(),
            },
            db: self.db()?,
            redis_url: self.redis_url.clone(),
            grpc: self.grpc()?,
            http: self.http()?,
            publish: self.publish()?,
            rate_limits: RateLimits {
                durable_publish: self.rate_limit_durable_publish,
                live_publish: self.rate_limit_live_publish,
                pull: self.rate_limit_pull,
                admin: self.rate_limit_admin,
            },
            live: self.live()?,
            delivery: self.delivery()?,
            retention: self.retention()?,
        })
    }

    fn db(&self) -> Result<Db, String> {
        check(self.db_pool_size >= 4, "ER_DB_POOL_SIZE must be at least 4")?;
        check(
            (1..=64).contains(&self.writers),
            "ER_WRITERS must be between 1 and 64",
        )?;
        check(
            self.pull_timeout_ms >= 100,
            "ER_PULL_TIMEOUT_MS must be at least 100",
        )?;
        Ok(Db {
            url: self.database_url.clone(),
            pool_size: self.db_pool_size,
            writers: self.writers,
            pull_timeout: Duration::from_millis(self.pull_timeout_ms),
        })
    }

    fn grpc(&self) -> Result<Grpc, String> {
        check(
            self.grpc_max_message_bytes >= 64 * 1024,
            "ER_GRPC_MAX_MESSAGE_BYTES must be at least 65536",
        )?;
        check(
            self.grpc_max_message_bytes >= self.max_event_bytes,
            format!(
                "ER_GRPC_MAX_MESSAGE_BYTES ({}) must be at least ER_MAX_EVENT_BYTES ({})",
                self.grpc_max_message_bytes, self.max_event_bytes
            ),
        )?;
        check(
            self.keepalive_seconds > 0,
            "ER_KEEPALIVE_SECONDS must be at least 1",
        )?;
        Ok(Grpc {
            addr: self.grpc_addr,
            max_message_bytes: self.grpc_max_message_bytes,
            keepalive: Duration::from_secs(self.keepalive_seconds),
        })
    }

    fn http(&self) -> Result<Http, String> {
        check(
            self.ws_max_message_bytes >= 4096,
            "ER_WS_MAX_MESSAGE_BYTES must be at least 4096",
        )?;
        check(
            self.ws_join_timeout_seconds > 0,
            "ER_WS_JOIN_TIMEOUT_SECONDS must be at least 1",
        )?;
        check(
            self.keepalive_seconds > 0,
            "ER_KEEPALIVE_SECONDS must be at least 1",
        )?;
        check(
            self.ws_idle_timeout_seconds > self.keepalive_seconds,
            "ER_WS_IDLE_TIMEOUT_SECONDS must be longer than ER_KEEPALIVE_SECONDS",
        )?;
        check(
            (1..=720).contains(&self.ui_session_hours),
            "ER_UI_SESSION_HOURS must be between 1 and 720",
        )?;
        let keepalive = Duration::from_secs(self.keepalive_seconds);
        Ok(Http {
            addr: self.http_addr,
            metrics_addr: self.metrics_addr,
            keepalive,
            websocket: WebSocketLimits {
                max_message: self.ws_max_message_bytes,
                join_timeout: Duration::from_secs(self.ws_join_timeout_seconds),
                keepalive,
                idle_timeout: Duration::from_secs(self.ws_idle_timeout_seconds),
            },
            ws_max_connection_age: (self.ws_max_connection_age_seconds > 0)
                .then(|| Duration::from_secs(self.ws_max_connection_age_seconds)),
            max_connections_per_address: self.max_connections_per_address,
            trusted_proxies: self.trusted_proxies.clone(),
            ui_secure_cookies: self.ui_secure_cookies,
            ui_session_ttl: Duration::from_secs(self.ui_session_hours * 3600),
        })
    }

    fn publish(&self) -> Result<PublishLimits, String> {
        check(
            self.max_events_per_request > 0,
            "ER_MAX_EVENTS_PER_REQUEST must be at least 1",
        )?;
        check(
            self.max_event_bytes >= 1024,
            "ER_MAX_EVENT_BYTES must be at least 1024",
        )?;
        Ok(PublishLimits {
            max_event_bytes: self.max_event_bytes,
            max_events_per_request: self.max_events_per_request,
        })
    }

    fn live(&self) -> Result<Live, String> {
        check(
            self.live_buffer_bytes >= 1024 * 1024,
            "ER_LIVE_BUFFER_BYTES must be at least 1048576",
        )?;
        check(
            self.live_replay_concurrency > 0,
            "ER_LIVE_REPLAY_CONCURRENCY must be at least 1",
        )?;
        Ok(Live {
            buffer: self.live_buffer,
            buffer_bytes: self.live_buffer_bytes,
            replay_concurrency: self.live_replay_concurrency,
        })
    }

    fn delivery(&self) -> Result<Delivery, String> {
        check(
            self.webhook_max_attempts > 0,
            "ER_WEBHOOK_MAX_ATTEMPTS must be at least 1",
        )?;
        check(
            self.webhook_max_concurrency > 0,
            "ER_WEBHOOK_MAX_CONCURRENCY must be at least 1",
        )?;
        check(
            self.webhook_rate_limit.is_finite() && self.webhook_rate_limit >= 0.0,
            "ER_WEBHOOK_RATE_LIMIT must be 0 or more",
        )?;
        Ok(Delivery {
            connect_timeout: Duration::from_millis(self.webhook_connect_timeout_ms),
            allowed_networks: self.webhook_allowed_networks.clone(),
            max_concurrency: self.webhook_max_concurrency,
            poll: Duration::from_millis(self.webhook_poll_ms.max(10)),
            retry_schedule: self.webhook_retry_schedule.clone(),
            max_attempts: self.webhook_max_attempts,
            pause_on_exhausted: self.webhook_pause_on_exhausted,
            timeout: Duration::from_millis(self.webhook_timeout_ms),
            rate_limit: (self.webhook_rate_limit > 0.0).then_some(self.webhook_rate_limit),
        })
    }

    fn retention(&self) -> Result<Retention, String> {
        let policy = Policy::from_parts(
            i64::try_from(self.retention_max_age_seconds).unwrap_or(i64::MAX),
            i64::try_from(self.retention_max_events).unwrap_or(i64::MAX),
            i64::try_from(self.retention_max_bytes).unwrap_or(i64::MAX),
            self.retention_drop_undelivered,
        )
        .map_err(|e| format!("ER_RETENTION_MAX_*: {e}"))?;
        check(
            self.retention_partition_events > 0,
            "ER_RETENTION_PARTITION_EVENTS must be at least 1",
        )?;
        check(
            self.retention_interval_ms >= 10,
            "ER_RETENTION_INTERVAL_MS must be at least 10",
        )?;
        for (name, days) in [
            (
                "ER_RETENTION_DELIVERED_ATTEMPTS_DAYS",
                self.retention_delivered_attempts_days,
            ),
            (
                "ER_RETENTION_FAILED_ATTEMPTS_DAYS",
                self.retention_failed_attempts_days,
            ),
            (
                "ER_RETENTION_DEAD_LETTERS_DAYS",
                self.retention_dead_letters_days,
            ),
        ] {
            check(
                (1..=3650).contains(&days),
                format!("{name} must be between 1 and 3650"),
            )?;
        }
        check(
            (10..=86_400).contains(&self.retention_spill_seconds),
            "ER_RETENTION_SPILL_SECONDS must be between 10 and 86400",
        )?;
        Ok(Retention {
            defaults: TopicDefaults {
                policy,
                partition_span: i64::try_from(self.retention_partition_events)
                    .unwrap_or(DEFAULT_PARTITION_SPAN),
            },
            interval: Duration::from_millis(self.retention_interval_ms),
            drop_pause: Duration::from_millis(self.retention_drop_pause_ms),
            delivered_attempts: Duration::from_secs(self.retention_delivered_attempts_days * DAY),
            failed_attempts: Duration::from_secs(self.retention_failed_attempts_days * DAY),
            dead_letters: Duration::from_secs(self.retention_dead_letters_days * DAY),
            spill: Duration::from_secs(self.retention_spill_seconds),
        })
    }

    /// The JWT secret a node serves with: `ER_JWT_SECRET`, or the public development secret
    /// when `ER_INSECURE_DEV_JWT=true`. A node refuses to start without either.
    pub fn serving_jwt_secret(&self) -> Result<&str, String> {
        match (&self.jwt_secret, self.insecure_dev_jwt) {
            (Some(s), _) => Ok(s),
            (None, true) => Ok(DEV_JWT_SECRET),
            (None, false) => Err(format!(
                "ER_JWT_SECRET is required (at least {MIN_JWT_SECRET_BYTES} bytes, e.g. \
                 `openssl rand -hex 32`); on a private development machine \
                 ER_INSECURE_DEV_JWT=true starts with a public secret instead"
            )),
        }
    }

    /// The JWT secret in force (the development secret when none is set).
    pub fn jwt_secret(&self) -> &str {
        self.serving_jwt_secret().unwrap_or(DEV_JWT_SECRET)
    }
}
