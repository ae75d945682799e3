//! Sign-in throttling, kept in Postgres (`signin_failures`) so it holds on every node at once,
//! and the bound on concurrent password hashing.
//!
//! Policy, checked before any password is hashed:
//! 1. **Address first.** A source address (an IPv6 /64 counts as one) with
//!    [`MAX_ADDR_FAILURES`] wrong passwords in [`WINDOW`] is refused for every email until its
//!    window ends. Every guess costs the guesser's own address, whatever email it targets.
//! 2. **Per email.** An email with [`MAX_FAILURES`] wrong passwords in the window is locked
//!    for the addresses that failed on it (even with the right password), not for others: an
//!    attacker cannot lock an admin out from the admin's own address, and on a locked email
//!    each further guess needs a fresh address.
//!
//! Counters are rows that expire with their window, not a bounded map, so a flood of made-up
//! emails cannot push a real one out. A password longer than the maximum is refused before
//! any account's counter is read or written; it counts against the sender's address only.
//! At most [`HASH_CONCURRENCY`] Argon2 hashes run at once per node; a sign-in beyond that is
//! answered "busy" at once instead of queueing 19 MiB hashes.

use crate::error::{Error, Result};
use sqlx::PgPool;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Wrong passwords per email (from the addresses that made them) and window.
pub const MAX_FAILURES: u32 = 10;
/// Wrong passwords per source address and window, over all emails.
pub const MAX_ADDR_FAILURES: u32 = 30;
/// Length of the window.
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
/// Password hashes (sign-in checks, new passwords) one node computes at once.
pub const HASH_CONCURRENCY: usize = 2;

/// The counters one sign-in is checked against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keys {
    addr: String,
    email: String,
    pair: String,
}

impl Keys {
    /// The counters of `email` tried from `addr`.
    pub fn new(email: &str, addr: IpAddr) -> Keys {
        let addr = addr_key(addr);
        Keys {
            pair: format!("{email}\n{addr}"),
            email: email.to_owned(),
            addr,
        }
    }
}

/// An address as counted: IPv4 as is (and IPv4-mapped IPv6 as IPv4), IPv6 by its /64, the
/// block one subscriber usually holds.
pub fn addr_key(addr: IpAddr) -> String {
    match addr {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
        v4 => v4.to_string(),
    }
}

/// The throttle of one node over the shared table.
pub struct Throttle {
    pool: PgPool,
    hashing: Arc<Semaphore>,
}

impl Throttle {
    /// Over `pool`.
    pub fn new(pool: PgPool) -> Self {
        Throttle {
            pool,
            hashing: Arc::new(Semaphore::new(HASH_CONCURRENCY)),
        }
    }

    /// A hashing slot now, or "busy" (RESOURCE_EXHAUSTED) when every slot is taken.
    pub fn try_hash(&self) -> Result<OwnedSemaphorePermit> {
        self.hashing.clone().try_acquire_owned().map_err(|_| {
            Error::ResourceExhausted(
                "too many sign-ins at once on this node: try again in a moment".into(),
            )
        })
    }

    /// A hashing slot, waiting for one (for signed-in users setting passwords).
    pub async fn hash_slot(&self) -> Result<OwnedSemaphorePermit> {
        self.hashing
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| Error::Internal(e.into()))
    }

    /// Refuses the sign-in (RESOURCE_EXHAUSTED naming the minutes left) when the address is
    /// blocked, or the email is locked and this address failed on it.
    pub async fn check(&self, keys: &Keys) -> Result<()> {
        let rows: Vec<(String, i32, f64)> = sqlx::query_as(
            "SELECT scope, failures,
                    extract(epoch FROM window_start + make_interval(secs => $4) - now())::float8
             FROM signin_failures
             WHERE ((scope = 'addr' AND key = $1) OR (scope = 'email' AND key = $2)
                    OR (scope = 'pair' AND key = $3))
               AND window_start > now() - make_interval(secs => $4)",
        )
        .bind(&keys.addr)
        .bind(&keys.email)
        .bind(&keys.pair)
        .bind(WINDOW.as_secs_f64())
        .fetch_all(&self.pool)
        .await?;
        let get = |scope: &str| rows.iter().find(|r| r.0 == scope).map(|r| (r.1, r.2));
        let minutes = |secs: f64| (secs.max(0.0) / 60.0).ceil().max(1.0) as u64;
        if let Some((n, left)) = get("addr")
            && n >= MAX_ADDR_FAILURES as i32
        {
            return Err(Error::ResourceExhausted(format!(
                "too many failed sign-ins from this address: try again in {} minute(s)",
                minutes(left)
            )));
        }
        if let (Some((n, left)), Some(_)) = (get("email"), get("pair"))
            && n >= MAX_FAILURES as i32
        {
            return Err(Error::ResourceExhausted(format!(
                "too many failed sign-ins for this email: try again in {} minute(s)",
                minutes(left)
            )));
        }
        Ok(())
    }

    /// Counts a wrong password for the address, the email and the pair.
    pub async fn failed(&self, keys: &Keys) -> Result<()> {
        self.count(&[
            ("addr", &keys.addr),
            ("email", &keys.email),
            ("pair", &keys.pair),
        ])
        .await
    }

    /// Counts a refused request against the address alone (an over-long password: no account
    /// is involved).
    pub async fn failed_addr(&self, keys: &Keys) -> Result<()> {
        self.count(&[("addr", &keys.addr)]).await
    }

    /// Forgets the pair's failures after a successful sign-in (the email's count stays: an
    /// attack on it goes on regardless).
    pub async fn succeeded(&self, keys: &Keys) -> Result<()> {
        sqlx::query("DELETE FROM signin_failures WHERE scope = 'pair' AND key = $1")
            .bind(&keys.pair)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn count(&self, counters: &[(&str, &String)]) -> Result<()> {
        let scopes: Vec<&str> = counters.iter().map(|c| c.0).collect();
        let keys: Vec<&str> = counters.iter().map(|c| c.1.as_str()).collect();
        let window = WINDOW.as_secs_f64();
        // A window that ended starts again at this failure.
        sqlx::query(
            "INSERT INTO signin_failures AS f (scope, key, window_start, failures)
             SELECT s, k, now(), 1 FROM unnest($1::text[], $2::text[]) AS t(s, k)
             ON CONFLICT (scope, key) DO UPDATE SET
               failures = CASE WHEN f.window_start <= now() - make_interval(secs => $3)
                               THEN 1 ELSE f.failures + 1 END,
               window_start = CASE WHEN f.window_start <= now() - make_interval(secs => $3)
                                   THEN now() ELSE f.window_start END",
        )
        .bind(&scopes)
        .bind(&keys)
        .bind(window)
        .execute(&self.pool)
        .await?;
        // Expired counters go a few at a time, so the table stays as small as the attacks.
        sqlx::query(
            "DELETE FROM signin_failures WHERE ctid = ANY (ARRAY(
               SELECT ctid FROM signin_failures
               WHERE window_start <= now() - make_interval(secs => $1) LIMIT 100))",
        )
        .bind(window)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_counted_by_v4_and_v6_64() {
        let key = |s: &str| addr_key(s.parse().unwrap());
        assert_eq!(key("192.0.2.7"), "192.0.2.7");
        assert_eq!(key("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(key("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::/64");
        assert_eq!(key("2001:db8:1:2:ffff::1"), key("2001:db8:1:2::9"));
        assert_ne!(key("2001:db8:1:3::1"), key("2001:db8:1:2::1"));
        let k = Keys::new("a@b", "192.0.2.7".parse().unwrap());
        assert_eq!(k.pair, "a@b\n192.0.2.7");
    }
}
