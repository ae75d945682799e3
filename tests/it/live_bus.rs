//! The cluster bus: without Redis (LISTEN/NOTIFY), across a Redis outage and its return,
//! non-durable events between nodes, and Redis channels only for topics with listeners.

use crate::helpers::{authed, publish};
use crate::live_support::*;
use eventrelay::proto;
use fred::prelude::*;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn bus_without_redis_delivers_over_notify_in_order() {
    let c = cluster(3, None).await;
    let s = setup(&c, "bus_pg", "").await;
    let mut ws = Ws::connect(c.nodes[1].http, true).await;
    ws.join(s.sub, json!({"consumer_token": s.consumer_token}))
        .await;
    let mut st = stream(
        &c,
        2,
        &s.consumer_bearer,
        proto::StreamEventsRequest {
            subscription_id: s.sub.to_string(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    // Concurrent publishers on two nodes: coalesced NOTIFYs, every event once, in order.
    let mut tasks = vec![];
    for node in [0, 2] {
        let mut client = c.client(node).await;
        let admin = c.admin.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                let r = proto::PublishEventsRequest {
                    topic: "bus_pg".into(),
                    events: numbered(i * 2..i * 2 + 2),
                    durable: true,
                    ..Default::default()
                };
                client.publish_events(authed(&admin, r)).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(ws.offsets(100).await, span(1, 100));
    assert_eq!(stream_offsets(&mut st, 100).await, span(1, 100));
}

#[tokio::test]
async fn bus_survives_a_redis_outage_and_its_return() {
    let mut redis = PrivateRedis::start();
    let c = cluster(2, Some(redis.url())).await;
    let s = setup(&c, "bus_outage", "").await;
    let mut ws = Ws::connect(c.nodes[1].http, true).await;
    ws.join(s.sub, json!({"consumer_token": s.consumer_token}))
        .await;
    publish(&c, 0, "bus_outage", numbered(0..5)).await;
    assert_eq!(ws.offsets(5).await, span(1, 5));

    redis.kill();
    for i in 0..5 {
        publish(&c, 0, "bus_outage", numbered(i * 2..i * 2 + 2)).await;
    }
    assert_eq!(ws.offsets(10).await, span(6, 15));

    redis.restart();
    // Give the nodes' clients time to reconnect (they retry every 500 ms), then publish.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for i in 0..5 {
        publish(&c, 0, "bus_outage", numbered(i..i + 1)).await;
    }
    assert_eq!(ws.offsets(5).await, span(16, 20));
}

#[tokio::test]
async fn bus_carries_non_durable_events_between_nodes() {
    for redis in [Some(crate::helpers::redis_url()), None] {
        let c = cluster(2, redis).await;
        let s = setup(&c, "bus_live", "").await;
        let mut ws = Ws::connect(c.nodes[1].http, true).await;
        ws.join(s.sub, json!({"consumer_token": s.consumer_token}))
            .await;
        let r = proto::PublishEventsRequest {
            topic: "bus_live".into(),
            events: numbered(0..3),
            durable: false,
            ..Default::default()
        };
        c.client(0)
            .await
            .publish_events(authed(&c.admin, r))
            .await
            .unwrap();
        // Far over NOTIFY's 8000-byte payload (without Redis it travels through a spill row)
        // and over the 256 KiB a Redis message carries inline for durable batches.
        let big = format!("{{\"pad\": \"{}\"}}", "x".repeat(300_000));
        let r = proto::PublishEventsRequest {
            topic: "bus_live".into(),
            events: vec![crate::helpers::event("big", &big)],
            durable: false,
            ..Default::default()
        };
        c.client(0)
            .await
            .publish_events(authed(&c.admin, r))
            .await
            .unwrap();
        publish(&c, 0, "bus_live", numbered(3..4)).await;
        let mut names = vec![];
        for _ in 0..5 {
            let e = ws.event().await.unwrap();
            names.push((
                e["name"].as_str().unwrap().to_owned(),
                e["offset"].as_i64().unwrap(),
            ));
        }
        let want: Vec<(String, i64)> = vec![
            ("e0".into(), 0),
            ("e1".into(), 0),
            ("e2".into(), 0),
            ("big".into(), 0),
            ("e3".into(), 1),
        ];
        assert_eq!(names, want);
    }
}

#[tokio::test]
async fn bus_subscribes_only_to_topics_with_local_listeners() {
    let c = redis_cluster(2).await;
    let s = setup(&c, "bus_wanted", "").await;
    crate::helpers::create_topic(&c, "bus_unwanted").await;
    let redis = Builder::from_config(Config::from_url(&crate::helpers::redis_url()).unwrap())
        .build()
        .unwrap();
    redis.init().await.unwrap();
    let pattern = format!("{}:live:*", c.config.cluster_name);
    let channels = || async {
        let v: Vec<String> = redis.pubsub_channels(pattern.clone()).await.unwrap();
        v
    };
    assert!(channels().await.is_empty());
    let mut ws = Ws::connect(c.nodes[1].http, true).await;
    ws.join(s.sub, json!({"consumer_token": s.consumer_token}))
        .await;
    let want = vec![format!("{}:live:bus_wanted", c.config.cluster_name)];
    let mut got = vec![];
    for _ in 0..100 {
        got = channels().await;
        if got == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(got, want);
    drop(ws);
    for _ in 0..100 {
        got = channels().await;
        if got.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(got.is_empty(), "still subscribed: {got:?}");
}

#[tokio::test]
async fn bus_notify_carries_small_coalesced_offset_ranges() {
    let c = &cluster(2, None).await;
    crate::helpers::create_topic(c, "bus_notify").await;
    let mut listener = sqlx::postgres::PgListener::connect(&c.db.url)
        .await
        .unwrap();
    listener.listen("er_live").await.unwrap();
    // One request of 300 events, then 20 concurrent single-event requests.
    publish(c, 0, "bus_notify", numbered(0..300)).await;
    let mut tasks = vec![];
    for i in 0..20 {
        let mut client = c.client(0).await;
        let admin = c.admin.clone();
        tasks.push(tokio::spawn(async move {
            let r = proto::PublishEventsRequest {
                topic: "bus_notify".into(),
                events: numbered(i..i + 1),
                durable: true,
                ..Default::default()
            };
            client.publish_events(authed(&admin, r)).await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut covered = vec![false; 321];
    let mut notifications = 0;
    while covered[1..].iter().any(|c| !c) {
        let n = tokio::time::timeout(WAIT, listener.recv())
            .await
            .unwrap()
            .unwrap();
        notifications += 1;
        assert!(n.payload().len() < 8000, "payload too large");
        let a: serde_json::Value = serde_json::from_str(n.payload()).unwrap();
        assert_eq!(a["t"], "bus_notify");
        assert!(a.get("e").is_none(), "durable events travel as ranges: {a}");
        let (f, l) = (a["f"].as_i64().unwrap(), a["l"].as_i64().unwrap());
        for o in f..=l {
            covered[o as usize] = true;
        }
    }
    // Never one NOTIFY per event: the 300-event request is one, the rest at most one each.
    assert!(
        notifications <= 21,
        "{notifications} notifications for 21 requests"
    );
}
