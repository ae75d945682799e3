//! Websockets across nodes: a client on node B, publishes on node A. Raw Phoenix protocol
//! (v2 arrays and v1 objects) over tokio-tungstenite, and the official npm `phoenix` client.

use crate::helpers::{authed, event, publish};
use crate::live_support::*;
use eventrelay::auth::KeyType;
use eventrelay::proto;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

#[tokio::test]
async fn ws_cross_node_v2_and_v1_in_offset_order() {
    let c = redis_cluster(2).await;
    let s = setup(&c, "ws_orders", "").await;
    let mut v2 = Ws::connect(c.nodes[1].http, true).await;
    let mut v1 = Ws::connect(c.nodes[1].http, false).await;
    let hb = v2.call("phoenix", "heartbeat", json!({})).await;
    assert_eq!(hb, json!({"status": "ok", "response": {}}));
    let hb = v1.call("phoenix", "heartbeat", json!({})).await;
    assert_eq!(hb, json!({"status": "ok", "response": {}}));
    for ws in [&mut v2, &mut v1] {
        let r = ws
            .join(s.sub, json!({"consumer_token": s.consumer_token}))
            .await;
        assert_eq!(r["status"], "ok", "{r}");
    }
    for i in 0..5 {
        publish(&c, 0, "ws_orders", numbered(i * 3..i * 3 + 3)).await;
    }
    assert_eq!(v2.offsets(15).await, span(1, 15));
    let first = v1.event().await.unwrap();
    assert_eq!(first["offset"], 1);
    assert_eq!(first["name"], "e0");
    assert_eq!(first["data"], json!({"i": 0}));
    assert_eq!(first["topic_name"], "ws_orders");
    for key in [
        "id",
        "topic_identifier",
        "user_id",
        "anonymous_id",
        "occurred_at",
        "source",
        "context",
        "errors",
    ] {
        assert!(first.get(key).is_some(), "push lacks {key}: {first}");
    }
    assert_eq!(v1.offsets(14).await, span(2, 15));
}

#[tokio::test]
async fn ws_identifier_scoped_subscription_gets_only_its_identifier() {
    let c = redis_cluster(2).await;
    let s = setup(&c, "ws_scoped", "42").await;
    let mut ws = Ws::connect(c.nodes[1].http, true).await;
    let r = ws
        .join(s.sub, json!({"consumer_token": s.consumer_token}))
        .await;
    assert_eq!(r["status"], "ok", "{r}");
    publish(&c, 0, "ws_scoped:41", numbered(0..2)).await;
    publish(&c, 0, "ws_scoped:42", numbered(2..3)).await;
    publish(&c, 0, "ws_scoped", numbered(3..4)).await;
    publish(&c, 0, "ws_scoped:42", numbered(4..5)).await;
    let a = ws.event().await.unwrap();
    let b = ws.event().await.unwrap();
    assert_eq!(
        (a["offset"].as_i64(), b["offset"].as_i64()),
        (Some(3), Some(5))
    );
    assert_eq!(a["topic_identifier"], "42");
}

#[tokio::test]
async fn ws_unauthorized_joins_are_refused() {
    let c = redis_cluster(1).await;
    let s = setup(&c, "ws_auth", "").await;
    let other = crate::helpers::create_subscription(&c, "ws_other", "ws_auth", "").await;
    let other = crate::helpers::sub_id(&other);
    let (producer, _) = c.key(KeyType::Producer, &["ws_auth"], &[]).await;
    let producer_jwt = jwt(&c, &producer).await;
    let mut ws = Ws::connect(c.nodes[0].http, true).await;
    let unauthorized = json!({"status": "error", "response": {"reason": "unauthorized"}});
    // No token, a forged token, a consumer of another subscription, a producer token as
    // consumer token, and a good consumer token beside a forged producer token.
    assert_eq!(ws.join(s.sub, json!({})).await, unauthorized);
    assert_eq!(
        ws.join(s.sub, json!({"consumer_token": "a.b.c"})).await,
        unauthorized
    );
    assert_eq!(
        ws.join(other, json!({"consumer_token": s.consumer_token}))
            .await,
        unauthorized
    );
    assert_eq!(
        ws.join(s.sub, json!({"consumer_token": producer_jwt}))
            .await,
        unauthorized
    );
    assert_eq!(
        ws.join(
            s.sub,
            json!({"consumer_token": s.consumer_token, "producer_token": "x.y.z"})
        )
        .await,
        unauthorized
    );
    // A revoked key's token.
    let (bearer, key) = c.key(KeyType::Consumer, &[], &[s.sub]).await;
    let token = jwt(&c, &bearer).await;
    revoke(&c, key).await;
    tokio::time::sleep(eventrelay::auth::CACHE_TTL).await;
    assert_eq!(
        ws.join(s.sub, json!({"consumer_token": token})).await,
        unauthorized
    );
    // Other topics and events.
    let r = ws.call("rooms:lobby", "phx_join", json!({})).await;
    assert_eq!(r["response"]["reason"], "unmatched topic");
    // Before a join succeeded, anything but heartbeats, joins and leaves closes the socket.
    ws.send(&format!("events:{}", s.sub), "publish_events", json!({}))
        .await;
    let reason = ws.closed().await.unwrap_or_default();
    assert!(reason.starts_with("join a channel first"), "{reason}");
    assert_eq!(ws.close_code, Some(1008));
}

#[tokio::test]
async fn ws_producer_publishes_and_leave_stops_pushes() {
    let c = redis_cluster(2).await;
    let s = setup(&c, "ws_produce", "").await;
    crate::helpers::create_topic(&c, "ws_elsewhere").await;
    let (producer, _) = c.key(KeyType::Producer, &["ws_produce"], &[]).await;
    let producer_jwt = jwt(&c, &producer).await;
    let mut consumer = Ws::connect(c.nodes[1].http, true).await;
    let r = consumer
        .join(s.sub, json!({"consumer_token": s.consumer_token}))
        .await;
    assert_eq!(r["status"], "ok");
    let mut p = Ws::connect(c.nodes[0].http, true).await;
    let r = p.join(s.sub, json!({"producer_token": producer_jwt})).await;
    assert_eq!(r["status"], "ok", "{r}");
    let topic = format!("events:{}", s.sub);
    let payload = |t: &str, durable: bool| {
        json!({"topic": t, "durable": durable, "events": [
            {"name": "a", "data": "{\"k\": 1}", "source": "ws", "context": {"ip": "1.2.3.4"}},
            {"name": "b", "data": {"k": 2}, "user_id": null}
        ]})
    };
    let r = p
        .call(&topic, "publish_events", payload("ws_produce", true))
        .await;
    assert_eq!(r, json!({"status": "ok", "response": {"offsets": [1, 2]}}));
    let r = p
        .call(&topic, "publish_events", payload("ws_elsewhere", true))
        .await;
    assert_eq!(r["status"], "unauthorized", "{r}");
    // Non-durable events travel live only, with offset 0.
    let r = p
        .call(&topic, "publish_events", payload("ws_produce", false))
        .await;
    assert_eq!(r["status"], "ok", "{r}");
    let a = consumer.event().await.unwrap();
    assert_eq!(
        (a["offset"].as_i64(), a["data"].clone()),
        (Some(1), json!({"k": 1}))
    );
    assert_eq!(a["context"], json!({"ip": "1.2.3.4"}));
    let b = consumer.event().await.unwrap();
    assert_eq!(
        (b["offset"].as_i64(), b["data"].clone()),
        (Some(2), json!({"k": 2}))
    );
    assert_eq!(consumer.offsets(2).await, vec![0, 0]);
    // A consumer-only channel may not publish.
    let r = consumer
        .call(&topic, "publish_events", payload("ws_produce", true))
        .await;
    assert_eq!(r["status"], "unauthorized", "{r}");
    // After leaving, nothing more is pushed; the socket stays usable.
    let r = consumer.call(&topic, "phx_leave", json!({})).await;
    assert_eq!(r["status"], "ok");
    publish(&c, 0, "ws_produce", numbered(0..1)).await;
    let r = consumer
        .join(s.sub, json!({"consumer_token": s.consumer_token}))
        .await;
    assert_eq!(r["status"], "ok");
    publish(&c, 0, "ws_produce", numbered(1..2)).await;
    assert_eq!(consumer.offsets(1).await, vec![4]);
}

#[tokio::test]
async fn ws_resume_after_disconnect_has_no_gap_and_no_duplicate() {
    let c = redis_cluster(2).await;
    let s = setup(&c, "ws_resume", "").await;
    let mut ws = Ws::connect(c.nodes[1].http, true).await;
    ws.join(s.sub, json!({"consumer_token": s.consumer_token}))
        .await;
    publish(&c, 0, "ws_resume", numbered(0..10)).await;
    let seen = ws.offsets(10).await;
    assert_eq!(seen, span(1, 10));
    drop(ws);
    // Published while the client is away, and while it is rejoining.
    publish(&c, 0, "ws_resume", numbered(10..30)).await;
    let publisher = {
        let c0 = c.client(0).await;
        let admin = c.admin.clone();
        tokio::spawn(async move {
            let mut c0 = c0;
            for i in 0..20 {
                let r = proto::PublishEventsRequest {
                    topic: "ws_resume".into(),
                    events: vec![event(&format!("late{i}"), "{}")],
                    durable: true,
                    ..Default::default()
                };
                c0.publish_events(authed(&admin, r)).await.unwrap();
            }
        })
    };
    let mut ws = Ws::connect(c.nodes[1].http, false).await;
    let r = ws
        .join(
            s.sub,
            json!({"consumer_token": s.consumer_token, "after_offset": 10}),
        )
        .await;
    assert_eq!(r["status"], "ok", "{r}");
    publisher.await.unwrap();
    assert_eq!(ws.offsets(40).await, span(11, 50));
    // Nothing beyond: the next event is the next offset, not a duplicate.
    publish(&c, 0, "ws_resume", numbered(0..1)).await;
    assert_eq!(ws.offsets(1).await, vec![51]);
}

#[tokio::test]
async fn ws_slow_client_is_cut_off_while_a_fast_one_keeps_receiving() {
    let c = redis_cluster(2).await;
    let s = setup(&c, "ws_slow", "").await;
    let mut slow = Ws::connect(c.nodes[1].http, true).await;
    slow.join(s.sub, json!({"consumer_token": s.consumer_token}))
        .await;
    let mut fast = Ws::connect(c.nodes[1].http, true).await;
    fast.join(s.sub, json!({"consumer_token": s.consumer_token}))
        .await;
    // 6,000 events of 4 KiB (24 MiB): far more than socket buffers plus the per-client
    // queue (eventrelay::http::socket::CLIENT_BYTES), which a reading client never fills.
    let data = format!("{{\"pad\": \"{}\"}}", "x".repeat(4 * 1024));
    let total = 6_000;
    // The fast client reads each batch before the next is published; the slow one never reads.
    let mut got = Vec::with_capacity(total);
    for chunk in 0..(total / 100) {
        let events = (0..100)
            .map(|i| event(&format!("e{chunk}_{i}"), &data))
            .collect();
        publish(&c, 0, "ws_slow", events).await;
        got.extend(fast.offsets(100).await);
    }
    assert_eq!(got, span(1, total as i64));
    // The slow client now reads: it gets what was buffered, then the close with its reason.
    let mut received = 0;
    let reason = loop {
        match slow.recv().await {
            Some((_, _, _, ev, _)) if ev == "event:published" => received += 1,
            Some(_) => {}
            None => break slow.closed().await,
        }
    };
    assert!(
        received < total,
        "slow client received everything ({received})"
    );
    if let Some(r) = reason {
        assert!(r.contains("slow client"), "close reason: {r}");
    }
}

#[tokio::test]
async fn ws_revoked_key_socket_closes_within_two_seconds() {
    let c = redis_cluster(2).await;
    let s = setup(&c, "ws_revoke", "").await;
    let mut ws = Ws::connect(c.nodes[1].http, true).await;
    let r = ws
        .join(s.sub, json!({"consumer_token": s.consumer_token}))
        .await;
    assert_eq!(r["status"], "ok");
    publish(&c, 0, "ws_revoke", numbered(0..1)).await;
    assert_eq!(ws.offsets(1).await, vec![1]);
    let start = Instant::now();
    revoke(&c, s.consumer_key).await;
    let reason = loop {
        match ws.recv().await {
            Some(_) => {}
            None => break ws.closed().await,
        }
    };
    let elapsed = start.elapsed();
    // The product's requirement: closed within 2 s on every node.
    assert!(
        elapsed <= Duration::from_secs(2),
        "closed after {elapsed:?}"
    );
    assert_eq!(reason.as_deref(), Some("api key revoked"));
}

#[tokio::test]
async fn ws_official_phoenix_js_client() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ws");
    if !dir.join("node_modules/phoenix").exists() {
        let ok = std::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .status()
            .expect("npm (Node.js) is required for the phoenix client test");
        assert!(ok.success(), "npm ci in tests/ws failed");
    }
    let c = redis_cluster(2).await;
    let s = setup(&c, "ws_js", "").await;
    let (producer, _) = c.key(KeyType::Producer, &["ws_js"], &[]).await;
    let producer_jwt = jwt(&c, &producer).await;
    let mut child = tokio::process::Command::new("node")
        .arg(dir.join("phoenix_client.js"))
        .env("ER_WS_URL", format!("ws://{}/socket", c.nodes[1].http))
        .env("ER_SUB", s.sub.to_string())
        .env("ER_CONSUMER", &s.consumer_token)
        .env("ER_PRODUCER", &producer_jwt)
        .env("ER_TOPIC", "ws_js")
        .env("ER_EXPECT", "3")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node");
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut out: Vec<Value> = vec![];
    while let Some(line) = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .unwrap()
        .unwrap()
    {
        let v: Value = serde_json::from_str(&line).unwrap();
        if v.get("joined").is_some() {
            publish(&c, 0, "ws_js", numbered(0..3)).await;
        }
        out.push(v);
    }
    let status = child.wait().await.unwrap();
    assert!(status.success(), "phoenix client failed: {out:?}");
    assert!(out.contains(&json!({"refused": "unauthorized"})), "{out:?}");
    assert!(out.contains(&json!({"published": [4]})), "{out:?}");
    let result = out.iter().find(|v| v.get("offsets").is_some()).unwrap();
    assert_eq!(result["offsets"], json!([1, 2, 3, 4]));
    assert_eq!(result["last"]["name"], "from.phoenix");
    assert_eq!(result["last"]["data"], json!({"via": "phoenix.js"}));
    assert!(out.contains(&json!({"left": true})), "{out:?}");
}

#[tokio::test]
async fn ws_and_streams_end_when_their_node_drains() {
    let mut c = redis_cluster(2).await;
    let s = setup(&c, "ws_drain", "").await;
    let mut ws = Ws::connect(c.nodes[1].http, true).await;
    let r = ws
        .join(s.sub, json!({"consumer_token": s.consumer_token}))
        .await;
    assert_eq!(r["status"], "ok");
    let mut st = stream(
        &c,
        1,
        &s.consumer_bearer,
        proto::StreamEventsRequest {
            subscription_id: s.sub.to_string(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    publish(&c, 0, "ws_drain", numbered(0..1)).await;
    assert_eq!(ws.offsets(1).await, vec![1]);
    assert_eq!(stream_offsets(&mut st, 1).await, vec![1]);
    // A graceful stop must not wait for the grace period on open sockets and streams.
    c.nodes[1].stop().await;
    let reason = loop {
        match ws.recv().await {
            Some(_) => {}
            None => break ws.closed().await,
        }
    };
    // The close frame with its reason proves the node ended the socket itself, before the
    // servers stopped (a socket cut by the process would close without one).
    assert_eq!(reason.as_deref(), Some(eventrelay::drain::DRAINING));
    assert_eq!(ws.close_code, Some(1001));
    let end = tokio::time::timeout(WAIT, st.message()).await.unwrap();
    assert!(!matches!(end, Ok(Some(_))), "stream still open: {end:?}");
}
