//! Operator control of webhook delivery (admins only): pause, resume, replay from an offset,
//! and the attempt records. Resume and replay bump the fencing epoch, so an owner that is in
//! the middle of an attempt cannot write its stale position over the operator's; the owner's
//! manager restarts delivery under a fresh epoch within a tick.

use super::Delivery;
use super::store::{self, DeliveryRecord as Record};
use crate::auth::Principal;
use crate::error::{Error, Result};
use crate::page::{Page, PageRequest};
use crate::subscriptions::{Subscription, SubscriptionType};
use crate::topics;
use uuid::Uuid;

/// A page of attempts and the subscription's position.
#[derive(Clone, Debug)]
pub struct Deliveries {
    /// Attempts, newest first.
    pub page: Page<Record>,
    /// Last offset acknowledged or given up on.
    pub delivered_offset: i64,
}

impl Delivery {
    async fn webhook(&self, p: &Principal, id: Uuid, action: &str) -> Result<Subscription> {
        p.require_admin(action)?;
        let s = self.subscriptions().find(id).await?;
        if s.kind != SubscriptionType::Webhook {
            return Err(Error::FailedPrecondition(
                "only webhook subscriptions are delivered by the server".into(),
            ));
        }
        Ok(s)
    }

    /// Pauses delivery; the owner finishes the attempt in flight and stops.
    pub async fn pause(&self, p: &Principal, id: Uuid) -> Result<Subscription> {
        self.webhook(p, id, "pause subscriptions").await?;
        self.set_paused(id, true).await
    }

    /// Resumes delivery, retrying the current event at once with a fresh attempt count.
    pub async fn resume(&self, p: &Principal, id: Uuid) -> Result<Subscription> {
        self.webhook(p, id, "resume subscriptions").await?;
        let mut tx = self.pool().begin().await?;
        sqlx::query(
            "UPDATE subscription_cursors
                SET attempts = 0, next_attempt_at = NULL, epoch = epoch + 1, updated_at = now()
              WHERE subscription_id = $1",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE subscriptions SET paused = false, updated_at = now() WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.subscriptions().find(id).await
    }

    async fn set_paused(&self, id: Uuid, paused: bool) -> Result<Subscription> {
        sqlx::query("UPDATE subscriptions SET paused = $2, updated_at = now() WHERE id = $1")
            .bind(id)
            .bind(paused)
            .execute(self.pool())
            .await?;
        self.subscriptions().find(id).await
    }

    /// Moves the cursor so delivery continues with the first event after `offset` (replay,
    /// or skip ahead). The topic's current end is the largest offset accepted; an offset
    /// before the first retained event means that event (what a replay can still deliver).
    /// The topic's retention row is share-locked meanwhile, so retention cannot move past the
    /// new cursor between the check and the write (see `retention::cut::apply`).
    pub async fn reset_cursor(&self, p: &Principal, id: Uuid, offset: i64) -> Result<Subscription> {
        let s = self.webhook(p, id, "reset subscription cursors").await?;
        if offset < 0 {
            return Err(Error::invalid("offset must not be negative"));
        }
        let mut tx = self.pool().begin().await?;
        let first: Option<i64> = sqlx::query_scalar(
            "SELECT first_offset FROM topic_retention WHERE name = $1 FOR SHARE",
        )
        .bind(s.topic.name.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        let last = topics::last_offset(self.pool(), s.topic.name.as_str()).await?;
        if offset > last {
            return Err(Error::invalid(format!(
                "offset {offset} is past the topic's last offset {last}"
            )));
        }
        let offset = offset.max(first.unwrap_or(1) - 1);
        sqlx::query(
            "INSERT INTO subscription_cursors (subscription_id, delivered_offset, epoch)
             VALUES ($1, $2, 1)
             ON CONFLICT (subscription_id) DO UPDATE
               SET delivered_offset = $2, attempts = 0, next_attempt_at = NULL,
                   epoch = subscription_cursors.epoch + 1, updated_at = now()",
        )
        .bind(id)
        .bind(offset)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(s)
    }

    /// A subscription's attempts, newest first, and its position.
    pub async fn deliveries(
        &self,
        p: &Principal,
        id: Uuid,
        req: PageRequest,
    ) -> Result<Deliveries> {
        let s = self.webhook(p, id, "list deliveries").await?;
        let (items, total) =
            store::list(self.pool(), &s.topic.name, id, req.size, req.offset()).await?;
        let delivered_offset = store::state(self.pool(), id)
            .await?
            .map_or(0, |st| st.delivered_offset);
        Ok(Deliveries {
            page: Page::new(req, items, total),
            delivered_offset,
        })
    }
}
