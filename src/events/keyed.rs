//! The statement that stores one topic's share of a batch when some of its events carry
//! idempotency keys: the plain statement of `insert.rs` plus, in the same statement (one
//! round trip), the look-up of keys already stored and the insert of the new ones. Batches
//! without keys never come here, so their statement is the plain one, unchanged.
//!
//! A key is stored as a 16-byte digest of its topic's id and the key in `idempotency_digests`
//! (migration 0021): the writer hashes the key (`insert::digest`, two `bigint`s), the
//! statement XORs the topic's id into it, so every comparison is one of integers, never a
//! collation's.
//!
//! How one copy is guaranteed, even when the same key arrives at once through two nodes:
//! - The writer sends each key of a batch once (`Columns::push` answers a key's second
//!   occurrence in the batch with its first), so the statement sees distinct keys.
//! - `seen` reads the keys already stored through the primary key, one index probe per keyed
//!   row. Rows whose key is stored and unexpired are not stored again: they take no offset,
//!   so a retry leaves no gap, and the statement returns the originals' ids and offsets.
//! - The remaining rows are numbered, the offsets reserved (the row lock on `topic_offsets`
//!   that orders every publisher of the topic) and the events inserted. Their keys are
//!   inserted with a plain `INSERT` when `seen` found none (the common case: no speculative
//!   insertion), and an expired key's row, found but not yet pruned, is taken over by an
//!   `UPDATE` of that row (by its address) that checks the expiry again.
//! - `seen` reads the statement's snapshot, taken before the row lock was granted; a key a
//!   concurrent transaction committed meanwhile is missing from it. The key's insert does see
//!   it (a unique index checks committed rows, and waits for one in progress) and fails with
//!   a unique violation of `idempotency_digests_pkey`; a take-over that a concurrent publish
//!   (or the pruner) got to first updates fewer rows than expected, and the statement raises
//!   `ER409`. Either undoes the statement whole (offsets included), and the writer runs the
//!   batch again, now seeing the key as it is. Only the loser of a race pays that second run;
//!   an ordinary retry is seen at once.

use super::insert::Columns;
use super::insert::{RESERVE, bind_columns, store_rows};
use crate::topics::TopicName;
use sqlx::AssertSqlSafe;
use std::collections::HashMap;
use uuid::Uuid;

/// SQLSTATE of `eventrelay_key_raced()` (migration 0020): a key stored by a concurrent
/// publish after this statement's snapshot; running the statement again answers it.
pub(super) const KEY_RACED: &str = "ER409";

/// The keys' primary key: a unique violation of it is a key stored by a concurrent publish.
const KEYS_PRIMARY_KEY: &str = "idempotency_digests_pkey";

/// What one topic's statement did: the first offset it reserved and the rows it did not
/// store because their key was stored before (row index: the original's id and offset).
#[derive(Debug, Default)]
pub(super) struct Outcome {
    pub(super) first: i64,
    pub(super) stored_before: HashMap<usize, (Uuid, i64)>,
}

/// The SQL of a topic's id as the two `bigint`s its digests are XORed with (`id`: a uuid).
pub(super) const TOPIC_HALVES: &str =
    "('x' || left(replace(id::text, '-', ''), 16))::bit(64)::bigint AS hi,
                      ('x' || right(replace(id::text, '-', ''), 16))::bit(64)::bigint AS lo";

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
    // and why `stored` is not read). `topic` is the topic's id (as the two halves the keys'
    // hashes `h1`, `h2` are XORed with) and its window. `seen` probes the primary key row
    // by row (LATERAL with LIMIT stays a nested loop, whatever the planner thinks of the
    // batch's size), expired keys included: those are stored anew, their row (found by its
    // address) taken over by `taken`; `claimed` inserts the keys `seen` did not find.
    // `taken` checks the expiry as `(...) IS TRUE`, which no index can serve: as a plain
    // `expires_at <= now()` the planner scans the BRIN expiry index instead (it takes the
    // range for nearly empty), reading every unsummarized page on every statement. The check
    // is still made again on a row a concurrent publish took over (or the pruner deleted)
    // meanwhile, which then drops out of `taken`. The final CASE: no reservation, no topic
    // (NULL); every expired key taken over, the first offset; else one raced, and the
    // statement fails with ER409.
    let query = sqlx::query_as(AssertSqlSafe(format!(
        r#"WITH sync AS MATERIALIZED (
               SELECT set_config('synchronous_commit', 'on', true)
           ), topic AS MATERIALIZED (
               SELECT {TOPIC_HALVES},
                      COALESCE(dedupe_window_seconds::float8, $16::float8) AS secs
               FROM topics WHERE name = $13
           ), rows AS MATERIALIZED (
               SELECT u.ord, u.i, u.n, u.ti, u.d::jsonb AS d, u.s, u.g, u.rk, u.t, u.usr, u.a,
                      u.oc, u.c::jsonb AS c, u.h1, u.h2
               FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[],
                           $6::text[], $7::text[], $8::text[], $9::text[], $10::text[],
                           $11::timestamptz[], $12::text[], $14::int8[], $15::int8[])
                    WITH ORDINALITY AS u(i, n, ti, d, s, g, rk, t, usr, a, oc, c, h1, h2, ord)
           ), seen AS MATERIALIZED (
               SELECT w.ord, x.ctid AS row, x.event_id, x."offset", x.expires_at > now() AS live
               FROM topic p, rows w CROSS JOIN LATERAL (
                   SELECT x.ctid, x.event_id, x."offset", x.expires_at FROM idempotency_digests x
                   WHERE x.digest_hi = w.h1 # p.hi AND x.digest_lo = w.h2 # p.lo LIMIT 1
               ) x
               WHERE w.h1 IS NOT NULL
           ), fresh AS MATERIALIZED (
               SELECT w.*, row_number() OVER (ORDER BY w.ord) AS pos
               FROM rows w WHERE NOT EXISTS (SELECT 1 FROM seen s WHERE s.ord = w.ord AND s.live)
           ), counted AS MATERIALIZED (
               SELECT count(*) AS n FROM fresh
           ), {RESERVE}, stored AS (
               {}
           ), claimed AS (
               INSERT INTO idempotency_digests (digest_hi, digest_lo, event_id, "offset",
                   expires_at)
               SELECT f.h1 # p.hi, f.h2 # p.lo, f.i, r.before + f.pos,
                      now() + make_interval(secs => p.secs)
               FROM reserved r, topic p, fresh f
               WHERE f.h1 IS NOT NULL AND NOT EXISTS (SELECT 1 FROM seen s WHERE s.ord = f.ord)
           ), taken AS (
               UPDATE idempotency_digests x
               SET event_id = f.i, "offset" = r.before + f.pos,
                   expires_at = now() + make_interval(secs => p.secs)
               FROM reserved r, topic p, fresh f, seen s
               WHERE s.ord = f.ord AND x.ctid = s.row AND (x.expires_at <= now()) IS TRUE
               RETURNING 1
           )
           SELECT CASE
                      WHEN NOT EXISTS (SELECT 1 FROM reserved) THEN NULL
                      WHEN (SELECT count(*) FROM taken)
                           = (SELECT count(*) FROM seen WHERE NOT live)
                          THEN (SELECT before FROM reserved) + 1
                      ELSE eventrelay_key_raced()
                  END,
                  ARRAY(SELECT ord FROM seen WHERE live ORDER BY ord),
                  ARRAY(SELECT event_id FROM seen WHERE live ORDER BY ord),
                  ARRAY(SELECT "offset" FROM seen WHERE live ORDER BY ord)
           FROM sync"#,
        store_rows(&topic.events_table(), "fresh", "pos")
    )));
    let row: (Option<i64>, Vec<i64>, Vec<Uuid>, Vec<i64>) = bind_columns!(query, cols, topic)
        .bind(&cols.hash_hi[..])
        .bind(&cols.hash_lo[..])
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

/// Whether a statement failed because a key raced (see the module's header): `ER409`, or a
/// unique violation of the keys' primary key.
pub(super) fn raced(e: &sqlx::Error) -> bool {
    match crate::error::sqlstate(e).as_deref() {
        Some(KEY_RACED) => true,
        Some(crate::error::UNIQUE_VIOLATION) => e
            .as_database_error()
            .and_then(|d| d.constraint())
            .is_some_and(|c| c == KEYS_PRIMARY_KEY),
        _ => false,
    }
}
