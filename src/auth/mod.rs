//! Authentication: bearer tokens (Base64 `key:secret` or JWT) to a [`Principal`].
//!
//! Lookups are cached per node for at most [`CACHE_TTL`], keyed by the public key part but
//! always re-checking the secret's hash, so a wrong secret never passes (the original cached
//! by key alone for an hour) and a revoked key is refused everywhere within the TTL.

mod jwt;
mod keys;
mod principal;

pub use jwt::{Claims, DEFAULT_TTL_SECONDS, Jwt, looks_like_jwt};
pub use keys::{ApiKey, ApiKeys};
pub use principal::{KeyType, Principal, SubscriptionGrant, TopicGrant};

use crate::error::{Error, Result};
use base64::Engine;
use keys::{KeyRecord, hash_secret};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;
use uuid::Uuid;

/// Longest a node trusts a cached key lookup.
pub const CACHE_TTL: Duration = Duration::from_secs(1);
/// Cache entries kept before the cache is cleared (bounds memory under key-guessing).
const CACHE_MAX: usize = 10_000;

#[derive(Clone)]
struct Cached {
    at: Instant,
    record: Option<KeyRecord>,
    principal: Option<Arc<Principal>>,
}

/// Authenticates callers.
#[derive(Clone)]
pub struct Auth {
    keys: ApiKeys,
    jwt: Jwt,
    enabled: bool,
    // A std mutex: held only for a map lookup or insert, never across an await.
    cache: Arc<Mutex<HashMap<String, Cached>>>,
}

impl Auth {
    /// The service; with `enabled` false every caller is an anonymous admin.
    pub fn new(keys: ApiKeys, jwt: Jwt, enabled: bool) -> Self {
        Auth {
            keys,
            jwt,
            enabled,
            cache: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The key store.
    pub fn keys(&self) -> &ApiKeys {
        &self.keys
    }

    /// The JWT signer.
    pub fn jwt(&self) -> &Jwt {
        &self.jwt
    }

    /// Authenticates an `authorization` header value (`Bearer <token>`).
    pub async fn authenticate(&self, authorization: Option<&str>) -> Result<Principal> {
        Ok(self.authenticate_until(authorization).await?.0)
    }

    /// Like [`Auth::authenticate`], also answering when the bearer expires by itself: a JWT's
    /// `exp` (unix seconds); `None` for API keys, which last until revoked.
    pub async fn authenticate_until(
        &self,
        authorization: Option<&str>,
    ) -> Result<(Principal, Option<i64>)> {
        if !self.enabled {
            return Ok((Principal::anonymous_admin(), None));
        }
        let token = authorization
            .and_then(|h| {
                let (scheme, token) = h.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                Error::Unauthenticated("Invalid credentials: could not find bearer token".into())
            })?;
        if looks_like_jwt(token) {
            return self.authenticate_jwt_until(token).await;
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(token)
            .ok()
            .and_then(|b| String::from_utf8(b).ok());
        let (key, secret) = decoded
            .as_deref()
            .and_then(|s| s.split_once(':'))
            .map(|(k, s)| (k.to_owned(), s.to_owned()))
            .ok_or_else(|| {
                Error::Unauthenticated("Invalid credentials: could not decode bearer token".into())
            })?;
        let cache_key = format!("k:{key}");
        let entry = self
            .lookup(&cache_key, || self.keys.record_by_key(&key))
            .await?;
        let record = entry.record.as_ref().ok_or_else(invalid)?;
        let matches: bool = hash_secret(&secret).ct_eq(&record.secret_hash).into();
        if !matches || record.revoked {
            return Err(invalid());
        }
        Ok((self.principal_of(&cache_key, entry).await?, None))
    }

    /// Authenticates a JWT (websocket tokens, or a JWT used as gRPC bearer).
    pub async fn authenticate_jwt(&self, token: &str) -> Result<Principal> {
        Ok(self.authenticate_jwt_until(token).await?.0)
    }

    /// Like [`Auth::authenticate_jwt`], also answering when the token expires (its `exp`, unix
    /// seconds; `None` when authentication is disabled), for listeners that outlive the call.
    pub async fn authenticate_jwt_until(&self, token: &str) -> Result<(Principal, Option<i64>)> {
        if !self.enabled {
            return Ok((Principal::anonymous_admin(), None));
        }
        let (id, exp) = self.jwt.verify(token)?;
        let cache_key = format!("i:{id}");
        let entry = self
            .lookup(&cache_key, || self.keys.record_by_id(id))
            .await?;
        match &entry.record {
            Some(r) if !r.revoked => Ok((self.principal_of(&cache_key, entry).await?, Some(exp))),
            _ => Err(invalid()),
        }
    }

    /// The key's grants as they are now (cached for at most [`CACHE_TTL`]), for long-lived
    /// sockets and streams to re-check; `None` once the key is revoked or deleted. Shared with
    /// the cache, not copied: every open listener asks twice a second.
    pub async fn current(&self, key_id: Uuid) -> Result<Option<Arc<Principal>>> {
        if !self.enabled || key_id.is_nil() {
            return Ok(Some(Arc::new(Principal::anonymous_admin())));
        }
        let cache_key = format!("i:{key_id}");
        let entry = self
            .lookup(&cache_key, || self.keys.record_by_id(key_id))
            .await?;
        match &entry.record {
            Some(r) if !r.revoked => self.shared_principal(&cache_key, entry).await.map(Some),
            _ => Ok(None),
        }
    }

    async fn lookup<F, Fut>(&self, cache_key: &str, load: F) -> Result<Cached>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Option<KeyRecord>>>,
    {
        if let Some(c) = self.cached(cache_key) {
            return Ok(c);
        }
        let record = load().await?;
        let entry = Cached {
            at: Instant::now(),
            record,
            principal: None,
        };
        self.store(cache_key.to_owned(), entry.clone());
        Ok(entry)
    }

    async fn principal_of(&self, cache_key: &str, entry: Cached) -> Result<Principal> {
        Ok((*self.shared_principal(cache_key, entry).await?).clone())
    }

    /// The entry's principal, loaded (and cached) on first use.
    async fn shared_principal(&self, cache_key: &str, entry: Cached) -> Result<Arc<Principal>> {
        if let Some(p) = entry.principal {
            return Ok(p);
        }
        let record = entry.record.ok_or_else(invalid)?;
        let p = Arc::new(self.keys.principal(record.id).await?);
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = cache.get_mut(cache_key) {
            c.principal = Some(p.clone());
        }
        Ok(p)
    }

    fn cached(&self, cache_key: &str) -> Option<Cached> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .get(cache_key)
            .filter(|c| c.at.elapsed() < CACHE_TTL)
            .cloned()
    }

    fn store(&self, cache_key: String, entry: Cached) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CACHE_MAX {
            cache.retain(|_, c| c.at.elapsed() < CACHE_TTL);
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(cache_key, entry);
    }
}

fn invalid() -> Error {
    Error::Unauthenticated("Invalid credentials".into())
}
