//! The statement that stores one topic's share of a batch when some of its events carry
//! idempotency keys: the plain statement of `insert.rs` plus, in the same statement (one
//! round trip), the look-up of keys already stored and the insert of the new ones. Batches
//! without keys never come here, so their statement is the plain one, unchanged.
//!
//! How one copy is guaranteed, even when the same key arrives at once through two nodes:
//! - The writer sends each key of a batch once (`Columns::push` answers a key's second
//!   occurrence in the batch with its first), so the statement sees distinct keys.
//! - `seen` reads the keys already stored (and not expired) through the primary key, one
//!   index probe per keyed row. Those rows are not stored again: they take no offset, so a
//!   retry leaves no gap, and the statement returns the originals' ids and offsets.
//! - The remaining rows are numbered, the offsets reserved (the row lock on `topic_offsets`
//!   that orders every publisher of the topic), the events inserted, and the keys inserted
//!   with their events' ids and offsets; an expired key's row is taken over.
//! - `seen` reads the statement's snapshot, taken before the row lock was granted; a key a
//!   concurrent transaction committed meanwhile is missing from it. The key's insert does see
//!   it (a unique index checks committed rows, and waits for one in progress), so fewer keys
//!   are inserted than rows kept: the statement then raises `ER409`, which undoes it whole
//!   (offsets included), and the writer runs the batch again, now seeing the key as stored.
//!   Only the loser of a race pays that second run; an ordinary retry is seen at once.

use super::insert::Columns;
use super::insert::{RESERVE, bind_columns};
use crate::topics::TopicName;
use sqlx::AssertSqlSafe;
use std::collections::HashMap;
use uuid::Uuid;

/// SQLSTATE of `eventrelay_key_raced()` (migration 0020): a key stored by a concurrent
/// publish after this statement's snapshot; running the statement again answers it.
pub(super) const KEY_RACED: &str = "ER409";

/// What one topic's statement did: the first offset it reserved and the rows it did not
/// store because their key was stored before (row index: the original's id and offset).
#[derive(Debug, Default)]
pub(super) struct Outcome {
    pub(super) first: i64,
    pub(super) stored_before: HashMap<usize, (Uuid, i64)>,
}

/// Stores the rows of `cols`, skipping those whose key is stored and unexpired, and
/// records the keys of the others for the topic's dedupe window (`default_window` seconds
/// when the topic has none of its own). `None` when the topic's row is gone.
pub(super) async fn store<'c>(
    db: impl sqlx::PgExecutor<'c>,
    topic: &TopicName,
    cols: &Columns<'_>,
    default_window: i64,
) -> Result<Option<Outcome>, sqlx::Error> {
    // The same shape as the plain statement (see insert.rs for `sync`, `rows`, `reserved`
    // and why `stored` is not read). `seen` probes the primary key row by row (LATERAL with
    // LIMIT stays a nested loop, whatever the planner thinks of the batch's size). The
    // final CASE: no reservation, no topic (NULL); every new key inserted, the first
    // offset; else a key raced, and the statement fails with ER409.
    let query = sqlx::query_as(AssertSqlSafe(format!(
        r#"WITH sync AS MATERIALIZED (
               SELECT set_config('synchronous_commit', 'on', true)
           ), rows AS MATERIALIZED (
               SELECT u.ord, u.i, u.n, u.ti, u.d::jsonb AS d, u.s, u.g, u.rk, u.t, u.usr, u.a,
                      u.oc, u.c::jsonb AS c, u.k
               FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[],
                           $6::text[], $7::text[], $8::text[], $9::text[], $10::text[],
                           $11::timestamptz[], $12::text[], $14::text[])
                    WITH ORDINALITY AS u(i, n, ti, d, s, g, rk, t, usr, a, oc, c, k, ord)
           ), seen AS MATERIALIZED (
               SELECT w.ord, x.event_id, x."offset"
               FROM rows w CROSS JOIN LATERAL (
                   SELECT x.event_id, x."offset" FROM idempotency_keys x
                   WHERE x.topic = $13 AND x.key = w.k AND x.expires_at > now() LIMIT 1
               ) x
               WHERE w.k IS NOT NULL
           ), fresh AS MATERIALIZED (
               SELECT w.*, row_number() OVER (ORDER BY w.ord) AS pos
               FROM rows w WHERE NOT EXISTS (SELECT 1 FROM seen s WHERE s.ord = w.ord)
           ), counted AS MATERIALIZED (
               SELECT count(*) AS n FROM fresh
           ), {RESERVE}, stored AS (
               INSERT INTO {} ("offset", id, name, topic_identifier, data, source, group_key,
                   reference_key, trace_key, user_id, anonymous_id, occurred_at, context)
               SELECT r.before + f.pos, f.i, f.n, f.ti, f.d, f.s, f.g, f.rk, f.t, f.usr, f.a,
                      f.oc, f.c
               FROM reserved r, fresh f
           ), claimed AS (
               INSERT INTO idempotency_keys AS x (topic, key, event_id, "offset", expires_at)
               SELECT $13, f.k, f.i, r.before + f.pos,
                      now() + make_interval(secs => COALESCE(t.dedupe_window_seconds::float8, $15::float8))
               FROM reserved r, fresh f, topics t
               WHERE t.name = $13 AND f.k IS NOT NULL
               ON CONFLICT (topic, key) DO UPDATE
                   SET event_id = EXCLUDED.event_id, "offset" = EXCLUDED."offset",
                       expires_at = EXCLUDED.expires_at
                   WHERE x.expires_at <= now()
               RETURNING 1
           )
           SELECT CASE
                      WHEN NOT EXISTS (SELECT 1 FROM reserved) THEN NULL
                      WHEN (SELECT count(*) FROM claimed)
                           = (SELECT count(*) FROM fresh WHERE k IS NOT NULL)
                          THEN (SELECT before FROM reserved) + 1
                      ELSE eventrelay_key_raced()
                  END,
                  ARRAY(SELECT ord FROM seen ORDER BY ord),
                  ARRAY(SELECT event_id FROM seen ORDER BY ord),
                  ARRAY(SELECT "offset" FROM seen ORDER BY ord)
           FROM sync"#,
        topic.events_table()
    )));
    let row: (Option<i64>, Vec<i64>, Vec<Uuid>, Vec<i64>) = bind_columns!(query, cols, topic)
        .bind(&cols.key[..])
        .bind(default_window as f64)
        .fetch_one(db)
        .await?;
    let (first, ords, ids, offsets) = row;
    Ok(first.map(|first| Outcome {
        first,
        // ORDINALITY counts from 1; rows are indexed from 0.
        stored_before: ords
            .into_iter()
            .zip(ids.into_iter().zip(offsets))
            .map(|(ord, original)| (ord as usize - 1, original))
            .collect(),
    }))
}

/// Whether a statement failed because a key raced (see the module's header).
pub(super) fn raced(e: &sqlx::Error) -> bool {
    crate::error::sqlstate(e).as_deref() == Some(KEY_RACED)
}
