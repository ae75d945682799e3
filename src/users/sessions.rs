//! Server-side sessions of UI users, and sign-in throttling. The cookie holds a random token;
//! the table holds only its SHA-256, the user, an expiry and the session's CSRF token. Signing
//! out deletes the row, so a copied cookie stops working everywhere at once.
//!
//! Throttling: after [`MAX_FAILURES`] wrong passwords for one email within [`WINDOW`], that
//! email cannot sign in on this node until the window ends, so passwords cannot be guessed at
//! the speed of the network. Kept per node, in memory and bounded: a cluster of N nodes allows
//! N times the attempts, which still turns guessing from millions per hour into dozens. The
//! right password does not bypass an active block.

use super::Users;
use crate::error::Result;
use chrono::{DateTime, Utc};
use rand::Rng;
use rand::distr::Alphanumeric;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// A live session.
#[derive(Clone, Debug)]
pub struct Session {
    /// The signed-in user.
    pub user_id: Uuid,
    /// Their email.
    pub email: String,
    /// Token every form of this session must post back.
    pub csrf_token: String,
    /// When it stops working.
    pub expires_at: DateTime<Utc>,
}

/// SHA-256 of a session token (tokens are high-entropy, so a fast hash is enough).
pub(crate) fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// A random URL-safe token of `len` characters.
pub fn random_token(len: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

impl Users {
    /// Starts a session for a user; returns the cookie token (shown only here) and the session.
    /// Expired sessions are swept at the same time, so the table stays small without a job.
    pub async fn start_session(&self, user_id: Uuid, ttl: Duration) -> Result<(String, Session)> {
        let token = random_token(48);
        let csrf = random_token(43);
        let ttl = chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::hours(12));
        let expires_at = Utc::now() + ttl;
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM sessions WHERE expires_at < now()")
            .execute(&mut *tx)
            .await?;
        let email: String = sqlx::query_scalar(
            "INSERT INTO sessions (token_hash, user_id, csrf_token, expires_at)
             VALUES ($1, $2, $3, $4)
             RETURNING (SELECT email FROM users WHERE id = $2)",
        )
        .bind(token_hash(&token))
        .bind(user_id)
        .bind(&csrf)
        .bind(expires_at)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok((
            token,
            Session {
                user_id,
                email,
                csrf_token: csrf,
                expires_at,
            },
        ))
    }

    /// The unexpired session of a cookie token, if any.
    pub async fn session(&self, token: &str) -> Result<Option<Session>> {
        let row: Option<(Uuid, String, String, DateTime<Utc>)> = sqlx::query_as(
            "SELECT s.user_id, u.email, s.csrf_token, s.expires_at
             FROM sessions s JOIN users u ON u.id = s.user_id
             WHERE s.token_hash = $1 AND s.expires_at > now()",
        )
        .bind(token_hash(token))
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(user_id, email, csrf_token, expires_at)| Session {
            user_id,
            email,
            csrf_token,
            expires_at,
        }))
    }

    /// Ends a session (sign-out). Unknown tokens are ignored.
    pub async fn end_session(&self, token: &str) -> Result<()> {
        sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
            .bind(token_hash(token))
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// Wrong passwords allowed per email and window.
pub const MAX_FAILURES: u32 = 10;
/// Length of the window.
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
/// Emails tracked at most (bounds memory under a spray of made-up addresses).
const MAX_TRACKED: usize = 10_000;

/// Failure counts by email.
#[derive(Default)]
pub struct Throttle {
    // A std mutex: held only for a map lookup or update, never across an await.
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

impl Throttle {
    /// Time left before `email` may try again, if it is blocked now.
    pub fn blocked_for(&self, email: &str) -> Option<Duration> {
        let map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let (n, since) = map.get(email)?;
        let left = WINDOW.checked_sub(since.elapsed())?;
        (*n >= MAX_FAILURES).then_some(left)
    }

    /// Counts a wrong password.
    pub fn failed(&self, email: &str) {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_TRACKED {
            map.retain(|_, (_, since)| since.elapsed() < WINDOW);
            if map.len() >= MAX_TRACKED {
                map.clear();
            }
        }
        let entry = map.entry(email.to_owned()).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= WINDOW {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
    }

    /// Forgets the failures of an email after a successful sign-in.
    pub fn succeeded(&self, email: &str) {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(email);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_hashed() {
        let (a, b) = (random_token(48), random_token(48));
        assert_eq!(a.len(), 48);
        assert_ne!(a, b);
        assert_eq!(token_hash(&a), token_hash(&a));
        assert_ne!(token_hash(&a), token_hash(&b));
    }

    #[test]
    fn blocks_after_the_limit_and_success_clears() {
        let t = Throttle::default();
        for _ in 0..MAX_FAILURES - 1 {
            t.failed("a@b");
        }
        assert!(t.blocked_for("a@b").is_none());
        t.failed("a@b");
        assert!(t.blocked_for("a@b").is_some());
        assert!(
            t.blocked_for("c@d").is_none(),
            "other emails are not affected"
        );
        t.succeeded("a@b");
        assert!(t.blocked_for("a@b").is_none());
    }
}
