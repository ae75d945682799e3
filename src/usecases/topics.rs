//! Managing topics: list (with each topic's retention and dedupe window), create (with a
//! retention and a dedupe window, or the node's defaults), update either, delete. Admins only,
//! decided here; changing a topic's retention is [`crate::retention::Retention::update`] and
//! its window [`crate::topics::Topics::set_dedupe_window`], which decide the same way.

use crate::auth::Principal;
use crate::error::Error;
use crate::error::Result;
use crate::page::{Page, PageRequest};
use crate::retention::{Policy, Retention, TopicRetention};
use crate::topics::{DedupeWindow, Topic, TopicName, Topics};
use uuid::Uuid;

/// A topic as listed, with its retention when its statistics are known.
#[derive(Clone, Debug)]
pub struct ListedTopic {
    /// The topic.
    pub topic: Topic,
    /// Its retention policy and statistics.
    pub retention: Option<TopicRetention>,
    /// How long its idempotency keys are remembered, in seconds.
    pub dedupe_window_seconds: i64,
}

/// Topic management for callers; cheap to clone.
#[derive(Clone)]
pub struct TopicAdmin {
    topics: Topics,
    retention: Retention,
    /// The node's dedupe window, for topics without their own (`ER_DEDUPE_WINDOW_SECONDS`).
    default_window: i64,
}

impl TopicAdmin {
    /// The use cases over the topic and retention services, with the node's dedupe window.
    pub fn new(topics: Topics, retention: Retention, default_window: i64) -> Self {
        TopicAdmin {
            topics,
            retention,
            default_window,
        }
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
        let windows = self
            .topics
            .dedupe_windows(&names, self.default_window)
            .await?;
        Ok(page.map(|topic| ListedTopic {
            retention: retention.remove(&topic.name),
            dedupe_window_seconds: windows
                .get(&topic.name)
                .copied()
                .unwrap_or(self.default_window),
            topic,
        }))
    }

    /// `topic` with its retention and dedupe window.
    async fn described(&self, topic: Topic) -> Result<ListedTopic> {
        let retention = self.retention.topic(&topic.name).await?;
        let names = [topic.name.clone()];
        let windows = self
            .topics
            .dedupe_windows(&names, self.default_window)
            .await?;
        Ok(ListedTopic {
            retention: Some(retention),
            dedupe_window_seconds: windows
                .get(&topic.name)
                .copied()
                .unwrap_or(self.default_window),
            topic,
        })
    }

    /// Creates a topic with `policy` and `window` (`None` and 0: the node's defaults) and
    /// answers it with its retention and window.
    pub async fn create(
        &self,
        p: &Principal,
        name: &TopicName,
        policy: Option<Policy>,
        window: DedupeWindow,
    ) -> Result<ListedTopic> {
        p.require_admin("create topics")?;
        let topic = self.topics.create_with(name, policy).await?;
        let topic = if window == DedupeWindow::NODE_DEFAULT {
            topic
        } else {
            self.topics.set_dedupe_window(topic.id, window).await?
        };
        self.described(topic).await
    }

    /// Drops a topic with its tables, subscriptions and key grants.
    pub async fn delete(&self, p: &Principal, id: Uuid) -> Result<Topic> {
        p.require_admin("delete topics")?;
        self.topics.delete(id).await
    }

    /// Changes a topic's retention, its dedupe window, or both (at least one is required),
    /// and answers the topic with both.
    pub async fn update(
        &self,
        p: &Principal,
        id: Uuid,
        policy: Option<Policy>,
        window: Option<DedupeWindow>,
    ) -> Result<ListedTopic> {
        let mut topic = None;
        if let Some(policy) = policy {
            topic = Some(self.retention.update(p, id, policy).await?);
        }
        if let Some(window) = window {
            p.require_admin("update topics")?;
            topic = Some(self.topics.set_dedupe_window(id, window).await?);
        }
        match topic {
            Some(t) => self.described(t).await,
            None => Err(Error::invalid("retention is required")),
        }
    }
}
