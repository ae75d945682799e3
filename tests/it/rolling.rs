//! A rolling restart: one of two nodes is stopped gracefully (SIGTERM's drain path) and a new
//! one started in its place while producers publish, a gRPC stream reads and a webhook
//! receiver is fed. Nothing acknowledged is lost: every acknowledged event is stored, the
//! webhook receiver gets every offset in order, and the stream, resumed from its last offset
//! on the surviving node, sees every offset.

use crate::helpers::*;
use crate::receiver::{Receiver, in_order_at_least_once};
use crate::webhooks::{create_webhook, events};
use eventrelay::proto::event_relay_client::EventRelayClient;
use eventrelay::proto::{PublishEventsRequest, PullEventsRequest, StreamEventsRequest};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::Mutex;
use tonic::transport::Channel;

/// Reads the stream from `first`, resuming on `fallback` after the node goes away, until
/// `want` offsets are seen.
async fn read_stream(
    token: String,
    mut first: EventRelayClient<Channel>,
    mut fallback: EventRelayClient<Channel>,
    seen: Arc<Mutex<Vec<i64>>>,
    done: Arc<AtomicBool>,
) {
    let mut last = 0i64;
    let mut use_first = true;
    loop {
        let req = authed(
            &token,
            StreamEventsRequest {
                topic: "orders".into(),
                after_offset: Some(last),
                ..Default::default()
            },
        );
        let api = if use_first { &mut first } else { &mut fallback };
        let mut stream = match api.stream_events(req).await {
            Ok(s) => s.into_inner(),
            Err(_) => {
                use_first = false;
                continue;
            }
        };
        loop {
            tokio::select! {
                msg = stream.message() => match msg {
                    Ok(Some(e)) => {
                        let o = i64::from(e.offset);
                        if o > last {
                            last = o;
                            seen.lock().await.push(o);
                        }
                    }
                    // The node drained (or went away): resume on the other one.
                    _ => { use_first = false; break; }
                },
                _ = tokio::time::sleep(std::time::Duration::from_millis(200)) => {
                    if done.load(Ordering::SeqCst) { return; }
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn graceful_restart_loses_nothing_acknowledged() {
    let mut c = TestCluster::start_with(2, |cfg| {
        cfg.webhook_allowed_networks = vec!["127.0.0.0/8".parse().unwrap()];
        cfg.webhook_poll_ms = 200;
        cfg.redis_url = Some(redis_url());
        cfg.cluster_name = unique_cluster_name();
        cfg.shutdown_grace_seconds = 5;
    })
    .await;
    create_topic(&c, "orders").await;
    let receiver = Receiver::start().await;
    let sub = create_webhook(&c, "orders_hook", "orders", &receiver.url("/hook"), &[]).await;

    let seen = Arc::new(Mutex::new(Vec::new()));
    let done = Arc::new(AtomicBool::new(false));
    let reader = tokio::spawn(read_stream(
        c.admin.clone(),
        c.client(1).await,
        c.client(0).await,
        seen.clone(),
        done.clone(),
    ));

    // Producers: alternate nodes; a call refused by the draining node is retried on node 0.
    let acked = Arc::new(Mutex::new(HashSet::new()));
    let stop_publishing = Arc::new(AtomicBool::new(false));
    let mut producers = Vec::new();
    for p in 0..2 {
        let (mut a, mut b) = (c.client(0).await, c.client(1).await);
        let (token, acked, stop) = (c.admin.clone(), acked.clone(), stop_publishing.clone());
        producers.push(tokio::spawn(async move {
            let mut i = 0usize;
            while !stop.load(Ordering::SeqCst) && i < 400 {
                i += 1;
                let req = |token: &str| {
                    authed(
                        token,
                        PublishEventsRequest {
                            topic: "orders".into(),
                            events: events(2, &format!("p{p}-{i}")),
                            durable: true,
                            ..Default::default()
                        },
                    )
                };
                let r = if i.is_multiple_of(2) {
                    b.publish_events(req(&token)).await
                } else {
                    a.publish_events(req(&token)).await
                };
                let r = match r {
                    Ok(r) => r,
                    Err(_) => a
                        .publish_events(req(&token))
                        .await
                        .expect("node 0 keeps serving"),
                };
                let mut acked = acked.lock().await;
                for e in r.into_inner().events {
                    acked.insert(e.id);
                }
            }
        }));
    }

    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    c.nodes[1].stop().await;
    c.nodes[1] = Node::start(c.config.clone()).await;
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    stop_publishing.store(true, Ordering::SeqCst);
    for p in producers {
        p.await.expect("producer");
    }

    // Every acknowledged event is stored.
    let acked = acked.lock().await.clone();
    let mut api = c.client(0).await;
    let mut stored = HashSet::new();
    let mut after = 0;
    loop {
        let b = api
            .pull_events(authed(
                &c.admin,
                PullEventsRequest {
                    topic: "orders".into(),
                    batch_size: 1000,
                    offset: after,
                    filters: vec![],
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner();
        let Some(last) = b.events.last().map(|e| e.offset) else {
            break;
        };
        stored.extend(b.events.into_iter().map(|e| e.id));
        after = last;
    }
    assert!(!acked.is_empty());
    assert!(
        acked.is_subset(&stored),
        "{} acknowledged events are not stored",
        acked.difference(&stored).count()
    );
    let total = stored.len() as i64;

    // The webhook receiver gets every offset, in order (repeats allowed, at least once).
    let (sub, r) = (sub.id.clone(), receiver.clone());
    receiver
        .wait_for(30, "every event delivered by webhook", |_| {
            in_order_at_least_once(&r.acked_offsets(&sub), 1, total)
        })
        .await;

    // The stream, resumed across the restart, saw every offset exactly once and in order.
    for _ in 0..100 {
        if seen.lock().await.len() as i64 >= total {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    done.store(true, Ordering::SeqCst);
    reader.await.expect("reader");
    let seen = seen.lock().await.clone();
    assert_eq!(
        seen,
        (1..=total).collect::<Vec<_>>(),
        "stream offsets across the restart"
    );
}
