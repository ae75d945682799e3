//! Delivery settings of one subscription: the node-wide defaults (the `Delivery` section of
//! the configuration), overridden per subscription by keys of its `config` map. Parsed once
//! when a worker starts, so a bad value is reported (and the default used) instead of failing
//! every attempt.

use crate::config;
pub use crate::config::RetrySchedule;
use std::collections::BTreeMap;
use std::time::Duration;

/// What happens when an event has failed its maximum number of attempts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnExhausted {
    /// Mark it undeliverable and move on to the next event.
    Skip,
    /// Mark it undeliverable and pause the subscription (it stays at that event).
    Pause,
}

/// Effective delivery settings of one subscription.
#[derive(Clone, Debug, PartialEq)]
pub struct DeliverySettings {
    /// Delays before each attempt.
    pub schedule: RetrySchedule,
    /// Attempts per event before it is undeliverable.
    pub max_attempts: u32,
    /// What to do then.
    pub on_exhausted: OnExhausted,
    /// Whole-request timeout (connect, send, read the capped body).
    pub timeout: Duration,
    /// Deliveries per second at most; `None` is unlimited.
    pub rate_limit: Option<f64>,
}

impl DeliverySettings {
    /// The node-wide defaults.
    pub fn defaults(config: &config::DeliveryConfig) -> Self {
        DeliverySettings {
            schedule: config.retry_schedule.clone(),
            max_attempts: config.max_attempts,
            on_exhausted: if config.pause_on_exhausted {
                OnExhausted::Pause
            } else {
                OnExhausted::Skip
            },
            timeout: config.timeout,
            rate_limit: config.rate_limit,
        }
    }

    /// Defaults overridden by a subscription's `config` keys: `retry_schedule`,
    /// `max_attempts`, `on_exhausted` (`skip` or `pause`), `timeout_ms`, `rate_limit`
    /// (deliveries per second). Returns the settings and the problems found (each ignored).
    pub fn for_subscription(
        defaults: &DeliverySettings,
        config: &BTreeMap<String, String>,
    ) -> (Self, Vec<String>) {
        let mut s = defaults.clone();
        let mut problems = Vec::new();
        if let Some(v) = config.get("retry_schedule") {
            match RetrySchedule::parse(v) {
                Ok(schedule) => s.schedule = schedule,
                Err(e) => problems.push(format!("retry_schedule: {e}")),
            }
        }
        if let Some(v) = config.get("max_attempts") {
            match v.trim().parse::<u32>() {
                Ok(n) if n >= 1 => s.max_attempts = n,
                _ => problems.push(format!("max_attempts: {v:?} is not a number >= 1")),
            }
        }
        if let Some(v) = config.get("on_exhausted") {
            match v.trim() {
                "skip" => s.on_exhausted = OnExhausted::Skip,
                "pause" => s.on_exhausted = OnExhausted::Pause,
                _ => problems.push(format!("on_exhausted: {v:?} is not skip or pause")),
            }
        }
        if let Some(v) = config.get("timeout_ms") {
            match v.trim().parse::<u64>() {
                Ok(ms) if (1..=300_000).contains(&ms) => s.timeout = Duration::from_millis(ms),
                _ => problems.push(format!("timeout_ms: {v:?} is not 1 to 300000")),
            }
        }
        if let Some(v) = config.get("rate_limit") {
            match v.trim().parse::<f64>() {
                Ok(r) if r.is_finite() && r > 0.0 => s.rate_limit = Some(r),
                Ok(0.0) => s.rate_limit = None,
                _ => problems.push(format!("rate_limit: {v:?} is not a positive number")),
            }
        }
        (s, problems)
    }

    /// The shortest spacing between two deliveries under the rate limit.
    pub fn min_interval(&self) -> Option<Duration> {
        self.rate_limit.map(|r| Duration::from_secs_f64(1.0 / r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscription_config_overrides_defaults_and_reports_bad_values() {
        let settings = config::Config::for_database("postgres://x")
            .settings()
            .unwrap();
        let defaults = DeliverySettings::defaults(&settings.delivery);
        assert_eq!(defaults.max_attempts, 20);
        assert_eq!(defaults.on_exhausted, OnExhausted::Skip);
        let config: BTreeMap<String, String> = [
            ("retry_schedule", "0,0.1"),
            ("max_attempts", "3"),
            ("on_exhausted", "pause"),
            ("timeout_ms", "500"),
            ("rate_limit", "10"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let (s, problems) = DeliverySettings::for_subscription(&defaults, &config);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(s.max_attempts, 3);
        assert_eq!(s.on_exhausted, OnExhausted::Pause);
        assert_eq!(s.timeout, Duration::from_millis(500));
        assert_eq!(s.min_interval(), Some(Duration::from_millis(100)));
        let bad: BTreeMap<String, String> = [("max_attempts", "0"), ("on_exhausted", "drop")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let (s, problems) = DeliverySettings::for_subscription(&defaults, &bad);
        assert_eq!(problems.len(), 2);
        assert_eq!(s, defaults);
    }
}
