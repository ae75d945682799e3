//! Managing topics: list (with each topic's retention), create (with a retention, or the
//! node's default), delete. Admins only, decided here; changing a topic's retention is
//! [`crate::retention::Retention::update`], which decides the same way.

use crate::auth::Principal;
use crate::error::Result;
use crate::page::{Page, PageRequest};
use crate::retention::{Policy, Retention, TopicRetention};
use crate::topics::{Topic, TopicName, Topics};
use uuid::Uuid;

/// A topic as listed, with its retention when its statistics are known.
#[derive(Clone, Debug)]
pub struct ListedTopic {
    /// The topic.
    pub topic: Topic,
    /// Its retention policy and statistics.
    pub retention: Option<TopicRetention>,
}

/// Topic management for callers; cheap to clone.
#[derive(Clone)]
pub struct TopicAdmin {
    topics: Topics,
    retention: Retention,
}

impl TopicAdmin {
    /// The use cases over the topic and retention services.
    pub fn new(topics: Topics, retention: Retention) -> Self {
        TopicAdmin { topics, retention }
    }

    /// Topics whose name contains `needle` ("" for all), by name, a page at a time, each with
    /// its retention.
    pub async fn list(
        &self,
        p: &Principal,
        req: PageRequest,
        needle: &str,
    ) -> Result<Page<ListedTopic>> {
        p.require_admin("list topics")?;
        let page = self.topics.search(req, needle).await?;
        let names: Vec<String> = page.items.iter().map(|t| t.name.clone()).collect();
        let mut retention = self.retention.for_topics(&names).await?;
        Ok(page.map(|topic| ListedTopic {
            retention: retention.remove(&topic.name),
            topic,
        }))
    }

    /// Creates a topic with `policy` (`None`: the node's default) and answers it with its
    /// retention.
    pub async fn create(
        &self,
        p: &Principal,
        name: &TopicName,
        policy: Option<Policy>,
    ) -> Result<(Topic, TopicRetention)> {
        p.require_admin("create topics")?;
        let topic = self.topics.create_with(name, policy).await?;
        let retention = self.retention.topic(&topic.name).await?;
        Ok((topic, retention))
    }

    /// Drops a topic with its tables, subscriptions and key grants.
    pub async fn delete(&self, p: &Principal, id: Uuid) -> Result<Topic> {
        p.require_admin("delete topics")?;
        self.topics.delete(id).await
    }

    /// Changes a topic's retention and answers the topic with its retention.
    pub async fn update(
        &self,
        p: &Principal,
        id: Uuid,
        policy: Policy,
    ) -> Result<(Topic, TopicRetention)> {
        let topic = self.retention.update(p, id, policy).await?;
        let retention = self.retention.topic(&topic.name).await?;
        Ok((topic, retention))
    }
}
