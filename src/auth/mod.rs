//! Authentication: bearer tokens (Base64 `key:secret` or JWT) to a [`Principal`].
//!
//! Lookups are cached per node for at most [`CACHE_TTL`], keyed by the public key part but
//! always re-checking the secret's hash, so a wrong secret never passes (the original cached
//! by key alone for an hour) and a revoked key is refused everywhere within the TTL.

mod admin;
mod join;
mod jwt;
mod keys;
mod principal;

pub use join::Grant;
pub use jwt::{Claims, DEFAULT_TTL_SECONDS, Jwt, looks_like_jwt};
pub use keys::{ApiKey, ApiKeys};
pub use principal::{KeyType, Principal, SubscriptionGrant, TopicGrant};

use crate::cache::TtlCache;
use crate::error::{Error, Result};
use base64::Engine;
use keys::{KeyRecord, hash_secret};
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;
use uuid::Uuid;

/// Longest a node trusts a cached key lookup.
pub const CACHE_TTL: Duration = Duration::from_secs(1);
/// Cache entries kept before the cache is cleared (bounds memory under key-guessing).
const CACHE_MAX: usize = 10_000;

/// How a key is looked up: by its public part (Base64 bearers) or by id (JWTs, re-checks).
#[derive(Clone, PartialEq, Eq, Hash)]
enum Lookup {
    Key(String),
    Id(Uuid),
}

/// A key as last read: its record and, while it is valid, its grants.
struct Known {
    record: Option<KeyRecord>,
    principal: Option<Arc<Principal>>,
}

impl Known {
    /// The grants, unless the key is unknown or revoked.
    fn valid(&self) -> Option<&Arc<Principal>> {
        self.record.as_ref().filter(|r| !r.revoked)?;
        self.principal.as_ref()
    }
}

/// Authenticates callers.
#[derive(Clone)]
pub struct Auth {
    keys: ApiKeys,
    jwt: Jwt,
    enabled: bool,
    cache: Arc<TtlCache<Lookup, Arc<Known>>>,
}

impl Auth {
    /// The service; with `enabled` false every caller is an anonymous admin.
    pub fn new(keys: ApiKeys, jwt: Jwt, enabled: bool) -> Self {
        Auth {
            keys,
            jwt,
            enabled,
            cache: Arc::new(TtlCache::new(CACHE_TTL, CACHE_MAX)),
        }
    }

    /// Whether API keys are required (false: every caller is an anonymous admin).
    pub fn enabled(&self) -> bool {
        self.enabled
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
        let known = self.known(Lookup::Key(key)).await?;
        let record = known.record.as_ref().ok_or_else(invalid)?;
        let matches: bool = hash_secret(&secret).ct_eq(&record.secret_hash).into();
        match known.valid() {
            Some(p) if matches => Ok(((**p).clone(), None)),
            _ => Err(invalid()),
        }
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
        match self.known(Lookup::Id(id)).await?.valid() {
            Some(p) => Ok(((**p).clone(), Some(exp))),
            None => Err(invalid()),
        }
    }

    /// The key's grants as they are now (cached for at most [`CACHE_TTL`]), for long-lived
    /// sockets and streams to re-check; `None` once the key is revoked or deleted. Shared with
    /// the cache, not copied: every open listener asks twice a second.
    pub async fn current(&self, key_id: Uuid) -> Result<Option<Arc<Principal>>> {
        if !self.enabled || key_id.is_nil() {
            return Ok(Some(Arc::new(Principal::anonymous_admin())));
        }
        Ok(self.known(Lookup::Id(key_id)).await?.valid().cloned())
    }

    /// A key's record and grants, read at most [`CACHE_TTL`] ago (once per node however many
    /// callers ask while it is being read).
    async fn known(&self, lookup: Lookup) -> Result<Arc<Known>> {
        self.cache
            .get(&lookup, || async {
                let record = match &lookup {
                    Lookup::Key(key) => self.keys.record_by_key(key).await?,
                    Lookup::Id(id) => self.keys.record_by_id(*id).await?,
                };
                let principal = match &record {
                    Some(r) if !r.revoked => Some(Arc::new(self.keys.principal(r.id).await?)),
                    _ => None,
                };
                Ok(Arc::new(Known { record, principal }))
            })
            .await
    }
}

fn invalid() -> Error {
    Error::Unauthenticated("Invalid credentials".into())
}
