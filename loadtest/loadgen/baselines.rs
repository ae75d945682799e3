//! The plain Postgres baselines (c, d) that the publish scenarios are set beside, and the
//! prefill that gives the pull scenario a deep topic. Both write rows exactly as the server
//! stores events, so the comparison is with the same work minus EventRelay.

use crate::args::Plan;
use crate::scenarios::{Measured, Recorder, Window, new_event};
use crate::setup::connect;
use crate::threads::ClientThreads;
use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use eventrelay::proto::NewEvent;
use sqlx::{AssertSqlSafe, Connection, PgConnection, Postgres, QueryBuilder};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// The stored columns of an event, as the server writes them.
struct Row {
    offset: i64,
    id: uuid::Uuid,
    name: String,
    topic_identifier: String,
    data: String,
    source: String,
    group_key: String,
    reference_key: String,
    trace_key: String,
    user_id: String,
    anonymous_id: String,
    occurred_at: DateTime<Utc>,
    context: String,
}

impl Row {
    fn of(e: NewEvent, offset: i64) -> Row {
        Row {
            offset,
            id: uuid::Uuid::now_v7(),
            context: serde_json::to_string(&e.context).unwrap_or_else(|_| "{}".into()),
            name: e.name,
            topic_identifier: String::new(),
            data: e.data,
            source: e.source,
            group_key: e.group_key,
            reference_key: e.reference_key,
            trace_key: e.trace_key,
            user_id: e.user_id,
            anonymous_id: e.anonymous_id,
            occurred_at: Utc::now(),
        }
    }
}

const ROW_COLUMNS: &str = r#"("offset", id, name, topic_identifier, data, source, group_key,
    reference_key, trace_key, user_id, anonymous_id, occurred_at, context)"#;

/// Creates `bench_baseline` shaped like the topic's events table.
pub(crate) async fn make_baseline_table(conn: &mut PgConnection, topic: &str) -> Result<()> {
    sqlx::raw_sql(AssertSqlSafe(format!(
        r#"DROP TABLE IF EXISTS bench_baseline;
           CREATE TABLE bench_baseline (LIKE "{topic}_events" INCLUDING ALL);"#
    )))
    .execute(conn)
    .await
    .context("creating bench_baseline")?;
    Ok(())
}

/// One connection per client, each opened on the client thread that will use it.
async fn baseline_connections(
    plan: &Plan,
    threads: &ClientThreads,
    url: &str,
) -> Result<Vec<PgConnection>> {
    let conns = futures::future::try_join_all((0..plan.concurrency).map(|w| {
        let url = url.to_owned();
        threads.spawn(w, async move { connect(&url).await })
    }))
    .await
    .context("a client thread stopped")?
    .into_iter()
    .collect::<Result<Vec<_>, _>>()
    .context("opening the baseline connections")?;
    Ok(conns)
}

/// Baseline: `rows_per_statement` rows per INSERT (one transaction each, autocommit), one
/// connection per client, offsets from a counter shared by all clients and both baselines (so
/// d appends after c, as b appends after a in the topic). Client `w` runs on client thread
/// `w`, as the gRPC scenarios' clients do.
pub(crate) async fn baseline(
    plan: &Plan,
    threads: &ClientThreads,
    url: &str,
    offsets: &Arc<AtomicI64>,
    rows_per_statement: usize,
) -> Result<Measured> {
    let conns = baseline_connections(plan, threads, url).await?;
    let single_sql: Arc<str> = format!(
        "INSERT INTO bench_baseline {ROW_COLUMNS}
         VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8, $9, $10, $11, $12, $13::jsonb)"
    )
    .into();
    let window = Window::new(plan);
    let mut workers = Vec::with_capacity(plan.concurrency);
    for (w, mut conn) in conns.into_iter().enumerate() {
        let offsets = offsets.clone();
        let single_sql = single_sql.clone();
        workers.push(threads.spawn(w, async move {
            let mut rec = Recorder::default();
            let mut seq = 0u64;
            let n = rows_per_statement as i64;
            while let Some(started) = window.next() {
                let first = offsets.fetch_add(n, Ordering::Relaxed) + 1;
                let rows: Vec<Row> = (0..n)
                    .map(|i| {
                        seq += 1;
                        Row::of(new_event(w, seq), first + i)
                    })
                    .collect();
                let r = if rows_per_statement == 1 {
                    insert_one(&mut conn, &single_sql, rows).await
                } else {
                    insert_many(&mut conn, rows).await
                };
                rec.record(&window, started, r).await;
            }
            let _ = conn.close().await;
            rec
        }));
    }
    Measured::collect(window, workers).await
}

async fn insert_one(conn: &mut PgConnection, sql: &Arc<str>, rows: Vec<Row>) -> Result<u64> {
    let mut n = 0;
    for r in rows {
        n += sqlx::query(AssertSqlSafe(sql.clone()))
            .bind(r.offset)
            .bind(r.id)
            .bind(r.name)
            .bind(r.topic_identifier)
            .bind(r.data)
            .bind(r.source)
            .bind(r.group_key)
            .bind(r.reference_key)
            .bind(r.trace_key)
            .bind(r.user_id)
            .bind(r.anonymous_id)
            .bind(r.occurred_at)
            .bind(r.context)
            .execute(&mut *conn)
            .await?
            .rows_affected();
    }
    Ok(n)
}

async fn insert_many(conn: &mut PgConnection, rows: Vec<Row>) -> Result<u64> {
    let mut qb: QueryBuilder<Postgres> =
        QueryBuilder::new(format!("INSERT INTO bench_baseline {ROW_COLUMNS} "));
    qb.push_values(rows, |mut b, r| {
        b.push_bind(r.offset)
            .push_bind(r.id)
            .push_bind(r.name)
            .push_bind(r.topic_identifier)
            .push_bind(r.data)
            .push_unseparated("::jsonb")
            .push_bind(r.source)
            .push_bind(r.group_key)
            .push_bind(r.reference_key)
            .push_bind(r.trace_key)
            .push_bind(r.user_id)
            .push_bind(r.anonymous_id)
            .push_bind(r.occurred_at)
            .push_bind(r.context)
            .push_unseparated("::jsonb");
    });
    Ok(qb.build().execute(conn).await?.rows_affected())
}

/// Appends `n` rows to the topic with one INSERT ... SELECT generate_series, after the current
/// last offset, moving the topic's reservation and mark (`topic_offsets`) in the same
/// transaction (no publisher runs meanwhile), so offsets stay contiguous. Then ANALYZE, as autovacuum would
/// (VACUUM (ANALYZE) when settling).
pub(crate) async fn prefill(
    conn: &mut PgConnection,
    topic: &str,
    n: i64,
    vacuum: bool,
) -> Result<i64> {
    let mut tx = conn.begin().await?;
    let last: i64 = sqlx::query_scalar(
        "INSERT INTO topic_offsets AS o (name, reserved, marked) VALUES ($2, $1, $1)
         ON CONFLICT (name) DO UPDATE SET reserved = o.reserved + $1, marked = o.marked + $1
         RETURNING reserved",
    )
    .bind(n)
    .bind(topic)
    .fetch_one(&mut *tx)
    .await
    .context("moving the topic's offsets")?;
    let before = last - n;
    sqlx::query(AssertSqlSafe(format!(
        r#"INSERT INTO "{topic}_events"
               ("offset", id, name, data, source, trace_key, user_id, occurred_at, context)
           SELECT $1 + g, gen_random_uuid(), 'order.created',
                  jsonb_build_object('order_id', g, 'customer', 'c' || (g % 32),
                                     'amount_cents', 1999, 'currency', 'EUR',
                                     'items', jsonb_build_array(
                                         jsonb_build_object('sku', 'sku-1', 'qty', 2))),
                  'er-loadgen', 'prefill-' || g, 'user-' || (g % 32), now(),
                  '{{"ip_address": "127.0.0.1"}}'::jsonb
           FROM generate_series(1::bigint, $2::bigint) AS g"#
    )))
    .bind(before)
    .bind(n)
    .execute(&mut *tx)
    .await
    .context("prefill INSERT ... SELECT generate_series")?;
    tx.commit().await?;
    let maintenance = if vacuum {
        "VACUUM (ANALYZE)"
    } else {
        "ANALYZE"
    };
    sqlx::raw_sql(AssertSqlSafe(format!(r#"{maintenance} "{topic}_events""#)))
        .execute(&mut *conn)
        .await?;
    Ok(last)
}
