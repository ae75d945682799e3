//! Long-lived listeners lose their access while they run: a withdrawn grant, a deleted
//! subscription or an expired JWT ends the websocket channel or gRPC stream on another node
//! (revocation has its own tests in live_ws and live_grpc). And a gRPC stream that stops
//! reading is cut off while a reading one keeps going.

use crate::helpers::{event, publish};
use crate::live_support::*;
use eventrelay::auth::KeyType;
use serde_json::{Value, json};
use tonic::Code;
use uuid::Uuid;

/// Hub buffer of the slow-stream test's nodes.
const BUFFER: usize = 32;

/// Reads until the server closes `topic` with phx_close; returns the close payload.
async fn channel_closed(ws: &mut Ws, topic: &str) -> Value {
    loop {
        let (_, _, t, ev, payload) = ws.recv().await.expect("phx_close before the socket ends");
        if t == topic && ev == "phx_close" {
            return payload;
        }
    }
}

#[tokio::test]
async fn ws_channel_closes_when_its_grant_is_withdrawn_or_its_subscription_deleted() {
    let c = redis_cluster(2).await;
    let s = setup(&c, "wsa_grant", "").await;
    let mut ws = Ws::connect(c.nodes[1].http, true).await;
    let topic = format!("events:{}", s.sub);
    let r = ws
        .join(s.sub, json!({"consumer_token": s.consumer_token}))
        .await;
    assert_eq!(r["status"], "ok");
    publish(&c, 0, "wsa_grant", numbered(0..1)).await;
    assert_eq!(ws.offsets(1).await, vec![1]);

    withdraw(&c, s.consumer_key, s.sub).await;
    let payload = channel_closed(&mut ws, &topic).await;
    let reason = payload["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("not associated"), "reason: {payload}");
    // Only the channel ended: the socket still answers, and pushes of the topic stopped.
    let r = ws.call("phoenix", "heartbeat", json!({})).await;
    assert_eq!(r["status"], "ok");
    let r = ws.call(&topic, "phx_leave", json!({})).await;
    assert_eq!(r["status"], "error", "the channel is gone: {r}");

    // An admin's channel on the subscription ends when the subscription is deleted.
    let (admin_bearer, _) = c.key(KeyType::Admin, &[], &[]).await;
    let admin_jwt = jwt(&c, &admin_bearer).await;
    let r = ws.join(s.sub, json!({"consumer_token": admin_jwt})).await;
    assert_eq!(r["status"], "ok");
    delete_subscription(&c, s.sub).await;
    let payload = channel_closed(&mut ws, &topic).await;
    assert_eq!(payload["reason"], "subscription deleted");
}

#[tokio::test]
async fn ws_channel_closes_when_its_token_expires() {
    let c = redis_cluster(2).await;
    let s = setup(&c, "wsa_expiry", "").await;
    let token = short_jwt(&c, &s.consumer_bearer, 2).await;
    let mut ws = Ws::connect(c.nodes[1].http, false).await;
    let r = ws.join(s.sub, json!({"consumer_token": token})).await;
    assert_eq!(r["status"], "ok");
    publish(&c, 0, "wsa_expiry", numbered(0..1)).await;
    assert_eq!(ws.offsets(1).await, vec![1]);
    let payload = channel_closed(&mut ws, &format!("events:{}", s.sub)).await;
    assert_eq!(payload["reason"], "token expired");
    // A fresh token joins again and resumes where the client left off.
    let token = jwt(&c, &s.consumer_bearer).await;
    let r = ws
        .join(s.sub, json!({"consumer_token": token, "after_offset": 1}))
        .await;
    assert_eq!(r["status"], "ok");
    publish(&c, 0, "wsa_expiry", numbered(1..2)).await;
    assert_eq!(ws.offsets(1).await, vec![2]);
}

#[tokio::test]
async fn grpc_stream_ends_when_its_grant_is_withdrawn_or_its_subscription_deleted() {
    let c = redis_cluster(2).await;
    let s = setup(&c, "gsa_grant", "").await;
    let mut st = stream(&c, 1, &s.consumer_bearer, by_sub(s.sub, None))
        .await
        .unwrap();
    let (admin_bearer, _) = c.key(KeyType::Admin, &[], &[]).await;
    let mut admin_st = stream(&c, 1, &admin_bearer, by_sub(s.sub, None))
        .await
        .unwrap();
    publish(&c, 0, "gsa_grant", numbered(0..1)).await;
    assert_eq!(stream_offsets(&mut st, 1).await, vec![1]);
    assert_eq!(stream_offsets(&mut admin_st, 1).await, vec![1]);

    withdraw(&c, s.consumer_key, s.sub).await;
    let end = tokio::time::timeout(WAIT, st.message()).await.unwrap();
    assert_eq!(end.unwrap_err().code(), Code::PermissionDenied);

    // The admin's stream is unaffected until the subscription itself is deleted.
    publish(&c, 0, "gsa_grant", numbered(1..2)).await;
    assert_eq!(stream_offsets(&mut admin_st, 1).await, vec![2]);
    delete_subscription(&c, s.sub).await;
    let end = tokio::time::timeout(WAIT, admin_st.message())
        .await
        .unwrap();
    let status = end.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(status.message(), "subscription deleted");
}

#[tokio::test]
async fn grpc_stream_opened_with_a_jwt_ends_when_it_expires() {
    let c = redis_cluster(2).await;
    let s = setup(&c, "gsa_expiry", "").await;
    let token = short_jwt(&c, &s.consumer_bearer, 2).await;
    let mut st = stream(&c, 1, &token, by_sub(s.sub, None)).await.unwrap();
    publish(&c, 0, "gsa_expiry", numbered(0..1)).await;
    assert_eq!(stream_offsets(&mut st, 1).await, vec![1]);
    let end = tokio::time::timeout(WAIT, st.message()).await.unwrap();
    let status = end.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(status.message(), "token expired");
}

#[tokio::test]
async fn grpc_slow_stream_is_cut_off_while_a_fast_one_keeps_receiving() {
    // A small hub buffer (ER_LIVE_BUFFER) so that falling behind takes hundreds of publishes,
    // not thousands.
    let name = format!("t{}", Uuid::new_v4().simple());
    let c = crate::helpers::TestCluster::start_with(2, move |cfg| {
        cfg.redis_url = Some(crate::helpers::redis_url());
        cfg.cluster_name = name.clone();
        cfg.live_buffer = BUFFER;
    })
    .await;
    let s = setup(&c, "gsa_slow", "").await;
    let mut slow = stream(&c, 1, &s.consumer_bearer, by_sub(s.sub, None))
        .await
        .unwrap();
    let mut fast = stream(&c, 1, &s.consumer_bearer, by_sub(s.sub, None))
        .await
        .unwrap();
    // A publish is at most one batch in the node's live hub, which keeps the last BUFFER
    // batches of a topic. The slow stream never reads, so once HTTP/2 flow control and the
    // socket buffers are full (64 KiB events fill them within a few hundred) it stops moving
    // in the hub and falls behind by more than BUFFER batches.
    let total = 800;
    let reader = tokio::spawn(async move { stream_offsets(&mut fast, total).await });
    let data = format!("{{\"pad\": \"{}\"}}", "x".repeat(64 * 1024));
    for i in 0..total {
        publish(&c, 0, "gsa_slow", vec![event(&format!("e{i}"), &data)]).await;
    }
    assert_eq!(reader.await.unwrap(), span(1, total as i64));
    // The slow stream now reads: what was buffered, then the end with its reason.
    let mut received = 0;
    let status = loop {
        match tokio::time::timeout(WAIT, slow.message()).await.unwrap() {
            Ok(Some(_)) => received += 1,
            Ok(None) => panic!("the slow stream ended without a status"),
            Err(status) => break status,
        }
    };
    assert!(received < total, "slow stream received everything");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(status.message().contains("slow client"), "{status:?}");
}
