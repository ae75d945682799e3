//! Hostile and careless websocket clients (issue 17): oversized messages, sockets that never
//! join or fall silent, sockets that ask for anything but a join first, too many sockets from
//! one address, producer grants withdrawn while a socket is open, and joins counted by the
//! pull rate limit.

use crate::helpers::{TestCluster, authed, create_topic, redis_url, unique_cluster_name};
use crate::live_support::*;
use eventrelay::auth::KeyType;
use eventrelay::proto;
use serde_json::json;
use std::time::Duration;
use uuid::Uuid;

/// A cluster on the shared Redis with `tweak` applied to every node's configuration.
async fn cluster_with(n: usize, tweak: impl Fn(&mut eventrelay::Config)) -> TestCluster {
    let name = unique_cluster_name();
    TestCluster::start_with(n, move |c| {
        c.redis_url = Some(redis_url());
        c.cluster_name = name.clone();
        tweak(c);
    })
    .await
}

#[tokio::test]
async fn ws_oversized_messages_close_the_socket_with_1009() {
    // The default limit (ER_WS_MAX_MESSAGE_BYTES, 2 MiB) is in force.
    let c = redis_cluster(1).await;
    let s = setup(&c, "ws_big", "").await;
    let (producer, _) = c.key(KeyType::Producer, &["ws_big"], &[]).await;
    let token = jwt(&c, &producer).await;
    let mut ws = Ws::connect(c.nodes[0].http, true).await;
    let r = ws.join(s.sub, json!({"producer_token": token})).await;
    assert_eq!(r["status"], "ok", "{r}");
    let topic = format!("events:{}", s.sub);
    // A publish of a reasonable size goes through.
    let fine = json!({"topic": "ws_big", "durable": true, "events": [
        {"name": "a", "data": format!("{{\"pad\": \"{}\"}}", "x".repeat(512 * 1024))}]});
    let r = ws.call(&topic, "publish_events", fine).await;
    assert_eq!(r["status"], "ok", "{r}");
    // Three MiB in one message: refused from the frame header, the socket closed.
    let big = json!({"topic": "ws_big", "durable": true, "events": [
        {"name": "a", "data": format!("{{\"pad\": \"{}\"}}", "x".repeat(3 * 1024 * 1024))}]});
    ws.send(&topic, "publish_events", big).await;
    let reason = ws.closed().await.unwrap_or_default();
    assert_eq!(ws.close_code, Some(1009), "{reason}");
    assert!(reason.starts_with("message too big"), "{reason}");

    // Before a join the limit is 64 KiB.
    let mut ws = Ws::connect(c.nodes[0].http, true).await;
    let pad = "x".repeat(100 * 1024);
    ws.send("phoenix", "heartbeat", json!({ "pad": pad })).await;
    let reason = ws.closed().await.unwrap_or_default();
    assert_eq!(ws.close_code, Some(1009), "{reason}");
}

#[tokio::test]
async fn ws_before_a_join_only_heartbeats_and_joins_are_accepted() {
    let c = redis_cluster(1).await;
    let s = setup(&c, "ws_first", "").await;
    // Heartbeats and refused joins keep the socket; anything else closes it.
    let mut ws = Ws::connect(c.nodes[0].http, true).await;
    let hb = ws.call("phoenix", "heartbeat", json!({})).await;
    assert_eq!(hb["status"], "ok");
    let r = ws.join(s.sub, json!({"consumer_token": "a.b.c"})).await;
    assert_eq!(r["response"]["reason"], "unauthorized");
    ws.send(&format!("events:{}", s.sub), "refresh_token", json!({}))
        .await;
    assert!(
        ws.closed()
            .await
            .unwrap_or_default()
            .starts_with("join a channel first")
    );
    assert_eq!(ws.close_code, Some(1008));
    // A message that is not Phoenix's at all.
    let mut ws = Ws::connect(c.nodes[0].http, true).await;
    ws.send_raw(r#"{"not": "phoenix"}"#.into()).await;
    assert_eq!(ws.closed().await.as_deref(), Some("not a Phoenix message"));
    // Once joined, the socket may publish, leave, and send junk (ignored).
    let mut ws = Ws::connect(c.nodes[0].http, true).await;
    let r = ws
        .join(s.sub, json!({"consumer_token": s.consumer_token}))
        .await;
    assert_eq!(r["status"], "ok");
    ws.send_raw("junk".into()).await;
    let hb = ws.call("phoenix", "heartbeat", json!({})).await;
    assert_eq!(hb["status"], "ok");
}

#[tokio::test]
async fn ws_a_socket_that_never_joins_is_closed() {
    // The default join timeout (ER_WS_JOIN_TIMEOUT_SECONDS, 5 s) is well inside WAIT.
    let c = redis_cluster(1).await;
    let s = setup(&c, "ws_never", "").await;
    let mut idle = Ws::connect(c.nodes[0].http, true).await;
    let mut joined = Ws::connect(c.nodes[0].http, true).await;
    let r = joined
        .join(s.sub, json!({"consumer_token": s.consumer_token}))
        .await;
    assert_eq!(r["status"], "ok");
    // The unjoined socket heartbeats (so it is not idle) until the node closes it.
    let closing = async {
        loop {
            idle.send("phoenix", "heartbeat", json!({})).await;
            let next = tokio::time::timeout(Duration::from_millis(500), idle.recv()).await;
            if let Ok(None) = next {
                break idle.closed().await;
            }
        }
    };
    let reason = tokio::time::timeout(WAIT, closing)
        .await
        .expect("the unjoined socket is closed");
    assert_eq!(reason.as_deref(), Some("no channel joined within 5 s"));
    assert_eq!(idle.close_code, Some(1008));
    // The joined one, as old, is still served.
    crate::helpers::publish(&c, 0, "ws_never", numbered(0..1)).await;
    assert_eq!(joined.offsets(1).await, vec![1]);
}

#[tokio::test]
async fn ws_a_silent_socket_is_closed_at_the_idle_timeout() {
    let c = cluster_with(1, |c| {
        c.keepalive_seconds = 1;
        c.ws_idle_timeout_seconds = 2;
    })
    .await;
    let s = setup(&c, "ws_silent", "").await;
    let mut silent = Ws::connect(c.nodes[0].http, true).await;
    let mut live = Ws::connect(c.nodes[0].http, true).await;
    for ws in [&mut silent, &mut live] {
        let r = ws
            .join(s.sub, json!({"consumer_token": s.consumer_token}))
            .await;
        assert_eq!(r["status"], "ok");
    }
    // `live` reads, so it answers the node's pings (the client library pongs); `silent` is
    // not read at all (a half-open connection looks like this) for three idle timeouts.
    let reader = tokio::spawn(async move {
        let _ = tokio::time::timeout(Duration::from_secs(6), live.recv()).await;
        live
    });
    tokio::time::sleep(Duration::from_secs(6)).await;
    let close = silent.raw_close().await;
    let idle = (1008, "idle: nothing received for 2 s".to_owned());
    assert_eq!(close, Some(idle));
    let mut live = reader.await.unwrap();
    crate::helpers::publish(&c, 0, "ws_silent", numbered(0..1)).await;
    assert_eq!(
        live.offsets(1).await,
        vec![1],
        "the answering socket was closed"
    );
}

#[tokio::test]
async fn ws_places_are_counted_per_source_address() {
    let c = cluster_with(1, |c| {
        c.max_connections_per_address = 2;
        c.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    let http = c.nodes[0].http;
    let from = |ip: &'static str| [("x-forwarded-for", ip)];
    let mut a1 = Ws::connect_with(http, true, &from("198.51.100.1")).await;
    let mut a2 = Ws::connect_with(http, true, &from("198.51.100.1")).await;
    for ws in [&mut a1, &mut a2] {
        assert_eq!(
            ws.call("phoenix", "heartbeat", json!({})).await["status"],
            "ok"
        );
    }
    let mut a3 = Ws::connect_with(http, true, &from("198.51.100.1")).await;
    let reason = a3.closed().await.unwrap_or_default();
    assert_eq!(a3.close_code, Some(1008));
    assert!(
        reason.starts_with("too many connections from 198.51.100.1"),
        "{reason}"
    );
    // Another address has places of its own; a closed socket frees its place.
    let mut b = Ws::connect_with(http, true, &from("198.51.100.2")).await;
    assert_eq!(
        b.call("phoenix", "heartbeat", json!({})).await["status"],
        "ok"
    );
    drop(a1);
    let mut again = None;
    for _ in 0..100 {
        let mut ws = Ws::connect_with(http, true, &from("198.51.100.1")).await;
        ws.send("phoenix", "heartbeat", json!({})).await;
        if ws.recv().await.is_some() {
            again = Some(ws);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(again.is_some(), "the freed place was never given out again");
    // SSE streams take places of the same count.
    let url = format!("http://{http}/sse?subscription_id={}", Uuid::new_v4());
    let r = reqwest::Client::new()
        .get(url)
        .header("x-forwarded-for", "198.51.100.1")
        .header("authorization", format!("Bearer {}", c.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429, "{:?}", r.text().await);
}

#[tokio::test]
async fn ws_forwarded_for_is_ignored_from_untrusted_peers() {
    let c = cluster_with(1, |c| c.max_connections_per_address = 1).await;
    let http = c.nodes[0].http;
    let mut a = Ws::connect_with(http, true, &[("x-forwarded-for", "198.51.100.1")]).await;
    assert_eq!(
        a.call("phoenix", "heartbeat", json!({})).await["status"],
        "ok"
    );
    // A different claimed address is still 127.0.0.1, which holds its one place.
    let mut b = Ws::connect_with(http, true, &[("x-forwarded-for", "198.51.100.9")]).await;
    let reason = b.closed().await.unwrap_or_default();
    assert!(
        reason.starts_with("too many connections from 127.0.0.1"),
        "{reason}"
    );
}

/// Changes a key's topic grants through the admin API on node 0.
async fn regrant(c: &TestCluster, key: Uuid, add: &[&str], delete: &[&str]) {
    let mut api = c.client(0).await;
    let id = key.to_string();
    let topics = |t: &[&str]| t.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    if !add.is_empty() {
        let req = proto::AddTopicsToApiKeyRequest {
            id: id.clone(),
            topic_names: topics(add),
        };
        api.add_topics_to_api_key(authed(&c.admin, req))
            .await
            .expect("add topics");
    }
    if !delete.is_empty() {
        let req = proto::DeleteTopicsFromApiKeyRequest {
            id,
            topic_names: topics(delete),
        };
        api.delete_topics_from_api_key(authed(&c.admin, req))
            .await
            .expect("delete topics");
    }
}

#[tokio::test]
async fn ws_producer_grants_withdrawn_from_an_open_socket_apply_at_once() {
    let c = redis_cluster(2).await;
    let s = setup(&c, "ws_grants", "").await;
    create_topic(&c, "ws_grants_b").await;
    let (producer, key) = c
        .key(KeyType::Producer, &["ws_grants", "ws_grants_b"], &[])
        .await;
    let token = jwt(&c, &producer).await;
    let mut ws = Ws::connect(c.nodes[1].http, true).await;
    let r = ws.join(s.sub, json!({"producer_token": token})).await;
    assert_eq!(r["status"], "ok", "{r}");
    let topic = format!("events:{}", s.sub);
    let publish =
        |t: &str| json!({"topic": t, "durable": true, "events": [{"name": "a", "data": "{}"}]});
    for t in ["ws_grants", "ws_grants:42", "ws_grants_b"] {
        let r = ws.call(&topic, "publish_events", publish(t)).await;
        assert_eq!(r["status"], "ok", "{t}: {r}");
    }
    // Narrow `ws_grants` to `ws_grants:42` and withdraw `ws_grants_b`, on the other node.
    regrant(&c, key, &["ws_grants:42"], &["ws_grants", "ws_grants_b"]).await;
    tokio::time::sleep(eventrelay::auth::CACHE_TTL + Duration::from_millis(200)).await;
    for t in ["ws_grants", "ws_grants_b"] {
        let r = ws.call(&topic, "publish_events", publish(t)).await;
        assert_eq!(r["status"], "unauthorized", "{t}: {r}");
    }
    let r = ws
        .call(&topic, "publish_events", publish("ws_grants:42"))
        .await;
    assert_eq!(r["status"], "ok", "{r}");
    // Withdrawing the last grant ends the channel (or refuses the publish, whichever comes
    // first); nothing more is stored either way.
    regrant(&c, key, &[], &["ws_grants:42"]).await;
    tokio::time::sleep(eventrelay::auth::CACHE_TTL + Duration::from_millis(200)).await;
    let r = ws
        .call(&topic, "publish_events", publish("ws_grants:42"))
        .await;
    assert_ne!(r["status"], "ok", "{r}");
    let stored = crate::helpers::count_rows(&c.pool, "ws_grants_events").await;
    assert_eq!(stored, 3);
}

#[tokio::test]
async fn ws_joins_are_counted_by_the_pull_rate_limit() {
    let c = cluster_with(1, |c| c.rate_limit_pull = 2).await;
    let s = setup(&c, "ws_rl", "").await;
    let mut ws = Ws::connect(c.nodes[0].http, true).await;
    let mut refused = None;
    // Two joins a second are allowed: twelve in a row cannot all fit, however slow the host.
    for _ in 0..12 {
        let r = ws
            .join(s.sub, json!({"consumer_token": s.consumer_token}))
            .await;
        if r["status"] == "error" {
            refused = Some(r);
            break;
        }
    }
    let r = refused.expect("no join was refused");
    let reason = r["response"]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("Rate limit exceeded for phx_join"),
        "{reason}"
    );
}
