//! Long-lived clients through rollouts (issue 20) without proxies: token refresh on an open
//! channel, drain closes spread over the window, sockets recycled by age, rejoins that replay
//! through the node's replay budget, and the Server-Sent Events fallback.

use crate::helpers::{TestCluster, publish, redis_url, unique_cluster_name};
use crate::live_support::*;
use eventrelay::proto;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

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
async fn ws_token_refresh_keeps_a_channel_past_the_first_tokens_expiry() {
    let c = redis_cluster(2).await;
    let s = setup(&c, "ws_refresh", "").await;
    let first = short_jwt(&c, &s.consumer_bearer, 3).await;
    let mut ws = Ws::connect(c.nodes[1].http, true).await;
    let r = ws.join(s.sub, json!({"consumer_token": first})).await;
    assert_eq!(r["status"], "ok", "{r}");
    let topic = format!("events:{}", s.sub);
    // Refused refreshes leave the channel as it was: a forged token, a token of a key that
    // may not read the subscription, a role the channel was not joined with.
    let r = ws
        .call(
            &topic,
            "refresh_token",
            json!({"consumer_token": "eyJ.forged.x"}),
        )
        .await;
    assert_eq!(r["status"], "error", "{r}");
    let (other, _) = c.key(eventrelay::auth::KeyType::Consumer, &[], &[]).await;
    let other = jwt(&c, &other).await;
    let r = ws
        .call(&topic, "refresh_token", json!({"consumer_token": other}))
        .await;
    assert_eq!(r["status"], "error", "{r}");
    let r = ws
        .call(
            &topic,
            "refresh_token",
            json!({"producer_token": s.consumer_token}),
        )
        .await;
    assert_eq!(r["status"], "error", "{r}");
    // The good one.
    let r = ws
        .call(
            &topic,
            "refresh_token",
            json!({"consumer_token": s.consumer_token}),
        )
        .await;
    assert_eq!(r, json!({"status": "ok", "response": {}}));
    // Past the first token's expiry (and several access checks), the channel still pushes.
    tokio::time::sleep(Duration::from_secs(5)).await;
    publish(&c, 0, "ws_refresh", numbered(0..2)).await;
    assert_eq!(ws.offsets(2).await, vec![1, 2]);

    // Without a refresh the same short token ends the channel, as before.
    let short = short_jwt(&c, &s.consumer_bearer, 2).await;
    let mut ws = Ws::connect(c.nodes[1].http, true).await;
    let r = ws.join(s.sub, json!({"consumer_token": short})).await;
    assert_eq!(r["status"], "ok");
    let closed = loop {
        let (_, _, _, ev, p) = ws.recv().await.expect("phx_close before the socket closes");
        if ev == "phx_close" {
            break p;
        }
    };
    assert_eq!(closed["reason"], "token expired");
    // An expired token cannot refresh: the channel is gone, and a rejoin is refused.
    let r = ws
        .call(&topic, "refresh_token", json!({"consumer_token": short}))
        .await;
    assert_eq!(r["response"]["reason"], "unmatched topic");
}

#[tokio::test]
async fn ws_drain_closes_are_spread_over_the_window() {
    let mut c = cluster_with(2, |c| {
        c.shutdown_grace_seconds = 10;
        c.drain_spread_seconds = 4;
    })
    .await;
    let s = setup(&c, "ws_spread", "").await;
    let mut sockets = Vec::new();
    for _ in 0..20 {
        let mut ws = Ws::connect(c.nodes[1].http, true).await;
        let r = ws
            .join(s.sub, json!({"consumer_token": s.consumer_token}))
            .await;
        assert_eq!(r["status"], "ok");
        sockets.push(ws);
    }
    let mut grpc = stream(&c, 1, &s.consumer_bearer, by_sub(s.sub, None))
        .await
        .unwrap();
    let mut node = c.nodes.remove(1);
    let stopping = Instant::now();
    let stopped = tokio::spawn(async move { node.stop().await });
    // Each socket reads until its close; the first close lets the test publish once more.
    let (first_tx, mut first_rx) = tokio::sync::mpsc::channel::<()>(20);
    let mut readers = Vec::new();
    for mut ws in sockets {
        let first = first_tx.clone();
        readers.push(tokio::spawn(async move {
            let mut after_first_close = 0;
            while let Some((_, _, _, ev, _)) = ws.recv().await {
                if ev == "event:published" {
                    after_first_close += 1;
                }
            }
            let _ = first.send(()).await;
            let reason = ws.closed().await;
            (stopping.elapsed(), after_first_close, ws.close_code, reason)
        }));
    }
    first_rx.recv().await.expect("a socket closed");
    publish(&c, 0, "ws_spread", numbered(0..1)).await;
    let mut closes = Vec::new();
    let mut still_open = 0;
    for r in readers {
        let (at, events, code, reason) = r.await.unwrap();
        assert_eq!(code, Some(1001));
        assert_eq!(reason.as_deref(), Some(eventrelay::drain::DRAINING));
        still_open += usize::from(events > 0);
        closes.push(at);
    }
    // Causal, not timed: sockets were still being served after the first one closed.
    assert!(still_open > 0, "every socket closed before the next event");
    closes.sort();
    println!(
        "drain spread: 20 sockets closed between {:?} and {:?} after the stop ({:?} apart)",
        closes[0],
        closes[19],
        closes[19] - closes[0]
    );
    let status = loop {
        match tokio::time::timeout(WAIT, grpc.message()).await.unwrap() {
            Ok(Some(_)) => {} // the stream is served until its slot too
            Ok(None) => panic!("the stream ended without a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert_eq!(status.message(), eventrelay::drain::DRAINING);
    stopped.await.unwrap();
}

#[tokio::test]
async fn ws_sockets_are_recycled_at_their_maximum_age() {
    let c = cluster_with(1, |c| c.ws_max_connection_age_seconds = 2).await;
    let s = setup(&c, "ws_age", "").await;
    let mut ws = Ws::connect(c.nodes[0].http, true).await;
    let r = ws
        .join(s.sub, json!({"consumer_token": s.consumer_token}))
        .await;
    assert_eq!(r["status"], "ok");
    let reason = loop {
        match ws.recv().await {
            Some(_) => {}
            None => break ws.closed().await,
        }
    };
    assert_eq!(reason.as_deref(), Some("connection age limit: reconnect"));
    assert_eq!(ws.close_code, Some(1001));
}

#[tokio::test]
async fn ws_rejoins_replay_through_the_budget_and_none_is_refused() {
    let c = cluster_with(1, |c| c.live_replay_concurrency = 1).await;
    let s = setup(&c, "ws_storm", "").await;
    for i in 0..4 {
        publish(&c, 0, "ws_storm", numbered(i * 500..(i + 1) * 500)).await;
    }
    // Thirty clients rejoin at once, half from the start, half from the middle: with one
    // replay read at a time they queue, and every one of them gets everything.
    let mut clients = Vec::new();
    for i in 0..30 {
        let (http, token) = (c.nodes[0].http, s.consumer_token.clone());
        clients.push(tokio::spawn(async move {
            let after = if i % 2 == 0 { 0 } else { 1000 };
            let mut ws = Ws::connect(http, true).await;
            let r = ws
                .join(
                    s.sub,
                    json!({"consumer_token": token, "after_offset": after}),
                )
                .await;
            assert_eq!(r["status"], "ok", "{r}");
            (after, ws.offsets((2000 - after) as usize).await)
        }));
    }
    for cl in clients {
        let (after, got) = cl.await.unwrap();
        assert_eq!(got, span(after + 1, 2000));
    }
}

/// One server-sent message: its event type, id and data.
#[derive(Debug, Default, Clone)]
pub struct Sse {
    pub event: String,
    pub id: Option<String>,
    pub data: String,
}

/// Reads server-sent messages from a response, comments skipped.
pub struct SseReader {
    body: reqwest::Response,
    buf: String,
}

impl SseReader {
    pub fn new(body: reqwest::Response) -> Self {
        SseReader {
            body,
            buf: String::new(),
        }
    }

    /// The next message; `None` when the response ended.
    pub async fn next(&mut self) -> Option<Sse> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut m = Sse::default();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("data:") {
                        m.data.push_str(v.trim_start());
                    } else if let Some(v) = line.strip_prefix("event:") {
                        m.event = v.trim().into();
                    } else if let Some(v) = line.strip_prefix("id:") {
                        m.id = Some(v.trim().into());
                    }
                }
                if m.data.is_empty() && m.event.is_empty() {
                    continue; // a keepalive comment
                }
                return Some(m);
            }
            let chunk = tokio::time::timeout(WAIT, self.body.chunk())
                .await
                .expect("SSE data within the wait bound")
                .ok()??;
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

/// Opens `/sse` on `http` with a query and headers.
pub async fn open_sse(
    http: std::net::SocketAddr,
    query: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut req = reqwest::Client::new().get(format!("http://{http}/sse?{query}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.expect("SSE request")
}

#[tokio::test]
async fn sse_streams_a_subscription_resumes_and_ends_like_a_websocket() {
    let c = redis_cluster(2).await;
    let s = setup(&c, "sse_orders", "").await;
    let q = format!("subscription_id={}", s.sub);
    let bearer = format!("Bearer {}", s.consumer_bearer);
    // Refusals before any stream: no credentials, an API key in the URL, another key.
    let r = open_sse(c.nodes[1].http, &q, &[]).await;
    assert_eq!(r.status(), 401);
    let r = open_sse(
        c.nodes[1].http,
        &format!("{q}&token={}", s.consumer_bearer),
        &[],
    )
    .await;
    assert_eq!(r.status(), 401);
    let (stranger, _) = c.key(eventrelay::auth::KeyType::Consumer, &[], &[]).await;
    let r = open_sse(
        c.nodes[1].http,
        &q,
        &[("authorization", &format!("Bearer {stranger}"))],
    )
    .await;
    assert_eq!(r.status(), 403);

    // A bearer header on node 1, a JWT in the query (EventSource's way) beside a websocket.
    let r = open_sse(c.nodes[1].http, &q, &[("authorization", &bearer)]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let mut header = SseReader::new(r);
    let r = open_sse(
        c.nodes[1].http,
        &format!("{q}&token={}", s.consumer_token),
        &[],
    )
    .await;
    let mut query = SseReader::new(r);
    let mut ws = Ws::connect(c.nodes[1].http, true).await;
    ws.join(s.sub, json!({"consumer_token": s.consumer_token}))
        .await;
    publish(&c, 0, "sse_orders", numbered(0..3)).await;
    let mut pushed = Vec::new();
    for _ in 0..3 {
        pushed.push(ws.event().await.unwrap());
    }
    for reader in [&mut header, &mut query] {
        for (i, push) in pushed.iter().enumerate() {
            let m = reader.next().await.expect("an event");
            assert_eq!(m.id.as_deref(), Some((i + 1).to_string().as_str()));
            assert_eq!(m.event, "");
            let v: Value = serde_json::from_str(&m.data).unwrap();
            assert_eq!(&v, push, "the SSE data is the websocket push");
        }
    }
    // Non-durable events carry no id (Last-Event-ID stays on the last durable one). Published
    // on the stream's node: across nodes they are best effort.
    let mut api = c.client(1).await;
    let req = proto::PublishEventsRequest {
        topic: "sse_orders".into(),
        events: numbered(9..10),
        durable: false,
        ..Default::default()
    };
    api.publish_events(crate::helpers::authed(&c.admin, req))
        .await
        .unwrap();
    let m = header.next().await.unwrap();
    assert_eq!((m.id, m.data.contains("\"offset\":0")), (None, true));

    // Resume with Last-Event-ID (it wins over after_offset), as EventSource does.
    publish(&c, 0, "sse_orders", numbered(3..5)).await;
    let r = open_sse(
        c.nodes[0].http,
        &format!("{q}&after_offset=0"),
        &[("authorization", &bearer), ("last-event-id", "3")],
    )
    .await;
    let mut resumed = SseReader::new(r);
    for want in ["4", "5"] {
        assert_eq!(resumed.next().await.unwrap().id.as_deref(), Some(want));
    }
    // Access is re-checked: a revoked key ends the stream with its reason.
    revoke(&c, s.consumer_key).await;
    let end = loop {
        let m = resumed
            .next()
            .await
            .expect("a close message before the end");
        if m.event == "close" {
            break m;
        }
    };
    let v: Value = serde_json::from_str(&end.data).unwrap();
    assert_eq!(v["reason"], "api key revoked");
    assert!(
        resumed.next().await.is_none(),
        "the stream ends after its close"
    );
}
