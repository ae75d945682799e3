//! A topic's retention policy as a typed value: what to keep (by age, count and size, any
//! combination, or everything) and whether retention may pass a webhook subscription that has
//! not delivered yet. Parsed once at the edge (gRPC fields, UI form text, environment); the
//! rest of the code only sees valid policies.

use crate::error::{Error, Result};
use std::time::Duration;

/// Longest `max_age` accepted: 100 years (more is "forever", which is no limit at all).
const MAX_AGE: Duration = Duration::from_secs(100 * 365 * 86_400);

/// What a topic keeps. `None` means no limit by that measure; all `None` keeps everything.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// Events stored longer ago than this are removed.
    pub max_age: Option<Duration>,
    /// Only the newest this many events are kept.
    pub max_events: Option<i64>,
    /// Only the newest events whose stored rows add up to at most this many bytes are kept.
    pub max_bytes: Option<i64>,
    /// Retention may remove events a webhook subscription has not delivered yet; the
    /// subscription then records the skipped range. False: retention waits for it.
    pub drop_undelivered: bool,
}

impl Policy {
    /// From the wire's numbers, where 0 means no limit. Negative numbers are refused.
    pub fn from_parts(
        max_age_seconds: i64,
        max_events: i64,
        max_bytes: i64,
        drop_undelivered: bool,
    ) -> Result<Self> {
        let limit = |v: i64, what: &str| -> Result<Option<i64>> {
            match v {
                0 => Ok(None),
                v if v < 0 => Err(Error::invalid(format!("{what} must not be negative"))),
                v => Ok(Some(v)),
            }
        };
        let max_age = match limit(max_age_seconds, "retention.max_age_seconds")? {
            None => None,
            Some(s) => {
                let d = Duration::from_secs(s.unsigned_abs());
                if d > MAX_AGE {
                    return Err(Error::invalid(
                        "retention.max_age_seconds must be at most 100 years (0 keeps events forever)",
                    ));
                }
                Some(d)
            }
        };
        Ok(Policy {
            max_age,
            max_events: limit(max_events, "retention.max_events")?,
            max_bytes: limit(max_bytes, "retention.max_bytes")?,
            drop_undelivered,
        })
    }

    /// `max_age` in whole seconds, 0 for none (how it is stored and sent).
    pub fn max_age_seconds(&self) -> i64 {
        self.max_age
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
    }

    /// Whether the policy keeps everything.
    pub fn is_forever(&self) -> bool {
        self.max_age.is_none() && self.max_events.is_none() && self.max_bytes.is_none()
    }

    /// A short human description ("7d, 1,000,000 events, forever" style) for the UI.
    pub fn describe(&self) -> String {
        if self.is_forever() {
            return "forever".into();
        }
        let mut parts = Vec::new();
        if let Some(a) = self.max_age {
            parts.push(format!("{} old", format_duration(a)));
        }
        if let Some(n) = self.max_events {
            parts.push(format!("{n} events"));
        }
        if let Some(b) = self.max_bytes {
            parts.push(format_bytes(b));
        }
        format!("at most {}", parts.join(", "))
    }
}

/// What new topics get when their creator does not say, and how their tables are cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TopicDefaults {
    /// Retention of a topic created without one.
    pub policy: Policy,
    /// Offsets per events partition of a new topic.
    pub partition_span: i64,
}

/// Offsets per events partition unless configured: at a few hundred events a second, about
/// an hour of events per partition; a topic kept forever at that rate gains ~9,000 a year.
pub const DEFAULT_PARTITION_SPAN: i64 = 1_000_000;

impl Default for TopicDefaults {
    fn default() -> Self {
        TopicDefaults {
            policy: Policy::default(),
            partition_span: DEFAULT_PARTITION_SPAN,
        }
    }
}

/// Parses a duration as people write it: `90s`, `15m`, `12h`, `7d`, `2w`, or plain seconds.
/// Empty or `0` is no limit (`None`).
pub fn parse_duration(s: &str) -> Result<Option<Duration>> {
    let s = s.trim();
    if s.is_empty() || s == "0" {
        return Ok(None);
    }
    let (num, unit) = split_unit(s);
    let n: u64 = num
        .parse()
        .map_err(|_| Error::invalid(format!("{s:?} is not a duration like 90s, 15m, 12h, 7d")))?;
    let secs = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return Err(Error::invalid(format!("unknown duration unit in {s:?}"))),
    };
    let d = Duration::from_secs(n.saturating_mul(secs));
    if d > MAX_AGE {
        return Err(Error::invalid("a maximum age must be at most 100 years"));
    }
    Ok((!d.is_zero()).then_some(d))
}

/// Parses a size as people write it: `500MB`, `10GB`, `1TB` (powers of 1024, `KiB` too), or
/// plain bytes. Empty or `0` is no limit (`None`).
pub fn parse_bytes(s: &str) -> Result<Option<i64>> {
    let s = s.trim();
    if s.is_empty() || s == "0" {
        return Ok(None);
    }
    let (num, unit) = split_unit(s);
    let n: i64 = num
        .parse()
        .map_err(|_| Error::invalid(format!("{s:?} is not a size like 500MB or 10GB")))?;
    let mult: i64 = match unit
        .to_ascii_lowercase()
        .trim_end_matches("ib")
        .trim_end_matches('b')
    {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => return Err(Error::invalid(format!("unknown size unit in {s:?}"))),
    };
    let b = n
        .checked_mul(mult)
        .ok_or_else(|| Error::invalid(format!("{s:?} is too large")))?;
    if b < 0 {
        return Err(Error::invalid("a size must not be negative"));
    }
    Ok((b > 0).then_some(b))
}

/// Parses a count of events, allowing `_` and `,` as separators. Empty or `0` is no limit.
pub fn parse_count(s: &str) -> Result<Option<i64>> {
    let s: String = s
        .trim()
        .chars()
        .filter(|c| !matches!(c, '_' | ','))
        .collect();
    if s.is_empty() || s == "0" {
        return Ok(None);
    }
    let n: i64 = s
        .parse()
        .map_err(|_| Error::invalid(format!("{s:?} is not a whole number of events")))?;
    if n < 0 {
        return Err(Error::invalid("a number of events must not be negative"));
    }
    Ok(Some(n))
}

fn split_unit(s: &str) -> (&str, &str) {
    let at = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    (s[..at].trim(), s[at..].trim())
}

/// `7d`, `12h`, `90s`: the largest unit that divides the duration.
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    for (unit, secs) in [("w", 604_800), ("d", 86_400), ("h", 3_600), ("m", 60)] {
        if s >= secs && s.is_multiple_of(secs) {
            return format!("{}{unit}", s / secs);
        }
    }
    format!("{s}s")
}

/// `10GB`, `512MB`, `1234B`: the largest binary unit that divides the size.
pub fn format_bytes(b: i64) -> String {
    for (unit, shift) in [("TB", 40), ("GB", 30), ("MB", 20), ("KB", 10)] {
        let m = 1i64 << shift;
        if b >= m && b % m == 0 {
            return format!("{}{unit}", b / m);
        }
    }
    format!("{b}B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_numbers_zero_is_no_limit_negative_is_refused() {
        let p = Policy::from_parts(0, 0, 0, false).unwrap();
        assert!(p.is_forever());
        assert_eq!(p.describe(), "forever");
        let p = Policy::from_parts(3_600, 10, 1 << 20, true).unwrap();
        assert_eq!(p.max_age, Some(Duration::from_secs(3_600)));
        assert_eq!(p.max_age_seconds(), 3_600);
        assert_eq!(p.max_events, Some(10));
        assert_eq!(p.describe(), "at most 1h old, 10 events, 1MB");
        for bad in [(-1, 0, 0), (0, -1, 0), (0, 0, -5), (i64::MAX, 0, 0)] {
            assert!(
                Policy::from_parts(bad.0, bad.1, bad.2, false).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn human_text_parses_and_formats_back() {
        let d = |s| parse_duration(s).unwrap();
        assert_eq!(d(""), None);
        assert_eq!(d("0"), None);
        assert_eq!(d("90"), Some(Duration::from_secs(90)));
        assert_eq!(d("15m"), Some(Duration::from_secs(900)));
        assert_eq!(d("7d"), Some(Duration::from_secs(604_800)));
        assert_eq!(format_duration(Duration::from_secs(604_800)), "1w");
        assert_eq!(format_duration(Duration::from_secs(86_400 * 3)), "3d");
        assert_eq!(format_duration(Duration::from_secs(61)), "61s");
        for bad in ["7x", "d", "-3d", "1.5h", "999999999999w"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        let b = |s| parse_bytes(s).unwrap();
        assert_eq!(b("10GB"), Some(10 << 30));
        assert_eq!(b("512 MiB"), Some(512 << 20));
        assert_eq!(b("1234"), Some(1234));
        assert_eq!(b("0"), None);
        assert_eq!(format_bytes(10 << 30), "10GB");
        assert_eq!(format_bytes(1500), "1500B");
        for bad in ["10XB", "GB", "99999999999TB"] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_count("1,000,000").unwrap(), Some(1_000_000));
        assert_eq!(parse_count("").unwrap(), None);
        assert!(parse_count("ten").is_err());
    }
}
