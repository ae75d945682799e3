//! The one statement that stores a batch of events: its column arrays, the offset reservation
//! that orders it after every earlier batch of the topic, and the multi-row insert. The writer
//! lanes (`writer.rs`) decide what goes into a batch and when; `mark.rs` makes batches that
//! committed without the flush durable and visible.

use super::model::ValidEvent;
use crate::error::{Error, Result};
use crate::topics::{TopicName, partitions};
use sqlx::AssertSqlSafe;
use sqlx::PgPool;

/// Stores the rows of `cols` in one implicit transaction; returns the first offset.
///
/// With `durable` false the transaction commits without waiting for the WAL flush, so its rows
/// are not durable yet when this returns: nothing may be acknowledged or shown to readers
/// before `mark::raise` has run after it (readers read up to the topic's mark, which only a
/// durable commit raises). With `durable` true it commits synchronously and moves the mark
/// itself: `topic_offsets.marked`, in the very update that reserves its offsets (migration
/// 0007 says why the mark has two homes, and `topic_marks` is what readers read).
pub(super) async fn store(
    pool: &PgPool,
    topic: &TopicName,
    cols: Columns<'_>,
    durable: bool,
) -> Result<i64> {
    let first = match run(pool, topic, &cols, durable).await {
        // A burst outran the partitions the topic's pruner makes ahead: make them now and run
        // the statement again. It failed whole, reservation included, so no offset was
        // taken and none is skipped (see topics::partitions; measured in docs/decisions.md).
        Err(e) if partitions::missing_partition(&e) => {
            partitions::make_room(pool, topic, cols.id.len() as i64).await?;
            run(pool, topic, &cols, durable).await
        }
        other => other,
    }
    .map_err(super::read::topic_gone)?;
    // No row reserved: the topic row is gone (dropped, or dropped and made again later).
    first.ok_or_else(|| Error::not_found("Topic not found"))
}

/// The statement itself: the first offset of the batch, `None` when the topic row is gone.
async fn run(
    pool: &PgPool,
    topic: &TopicName,
    cols: &Columns<'_>,
    durable: bool,
) -> Result<Option<i64>, sqlx::Error> {
    // One statement, one round trip, in its own implicit transaction: reserve the offsets
    // (row-locking the topic's `topic_offsets` row until commit) and insert every row numbered
    // from them. `rows` is materialised and counted before the reservation touches that row, so
    // the array decoding and JSON parsing happen before the lock is taken, not while other
    // publishers of the topic wait for it. The reservation is an upsert starting from the
    // larger of the two counters, so a topic without a row yet (made before migration 0005, or
    // by an older node) gets one, and offsets an older node handed out are never reused; no
    // topic row, no reservation: NULL, "Topic not found". `commit_mode` makes a large batch's
    // transaction commit without waiting for the flush, so the lock is released as soon as
    // the commit is recorded, not a flush later (measured: the flush was a fifth of the time
    // the lock was held with 100-event requests); a small batch commits synchronously and its
    // reservation also sets `marked`, sparing it a second statement and a second row update
    // (a 12-event statement 7.6% faster than with an update of `topics.last_offset`). The
    // statement takes the events table's lock before the rows'; DeleteTopic takes them in the
    // same order, so the two never deadlock. `stored` is not read by the final SELECT, but
    // Postgres runs every data-modifying CTE to completion; the first offset comes from the
    // reservation, which spares a RETURNING row per event.
    sqlx::query_scalar(AssertSqlSafe(format!(
        r#"WITH commit_mode AS MATERIALIZED (
               SELECT set_config('synchronous_commit', CASE WHEN $14 THEN 'on' ELSE 'off' END,
                                 true)
           ), rows AS MATERIALIZED (
               SELECT u.ord, u.i, u.n, u.ti, u.d::jsonb AS d, u.s, u.g, u.rk, u.t, u.usr, u.a,
                      u.oc, u.c::jsonb AS c
               FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[],
                           $6::text[], $7::text[], $8::text[], $9::text[], $10::text[],
                           $11::timestamptz[], $12::text[])
                    WITH ORDINALITY AS u(i, n, ti, d, s, g, rk, t, usr, a, oc, c, ord)
           ), counted AS MATERIALIZED (
               SELECT count(*) AS n FROM rows
           ), reserved AS (
               INSERT INTO topic_offsets AS o (name, reserved, marked)
               SELECT t.name, t.last_offset + c.n, CASE WHEN $14 THEN t.last_offset + c.n ELSE 0 END
               FROM topics t, counted c WHERE t.name = $13
               ON CONFLICT (name) DO UPDATE
                   SET reserved = GREATEST(o.reserved + (SELECT n FROM counted), EXCLUDED.reserved),
                       marked = CASE WHEN $14
                           THEN GREATEST(o.reserved + (SELECT n FROM counted), EXCLUDED.reserved)
                           ELSE o.marked END
               RETURNING o.reserved - (SELECT n FROM counted) AS before
           ), stored AS (
               INSERT INTO {} ("offset", id, name, topic_identifier, data, source, group_key,
                   reference_key, trace_key, user_id, anonymous_id, occurred_at, context)
               SELECT r.before + w.ord, w.i, w.n, w.ti, w.d, w.s, w.g, w.rk, w.t, w.usr, w.a,
                      w.oc, w.c
               FROM reserved r, rows w
           )
           SELECT (SELECT before FROM reserved) + 1 FROM commit_mode"#,
        topic.events_table()
    )))
    .bind(&cols.id[..])
    .bind(&cols.name[..])
    .bind(&cols.identifier[..])
    .bind(&cols.data[..])
    .bind(&cols.source[..])
    .bind(&cols.group_key[..])
    .bind(&cols.reference_key[..])
    .bind(&cols.trace_key[..])
    .bind(&cols.user_id[..])
    .bind(&cols.anonymous_id[..])
    .bind(&cols.occurred_at[..])
    .bind(&cols.context[..])
    .bind(topic.as_str())
    .bind(durable)
    .fetch_one(pool)
    .await
}

/// Column arrays for UNNEST, borrowing the events' text (the batch outlives the statement),
/// so building them copies no string; only the context is encoded anew.
pub(super) struct Columns<'a> {
    id: Vec<uuid::Uuid>,
    name: Vec<&'a str>,
    identifier: Vec<&'a str>,
    data: Vec<&'a str>,
    source: Vec<&'a str>,
    group_key: Vec<&'a str>,
    reference_key: Vec<&'a str>,
    trace_key: Vec<&'a str>,
    user_id: Vec<&'a str>,
    anonymous_id: Vec<&'a str>,
    occurred_at: Vec<chrono::DateTime<chrono::Utc>>,
    context: Vec<String>,
}

impl<'a> Columns<'a> {
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

    pub(super) fn push(&mut self, identifier: &'a str, v: &'a ValidEvent) {
        let e = &v.event;
        self.id.push(v.id);
        self.name.push(&e.name);
        self.identifier.push(identifier);
        self.data.push(&e.data);
        self.source.push(&e.source);
        self.group_key.push(&e.group_key);
        self.reference_key.push(&e.reference_key);
        self.trace_key.push(&e.trace_key);
        self.user_id.push(&e.user_id);
        self.anonymous_id.push(&e.anonymous_id);
        self.occurred_at.push(v.occurred_at);
        self.context
            .push(serde_json::to_string(&e.context).unwrap_or_else(|_| "{}".into()));
    }
}
