//! The one statement that stores one topic's share of a batch: its column arrays, the offset
//! reservation that orders it after every earlier batch of the topic, and the multi-row
//! insert. The writer (`writer.rs`) decides what goes into a batch and runs one such statement
//! per topic in the batch's transaction.

use super::model::ValidEvent;
use crate::topics::TopicName;
use sha2::{Digest, Sha256};
use sqlx::AssertSqlSafe;
use std::collections::HashSet;

/// Binds a batch's column arrays as `$1` to `$12` and the topic's name as `$13`, the
/// parameters the plain and the keyed statement share (the keyed one binds more after them).
macro_rules! bind_columns {
    ($query:expr, $cols:expr, $topic:expr) => {
        $query
            .bind(&$cols.id[..])
            .bind(&$cols.name[..])
            .bind(&$cols.identifier[..])
            .bind(&$cols.data[..])
            .bind(&$cols.source[..])
            .bind(&$cols.group_key[..])
            .bind(&$cols.reference_key[..])
            .bind(&$cols.trace_key[..])
            .bind(&$cols.user_id[..])
            .bind(&$cols.anonymous_id[..])
            .bind(&$cols.occurred_at[..])
            .bind(&$cols.context[..])
            .bind($topic.as_str())
    };
}
pub(super) use bind_columns;

/// The reservation of a batch's offsets, shared by the plain and the keyed statement: an upsert
/// of the topic's `topic_offsets` row by the `counted` rows, starting from the larger of
/// `reserved` and `topics.last_offset` (`$13` is the topic's name), which row-locks it until
/// commit and moves the mark with it. `before` is the offset just before the batch.
pub(super) const RESERVE: &str = "reserved AS (
               INSERT INTO topic_offsets AS o (name, reserved, marked)
               SELECT t.name, t.last_offset + c.n, t.last_offset + c.n
               FROM topics t, counted c WHERE t.name = $13
               ON CONFLICT (name) DO UPDATE
                   SET reserved = GREATEST(o.reserved + (SELECT n FROM counted), EXCLUDED.reserved),
                       marked = GREATEST(o.reserved + (SELECT n FROM counted), EXCLUDED.reserved)
               RETURNING o.reserved - (SELECT n FROM counted) AS before
           )";

/// The insert of a batch's events, shared by the plain and the keyed statement: the rows of
/// the CTE named `rows` (with the columns `store`'s CTE `rows` names), numbered from the
/// reservation by their column `position`, into `table`.
pub(super) fn store_rows(table: &str, rows: &str, position: &str) -> String {
    format!(
        r#"INSERT INTO {table} ("offset", id, name, topic_identifier, data, source, group_key,
                   reference_key, trace_key, user_id, anonymous_id, occurred_at, context)
               SELECT r.before + w.{position}, w.i, w.n, w.ti, w.d, w.s, w.g, w.rk, w.t, w.usr,
                      w.a, w.oc, w.c
               FROM reserved r, {rows} w"#
    )
}

/// Stores the rows of `cols` through `db`: a transaction the writer opened for several topics,
/// or the pool, where the statement is its own implicit transaction (one round trip for a
/// batch of one topic). Returns the first offset, or `None` when the topic's row is gone. The
/// error is Postgres' own, so the writer can tell a missing partition (see
/// `topics::partitions`) from the rest.
///
/// The reservation row-locks the topic's `topic_offsets` row until the transaction ends and
/// moves the topic's mark (`marked`) with it: readers read up to the mark, and see it only
/// once the transaction has committed, synchronously, so every offset they see is durable.
pub(super) async fn store<'c>(
    db: impl sqlx::PgExecutor<'c>,
    topic: &TopicName,
    cols: &Columns<'_>,
) -> Result<Option<i64>, sqlx::Error> {
    // One statement, one round trip: reserve the offsets and insert every row numbered from
    // them. `rows` is materialised and counted before the reservation touches the offsets
    // row, so the array decoding and JSON parsing happen before the lock is taken, not while
    // other publishers of the topic wait for it. The reservation is an upsert starting from
    // the larger of `reserved` and `topics.last_offset`, so a topic without a row yet gets
    // one, and offsets set by an older node or a bulk load are never reused; no topic row, no
    // reservation: NULL. `sync` makes the commit wait for the WAL flush whatever the
    // server's default: the flush is what makes the acknowledgement true. The statement takes
    // the events table's lock before the rows'; DeleteTopic takes them in the same order, so
    // the two never deadlock. `stored` is not read by the final SELECT, but Postgres runs
    // every data-modifying CTE to completion; the first offset comes from the reservation,
    // which spares a RETURNING row per event.
    let query = sqlx::query_scalar(AssertSqlSafe(format!(
        r#"WITH sync AS MATERIALIZED (
               SELECT set_config('synchronous_commit', 'on', true)
           ), rows AS MATERIALIZED (
               SELECT u.ord, u.i, u.n, u.ti, u.d::jsonb AS d, u.s, u.g, u.rk, u.t, u.usr, u.a,
                      u.oc, u.c::jsonb AS c
               FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[],
                           $6::text[], $7::text[], $8::text[], $9::text[], $10::text[],
                           $11::timestamptz[], $12::text[])
                    WITH ORDINALITY AS u(i, n, ti, d, s, g, rk, t, usr, a, oc, c, ord)
           ), counted AS MATERIALIZED (
               SELECT count(*) AS n FROM rows
           ), {RESERVE}, stored AS (
               {}
           )
           SELECT (SELECT before FROM reserved) + 1 FROM sync"#,
        store_rows(&topic.events_table(), "rows", "ord")
    )));
    bind_columns!(query, cols, topic).fetch_one(db).await
}

/// A key's part of its digest: the first 16 bytes of the SHA-256 of its UTF-8 bytes, as two
/// big-endian `bigint`s. XORed with the topic's id (its 16 bytes read the same way) it is
/// SQL's `idempotency_key_digest(topic_id, key)` (migration 0021; `keyed.rs` XORs it in).
pub(super) fn digest(key: &str) -> (i64, i64) {
    let hash = Sha256::digest(key.as_bytes());
    let half = |at: usize| {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&hash[at..at + 8]);
        i64::from_be_bytes(bytes)
    };
    (half(0), half(8))
}

/// Column arrays for UNNEST, borrowing the events' text (the batch outlives the statement),
/// so building them copies no string; only the context is encoded anew.
pub(super) struct Columns<'a> {
    pub(super) id: Vec<uuid::Uuid>,
    pub(super) name: Vec<&'a str>,
    pub(super) identifier: Vec<&'a str>,
    pub(super) data: Vec<&'a str>,
    pub(super) source: Vec<&'a str>,
    pub(super) group_key: Vec<&'a str>,
    pub(super) reference_key: Vec<&'a str>,
    pub(super) trace_key: Vec<&'a str>,
    pub(super) user_id: Vec<&'a str>,
    pub(super) anonymous_id: Vec<&'a str>,
    pub(super) occurred_at: Vec<chrono::DateTime<chrono::Utc>>,
    pub(super) context: Vec<String>,
    /// Each row's idempotency key's hash, in halves (`None`: no key; see `insert::digest`);
    /// bound only by the keyed statement.
    pub(super) hash_hi: Vec<Option<i64>>,
    pub(super) hash_lo: Vec<Option<i64>>,
    /// The keys of the rows held: a key a second time in one batch is not a row.
    keys: HashSet<&'a str>,
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
            hash_hi: Vec::with_capacity(n),
            hash_lo: Vec::with_capacity(n),
            keys: HashSet::new(),
        }
    }

    /// Rows held.
    pub(super) fn len(&self) -> usize {
        self.id.len()
    }

    /// Whether a row has an idempotency key: the batch then takes the keyed statement
    /// (`keyed.rs`); without one, the statement above, as before keys existed.
    pub(super) fn is_keyed(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Adds `v` as a row, unless its idempotency key is already a row of this batch (the
    /// same key twice in one request, or in two requests sharing a transaction): that one
    /// is answered with the first, and `false` says so.
    pub(super) fn push(&mut self, identifier: &'a str, v: &'a ValidEvent) -> bool {
        let e = &v.event;
        let key = v.key();
        if let Some(k) = key
            && !self.keys.insert(k)
        {
            return false;
        }
        let hash = key.map(digest);
        self.hash_hi.push(hash.map(|h| h.0));
        self.hash_lo.push(hash.map(|h| h.1));
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
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SQL's halves of the key's SHA-256 (`('x' || encode(substring(sha256(..) ..), 'hex'))
    /// ::bit(64)::bigint`) for the same key.
    #[test]
    fn digests_match_sql() {
        assert_eq!(
            digest("order-42"),
            (4321398832972926703, -1896496587158840213)
        );
    }
}
