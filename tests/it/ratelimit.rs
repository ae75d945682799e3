//! Rate limits per key and kind of call: shared through Redis so a limit holds across nodes,
//! per node without Redis, with the original's RESOURCE_EXHAUSTED message and a retry hint.

use crate::helpers::*;
use eventrelay::proto::{ListTopicsRequest, PublishEventsRequest};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tonic::Code;

/// Waits for the start of a fresh one-second window, so a short burst stays inside it.
async fn start_of_second() {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let into = now.subsec_millis() as u64;
    tokio::time::sleep(Duration::from_millis(1000 - into + 20)).await;
}

/// Waits until every node reports its Redis connection up (until then limits count per node).
async fn redis_connected(c: &TestCluster) {
    for node in &c.nodes {
        let url = format!("http://{}/readyz", node.http);
        let mut connected = false;
        for _ in 0..100 {
            let body: serde_json::Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
            if body["redis"] == "connected" {
                connected = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(connected, "node at {url} never connected to Redis");
    }
}

/// Fires `n` ListTopics calls spread over every node at once; returns how many passed.
async fn burst(c: &TestCluster, token: &str, n: usize) -> usize {
    let mut clients = Vec::new();
    for i in 0..c.nodes.len() {
        clients.push(c.client(i).await);
    }
    start_of_second().await;
    let calls = (0..n).map(|i| {
        let mut api = clients[i % clients.len()].clone();
        let req = authed(token, ListTopicsRequest::default());
        async move { api.list_topics(req).await }
    });
    let results = futures::future::join_all(calls).await;
    let mut passed = 0;
    for r in results {
        match r {
            Ok(_) => passed += 1,
            Err(s) => {
                assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
                assert_eq!(
                    s.message(),
                    "Rate limit exceeded for ListTopics at 5 requests per 1 second(s)"
                );
                assert_eq!(s.metadata().get("retry-after").unwrap(), "1");
            }
        }
    }
    passed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn limits_hold_across_nodes_through_redis() {
    let c = TestCluster::start_with(3, |cfg| {
        cfg.redis_url = Some(redis_url());
        cfg.cluster_name = unique_cluster_name();
        cfg.rate_limit_admin = 5;
    })
    .await;
    redis_connected(&c).await;
    // Per node, three nodes would pass 15 of 30. Shared, 5 pass (10 at most, should the burst
    // straddle two windows).
    let passed = burst(&c, &c.admin, 30).await;
    assert!(
        (5..=10).contains(&passed),
        "{passed} calls passed a shared limit of 5"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_redis_each_node_limits_on_its_own() {
    let c = TestCluster::start_with(2, |cfg| cfg.rate_limit_admin = 5).await;
    let passed = burst(&c, &c.admin, 30).await;
    assert!(
        (10..=20).contains(&passed),
        "{passed} calls passed two per-node limits of 5"
    );
}

#[tokio::test]
async fn keys_and_kinds_are_counted_separately() {
    let c = TestCluster::start_with(1, |cfg| {
        cfg.redis_url = Some(redis_url());
        cfg.cluster_name = unique_cluster_name();
        cfg.rate_limit_admin = 5;
        cfg.rate_limit_durable_publish = 0;
    })
    .await;
    create_topic(&c, "users").await;
    let (producer, _) = c
        .key(eventrelay::auth::KeyType::Producer, &["users"], &[])
        .await;
    // The admin key is exhausted; a producer's publishes (another key, another kind) are not.
    burst(&c, &c.admin, 10).await;
    let mut api = c.client(0).await;
    for _ in 0..10 {
        let r = api
            .publish_events(authed(
                &producer,
                PublishEventsRequest {
                    topic: "users".into(),
                    events: vec![event("x", "{}")],
                    durable: true,
                    ..Default::default()
                },
            ))
            .await;
        assert!(r.is_ok(), "{r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_redis_away_each_node_limits_on_its_own() {
    let dead_redis = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let c = TestCluster::start_with(2, |cfg| {
        cfg.redis_url = Some(format!("redis://127.0.0.1:{dead_redis}"));
        cfg.cluster_name = unique_cluster_name();
        cfg.rate_limit_admin = 5;
    })
    .await;
    // Limits still hold (per node) and calls never wait on the missing Redis.
    let passed = burst(&c, &c.admin, 30).await;
    assert!(
        (10..=20).contains(&passed),
        "{passed} calls passed two per-node limits of 5"
    );
}
