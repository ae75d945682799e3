//! A topic's dedupe window: how long its idempotency keys are remembered, so a key published
//! again within it is answered as a duplicate. Stored in `topics.dedupe_window_seconds`
//! (NULL: the node's default, `ER_DEDUPE_WINDOW_SECONDS`); the writer reads it in the
//! statement that stores a batch's keys, and each key carries its own expiry from then on.

use super::Topic;
use crate::error::{Error, Result};
use sqlx::PgPool;
use std::collections::HashMap;
use uuid::Uuid;

/// Longest dedupe window, in seconds (30 days): keys are a table beside the events, and a
/// window longer than the topic's retention would only remember keys of removed events.
pub const MAX_DEDUPE_WINDOW_SECONDS: i64 = 30 * 86_400;

/// A topic's own window, as the wire gives it: 0 is "the node's default".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DedupeWindow(Option<i64>);

impl DedupeWindow {
    /// No window of the topic's own: the node's default.
    pub const NODE_DEFAULT: DedupeWindow = DedupeWindow(None);

    /// Parses seconds from the wire: 0 takes the node's default, 1..=30 days its own.
    pub fn parse(seconds: i64) -> Result<Self> {
        match seconds {
            0 => Ok(DedupeWindow(None)),
            1..=MAX_DEDUPE_WINDOW_SECONDS => Ok(DedupeWindow(Some(seconds))),
            _ => Err(Error::invalid(format!(
                "dedupe_window_seconds must be between 0 (the node's default) and \
                 {MAX_DEDUPE_WINDOW_SECONDS} (30 days)"
            ))),
        }
    }
}

/// Sets the window of topic `id` (who may is the caller's decision: `usecases::TopicAdmin`).
pub async fn set(pool: &PgPool, id: Uuid, window: DedupeWindow) -> Result<Topic> {
    sqlx::query_as("UPDATE topics SET dedupe_window_seconds = $2 WHERE id = $1 RETURNING id, name")
        .bind(id)
        .bind(window.0)
        .fetch_optional(pool)
        .await?
        .ok_or_else(|| Error::not_found("Topic not found"))
}

/// The effective windows of `names` (the node's `default` for topics without their own).
pub async fn windows(
    pool: &PgPool,
    names: &[String],
    default: i64,
) -> Result<HashMap<String, i64>> {
    let rows: Vec<(String, Option<i64>)> =
        sqlx::query_as("SELECT name, dedupe_window_seconds FROM topics WHERE name = ANY($1)")
            .bind(names)
            .fetch_all(pool)
            .await?;
    Ok(rows
        .into_iter()
        .map(|(name, w)| (name, w.unwrap_or(default)))
        .collect())
}

impl super::Topics {
    /// Sets the dedupe window of topic `id`.
    pub async fn set_dedupe_window(&self, id: Uuid, window: DedupeWindow) -> Result<Topic> {
        set(&self.pool, id, window).await
    }

    /// The effective dedupe windows of `names` (the node's `default` where a topic has none).
    pub async fn dedupe_windows(
        &self,
        names: &[String],
        default: i64,
    ) -> Result<HashMap<String, i64>> {
        windows(&self.pool, names, default).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_parse() {
        assert_eq!(DedupeWindow::parse(0).unwrap(), DedupeWindow(None));
        assert_eq!(DedupeWindow::parse(60).unwrap(), DedupeWindow(Some(60)));
        assert!(DedupeWindow::parse(-1).is_err());
        assert!(DedupeWindow::parse(MAX_DEDUPE_WINDOW_SECONDS + 1).is_err());
    }
}
