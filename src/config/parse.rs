//! Building the typed sections from the flat [`Config`] the command line and environment
//! fill: every check of a value is made here, once, and its message names the variable to fix.

use super::sections::{
    AuthConfig, ConnectionAge, Db, DeliveryConfig, Grpc, Http, LiveConfig, Node, PublishLimits,
    RateLimits, RetentionConfig, Settings, WebSocketLimits,
};
use super::{Config, DEV_JWT_SECRET, MIN_JWT_SECRET_BYTES};
use crate::topics::{DEFAULT_PARTITION_SPAN, Policy, TopicDefaults};
use std::time::Duration;

const DAY: u64 = 86_400;

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
            auth: AuthConfig {
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
            max_connection_age: (self.grpc_max_connection_age_seconds > 0).then(|| ConnectionAge {
                age: Duration::from_secs(self.grpc_max_connection_age_seconds),
                grace: Duration::from_secs(self.grpc_max_connection_age_grace_seconds),
            }),
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
        check(
            (1..=crate::topics::MAX_DEDUPE_WINDOW_SECONDS as u64)
                .contains(&self.dedupe_window_seconds),
            "ER_DEDUPE_WINDOW_SECONDS must be between 1 and 2592000 (30 days)",
        )?;
        Ok(PublishLimits {
            max_event_bytes: self.max_event_bytes,
            max_events_per_request: self.max_events_per_request,
            dedupe_window: Duration::from_secs(self.dedupe_window_seconds),
        })
    }

    fn live(&self) -> Result<LiveConfig, String> {
        check(
            self.live_buffer_bytes >= 1024 * 1024,
            "ER_LIVE_BUFFER_BYTES must be at least 1048576",
        )?;
        check(
            self.live_replay_concurrency > 0,
            "ER_LIVE_REPLAY_CONCURRENCY must be at least 1",
        )?;
        Ok(LiveConfig {
            buffer: self.live_buffer,
            buffer_bytes: self.live_buffer_bytes,
            replay_concurrency: self.live_replay_concurrency,
        })
    }

    fn delivery(&self) -> Result<DeliveryConfig, String> {
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
        Ok(DeliveryConfig {
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

    fn retention(&self) -> Result<RetentionConfig, String> {
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
        Ok(RetentionConfig {
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
