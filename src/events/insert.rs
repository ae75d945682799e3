//! The one statement that stores a batch of events: its column arrays, the offset
//! reservation that orders it after every earlier batch of the topic, and the multi-row insert.
//! The writer lanes (`writer.rs`) decide what goes into a batch and when.

use super::model::ValidEvent;
use crate::error::{Error, Result};
use crate::topics::TopicName;
use sqlx::AssertSqlSafe;
use sqlx::PgPool;

/// Stores the rows of `cols` in one implicit transaction; returns the first offset.
pub(super) async fn store(pool: &PgPool, topic: &TopicName, cols: Columns) -> Result<i64> {
    // One statement, one round trip, in its own implicit transaction: reserve the offsets
    // (row-locking the topic until commit) and insert every row numbered from them.
    // `rows` is materialised and counted by the UPDATE's SET before the UPDATE touches the
    // topic row, so the array decoding and JSON parsing happen before the lock is taken, not
    // while other publishers of the topic wait for it. The statement takes the events table's
    // lock before the topic row's; DeleteTopic takes them in the same order, so the two never
    // deadlock. `stored` is not read by the final SELECT, but Postgres runs every data-modifying
    // CTE to completion; the first offset comes from the reservation (NULL when the topic row
    // is gone), which spares a RETURNING row per event.
    let first: Option<i64> = sqlx::query_scalar(AssertSqlSafe(format!(
        r#"WITH rows AS MATERIALIZED (
               SELECT u.ord, u.i, u.n, u.ti, u.d::jsonb AS d, u.s, u.g, u.rk, u.t, u.usr, u.a,
                      u.oc, u.c::jsonb AS c
               FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[],
                           $6::text[], $7::text[], $8::text[], $9::text[], $10::text[],
                           $11::timestamptz[], $12::text[])
                    WITH ORDINALITY AS u(i, n, ti, d, s, g, rk, t, usr, a, oc, c, ord)
           ), reserved AS (
               UPDATE topics SET last_offset = last_offset + (SELECT count(*) FROM rows)
               WHERE name = $13
               RETURNING last_offset - (SELECT count(*) FROM rows) AS before
           ), stored AS (
               INSERT INTO {} ("offset", id, name, topic_identifier, data, source, group_key,
                   reference_key, trace_key, user_id, anonymous_id, occurred_at, context)
               SELECT r.before + w.ord, w.i, w.n, w.ti, w.d, w.s, w.g, w.rk, w.t, w.usr, w.a,
                      w.oc, w.c
               FROM reserved r, rows w
           )
           SELECT (SELECT before FROM reserved) + 1"#,
        topic.events_table()
    )))
    .bind(cols.id)
    .bind(cols.name)
    .bind(cols.identifier)
    .bind(cols.data)
    .bind(cols.source)
    .bind(cols.group_key)
    .bind(cols.reference_key)
    .bind(cols.trace_key)
    .bind(cols.user_id)
    .bind(cols.anonymous_id)
    .bind(cols.occurred_at)
    .bind(cols.context)
    .bind(topic.as_str())
    .fetch_one(pool)
    .await
    .map_err(super::read::topic_gone)?;
    // No row reserved: the topic row is gone (dropped, or dropped and made again later).
    first.ok_or_else(|| Error::not_found("Topic not found"))
}

/// Column arrays for UNNEST.
pub(super) struct Columns {
    id: Vec<uuid::Uuid>,
    name: Vec<String>,
    identifier: Vec<String>,
    data: Vec<String>,
    source: Vec<String>,
    group_key: Vec<String>,
    reference_key: Vec<String>,
    trace_key: Vec<String>,
    user_id: Vec<String>,
    anonymous_id: Vec<String>,
    occurred_at: Vec<chrono::DateTime<chrono::Utc>>,
    context: Vec<String>,
}

impl Columns {
    pub(super) fn with_capacity(n: usize) -> Self {
        Columns {
            id: Vec::with_capacity(n),
            name: Vec::with_capacity(n),
            identifier: Vec::with_capacity(n),
            data: Vec::with_capacity(n),
            source: Vec::with_capacity(n),
            group_key: Vec::with_capacity(n),
            reference_key: Vec::with_capacity(n),
            trace_key: Vec::with_capacity(n),
            user_id: Vec::with_capacity(n),
            anonymous_id: Vec::with_capacity(n),
            occurred_at: Vec::with_capacity(n),
            context: Vec::with_capacity(n),
        }
    }

    pub(super) fn push(&mut self, identifier: &str, v: &ValidEvent) {
        let e = &v.event;
        self.id.push(v.id);
        self.name.push(e.name.clone());
        self.identifier.push(identifier.to_owned());
        self.data.push(e.data.clone());
        self.source.push(e.source.clone());
        self.group_key.push(e.group_key.clone());
        self.reference_key.push(e.reference_key.clone());
        self.trace_key.push(e.trace_key.clone());
        self.user_id.push(e.user_id.clone());
        self.anonymous_id.push(e.anonymous_id.clone());
        self.occurred_at.push(v.occurred_at);
        self.context
            .push(serde_json::to_string(&e.context).unwrap_or_else(|_| "{}".into()));
    }
}
