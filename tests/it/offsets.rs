//! The offset guarantee: with many concurrent publishers on two nodes, a reader that asks
//! for "after the last offset I saw" sees every offset exactly once, in order, with no gap,
//! even while publishes are still committing. (A plain sequence fails this.)

use crate::helpers::*;
use eventrelay::proto::{PublishEventsRequest, PullEventsRequest};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_publishers_never_let_a_reader_skip() {
    let c = Arc::new(TestCluster::start(2).await);
    create_topic(&c, "stream").await;
    const PUBLISHERS: usize = 12;
    const REQUESTS: usize = 40;
    let done = Arc::new(AtomicBool::new(false));

    let mut publishers = Vec::new();
    for p in 0..PUBLISHERS {
        let c = c.clone();
        publishers.push(tokio::spawn(async move {
            let mut api = c.client(p % 2).await;
            let mut n = 0usize;
            for r in 0..REQUESTS {
                // Mostly small requests; every eighth a large one, so batches of both kinds
                // commit side by side.
                let size = if r % 8 == p % 8 {
                    200 + p
                } else {
                    1 + (p + r) % 4
                };
                let events = (0..size).map(|_| event("tick", "{}")).collect();
                let out = api
                    .publish_events(authed(
                        &c.admin,
                        PublishEventsRequest {
                            topic: "stream".into(),
                            events,
                            durable: true,
                            ..Default::default()
                        },
                    ))
                    .await
                    .expect("publish")
                    .into_inner()
                    .events;
                assert_eq!(out.len(), size);
                // Offsets within one request are contiguous.
                for w in out.windows(2) {
                    assert_eq!(w[1].offset, w[0].offset + 1);
                }
                n += size;
            }
            n
        }));
    }

    let reader = {
        let c = c.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let mut api = c.client(1).await;
            let mut last = 0i32;
            let mut seen = 0usize;
            loop {
                let finished = done.load(Ordering::SeqCst);
                let batch = api
                    .pull_events(authed(
                        &c.admin,
                        PullEventsRequest {
                            topic: "stream".into(),
                            batch_size: 37,
                            offset: last,
                            filters: vec![],
                            ..Default::default()
                        },
                    ))
                    .await
                    .expect("pull")
                    .into_inner()
                    .events;
                for e in &batch {
                    assert_eq!(e.offset, last + 1, "gap or duplicate after offset {last}");
                    last = e.offset;
                    seen += 1;
                }
                if batch.is_empty() && finished {
                    return seen;
                }
                if batch.is_empty() {
                    tokio::task::yield_now().await;
                }
            }
        })
    };

    let mut published = 0;
    for p in publishers {
        published += p.await.expect("publisher");
    }
    done.store(true, Ordering::SeqCst);
    let seen = reader.await.expect("reader");
    assert_eq!(seen, published, "the reader saw every event exactly once");
    let distinct: i64 = sqlx::query_scalar("SELECT count(DISTINCT \"offset\") FROM stream_events")
        .fetch_one(&c.pool)
        .await
        .unwrap();
    assert_eq!(distinct as usize, published);
}
