//! Server-side sessions of UI users. The cookie holds a random token; the table holds only its
//! SHA-256, the user, an expiry and the session's CSRF token. Signing out deletes the row, so a
//! copied cookie stops working everywhere at once. (Sign-in throttling: [`super::throttle`].)

use super::Users;
use crate::error::Result;
use chrono::{DateTime, Utc};
use rand::Rng;
use rand::distr::Alphanumeric;
use sha2::{Digest, Sha256};
use std::time::Duration;
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
}
