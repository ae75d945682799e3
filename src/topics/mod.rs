//! Topics: named event streams. Each topic owns two tables, `<name>_events` and
//! `<name>_deliveries`, created and dropped in the same transaction as its row, so no reader
//! or publisher can ever see a half-made topic. Both are partitioned (`partitions/`), so
//! retention drops whole partitions; `layout.rs` converts the plain tables of older topics.

pub mod dedupe;
pub mod layout;
mod name;
pub mod partitions;
pub mod policy;

pub use dedupe::{DedupeWindow, MAX_DEDUPE_WINDOW_SECONDS};
pub use name::{MAX_IDENTIFIER_LEN, MAX_NAME_LEN, TopicName, TopicRef, parse_identifier};
pub use policy::{DEFAULT_PARTITION_SPAN, Policy, TopicDefaults};

use crate::error::{Error, Result, UNDEFINED_TABLE, UNIQUE_VIOLATION, sqlstate};
use crate::page::{Page, PageRequest};
use sqlx::AssertSqlSafe;
use sqlx::PgPool;
use uuid::Uuid;

/// A topic row.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct Topic {
    /// Its id.
    pub id: Uuid,
    /// Its name (valid by construction of the table's CHECK).
    pub name: String,
}

/// Creates, lists and drops topics.
#[derive(Clone)]
pub struct Topics {
    pool: PgPool,
    defaults: TopicDefaults,
}

/// DDL of a topic's tables. `{events}` and `{deliveries}` are replaced with quoted identifiers
/// from [`TopicName`], never with client text. Indexes serve pulls by offset, by identifier and
/// by name (the common filters); Postgres names them, so long topic names cannot collide.
/// Events are partitioned by offset range, delivery attempts by the day they expire (their
/// retention); `expires_at`'s default serves nodes of an earlier version, which do not set it.
/// The partitions themselves are made by [`Topics::create`] and `partitions/ahead.rs`.
const TOPIC_DDL: &str = r#"
CREATE TABLE {events} (
    "offset"         bigint PRIMARY KEY,
    id               uuid NOT NULL,
    name             text NOT NULL,
    topic_identifier text NOT NULL DEFAULT '',
    data             jsonb NOT NULL,
    source           text NOT NULL DEFAULT '',
    group_key        text NOT NULL DEFAULT '',
    reference_key    text NOT NULL DEFAULT '',
    trace_key        text NOT NULL DEFAULT '',
    user_id          text NOT NULL DEFAULT '',
    anonymous_id     text NOT NULL DEFAULT '',
    occurred_at      timestamptz NOT NULL,
    context          jsonb NOT NULL DEFAULT '{}',
    inserted_at      timestamptz NOT NULL DEFAULT now()
) PARTITION BY RANGE ("offset");
CREATE INDEX ON {events} (topic_identifier, "offset");
CREATE INDEX ON {events} (name, "offset");
CREATE TABLE {deliveries} (
    id              uuid NOT NULL,
    subscription_id uuid NOT NULL,
    event_offset    bigint NOT NULL,
    event_id        uuid NOT NULL,
    attempt         integer NOT NULL,
    status          text NOT NULL,
    response_status integer,
    error           text,
    duration_ms     integer NOT NULL DEFAULT 0,
    epoch           bigint NOT NULL DEFAULT 0,
    attempted_at    timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL DEFAULT now() + interval '30 days'
) PARTITION BY RANGE (expires_at);
CREATE INDEX ON {deliveries} (subscription_id, event_offset);
"#;

/// Events partitions made with a topic: the first and the one after it, so the first burst
/// never waits for a partition.
const FIRST_PARTITIONS: i64 = 2;

impl Topics {
    /// The service over a pool; new topics keep their events forever, in partitions of the
    /// default size.
    pub fn new(pool: PgPool) -> Self {
        Self::with_defaults(pool, TopicDefaults::default())
    }

    /// The service with the node's defaults for new topics.
    pub fn with_defaults(pool: PgPool, defaults: TopicDefaults) -> Self {
        Topics { pool, defaults }
    }

    /// Creates a topic and its tables in one transaction, with the node's default retention.
    pub async fn create(&self, name: &TopicName) -> Result<Topic> {
        self.create_with(name, None).await
    }

    /// Creates a topic and its tables (with their first partitions) and records its retention
    /// (`None`: the node's default), in one transaction.
    #[tracing::instrument(skip(self), fields(topic = %name))]
    pub async fn create_with(&self, name: &TopicName, retention: Option<Policy>) -> Result<Topic> {
        let policy = retention.unwrap_or(self.defaults.policy);
        let span = self.defaults.partition_span;
        let mut tx = self.pool.begin().await?;
        let topic = sqlx::query_as::<_, Topic>(
            "INSERT INTO topics (id, name) VALUES ($1, $2) RETURNING id, name",
        )
        .bind(Uuid::now_v7())
        .bind(name.as_str())
        .fetch_one(&mut *tx)
        .await
        .map_err(already_exists)?;
        let ddl = TOPIC_DDL
            .replace("{events}", &name.events_table())
            .replace("{deliveries}", &name.deliveries_table());
        sqlx::raw_sql(AssertSqlSafe(ddl))
            .execute(&mut *tx)
            .await
            .map_err(already_exists)?;
        partitions::drop_orphans_of(&mut tx, name).await?;
        for n in 1..=FIRST_PARTITIONS {
            sqlx::raw_sql(AssertSqlSafe(format!(
                "CREATE TABLE {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})",
                partitions::qualified(&partitions::events_partition(name, n)),
                name.events_table(),
                1 + (n - 1) * span,
                1 + n * span
            )))
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "INSERT INTO topic_retention (name, max_age_seconds, max_events, max_bytes,
                 drop_undelivered, partition_span, partition_base, deliveries_base)
             VALUES ($1, $2, $3, $4, $5, $6, 1, 'epoch')",
        )
        .bind(name.as_str())
        .bind(policy.max_age_seconds())
        .bind(policy.max_events.unwrap_or(0))
        .bind(policy.max_bytes.unwrap_or(0))
        .bind(policy.drop_undelivered)
        .bind(span)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(topic)
    }

    /// The offsets a topic holds: its first retained and its last stored.
    pub async fn bounds(&self, name: &TopicName) -> Result<Bounds> {
        bounds(&self.pool, name.as_str()).await
    }

    /// Lists topics by name, a page at a time.
    pub async fn list(&self, req: PageRequest) -> Result<Page<Topic>> {
        self.search(req, "").await
    }

    /// Lists topics whose name contains `needle` (for the UI's search), a page at a time.
    pub async fn search(&self, req: PageRequest, needle: &str) -> Result<Page<Topic>> {
        let pattern = format!("%{}%", like_escape(needle));
        let items = sqlx::query_as::<_, Topic>(
            "SELECT id, name FROM topics WHERE name LIKE $1 ORDER BY name LIMIT $2 OFFSET $3",
        )
        .bind(&pattern)
        .bind(req.size)
        .bind(req.offset())
        .fetch_all(&self.pool)
        .await?;
        let total: i64 = sqlx::query_scalar("SELECT count(*) FROM topics WHERE name LIKE $1")
            .bind(&pattern)
            .fetch_one(&self.pool)
            .await?;
        Ok(Page::new(req, items, total))
    }

    /// Drops a topic, its tables, its subscriptions and its key associations, in one
    /// transaction. Locking the tables waits for any publisher in flight, so a publish either
    /// commits before the drop or finds the topic gone (and dead-letters its events).
    #[tracing::instrument(skip(self))]
    pub async fn delete(&self, id: Uuid) -> Result<Topic> {
        let mut tx = self.pool.begin().await?;
        let name: Option<String> = sqlx::query_scalar("SELECT name FROM topics WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        let name = TopicName::parse(&name.ok_or_else(|| Error::not_found("Topic not found"))?)?;
        // Tables first, then the topic row (and, by cascade, its `topic_offsets` row): the
        // order publishers take them in (their single statement locks the events table when
        // planned, the rows when run), so no deadlock.
        sqlx::raw_sql(AssertSqlSafe(format!(
            "LOCK TABLE {}, {} IN ACCESS EXCLUSIVE MODE",
            name.events_table(),
            name.deliveries_table()
        )))
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            // Another DeleteTopic dropped them while we waited.
            if sqlstate(&e).as_deref() == Some(UNDEFINED_TABLE) {
                Error::not_found("Topic not found")
            } else {
                e.into()
            }
        })?;
        let topic =
            sqlx::query_as::<_, Topic>("DELETE FROM topics WHERE id = $1 RETURNING id, name")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or_else(|| Error::not_found("Topic not found"))?;
        sqlx::raw_sql(AssertSqlSafe(format!(
            "DROP TABLE IF EXISTS {}; DROP TABLE IF EXISTS {};",
            name.events_table(),
            name.deliveries_table()
        )))
        .execute(&mut *tx)
        .await?;
        // Partitions a pruner detached and had not dropped yet.
        partitions::drop_orphans_of(&mut tx, &name).await?;
        sqlx::query("DELETE FROM api_key_topics WHERE topic_name = $1")
            .bind(name.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(topic)
    }

    /// The topic of that name, if it exists.
    pub async fn get_by_name(&self, name: &TopicName) -> Result<Option<Topic>> {
        Ok(
            sqlx::query_as::<_, Topic>("SELECT id, name FROM topics WHERE name = $1")
                .bind(name.as_str())
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Highest committed offset of a topic (also its event count: offsets are contiguous from 1).
    pub async fn last_offset(&self, name: &TopicName) -> Result<i64> {
        last_offset(&self.pool, name.as_str()).await
    }
}

/// `needle` as a LIKE pattern that matches it literally: backslash, `%` and `_` are escaped
/// with a backslash, LIKE's default escape character.
fn like_escape(needle: &str) -> String {
    let mut out = String::with_capacity(needle.len() + 4);
    for c in needle.chars() {
        if matches!(c, '\\' | '%' | '_') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The retained range of a topic: offsets `first..=last` can be read (`first > last` when
/// retention has removed everything so far).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// First retained offset: the topic's low-water mark (1 until retention moves it).
    pub first: i64,
    /// Last visible offset (see [`last_offset`]).
    pub last: i64,
}

impl Bounds {
    /// Events retained: offsets are contiguous, so no count is needed.
    pub fn retained(&self) -> i64 {
        (self.last - self.first + 1).max(0)
    }
}

/// The retained range of topic `name` in one query (the mark as [`last_offset`] reads it). NOT_FOUND without the topic.
pub async fn bounds<'c>(db: impl sqlx::PgExecutor<'c>, name: &str) -> Result<Bounds> {
    let row: Option<(i64, i64)> = sqlx::query_as(
        "SELECT COALESCE(o.marked, 0),
                COALESCE((SELECT r.first_offset FROM topic_retention r WHERE r.name = t.name), 1)
         FROM topics t LEFT JOIN topic_offsets o ON o.name = t.name WHERE t.name = $1",
    )
    .bind(name)
    .fetch_optional(db)
    .await?;
    let (last, first) = row.ok_or_else(|| Error::not_found("Topic not found"))?;
    Ok(Bounds { first, last })
}

fn already_exists(e: sqlx::Error) -> Error {
    if sqlstate(&e).as_deref() == Some(UNIQUE_VIOLATION) {
        Error::AlreadyExists("Topic already exists".into())
    } else {
        e.into()
    }
}

/// The visible end of topic `name`: its highest durable, committed offset, where every reader
/// stops (its mark, `topic_offsets.marked`; 0 before its first publish). Offsets are
/// contiguous from 1, so it is also the topic's event count. NOT_FOUND without the topic.
pub async fn last_offset<'c>(db: impl sqlx::PgExecutor<'c>, name: &str) -> Result<i64> {
    sqlx::query_scalar(
        "SELECT COALESCE(o.marked, 0) FROM topics t
         LEFT JOIN topic_offsets o ON o.name = t.name WHERE t.name = $1",
    )
    .bind(name)
    .fetch_optional(db)
    .await?
    .ok_or_else(|| Error::not_found("Topic not found"))
}

#[cfg(test)]
mod tests {
    use super::like_escape;

    #[test]
    fn like_patterns_match_literally() {
        assert_eq!(like_escape("user_events"), "user\\_events");
        assert_eq!(like_escape("100%"), "100\\%");
        assert_eq!(like_escape("a\\b"), "a\\\\b");
        assert_eq!(like_escape("plain"), "plain");
    }
}
