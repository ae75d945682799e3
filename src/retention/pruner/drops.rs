//! The drop steps of a prune: detaching and dropping the events partitions wholly below the
//! mark and the attempt partitions whose day has passed (finishing any detach a dead owner left
//! half done, those first), and dropping the topic's orphans, paced so a backlog of drops does
//! not compete with the publishes for the disk.

use super::Pruner;
use crate::error::Result;
use crate::topics::{TopicName, partitions};
use chrono::Utc;
use sqlx::PgPool;

impl Pruner {
    /// Every partition retention has finished with: events wholly below `first`, expired
    /// attempt days, and orphans.
    pub(super) async fn drop_physically(&self, topic: &TopicName, first: i64) -> Result<usize> {
        let mut dropped = self.drop_events_below(topic, first).await?;
        dropped += self.drop_expired_attempts(topic).await?;
        for t in orphans_of(&self.pool, topic).await? {
            partitions::drop_orphan(&self.pool, &t).await?;
        }
        Ok(dropped)
    }

    /// Detaches and drops every events partition wholly below `first`, and finishes detaches
    /// left half done.
    async fn drop_events_below(&self, topic: &TopicName, first: i64) -> Result<usize> {
        let Some(layout) = partitions::events_layout(&self.pool, topic).await? else {
            return Ok(0);
        };
        let parent = topic.events_table();
        let mut dropped = 0;
        for child in pending_first(partitions::children(&self.pool, &parent).await?) {
            let below = partitions::events_number(topic, &child.table)
                .and_then(|n| layout.upper(n))
                .is_some_and(|upper| upper <= first);
            if below || child.detaching {
                self.pace(dropped).await;
                partitions::detach_and_drop(&self.pool, &parent, &child).await?;
                dropped += 1;
            }
        }
        Ok(dropped)
    }

    /// Detaches and drops attempt partitions whose day has passed.
    async fn drop_expired_attempts(&self, topic: &TopicName) -> Result<usize> {
        let parent = topic.deliveries_table();
        let base: Option<chrono::DateTime<Utc>> =
            sqlx::query_scalar("SELECT deliveries_base FROM topic_retention WHERE name = $1")
                .bind(topic.as_str())
                .fetch_optional(&self.pool)
                .await?
                .flatten();
        let now = Utc::now();
        let mut dropped = 0;
        for child in pending_first(partitions::children(&self.pool, &parent).await?) {
            let end = match partitions::deliveries_day(topic, &child.table) {
                Some(Some(day)) => day
                    .succ_opt()
                    .and_then(|d| d.and_hms_opt(0, 0, 0))
                    .map(|t| t.and_utc()),
                Some(None) => base,
                None => None,
            };
            if end.is_some_and(|e| e <= now) || child.detaching {
                self.pace(dropped).await;
                let rows: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                    "SELECT count(*) FROM {}",
                    partitions::qualified(&child.table)
                )))
                .fetch_one(&self.pool)
                .await?;
                partitions::detach_and_drop(&self.pool, &parent, &child).await?;
                sqlx::query(
                    "UPDATE topic_retention SET pruned_attempts = pruned_attempts + $2 WHERE name = $1",
                )
                .bind(topic.as_str())
                .bind(rows)
                .execute(&self.pool)
                .await?;
                dropped += 1;
            }
        }
        Ok(dropped)
    }

    /// Waits [`RetentionConfig::drop_pause`] before every drop of a step but the first: dropping a
    /// large table frees its files at once, and a backlog of them (retention set on a large
    /// topic) would compete with the publishes' WAL flushes for the disk all together
    /// (measured: docs/benchmarks.md).
    ///
    /// [`RetentionConfig::drop_pause`]: super::super::RetentionConfig::drop_pause
    async fn pace(&self, dropped_so_far: usize) {
        if dropped_so_far > 0 {
            tokio::time::sleep(self.settings.drop_pause).await;
        }
    }
}

/// Children with a detach left half done first (Postgres refuses to begin another detach on
/// the parent until it is finished), then by name.
fn pending_first(mut children: Vec<partitions::Child>) -> Vec<partitions::Child> {
    children.sort_by(|a, b| b.detaching.cmp(&a.detaching).then(a.table.cmp(&b.table)));
    children
}

async fn orphans_of(pool: &PgPool, topic: &TopicName) -> Result<Vec<String>> {
    let mut conn = pool.acquire().await?;
    partitions::orphans(&mut conn, Some(topic)).await
}
