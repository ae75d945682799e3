//! Rate limits per API key and per kind of call, in fixed one-second windows, shared by every
//! node through Redis (`INCR` on `<cluster>:rl:<kind>:<key>:<second>`), so a limit holds
//! cluster-wide. While Redis is away each node counts on its own (a limit then holds per node),
//! and switches back by itself.

use crate::config::RateLimits;
use crate::error::{Error, Result};
use fred::prelude::*;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};
use uuid::Uuid;

/// The kinds of call limited separately.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CallKind {
    /// PublishEvents with durable = true.
    DurablePublish,
    /// PublishEvents with durable = false.
    LivePublish,
    /// PullEvents and streams.
    Pull,
    /// Everything else (topics, subscriptions, keys, JWTs, dead letters).
    Admin,
}

impl CallKind {
    fn as_str(self) -> &'static str {
        match self {
            CallKind::DurablePublish => "durable_publish",
            CallKind::LivePublish => "live_publish",
            CallKind::Pull => "pull",
            CallKind::Admin => "admin",
        }
    }
}

/// The limit of `kind` in `limits`.
fn limit_of(limits: &RateLimits, kind: CallKind) -> u64 {
    match kind {
        CallKind::DurablePublish => limits.durable_publish,
        CallKind::LivePublish => limits.live_publish,
        CallKind::Pull => limits.pull,
        CallKind::Admin => limits.admin,
    }
}

/// Local counters are dropped once they are this many windows old.
const LOCAL_KEEP_WINDOWS: u64 = 2;

/// The limiter of one node.
pub struct RateLimiter {
    limits: RateLimits,
    redis: Option<Client>,
    prefix: String,
    /// Unix second until which Redis is considered away after a failed command.
    redis_down_until: AtomicU64,
    // A std mutex: held only to bump a counter.
    local: Mutex<HashMap<(Uuid, CallKind), (u64, u64)>>,
    metrics: crate::metrics::Metrics,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl RateLimiter {
    /// A limiter; `redis` None counts per node only.
    pub fn new(
        limits: RateLimits,
        redis: Option<Client>,
        cluster: &str,
        metrics: crate::metrics::Metrics,
    ) -> Self {
        RateLimiter {
            limits,
            redis,
            prefix: format!("{cluster}:rl"),
            redis_down_until: AtomicU64::new(0),
            local: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    /// Counts one call of `kind` by `key` for `rpc`; over the limit is RESOURCE_EXHAUSTED with
    /// the original's message.
    pub async fn check(&self, key: Uuid, kind: CallKind, rpc: &str) -> Result<()> {
        let max = limit_of(&self.limits, kind);
        if max == 0 {
            return Ok(());
        }
        let window = now_secs();
        // Boxed: a Redis command's future is over 5 KB, and unboxed it would sit inside every
        // RPC's future (each is moved into a box by tonic), also when limits are off or Redis
        // is not configured. Measured: the PublishEvents handler's first await held 5.5 KB.
        let count = match Box::pin(self.shared_count(key, kind, window)).await {
            Some(n) => n,
            None => self.local_count(key, kind, window),
        };
        if count > max {
            self.metrics.rate_limited(kind.as_str());
            return Err(Error::ResourceExhausted(format!(
                "Rate limit exceeded for {rpc} at {max} requests per 1 second(s)"
            )));
        }
        Ok(())
    }

    async fn shared_count(&self, key: Uuid, kind: CallKind, window: u64) -> Option<u64> {
        let redis = self.redis.as_ref()?;
        if !redis.is_connected() || self.redis_down_until.load(Ordering::Relaxed) > window {
            return None;
        }
        let k = format!("{}:{}:{key}:{window}", self.prefix, kind.as_str());
        let n: Result<u64, _> = redis.incr(&k).await;
        match n {
            Ok(n) => {
                if n == 1 {
                    // The window's key outlives the window briefly, then goes away by itself.
                    let _: Result<i64, _> = redis.expire(&k, 3, None).await;
                }
                Some(n)
            }
            Err(e) => {
                tracing::warn!(error = %e, "Redis unavailable for rate limits; counting per node");
                self.redis_down_until.store(window + 1, Ordering::Relaxed);
                None
            }
        }
    }

    fn local_count(&self, key: Uuid, kind: CallKind, window: u64) -> u64 {
        let mut local = self.local.lock().unwrap_or_else(|e| e.into_inner());
        if local.len() > 100_000 {
            local.retain(|_, (w, _)| *w + LOCAL_KEEP_WINDOWS > window);
        }
        let entry = local.entry((key, kind)).or_insert((window, 0));
        if entry.0 != window {
            *entry = (window, 0);
        }
        entry.1 += 1;
        entry.1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_windows_count_per_key_and_kind() {
        let limits = RateLimits {
            durable_publish: 2,
            live_publish: 0,
            pull: 1,
            admin: 1,
        };
        let rl = RateLimiter::new(limits, None, "t", crate::metrics::Metrics::new());
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let w = now_secs();
        assert_eq!(rl.local_count(a, CallKind::Pull, w), 1);
        assert_eq!(rl.local_count(a, CallKind::Pull, w), 2);
        assert_eq!(rl.local_count(b, CallKind::Pull, w), 1);
        assert_eq!(rl.local_count(a, CallKind::Admin, w), 1);
        assert_eq!(
            rl.local_count(a, CallKind::Pull, w + 1),
            1,
            "a new window starts at zero"
        );
        for _ in 0..10 {
            assert!(
                rl.check(a, CallKind::LivePublish, "PublishEvents")
                    .await
                    .is_ok()
            );
        }
    }
}
