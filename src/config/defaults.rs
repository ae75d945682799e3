//! A [`Config`] built in code rather than from a command line: [`Config::for_database`], the
//! defaults clap declares with a database URL and a secret of its own (for tests and
//! embedding), and the `Debug` that never shows a secret. The tests check that the defaults
//! pass every check and that a bad value is named.

use super::{Config, MIN_JWT_SECRET_BYTES};

impl Config {
    /// Defaults for everything but the database, ignoring the environment. For tests and
    /// embedding; `main` uses clap so the environment applies.
    pub fn for_database(database_url: impl Into<String>) -> Self {
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            config: Config,
        }
        use clap::Parser;
        // Parsing an empty command line yields clap's defaults, so they live in one place;
        // environment variables are then overwritten by the explicit fields below.
        let mut config = Wrapper::try_parse_from(["eventrelay", "--database-url", "x"])
            .map(|w| w.config)
            .unwrap_or_else(|e| panic!("built-in defaults must parse: {e}"));
        config.database_url = database_url.into();
        config.redis_url = None;
        // A secret of its own per configuration, as a deployment has.
        config.jwt_secret = Some(crate::users::random_token(MIN_JWT_SECRET_BYTES + 8));
        config.insecure_dev_jwt = false;
        config.auth_enabled = true;
        config.node_name = None;
        config.grpc_addr = ([127, 0, 0, 1], 0).into();
        config.http_addr = ([127, 0, 0, 1], 0).into();
        config
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("database_url", &"<secret>")
            .field("redis_url", &self.redis_url.as_ref().map(|_| "<secret>"))
            .field("grpc_addr", &self.grpc_addr)
            .field("http_addr", &self.http_addr)
            .field("metrics_addr", &self.metrics_addr)
            .field("grpc_max_message_bytes", &self.grpc_max_message_bytes)
            .field("writers", &self.writers)
            .field("dedupe_window_seconds", &self.dedupe_window_seconds)
            .field(
                "grpc_max_connection_age_seconds",
                &self.grpc_max_connection_age_seconds,
            )
            .field("jwt_secret", &self.jwt_secret.as_ref().map(|_| "<secret>"))
            .field("insecure_dev_jwt", &self.insecure_dev_jwt)
            .field("auth_enabled", &self.auth_enabled)
            .field("cluster_name", &self.cluster_name)
            .field("max_event_bytes", &self.max_event_bytes)
            .field("max_events_per_request", &self.max_events_per_request)
            .field("live_buffer", &self.live_buffer)
            .field("db_pool_size", &self.db_pool_size)
            .field("webhook_allowed_networks", &self.webhook_allowed_networks)
            .field("trusted_proxies", &self.trusted_proxies)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DEV_JWT_SECRET, RetrySchedule};

    #[test]
    fn defaults_validate_and_bad_values_are_named() {
        let c = Config::for_database("postgres://x");
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.max_events_per_request, 1000);
        assert_eq!(c.max_event_bytes, 1024 * 1024);
        let mut bad = c.clone();
        bad.cluster_name = "a b".into();
        assert!(bad.validate().unwrap_err().contains("ER_CLUSTER_NAME"));
        let mut bad = c.clone();
        bad.max_events_per_request = 0;
        assert!(
            bad.validate()
                .unwrap_err()
                .contains("ER_MAX_EVENTS_PER_REQUEST")
        );
        let mut bad = c.clone();
        bad.retention_max_age_seconds = 200 * 365 * 86_400;
        assert!(bad.validate().unwrap_err().contains("ER_RETENTION_MAX_"));
        let mut bad = c.clone();
        bad.retention_failed_attempts_days = 0;
        assert!(
            bad.validate()
                .unwrap_err()
                .contains("ER_RETENTION_FAILED_ATTEMPTS_DAYS")
        );
        assert_eq!(c.retention_partition_events, 1_000_000);
        assert_eq!(c.retention_delivered_attempts_days, 7);
    }

    #[test]
    fn jwt_secret_is_required_long_and_only_waived_explicitly() {
        let mut c = Config::for_database("postgres://x");
        assert!(c.jwt_secret.as_ref().unwrap().len() >= MIN_JWT_SECRET_BYTES);
        assert_ne!(
            c.jwt_secret,
            Config::for_database("postgres://x").jwt_secret,
            "each configuration has its own secret"
        );
        c.jwt_secret = Some("x".repeat(MIN_JWT_SECRET_BYTES - 1));
        assert!(c.validate().unwrap_err().contains("ER_JWT_SECRET"));
        c.jwt_secret = None;
        assert_eq!(c.validate(), Ok(()), "other commands need no secret");
        assert!(
            c.serving_jwt_secret()
                .unwrap_err()
                .contains("ER_JWT_SECRET")
        );
        c.insecure_dev_jwt = true;
        assert_eq!(c.serving_jwt_secret(), Ok(DEV_JWT_SECRET));
    }

    #[test]
    fn values_with_a_type_are_parsed_by_clap_and_sections_are_typed() {
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            config: Config,
        }
        use clap::Parser;
        let parse = |schedule: &str| {
            Wrapper::try_parse_from([
                "eventrelay",
                "--database-url",
                "x",
                "--webhook-retry-schedule",
                schedule,
            ])
            .map(|w| w.config)
        };
        let c = parse("0,0.5,2").unwrap();
        assert_eq!(
            c.webhook_retry_schedule.delay_before(2),
            std::time::Duration::from_millis(500)
        );
        let e = parse("0,soon").err().unwrap().to_string();
        assert!(
            e.contains(
                "\"soon\" is not a number of seconds (0 to 604800) (ER_WEBHOOK_RETRY_SCHEDULE)"
            ),
            "{e}"
        );
        let c = Config::for_database("postgres://x");
        assert_eq!(c.webhook_retry_schedule, RetrySchedule::default());
        let s = c.settings().unwrap();
        assert_eq!(s.delivery.max_attempts, 20);
        assert_eq!(
            s.http.ui_session_ttl,
            std::time::Duration::from_secs(12 * 3600)
        );
        assert_eq!(s.node.drain_spread, std::time::Duration::from_secs(10));
        let mut c = c;
        c.jwt_secret = None;
        assert!(
            c.settings()
                .unwrap_err()
                .contains("ER_JWT_SECRET is required")
        );
    }

    #[test]
    fn debug_hides_secrets() {
        let mut c = Config::for_database("postgres://user:hunter2@db/x");
        c.jwt_secret = Some("supersecret-supersecret-supersecret".into());
        let s = format!("{c:?}");
        assert!(!s.contains("hunter2") && !s.contains("supersecret"));
    }
}
