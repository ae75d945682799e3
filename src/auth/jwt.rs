//! JWTs for websockets (and as gRPC bearers): HS256 with the server's secret, carrying the
//! original's claims. A JWT only names its key; grants and revocation are always read fresh.

use super::principal::Principal;
use crate::error::{Error, Result};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Default lifetime of a JWT.
pub const DEFAULT_TTL_SECONDS: i64 = 3600;

/// The claims, named as in the original.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    /// Key id.
    pub api_key_id: String,
    /// admin, producer or consumer.
    pub api_key_type: String,
    /// Producer topics (`name` or `name:identifier`).
    #[serde(default)]
    pub topic_names: Vec<String>,
    /// Consumer subscription ids.
    #[serde(default)]
    pub sub_ids: Vec<String>,
    /// Expiry, unix seconds.
    pub exp: i64,
    /// Issued at, unix seconds.
    #[serde(default)]
    pub iat: i64,
}

/// Signs and verifies JWTs.
#[derive(Clone)]
pub struct Jwt {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl Jwt {
    /// From the server's secret.
    pub fn new(secret: &str) -> Self {
        Jwt {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
        }
    }

    /// A JWT for this principal; `expiration` 0 means one hour from now.
    pub fn issue(&self, p: &Principal, expiration: i64) -> Result<String> {
        let now = chrono::Utc::now().timestamp();
        let exp = if expiration == 0 {
            now + DEFAULT_TTL_SECONDS
        } else {
            expiration
        };
        if exp <= now {
            return Err(Error::invalid(
                "expiration must be in the future (unix seconds)",
            ));
        }
        let claims = Claims {
            api_key_id: p.key_id.to_string(),
            api_key_type: p.key_type.as_str().to_owned(),
            topic_names: p
                .topics
                .iter()
                .map(|g| {
                    if g.identifier.is_empty() {
                        g.name.clone()
                    } else {
                        format!("{}:{}", g.name, g.identifier)
                    }
                })
                .collect(),
            sub_ids: p.subscriptions.iter().map(|s| s.id.to_string()).collect(),
            exp,
            iat: now,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| Error::Internal(e.into()))
    }

    /// The key id of a valid, unexpired token, and when it expires (unix seconds).
    pub fn verify(&self, token: &str) -> Result<(Uuid, i64)> {
        let mut v = Validation::new(Algorithm::HS256);
        v.leeway = 5;
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &v)
            .map_err(|_| Error::Unauthenticated("Invalid credentials".into()))?;
        let id = Uuid::parse_str(&data.claims.api_key_id)
            .map_err(|_| Error::Unauthenticated("Invalid credentials".into()))?;
        Ok((id, data.claims.exp))
    }
}

/// Whether a bearer token looks like a JWT rather than Base64 of `key:secret`.
pub fn looks_like_jwt(token: &str) -> bool {
    token.starts_with("eyJ") && token.matches('.').count() == 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper() {
        let jwt = Jwt::new("secret-one");
        let p = Principal {
            key_id: Uuid::now_v7(),
            ..Principal::anonymous_admin()
        };
        let t = jwt.issue(&p, 0).unwrap();
        assert!(looks_like_jwt(&t));
        let (id, exp) = jwt.verify(&t).unwrap();
        assert_eq!(id, p.key_id);
        assert!(exp > chrono::Utc::now().timestamp() + DEFAULT_TTL_SECONDS - 10);
        assert!(Jwt::new("secret-two").verify(&t).is_err());
        assert!(jwt.issue(&p, 1).is_err());
        let expired = Claims {
            api_key_id: p.key_id.to_string(),
            api_key_type: "admin".into(),
            topic_names: vec![],
            sub_ids: vec![],
            exp: chrono::Utc::now().timestamp() - 60,
            iat: 0,
        };
        let t = jsonwebtoken::encode(&Header::default(), &expired, &jwt.encoding).unwrap();
        assert!(jwt.verify(&t).is_err());
    }
}
