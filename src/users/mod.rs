//! Users of the admin UI: email addresses with Argon2id password hashes, and their server-side
//! sessions (see [`sessions`]). This module owns the rules (what an email and a password must
//! look like) and the SQL of the `users` and `sessions` tables.

mod sessions;
mod throttle;

pub use sessions::{Session, random_token};
pub use throttle::{HASH_CONCURRENCY, MAX_ADDR_FAILURES, MAX_FAILURES, WINDOW};

use crate::error::{Error, Result, UNIQUE_VIOLATION, sqlstate};
use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use std::net::IpAddr;
use std::sync::{Arc, LazyLock};
use throttle::{Keys, Throttle};
use tokio::sync::OwnedSemaphorePermit;
use uuid::Uuid;

/// Shortest password accepted.
pub const MIN_PASSWORD_LEN: usize = 8;
/// Longest password accepted (bounds the hashing work a request can ask for).
pub const MAX_PASSWORD_LEN: usize = 1024;

/// A syntactically plausible email address, trimmed and lowercased.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    /// Parses an address: one `@` with text on both sides, no spaces, at most 254 bytes.
    pub fn parse(s: &str) -> Result<Self> {
        let s = s.trim().to_lowercase();
        let ok = s.len() <= 254
            && !s.chars().any(|c| c.is_whitespace() || c.is_control())
            && s.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty() && !domain.is_empty() && !domain.contains('@')
            });
        if ok {
            Ok(Email(s))
        } else {
            Err(Error::invalid(
                "enter an email address like admin@example.com",
            ))
        }
    }

    /// The normalised address.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Checks a new password's length (the only rule: long passphrases beat composition rules).
pub fn check_password(p: &str) -> Result<()> {
    let n = p.chars().count();
    if n < MIN_PASSWORD_LEN {
        Err(Error::invalid(format!(
            "use at least {MIN_PASSWORD_LEN} characters"
        )))
    } else if p.len() > MAX_PASSWORD_LEN {
        Err(Error::invalid(format!(
            "use at most {MAX_PASSWORD_LEN} bytes"
        )))
    } else {
        Ok(())
    }
}

/// A user as listed.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct User {
    /// Id.
    pub id: Uuid,
    /// Normalised email address.
    pub email: String,
    /// When the user was added.
    pub inserted_at: DateTime<Utc>,
}

/// The users service.
#[derive(Clone)]
pub struct Users {
    pool: PgPool,
    throttle: Arc<Throttle>,
}

/// Hashes off the async workers (Argon2 is deliberately slow: tens of milliseconds, 19 MiB),
/// holding a hashing slot throughout.
async fn hash(password: String, slot: OwnedSemaphorePermit) -> Result<String> {
    tokio::task::spawn_blocking(move || {
        let _slot = slot;
        Argon2::default()
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
            .map_err(|e| Error::Internal(anyhow::anyhow!("hashing a password: {e}")))
    })
    .await
    .map_err(|e| Error::Internal(e.into()))?
}

/// Argon2id hash of a random string nobody knows, verified against when the email is unknown
/// so that costs the same time as a wrong password. Made once per process.
static DUMMY_HASH: LazyLock<String> = LazyLock::new(|| {
    Argon2::default()
        .hash_password(sessions::random_token(32).as_bytes())
        .map(|h| h.to_string())
        .unwrap_or_default()
});

/// Verifies off the async workers (`None`: against the dummy hash), holding a hashing slot
/// throughout; a malformed stored hash never matches.
async fn verify(
    password: String,
    stored: Option<String>,
    slot: OwnedSemaphorePermit,
) -> Result<bool> {
    tokio::task::spawn_blocking(move || {
        let _slot = slot;
        let known = stored.is_some();
        let stored = stored.unwrap_or_else(|| DUMMY_HASH.clone());
        let matches = PasswordHash::new(&stored).is_ok_and(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        });
        matches && known
    })
    .await
    .map_err(|e| Error::Internal(e.into()))
}

impl Users {
    /// The service over a pool.
    pub fn new(pool: PgPool) -> Self {
        Users {
            throttle: Arc::new(Throttle::new(pool.clone())),
            pool,
        }
    }

    /// Adds a user. Refuses a taken address with [`Error::AlreadyExists`].
    #[tracing::instrument(skip(self, password), fields(email = email.as_str()))]
    pub async fn create(&self, email: &Email, password: &str) -> Result<User> {
        check_password(password)?;
        let hash = hash(password.to_owned(), self.throttle.hash_slot().await?).await?;
        sqlx::query_as::<_, User>(
            "INSERT INTO users (id, email, password_hash) VALUES ($1, $2, $3)
             RETURNING id, email, inserted_at",
        )
        .bind(Uuid::now_v7())
        .bind(email.as_str())
        .bind(hash)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| {
            if sqlstate(&e).as_deref() == Some(UNIQUE_VIOLATION) {
                Error::AlreadyExists("a user with that email already exists".into())
            } else {
                e.into()
            }
        })
    }

    /// Every user, by email (a UI lists at most a few dozen).
    pub async fn list(&self) -> Result<Vec<User>> {
        Ok(sqlx::query_as::<_, User>(
            "SELECT id, email, inserted_at FROM users ORDER BY email LIMIT 1000",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Removes a user and its sessions. The last user cannot be removed (nobody could sign in).
    pub async fn delete(&self, id: Uuid) -> Result<User> {
        let mut tx = self.pool.begin().await?;
        // Lock every user row so two removals cannot both see "someone else remains".
        let n: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM users FOR UPDATE")
            .fetch_all(&mut *tx)
            .await?;
        if !n.contains(&id) {
            return Err(Error::not_found("User not found"));
        }
        if n.len() == 1 {
            return Err(Error::FailedPrecondition(
                "the last user cannot be removed".into(),
            ));
        }
        let user = sqlx::query_as::<_, User>(
            "DELETE FROM users WHERE id = $1 RETURNING id, email, inserted_at",
        )
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(user)
    }

    /// Changes a password and ends the user's other sessions (`keep` is the caller's own).
    pub async fn set_password(&self, id: Uuid, password: &str, keep: Option<&str>) -> Result<()> {
        check_password(password)?;
        let hash = hash(password.to_owned(), self.throttle.hash_slot().await?).await?;
        let mut tx = self.pool.begin().await?;
        let n =
            sqlx::query("UPDATE users SET password_hash = $2, updated_at = now() WHERE id = $1")
                .bind(id)
                .bind(hash)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        if n == 0 {
            return Err(Error::not_found("User not found"));
        }
        let keep = keep.map(sessions::token_hash).unwrap_or_default();
        sqlx::query("DELETE FROM sessions WHERE user_id = $1 AND token_hash <> $2")
            .bind(id)
            .bind(keep)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The user with that email and password, tried from `addr`, or `None`. An unknown email
    /// costs as much time as a wrong password, so response times do not tell which addresses
    /// exist. Throttled cluster-wide as [`throttle`] describes ([`Error::ResourceExhausted`]
    /// while blocked, or when every hashing slot of the node is busy); a password longer than
    /// [`MAX_PASSWORD_LEN`] is [`Error::InvalidArgument`] and touches no account's counter.
    pub async fn check_credentials(
        &self,
        email: &str,
        password: &str,
        addr: IpAddr,
    ) -> Result<Option<User>> {
        let email = email.trim().to_lowercase();
        let keys = Keys::new(&email, addr);
        if password.len() > MAX_PASSWORD_LEN {
            self.throttle.failed_addr(&keys).await?;
            return Err(Error::invalid(format!(
                "passwords are at most {MAX_PASSWORD_LEN} bytes"
            )));
        }
        self.throttle.check(&keys).await?;
        let slot = self.throttle.try_hash()?;
        let row: Option<(Uuid, String, DateTime<Utc>, String)> = sqlx::query_as(
            "SELECT id, email, inserted_at, password_hash FROM users WHERE email = $1",
        )
        .bind(&email)
        .fetch_optional(&self.pool)
        .await?;
        let stored = row.as_ref().map(|(.., h)| h.clone());
        let ok = verify(password.to_owned(), stored, slot).await?;
        if ok {
            self.throttle.succeeded(&keys).await?;
        } else {
            self.throttle.failed(&keys).await?;
        }
        Ok(row.filter(|_| ok).map(|(id, email, inserted_at, _)| User {
            id,
            email,
            inserted_at,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        let table = [
            ("Admin@Example.com ", Some("admin@example.com")),
            ("a@b", Some("a@b")),
            ("", None),
            ("no-at", None),
            ("@x", None),
            ("x@", None),
            ("a b@c", None),
            ("a@b@c", None),
        ];
        for (input, want) in table {
            assert_eq!(
                Email::parse(input).ok().as_ref().map(Email::as_str),
                want,
                "{input:?}"
            );
        }
    }

    #[test]
    fn passwords() {
        assert!(check_password("short").is_err());
        assert!(check_password("long enough").is_ok());
        assert!(check_password(&"x".repeat(MAX_PASSWORD_LEN + 1)).is_err());
    }

    #[test]
    fn dummy_hash_parses() {
        assert!(PasswordHash::new(&DUMMY_HASH).is_ok());
    }
}
