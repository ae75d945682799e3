//! Helpers of the live-streaming tests: clusters on their own Redis namespace, JWTs, a raw
//! Phoenix protocol client over tokio-tungstenite, a gRPC stream reader, and a private
//! redis-server that a test may kill and restart.

#![allow(dead_code)]

use crate::helpers::{TestCluster, authed, create_subscription, create_topic, redis_url, sub_id};
use eventrelay::auth::KeyType;
use eventrelay::proto;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use uuid::Uuid;

/// Upper bound for any single wait: a failure, never a performance assertion.
pub const WAIT: Duration = Duration::from_secs(20);

/// `n` nodes sharing Postgres and (when `redis`) the test Redis, in a namespace of their own
/// so tests run in parallel on one Redis.
pub async fn cluster(n: usize, redis: Option<String>) -> TestCluster {
    let name = format!("t{}", Uuid::new_v4().simple());
    TestCluster::start_with(n, move |c| {
        c.redis_url = redis.clone();
        c.cluster_name = name.clone();
    })
    .await
}

/// A cluster on the shared test Redis.
pub async fn redis_cluster(n: usize) -> TestCluster {
    cluster(n, Some(redis_url())).await
}

/// A topic, a subscription on it (optionally identifier-scoped) and a consumer JWT for it.
pub struct Setup {
    pub topic: String,
    pub sub: Uuid,
    pub consumer_token: String,
    pub consumer_key: Uuid,
    pub consumer_bearer: String,
}

pub async fn setup(c: &TestCluster, topic: &str, identifier: &str) -> Setup {
    create_topic(c, topic).await;
    let s = create_subscription(c, &format!("{topic}_sub"), topic, identifier).await;
    let sub = sub_id(&s);
    let (bearer, key) = c.key(KeyType::Consumer, &[], &[sub]).await;
    Setup {
        topic: topic.into(),
        sub,
        consumer_token: jwt(c, &bearer).await,
        consumer_key: key,
        consumer_bearer: bearer,
    }
}

/// A JWT for the key behind `bearer`.
pub async fn jwt(c: &TestCluster, bearer: &str) -> String {
    c.client(0)
        .await
        .create_jwt(authed(bearer, proto::CreateJwtRequest { expiration: 0 }))
        .await
        .expect("create jwt")
        .into_inner()
        .jwt
}

/// Revokes a key through the admin API.
pub async fn revoke(c: &TestCluster, key: Uuid) {
    c.client(0)
        .await
        .revoke_api_key(authed(
            &c.admin,
            proto::RevokeApiKeyRequest {
                id: key.to_string(),
            },
        ))
        .await
        .expect("revoke");
}

/// Withdraws a subscription from a key (DeleteSubscriptionsFromApiKey on node 0).
pub async fn withdraw(c: &TestCluster, key: Uuid, sub: Uuid) {
    c.client(0)
        .await
        .delete_subscriptions_from_api_key(authed(
            &c.admin,
            proto::DeleteSubscriptionsFromApiKeyRequest {
                id: key.to_string(),
                subscription_ids: vec![sub.to_string()],
            },
        ))
        .await
        .expect("delete subscriptions from key");
}

/// Deletes a subscription (on node 0).
pub async fn delete_subscription(c: &TestCluster, sub: Uuid) {
    c.client(0)
        .await
        .delete_subscription(authed(
            &c.admin,
            proto::DeleteSubscriptionRequest {
                id: sub.to_string(),
            },
        ))
        .await
        .expect("delete subscription");
}

/// A JWT for the key behind `bearer` that expires in `secs` seconds.
pub async fn short_jwt(c: &TestCluster, bearer: &str, secs: i64) -> String {
    let expiration = chrono::Utc::now().timestamp() + secs;
    c.client(0)
        .await
        .create_jwt(authed(bearer, proto::CreateJwtRequest { expiration }))
        .await
        .expect("create jwt")
        .into_inner()
        .jwt
}

/// StreamEvents of a subscription, optionally resuming after an offset.
pub fn by_sub(sub: Uuid, after: Option<i64>) -> proto::StreamEventsRequest {
    proto::StreamEventsRequest {
        subscription_id: sub.to_string(),
        after_offset: after,
        ..Default::default()
    }
}

/// Events named `e<i>` with `{"i": i}` as data.
pub fn numbered(range: std::ops::Range<usize>) -> Vec<proto::NewEvent> {
    range
        .map(|i| crate::helpers::event(&format!("e{i}"), &format!("{{\"i\": {i}}}")))
        .collect()
}

/// A raw Phoenix protocol client.
pub struct Ws {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    v2: bool,
    next_ref: u64,
    /// Pushes received while waiting for a reply.
    pushes: VecDeque<(String, String, Value)>,
    /// The reason of the server's close frame, once received.
    close_reason: Option<String>,
    /// The code of the server's close frame, once received.
    pub close_code: Option<u16>,
    closed: bool,
}

/// One decoded message: join_ref, ref, topic, event, payload.
pub type Msg = (Value, Value, String, String, Value);

impl Ws {
    /// Connects with protocol v2 (arrays) or v1 (objects).
    pub async fn connect(http: SocketAddr, v2: bool) -> Ws {
        Ws::connect_with(http, v2, &[]).await
    }

    /// Connects with extra request headers (`X-Forwarded-For`, say).
    pub async fn connect_with(http: SocketAddr, v2: bool, headers: &[(&str, &str)]) -> Ws {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let vsn = if v2 { "2.0.0" } else { "1.0.0" };
        let url = format!("ws://{http}/socket/websocket?vsn={vsn}");
        let mut req = url.into_client_request().unwrap();
        for (k, v) in headers {
            let name = http::HeaderName::from_bytes(k.as_bytes()).expect("header name");
            req.headers_mut()
                .insert(name, v.parse().expect("header value"));
        }
        let (stream, _) = tokio_tungstenite::connect_async(req)
            .await
            .expect("ws connect");
        Ws {
            stream,
            v2,
            next_ref: 0,
            pushes: VecDeque::new(),
            close_reason: None,
            close_code: None,
            closed: false,
        }
    }

    /// Sends a text message as it is.
    pub async fn send_raw(&mut self, text: String) {
        // The server may already have closed: the close frame tells what happened.
        let _ = self.stream.send(Message::text(text)).await;
    }

    /// Sends a message and returns its ref.
    pub async fn send(&mut self, topic: &str, event: &str, payload: Value) -> String {
        self.next_ref += 1;
        let r = self.next_ref.to_string();
        let text = if self.v2 {
            json!(["1", r, topic, event, payload]).to_string()
        } else {
            json!({"join_ref": "1", "ref": r, "topic": topic, "event": event, "payload": payload})
                .to_string()
        };
        self.stream
            .send(Message::text(text))
            .await
            .expect("ws send");
        r
    }

    /// The next message; `None` when the server closed the connection (or errored).
    pub async fn recv(&mut self) -> Option<Msg> {
        loop {
            let m = tokio::time::timeout(WAIT, self.stream.next())
                .await
                .expect("websocket message within the wait bound");
            match m {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(t.as_str()).expect("JSON message");
                    return Some(if self.v2 {
                        (
                            v[0].clone(),
                            v[1].clone(),
                            v[2].as_str().unwrap().into(),
                            v[3].as_str().unwrap().into(),
                            v[4].clone(),
                        )
                    } else {
                        (
                            v["join_ref"].clone(),
                            v["ref"].clone(),
                            v["topic"].as_str().unwrap().into(),
                            v["event"].as_str().unwrap().into(),
                            v["payload"].clone(),
                        )
                    });
                }
                Some(Ok(Message::Close(f))) => {
                    self.close_code = f.as_ref().map(|f| u16::from(f.code));
                    self.close_reason = f.map(|f| f.reason.to_string());
                    self.closed = true;
                    return None;
                }
                None | Some(Err(_)) => {
                    self.closed = true;
                    return None;
                }
                Some(Ok(_)) => {}
            }
        }
    }

    /// Sends and waits for the reply payload (`{status, response}`), keeping pushes.
    pub async fn call(&mut self, topic: &str, event: &str, payload: Value) -> Value {
        let r = self.send(topic, event, payload).await;
        loop {
            let (_, rf, t, ev, p) = self.recv().await.expect("reply before close");
            if ev == "phx_reply" && rf == Value::String(r.clone()) {
                return p;
            }
            self.pushes.push_back((t, ev, p));
        }
    }

    /// Joins `events:<sub>` with the given payload; returns the reply.
    pub async fn join(&mut self, sub: Uuid, payload: Value) -> Value {
        self.call(&format!("events:{sub}"), "phx_join", payload)
            .await
    }

    /// The next `event:published` payload; `None` if the connection closed first.
    pub async fn event(&mut self) -> Option<Value> {
        while let Some((_, ev, p)) = self.pushes.pop_front() {
            if ev == "event:published" {
                return Some(p);
            }
        }
        loop {
            let (_, _, _, ev, p) = self.recv().await?;
            if ev == "event:published" {
                return Some(p);
            }
        }
    }

    /// The offsets of the next `n` pushed events.
    pub async fn offsets(&mut self, n: usize) -> Vec<i64> {
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            let e = self.event().await.expect("event before close");
            v.push(e["offset"].as_i64().unwrap());
        }
        v
    }

    /// For a client that stopped reading (and so stopped answering pings): reads what the
    /// server sent from the TCP stream itself, never writing (a pong to a closed connection
    /// would draw a reset that discards the rest), and returns the close frame's code and
    /// reason.
    pub async fn raw_close(mut self) -> Option<(u16, String)> {
        use tokio::io::AsyncReadExt;
        let MaybeTlsStream::Plain(tcp) = self.stream.get_mut() else {
            panic!("plain TCP only");
        };
        let mut bytes = Vec::new();
        tokio::time::timeout(WAIT, tcp.read_to_end(&mut bytes))
            .await
            .expect("the server ends the connection")
            .ok()?;
        // Server frames are unmasked: opcode byte, length (7 bits, or 16/64 more), payload.
        let mut at = 0;
        while at + 2 <= bytes.len() {
            let (op, len7) = (bytes[at] & 0x0f, usize::from(bytes[at + 1] & 0x7f));
            let (len, head) = match len7 {
                126 => (
                    usize::from(u16::from_be_bytes([bytes[at + 2], bytes[at + 3]])),
                    4,
                ),
                127 => {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&bytes[at + 2..at + 10]);
                    (u64::from_be_bytes(b) as usize, 10)
                }
                n => (n, 2),
            };
            let payload = bytes.get(at + head..at + head + len)?;
            if op == 0x8 && payload.len() >= 2 {
                let code = u16::from_be_bytes([payload[0], payload[1]]);
                return Some((code, String::from_utf8_lossy(&payload[2..]).into_owned()));
            }
            at += head + len;
        }
        None
    }

    /// Waits until the server closes the connection; returns the close reason, if any.
    pub async fn closed(&mut self) -> Option<String> {
        if self.closed {
            return self.close_reason.clone();
        }
        loop {
            match tokio::time::timeout(WAIT, self.stream.next())
                .await
                .expect("close")
            {
                Some(Ok(Message::Close(f))) => {
                    self.close_code = f.as_ref().map(|f| u16::from(f.code));
                    self.closed = true;
                    return f.map(|f| f.reason.to_string());
                }
                None | Some(Err(_)) => {
                    self.closed = true;
                    return None;
                }
                Some(Ok(_)) => {}
            }
        }
    }
}

/// A consumer's StreamEvents call on a node.
pub async fn stream(
    c: &TestCluster,
    node: usize,
    bearer: &str,
    req: proto::StreamEventsRequest,
) -> Result<tonic::Streaming<proto::Event>, tonic::Status> {
    c.client(node)
        .await
        .stream_events(authed(bearer, req))
        .await
        .map(|r| r.into_inner())
}

/// The offsets of the next `n` events of a stream.
pub async fn stream_offsets(s: &mut tonic::Streaming<proto::Event>, n: usize) -> Vec<i64> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let e = tokio::time::timeout(WAIT, s.message())
            .await
            .expect("stream event within the wait bound")
            .expect("stream ok")
            .expect("stream open");
        v.push(i64::from(e.offset));
    }
    v
}

/// `a..=b` as a vector.
pub fn span(a: i64, b: i64) -> Vec<i64> {
    (a..=b).collect()
}

/// A redis-server of this test only, on a free port, that can be killed and restarted.
pub struct PrivateRedis {
    pub port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    pub fn start() -> PrivateRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut r = PrivateRedis { port, child: None };
        r.restart();
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) on the same port and waits until it answers.
    pub fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--bind", "127.0.0.1", "--daemonize", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (Debian package redis-server) must be installed");
        self.child = Some(child);
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("private redis-server did not start on port {}", self.port);
    }

    /// Kills the server (SIGKILL: no goodbye to its clients).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}
