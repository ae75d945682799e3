//! The webhook retry schedule as a typed value: parsed once, from `ER_WEBHOOK_RETRY_SCHEDULE`
//! by clap's value parser or from a subscription's `retry_schedule` setting, and never kept
//! as text.

use rand::Rng;
use std::str::FromStr;
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

    /// Parses `ER_WEBHOOK_RETRY_SCHEDULE` (clap's value parser): the message names it.
    pub fn parse_setting(s: &str) -> Result<Self, String> {
        Self::parse(s).map_err(|e| format!("{e} (ER_WEBHOOK_RETRY_SCHEDULE)"))
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

impl FromStr for RetrySchedule {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        RetrySchedule::parse(s)
    }
}

impl Default for RetrySchedule {
    fn default() -> Self {
        RetrySchedule::parse(DEFAULT_SCHEDULE).unwrap_or(RetrySchedule(vec![Duration::ZERO]))
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
}
