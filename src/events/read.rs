//! Reading stored events: keyset pages by offset (cost independent of how far in the reader
//! is), with identifier scoping and filters, plus the paging numbers of PullEvents.
//!
//! A read scoped by an identifier or filtered can scan a whole topic (nothing may match), so
//! such reads run under a statement timeout ([`scoped`]) and their `total_count` counts at
//! most [`COUNT_CAP`] matches. An unscoped, unfiltered pull reads at most a batch through the
//! offset index and takes its count from the topic's counter, so it needs neither.

use super::filter::Filter;
use super::model::Event;
use crate::error::{Error, Result, UNDEFINED_TABLE, sqlstate};
use crate::topics::{self, TopicName, TopicRef};
use sqlx::{PgConnection, PgExecutor, PgPool, Postgres, QueryBuilder, Row};
use std::time::Duration;

/// Most matches `total_count` counts for a scoped or filtered pull: it is exact below, and
/// means "at least this many" at the cap.
pub const COUNT_CAP: i64 = 10_000;
/// Statement timeout of scoped or filtered reads when none is configured.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// SQLSTATE query_canceled (a statement timeout).
const QUERY_CANCELED: &str = "57014";

/// Default batch when a request says 0.
pub const DEFAULT_BATCH: i64 = 100;
/// Largest batch served.
pub const MAX_BATCH: i64 = 1000;

/// A pull: events of `topic` after offset `after`, matching every filter.
#[derive(Clone, Debug)]
pub struct PullQuery {
    /// Topic, with the identifier that scopes it (if any).
    pub topic: TopicRef,
    /// Events per batch, already bounded.
    pub batch_size: i64,
    /// Return offsets greater than this.
    pub after: i64,
    /// Filters, all of which must match.
    pub filters: Vec<Filter>,
}

impl PullQuery {
    /// Whether the pull reads only through the offset index (no identifier, no filters).
    pub fn is_indexed(&self) -> bool {
        self.topic.identifier.is_none() && self.filters.is_empty()
    }

    /// From the wire: 0 means the default batch, more than the maximum is capped; a negative
    /// offset is refused.
    pub fn new(topic: TopicRef, batch_size: i32, after: i64, filters: Vec<Filter>) -> Result<Self> {
        if batch_size < 0 {
            return Err(Error::invalid("batch_size must not be negative"));
        }
        if after < 0 {
            return Err(Error::invalid("offset must not be negative"));
        }
        let batch_size = if batch_size == 0 {
            DEFAULT_BATCH
        } else {
            i64::from(batch_size).min(MAX_BATCH)
        };
        Ok(PullQuery {
            topic,
            batch_size,
            after,
            filters,
        })
    }
}

/// One batch with the original's paging numbers.
#[derive(Clone, Debug)]
pub struct PullBatch {
    /// Events, offset ascending.
    pub events: Vec<Event>,
    /// Matching events in all.
    pub total_count: i64,
    /// Offset for the next batch; 0 when there are no more events yet.
    pub next_offset: i64,
    /// Offset for the previous batch; 0 when that is the first batch (or this is).
    pub previous_offset: i64,
    /// ceil(total / batch).
    pub total_batches: i64,
    /// The topic's first retained offset: a pull after an earlier offset started here.
    pub first_offset: i64,
}

const EVENT_COLUMNS: &str = r#""offset", id, name, topic_identifier, data::text AS data, source,
    group_key, reference_key, trace_key, user_id, anonymous_id, occurred_at, context::text AS context"#;

/// The conditions every read of a topic's rows carries: only offsets up to the topic's mark
/// (`topic_offsets.marked`, which only a synchronously committed publish moves) and from its
/// first retained offset on (rows below it may wait for their partition to be dropped), then
/// the identifier scope and the filters.
fn push_scope(qb: &mut QueryBuilder<Postgres>, topic: &TopicRef, filters: &[Filter]) {
    qb.push(r#" AND "offset" <= (SELECT marked FROM topic_offsets WHERE name = "#)
        .push_bind(topic.name.as_str().to_owned())
        .push(")");
    qb.push(r#" AND "offset" >= COALESCE((SELECT first_offset FROM topic_retention WHERE name = "#)
        .push_bind(topic.name.as_str().to_owned())
        .push("), 1)");
    if let Some(i) = &topic.identifier {
        qb.push(" AND topic_identifier = ").push_bind(i.clone());
    }
    for f in filters {
        f.push_sql(qb);
    }
}

/// Begins a transaction whose statements are cancelled after `timeout`: the place for reads
/// whose cost the client decides (identifier scopes, filters).
pub async fn scoped(
    pool: &PgPool,
    timeout: Duration,
) -> Result<sqlx::Transaction<'static, Postgres>> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT set_config('statement_timeout', $1, true)")
        .bind(format!("{}ms", timeout.as_millis().max(1)))
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

/// Reads a batch and its paging numbers; a scoped or filtered pull under `timeout`.
pub async fn pull(pool: &PgPool, q: &PullQuery, timeout: Duration) -> Result<PullBatch> {
    if q.is_indexed() {
        let mut conn = pool.acquire().await?;
        return pull_on(&mut conn, q).await;
    }
    let mut tx = scoped(pool, timeout).await?;
    let batch = pull_on(&mut tx, q).await?;
    tx.commit().await?;
    Ok(batch)
}

async fn pull_on(conn: &mut PgConnection, q: &PullQuery) -> Result<PullBatch> {
    let table = q.topic.name.events_table();
    // One extra row tells whether a next batch exists.
    let mut events =
        read_after(&mut *conn, &q.topic, q.after, q.batch_size + 1, &q.filters).await?;
    let more = events.len() as i64 > q.batch_size;
    events.truncate(q.batch_size as usize);

    let bounds = topics::bounds(&mut *conn, q.topic.name.as_str()).await?;
    let total_count = if q.is_indexed() {
        // Offsets are contiguous, so the retained range is the count: no scan.
        bounds.retained()
    } else {
        // Counting every match could scan the whole topic: count up to the cap.
        let mut qb = QueryBuilder::new(format!(
            "SELECT count(*) FROM (SELECT 1 FROM {table} WHERE true"
        ));
        push_scope(&mut qb, &q.topic, &q.filters);
        qb.push(" LIMIT ").push_bind(COUNT_CAP).push(") AS capped");
        qb.build_query_scalar::<i64>()
            .fetch_one(&mut *conn)
            .await
            .map_err(topic_gone)?
    };

    let previous_offset = match events.first() {
        Some(first) if first.offset > bounds.first => {
            // The (batch+1)-th matching offset before this batch is the "after" of the
            // previous batch; fewer than that means the previous batch is the first.
            let mut qb = QueryBuilder::new(format!(
                "SELECT \"offset\" FROM {table} WHERE \"offset\" < "
            ));
            qb.push_bind(first.offset);
            push_scope(&mut qb, &q.topic, &q.filters);
            qb.push(" ORDER BY \"offset\" DESC LIMIT 1 OFFSET ")
                .push_bind(q.batch_size);
            qb.build_query_scalar::<i64>()
                .fetch_optional(&mut *conn)
                .await
                .map_err(topic_gone)?
                .unwrap_or(0)
        }
        _ => 0,
    };

    Ok(PullBatch {
        next_offset: if more {
            events.last().map_or(0, |e| e.offset)
        } else {
            0
        },
        previous_offset,
        total_batches: (total_count + q.batch_size - 1) / q.batch_size,
        total_count,
        first_offset: bounds.first,
        events,
    })
}

/// Up to `limit` events after `after`, in offset order. The building block of pulls, stream
/// replays and webhook delivery.
pub async fn read_after<'c>(
    db: impl PgExecutor<'c>,
    topic: &TopicRef,
    after: i64,
    limit: i64,
    filters: &[Filter],
) -> Result<Vec<Event>> {
    let mut qb = QueryBuilder::new(format!(
        "SELECT {EVENT_COLUMNS} FROM {} WHERE \"offset\" > ",
        topic.name.events_table()
    ));
    qb.push_bind(after);
    push_scope(&mut qb, topic, filters);
    qb.push(" ORDER BY \"offset\" LIMIT ").push_bind(limit);
    let rows = qb.build().fetch_all(db).await.map_err(topic_gone)?;
    rows.iter()
        .map(|r| event_from_row(&topic.name, r))
        .collect()
}

/// Up to `limit` events before offset `before` (0: from the newest), newest first: the
/// admin UI's "newest first" pages. Keyset by offset like [`read_after`].
pub async fn read_before<'c>(
    db: impl PgExecutor<'c>,
    topic: &TopicRef,
    before: i64,
    limit: i64,
    filters: &[Filter],
) -> Result<Vec<Event>> {
    let mut qb = QueryBuilder::new(format!(
        "SELECT {EVENT_COLUMNS} FROM {} WHERE \"offset\" < ",
        topic.name.events_table()
    ));
    qb.push_bind(if before <= 0 { i64::MAX } else { before });
    push_scope(&mut qb, topic, filters);
    qb.push(" ORDER BY \"offset\" DESC LIMIT ").push_bind(limit);
    let rows = qb.build().fetch_all(db).await.map_err(topic_gone)?;
    rows.iter()
        .map(|r| event_from_row(&topic.name, r))
        .collect()
}

fn event_from_row(topic: &TopicName, r: &sqlx::postgres::PgRow) -> Result<Event> {
    let context: String = r.try_get("context")?;
    Ok(Event {
        offset: r.try_get("offset")?,
        id: r.try_get("id")?,
        topic_name: topic.as_str().to_owned(),
        topic_identifier: r.try_get("topic_identifier")?,
        name: r.try_get("name")?,
        data: r.try_get("data")?,
        source: r.try_get("source")?,
        group_key: r.try_get("group_key")?,
        reference_key: r.try_get("reference_key")?,
        trace_key: r.try_get("trace_key")?,
        user_id: r.try_get("user_id")?,
        anonymous_id: r.try_get("anonymous_id")?,
        occurred_at: r.try_get("occurred_at")?,
        context: serde_json::from_str(&context).unwrap_or_default(),
    })
}

/// A dropped topic table reads as "Topic not found", and a read cut off by its statement
/// timeout as RESOURCE_EXHAUSTED saying what to change; not as internal errors.
pub(crate) fn topic_gone(e: sqlx::Error) -> Error {
    match sqlstate(&e).as_deref() {
        Some(UNDEFINED_TABLE) => Error::not_found("Topic not found"),
        Some(QUERY_CANCELED) => Error::ResourceExhausted(
            "read cancelled: it took longer than the pull timeout (ER_PULL_TIMEOUT_MS); \
             narrow it with a topic identifier, a later offset or more selective filters"
                .into(),
        ),
        _ => e.into(),
    }
}
