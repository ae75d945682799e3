//! Changing a stored subscription (the admin UI's edit, pause and resume forms) and counting a
//! topic's subscriptions (its delete confirmation). The topic and the type of a subscription
//! are fixed at creation: moving either would make its delivery history meaningless.

use super::{COLUMNS, Row, Subscription, Subscriptions, check_settings, name_taken};
use crate::auth::Principal;
use crate::error::{Error, Result};
use crate::topics::TopicName;
use sqlx::AssertSqlSafe;
use std::collections::BTreeMap;
use uuid::Uuid;

/// The editable fields of a subscription, all replaced at once.
#[derive(Clone, Debug, Default)]
pub struct SubscriptionUpdate {
    /// Unique name.
    pub name: String,
    /// Identifier scope ("" for every identifier).
    pub topic_identifier: String,
    /// Push or pull.
    pub push: bool,
    /// Settings (`endpoint_url` for webhooks).
    pub config: BTreeMap<String, String>,
}

/// Checks a name: 1-255 characters after trimming.
pub fn check_name(name: &str) -> Result<&str> {
    let name = name.trim();
    if name.is_empty() || name.len() > 255 {
        return Err(Error::invalid("name must be 1-255 characters"));
    }
    Ok(name)
}

impl Subscriptions {
    /// Replaces the editable fields (admins only), validated as at creation.
    pub async fn update(
        &self,
        p: &Principal,
        id: Uuid,
        u: SubscriptionUpdate,
    ) -> Result<Subscription> {
        p.require_admin("update subscriptions")?;
        let name = check_name(&u.name)?;
        let current = self.find(id).await?;
        check_settings(current.kind, &u.topic_identifier, &u.config)?;
        sqlx::query_as::<_, Row>(AssertSqlSafe(format!(
            "UPDATE subscriptions SET name = $2, topic_identifier = $3, push = $4, config = $5,
                 updated_at = now()
             WHERE id = $1 RETURNING {COLUMNS}"
        )))
        .bind(id)
        .bind(name)
        .bind(&u.topic_identifier)
        .bind(u.push)
        .bind(serde_json::to_value(&u.config).unwrap_or_default())
        .fetch_optional(&self.pool)
        .await
        .map_err(name_taken)?
        .ok_or_else(|| Error::not_found("Subscription not found"))?
        .into_subscription()
    }

    /// Number of subscriptions of a topic.
    pub async fn count_for_topic(&self, topic: &TopicName) -> Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT count(*) FROM subscriptions WHERE topic_name = $1")
                .bind(topic.as_str())
                .fetch_one(&self.pool)
                .await?,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let long = "x".repeat(256);
        let table = [
            ("orders", Some("orders")),
            ("  spaced  ", Some("spaced")),
            ("", None),
            ("   ", None),
            (long.as_str(), None),
        ];
        for (input, want) in table {
            assert_eq!(check_name(input).ok(), want, "{input:?}");
        }
    }
}
