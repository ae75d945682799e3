//! Standard Webhooks signatures: `webhook-signature: v1,<base64 HMAC-SHA256>` over
//! `"<webhook-id>.<webhook-timestamp>.<body>"`, keyed with the base64-decoded part of the
//! subscription's `whsec_` secret. Receivers verify with any Standard Webhooks library.

use crate::error::{Error, Result};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// A parsed signing key.
#[derive(Clone)]
pub struct SigningKey(Vec<u8>);

impl SigningKey {
    /// Parses a `whsec_<base64>` secret (a bare base64 secret is accepted too).
    pub fn parse(secret: &str) -> Result<Self> {
        let b64 = secret.strip_prefix("whsec_").unwrap_or(secret);
        let key = STANDARD
            .decode(b64)
            .map_err(|_| Error::invalid("signing secret is not whsec_<base64>"))?;
        if key.is_empty() {
            return Err(Error::invalid("signing secret is empty"));
        }
        Ok(SigningKey(key))
    }

    /// The `webhook-signature` header value for one message.
    pub fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        // new_from_slice accepts keys of any length for HMAC; the error arm cannot happen.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.0) else {
            return String::new();
        };
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(<secret>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_standard_webhooks_reference_vector() {
        // The example of the Standard Webhooks specification and its reference libraries.
        let key = SigningKey::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = key.sign(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn refuses_bad_secrets_and_hides_them() {
        assert!(SigningKey::parse("whsec_!!!").is_err());
        assert!(SigningKey::parse("whsec_").is_err());
        let k = SigningKey::parse("whsec_c2VjcmV0").unwrap();
        assert!(!format!("{k:?}").contains("c2Vj"));
    }
}
