//! Websocket channel joins (and their token refreshes), authenticated by the same [`Auth`] as
//! gRPC calls: a consumer JWT must belong to a key that may read the subscription, a producer
//! JWT to a key that may publish somewhere; with authentication off both roles are an
//! anonymous admin.

use super::{Auth, Principal};
use crate::error::Result;
use uuid::Uuid;

/// One role of a join: its principal and its token's expiry, or `None` when no token was
/// given for it.
pub type Grant = Option<(Principal, Option<i64>)>;

impl Auth {
    /// The consumer and producer of a join of `subscription`; `None` when no valid token was
    /// given, or one of the given tokens is invalid or not allowed.
    pub async fn authorize_join(
        &self,
        subscription: Uuid,
        consumer: Option<&str>,
        producer: Option<&str>,
    ) -> Option<(Grant, Grant)> {
        if !self.enabled() {
            let p = Principal::anonymous_admin();
            return Some((Some((p.clone(), None)), Some((p, None))));
        }
        let consumer = match consumer {
            None => None,
            Some(t) => Some(self.consumer_token(subscription, t).await.ok()?),
        };
        let producer = match producer {
            None => None,
            Some(t) => Some(self.producer_token(t).await.ok()?),
        };
        (consumer.is_some() || producer.is_some()).then_some((consumer, producer))
    }

    /// A consumer token for `subscription`, with its expiry.
    pub async fn consumer_token(
        &self,
        subscription: Uuid,
        token: &str,
    ) -> Result<(Principal, Option<i64>)> {
        let (p, exp) = self.authenticate_jwt_until(token).await?;
        p.authorize_subscription(subscription)?;
        Ok((p, exp))
    }

    /// A producer token, with its expiry.
    pub async fn producer_token(&self, token: &str) -> Result<(Principal, Option<i64>)> {
        let (p, exp) = self.authenticate_jwt_until(token).await?;
        p.may_publish_somewhere()?;
        Ok((p, exp))
    }
}
