//! Managing API keys: creation, revocation, the topic and subscription grants, and reading
//! them back. Admins only, decided here in the domain, so the gRPC key RPCs and the admin UI's
//! key pages enforce the same rule. The key store ([`ApiKeys`]) itself knows no policy: the
//! operator's command line (`eventrelay api-key create`) bootstraps the first admin key with it.

use super::{ApiKey, ApiKeys, Auth, KeyType, Principal};
use crate::error::Result;
use crate::topics::TopicRef;
use uuid::Uuid;

impl Auth {
    /// The key store, for `p` if it is an admin (`action` names what is refused otherwise).
    fn keys_for(&self, p: &Principal, action: &str) -> Result<&ApiKeys> {
        p.require_admin(action)?;
        Ok(self.keys())
    }

    /// Creates a key with its grants; the returned key carries its secret, shown only now.
    pub async fn create_key(
        &self,
        p: &Principal,
        key_type: KeyType,
        name: &str,
        topics: &[TopicRef],
        subscription_ids: &[Uuid],
    ) -> Result<ApiKey> {
        self.keys_for(p, "create api keys")?
            .create(key_type, name, topics, subscription_ids)
            .await
    }

    /// Revokes a key; every node refuses it within a second.
    pub async fn revoke_key(&self, p: &Principal, id: Uuid) -> Result<ApiKey> {
        self.keys_for(p, "revoke api keys")?.revoke(id).await
    }

    /// Every key (without secrets).
    pub async fn list_keys(&self, p: &Principal) -> Result<Vec<ApiKey>> {
        self.keys_for(p, "list api keys")?.list().await
    }

    /// One key (without its secret) and what it is granted.
    pub async fn key(&self, p: &Principal, id: Uuid) -> Result<(ApiKey, Principal)> {
        let keys = self.keys_for(p, "read api keys")?;
        Ok((keys.get(id).await?, keys.principal(id).await?))
    }

    /// Grants topics to a key; returns the topics granted.
    pub async fn grant_topics(
        &self,
        p: &Principal,
        id: Uuid,
        topics: &[TopicRef],
    ) -> Result<Vec<String>> {
        self.keys_for(p, "change api keys")?
            .add_topics(id, topics)
            .await
    }

    /// Withdraws topics from a key; returns the topics withdrawn.
    pub async fn withdraw_topics(
        &self,
        p: &Principal,
        id: Uuid,
        topics: &[TopicRef],
    ) -> Result<Vec<String>> {
        self.keys_for(p, "change api keys")?
            .delete_topics(id, topics)
            .await
    }

    /// Associates subscriptions with a key; returns the subscriptions associated.
    pub async fn grant_subscriptions(
        &self,
        p: &Principal,
        id: Uuid,
        subscriptions: &[Uuid],
    ) -> Result<Vec<Uuid>> {
        self.keys_for(p, "change api keys")?
            .add_subscriptions(id, subscriptions)
            .await
    }

    /// Removes subscriptions from a key; returns the subscriptions removed.
    pub async fn withdraw_subscriptions(
        &self,
        p: &Principal,
        id: Uuid,
        subscriptions: &[Uuid],
    ) -> Result<Vec<Uuid>> {
        self.keys_for(p, "change api keys")?
            .delete_subscriptions(id, subscriptions)
            .await
    }
}
