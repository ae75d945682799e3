//! Delivery settings of one subscription: the node-wide defaults from [`Config`], overridden
//! per subscription by keys of its `config` map. Parsed once when a worker starts, so a bad
//! value is reported (and the default used) instead of failing every attempt.

use crate::config::Config;
use rand::Rng;
use std::collections::BTreeMap;
use std::time::Duration;

/// The default retry schedule, in seconds: the first attempt at once, then 5 s, 30 s, 2 min,
/// 5 min, 30 min, 1 h, 2 h, and every 4 h after that.
pub const DEFAULT_SCHEDULE: &str = "0,5,30,120,300,1800,3600,7200,14400";

/// Delays before each attempt; the last one repeats for every later attempt.
#[derive(Clone, Debug, PartialEq)]
pub struct RetrySchedule(Vec<Duration>);

impl RetrySchedule {
    /// Parses comma-separated seconds (fractions allowed): `"0,5,30"`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let delays = s
            .split(',')
            .map(|part| {
                let part = part.trim();
                part.parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite() && *v >= 0.0 && *v <= 7.0 * 86_400.0)
                    .map(Duration::from_secs_f64)
                    .ok_or_else(|| format!("{part:?} is not a number of seconds (0 to 604800)"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if delays.is_empty() {
            return Err("the retry schedule is empty".into());
        }
        Ok(RetrySchedule(delays))
    }

    /// The delay before attempt `n` (1-based), without jitter.
    pub fn delay_before(&self, attempt: u32) -> Duration {
        let i = (attempt.max(1) - 1) as usize;
        self.0.get(i).or(self.0.last()).copied().unwrap_or_default()
    }

    /// The delay before attempt `n` with ±10 % jitter, so receivers that failed together are
    /// not retried in lockstep.
    pub fn jittered_delay_before(&self, attempt: u32) -> Duration {
        let d = self.delay_before(attempt);
        if d.is_zero() {
            return d;
        }
        d.mul_f64(rand::rng().random_range(0.9..1.1))
    }
}

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
pub struct Settings {
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

impl Settings {
    /// The node-wide defaults.
    pub fn defaults(config: &Config) -> Self {
        Settings {
            schedule: RetrySchedule::parse(&config.webhook_retry_schedule)
                .unwrap_or_else(|_| RetrySchedule(vec![Duration::ZERO])),
            max_attempts: config.webhook_max_attempts.max(1),
            on_exhausted: if config.webhook_pause_on_exhausted {
                OnExhausted::Pause
            } else {
                OnExhausted::Skip
            },
            timeout: Duration::from_millis(config.webhook_timeout_ms),
            rate_limit: (config.webhook_rate_limit > 0.0).then_some(config.webhook_rate_limit),
        }
    }

    /// Defaults overridden by a subscription's `config` keys: `retry_schedule`,
    /// `max_attempts`, `on_exhausted` (`skip` or `pause`), `timeout_ms`, `rate_limit`
    /// (deliveries per second). Returns the settings and the problems found (each ignored).
    pub fn for_subscription(
        defaults: &Settings,
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
    fn schedules_parse_and_repeat_their_last_delay() {
        let s = RetrySchedule::parse(DEFAULT_SCHEDULE).unwrap();
        assert_eq!(s.delay_before(1), Duration::ZERO);
        assert_eq!(s.delay_before(2), Duration::from_secs(5));
        assert_eq!(s.delay_before(9), Duration::from_secs(14_400));
        assert_eq!(s.delay_before(20), Duration::from_secs(14_400));
        let s = RetrySchedule::parse("0, 0.25").unwrap();
        assert_eq!(s.delay_before(3), Duration::from_millis(250));
        for bad in ["", "a", "1,,2", "-1", "NaN", "1e9"] {
            assert!(RetrySchedule::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        let s = RetrySchedule::parse("0,10").unwrap();
        assert_eq!(s.jittered_delay_before(1), Duration::ZERO);
        for _ in 0..100 {
            let d = s.jittered_delay_before(2).as_secs_f64();
            assert!((9.0..=11.0).contains(&d), "{d}");
        }
    }

    #[test]
    fn subscription_config_overrides_defaults_and_reports_bad_values() {
        let defaults = Settings::defaults(&Config::for_database("postgres://x"));
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
        let (s, problems) = Settings::for_subscription(&defaults, &config);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(s.max_attempts, 3);
        assert_eq!(s.on_exhausted, OnExhausted::Pause);
        assert_eq!(s.timeout, Duration::from_millis(500));
        assert_eq!(s.min_interval(), Some(Duration::from_millis(100)));
        let bad: BTreeMap<String, String> = [("max_attempts", "0"), ("on_exhausted", "drop")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let (s, problems) = Settings::for_subscription(&defaults, &bad);
        assert_eq!(problems.len(), 2);
        assert_eq!(s, defaults);
    }
}
