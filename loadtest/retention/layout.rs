//! Part 2: what the partitioned layout itself costs the publish path and reads. The library's
//! writer lanes (the publish path below gRPC) and `read_after` (the read under every pull)
//! against a partitioned topic and a plain one (the layout before retention), each prefilled
//! with `--keep` events, in turns: plain, partitioned, partitioned, plain. No node runs, so
//! no pruner converts the plain topic meanwhile.

use crate::Args;
use crate::setup;
use anyhow::{Context, Result};
use eventrelay::events::{NewEvent, ValidEvent, Writer, read_after, validate};
use eventrelay::metrics::Metrics;
use eventrelay::topics::{TopicName, TopicRef, Topics};
use sqlx::{AssertSqlSafe, PgPool};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio_util::task::TaskTracker;

const PARTED: &str = "layout_parted";
const PLAIN: &str = "layout_plain";

/// The events table of the layout before retention.
const PLAIN_DDL: &str = r#"
CREATE TABLE layout_plain_events (
    "offset" bigint PRIMARY KEY, id uuid NOT NULL, name text NOT NULL,
    topic_identifier text NOT NULL DEFAULT '', data jsonb NOT NULL,
    source text NOT NULL DEFAULT '', group_key text NOT NULL DEFAULT '',
    reference_key text NOT NULL DEFAULT '', trace_key text NOT NULL DEFAULT '',
    user_id text NOT NULL DEFAULT '', anonymous_id text NOT NULL DEFAULT '',
    occurred_at timestamptz NOT NULL, context jsonb NOT NULL DEFAULT '{}',
    inserted_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ON layout_plain_events (topic_identifier, "offset");
CREATE INDEX ON layout_plain_events (name, "offset");
INSERT INTO topics (id, name) VALUES (gen_random_uuid(), 'layout_plain');
"#;

pub(crate) async fn compare(args: &Args, url: &str) -> Result<()> {
    let pool = eventrelay::db::connect(url, 8).await?;
    Topics::new(pool.clone())
        .create(&TopicName::parse(PARTED)?)
        .await?;
    sqlx::raw_sql(AssertSqlSafe(PLAIN_DDL))
        .execute(&pool)
        .await?;
    for t in [PLAIN, PARTED] {
        setup::generate(&pool, t, args.keep, args.span).await?;
    }
    let tracker = TaskTracker::new();
    let writer = Writer::start(pool.clone(), 4, &tracker, Metrics::new());
    let events: Vec<ValidEvent> = (0..args.batch)
        .map(|i| {
            validate(NewEvent {
                name: "order.created".into(),
                data: format!(r#"{{"order_id": {i}, "amount_cents": 1999}}"#),
                ..Default::default()
            })
            .map_err(|r| anyhow::anyhow!("invalid bench event: {:?}", r.errors))
        })
        .collect::<Result<_>>()?;
    setup::settle(&pool).await?;
    let slice = Duration::from_secs(args.slice_seconds);
    let order = [PLAIN, PARTED, PARTED, PLAIN];
    // A warm-up slice of each, not counted.
    for t in [PLAIN, PARTED] {
        publish_slice(&writer, t, &events, args.clients, Duration::from_secs(1)).await?;
    }

    let mut published = [0u64; 2];
    for t in order {
        let n = publish_slice(&writer, t, &events, args.clients, slice).await?;
        published[usize::from(t == PARTED)] += n;
    }
    let mut reads: [Vec<u32>; 2] = [Vec::new(), Vec::new()];
    for t in order {
        let v = read_slice(&pool, t, slice).await?;
        reads[usize::from(t == PARTED)].extend(v);
    }
    writer.close();
    tracker.close();
    tracker.wait().await;

    let secs = 2.0 * slice.as_secs_f64();
    let rate = |i: usize| published[i] as f64 / secs;
    println!(
        "layout (library, no node; {} writers of {}-event writes, in turns plain/partitioned/partitioned/plain):",
        args.clients, args.batch
    );
    println!(
        "  publish: plain {:.0} events/s, partitioned {:.0} events/s: {:.3} x",
        rate(0),
        rate(1),
        rate(1) / rate(0)
    );
    let p = |i: usize, q: f64| percentile(&reads[i], q);
    println!(
        "  read_after(end - 1000, 100): plain p50 {:.3} ms p99 {:.3} ms, partitioned p50 {:.3} ms \
         p99 {:.3} ms: p50 {:.3} x, p99 {:.3} x",
        p(0, 0.5),
        p(0, 0.99),
        p(1, 0.5),
        p(1, 0.99),
        p(1, 0.5) / p(0, 0.5),
        p(1, 0.99) / p(0, 0.99)
    );
    Ok(())
}

async fn publish_slice(
    writer: &Writer,
    topic: &str,
    events: &[ValidEvent],
    clients: usize,
    slice: Duration,
) -> Result<u64> {
    let name = TopicName::parse(topic)?;
    let stored = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + slice;
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (writer, name, events, stored) = (
            writer.clone(),
            name.clone(),
            events.to_vec(),
            stored.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                if writer.write(&name, "", events.clone(), None).await.is_ok() {
                    stored.fetch_add(events.len() as u64, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await.context("writer task")?;
    }
    Ok(stored.load(Ordering::Relaxed))
}

async fn read_slice(pool: &PgPool, topic: &str, slice: Duration) -> Result<Vec<u32>> {
    let t = TopicRef::parse(topic)?;
    let last = eventrelay::topics::last_offset(pool, topic).await?;
    let deadline = Instant::now() + slice;
    let mut took = Vec::new();
    while Instant::now() < deadline {
        let start = Instant::now();
        read_after(pool, &t, last - 1_000, 100, &[]).await?;
        took.push(u32::try_from(start.elapsed().as_micros()).unwrap_or(u32::MAX));
    }
    Ok(took)
}

fn percentile(v: &[u32], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut v = v.to_vec();
    v.sort_unstable();
    f64::from(v[((v.len() as f64 - 1.0) * p).round() as usize]) / 1000.0
}
