//! Hostile and careless gRPC clients against real nodes. The memory tests run the real binary
//! as its own process, so the peak RSS they read from `/proc` is the node's alone: ten clients
//! hammer it with oversized and amplifying PublishEvents bodies (`0x12 0x00` repeated: one
//! empty event per two bytes) without credentials, and the node must answer UNAUTHENTICATED
//! without decoding them; allowed callers sending such floods are refused on the raw event
//! count, before decoding. Also: the message limit with credentials, the JWT-secret refusal,
//! producer reads through subscriptions, the filter cap, the statement timeout, the capped
//! count, stream opens under the pull rate limit, gRPC health following readiness, and
//! /metrics on its own address.
use crate::helpers::*;
use crate::live_support::{Ws, by_sub, jwt};
use bytes::Bytes;
use eventrelay::auth::KeyType;
use eventrelay::proto::{self, PullEventsFilter, PullEventsRequest, StreamEventsRequest};
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::Command;
use tonic::Code;

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// The node binary: this build's, or `ER_TEST_NODE_BIN` (to run these tests against another
/// build, e.g. to see them fail on the one before the change).
fn node_bin() -> String {
    std::env::var("ER_TEST_NODE_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_eventrelay").into())
}

/// The real binary serving on free ports ([`NodeProcess`]), with a view of its memory.
struct ProcNode(NodeProcess);

impl ProcNode {
    async fn spawn(db_url: &str) -> ProcNode {
        Self::spawn_with(db_url, &[]).await
    }

    /// The node with `env` added to its environment.
    async fn spawn_with(db_url: &str, env: &[(&str, &str)]) -> ProcNode {
        let mut command = std::process::Command::new(node_bin());
        command
            .env_clear()
            .env("DATABASE_URL", db_url)
            .env("ER_JWT_SECRET", jwt_secret())
            .env("ER_DB_POOL_SIZE", "6")
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        ProcNode(NodeProcess::start(command).await.expect("the node process"))
    }

    /// A field of `/proc/<pid>/status` in kB (VmHWM: the peak resident set).
    fn status_kb(&self, field: &str) -> u64 {
        let pid = self.0.pid();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
    }
}

/// A gRPC frame around `message`: the uncompressed flag and the 4-byte big-endian length.
fn grpc_frame(message: &[u8]) -> Bytes {
    let mut b = Vec::with_capacity(message.len() + 5);
    b.push(0);
    b.extend_from_slice(&(message.len() as u32).to_be_bytes());
    b.extend_from_slice(message);
    b.into()
}

/// A PublishEventsRequest of `bytes` bytes made of empty events (field 2, length 0).
fn empty_events(bytes: usize) -> Bytes {
    grpc_frame(&[0x12, 0x00].repeat(bytes / 2))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unauthenticated_amplifying_requests_do_not_grow_the_node() {
    let db = TestDb::create().await;
    let node = ProcNode::spawn(&db.url).await;
    let before = node.status_kb("VmHWM:");
    let url = format!("http://{}/eventrelay.EventRelay/PublishEvents", node.0.grpc);
    let bodies = [empty_events(8 << 20), empty_events(30 << 20)];
    let deadline = Instant::now() + Duration::from_secs(6);
    let mut clients = Vec::new();
    for i in 0..10 {
        let (url, body) = (url.clone(), bodies[i % 2].clone());
        clients.push(tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .http2_prior_knowledge()
                .build()
                .unwrap();
            let (mut sent, mut unauthenticated) = (0, 0);
            while Instant::now() < deadline {
                sent += 1;
                let mut req = http
                    .post(&url)
                    .header("content-type", "application/grpc")
                    .header("te", "trailers")
                    .body(body.clone());
                if i % 3 == 0 {
                    req = req.header("authorization", "Bearer bm90OmEta2V5");
                }
                // The node may reset the stream while the body is still going out.
                if let Ok(r) = req.send().await
                    && r.headers().get("grpc-status").is_some_and(|s| s == "16")
                {
                    unauthenticated += 1;
                }
            }
            (sent, unauthenticated)
        }));
    }
    let (mut sent, mut refused) = (0, 0);
    for c in clients {
        let (s, u) = c.await.unwrap();
        sent += s;
        refused += u;
    }
    let peak = node.status_kb("VmHWM:");
    eprintln!(
        "{sent} requests, {refused} answered UNAUTHENTICATED; peak RSS {} MB (at start {} MB)",
        peak / 1024,
        before / 1024
    );
    assert!(refused > 0, "no request was answered UNAUTHENTICATED");
    assert!(
        peak < 200 * 1024,
        "peak RSS {} MB while unauthenticated clients sent {sent} requests",
        peak / 1024
    );
}

#[tokio::test]
async fn oversized_messages_are_refused_even_with_credentials() {
    let c = TestCluster::start(1).await;
    create_topic(&c, "users").await;
    let big = proto::NewEvent {
        data: format!("\"{}\"", "x".repeat(5 << 20)),
        ..event("e", "{}")
    };
    let r = c
        .client(0)
        .await
        .publish_events(authed(
            &c.admin,
            proto::PublishEventsRequest {
                topic: "users".into(),
                events: vec![big],
                durable: true,
                ..Default::default()
            },
        ))
        .await;
    match r {
        Ok(_) => panic!("a 5 MiB request was accepted"),
        Err(s) => {
            assert_eq!(s.code(), Code::OutOfRange, "{}", s.message());
            assert!(s.message().contains("limit"), "{}", s.message());
        }
    }
    // Within the limit the same node still serves.
    publish(&c, 0, "users", vec![event("e", "{}")]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn allowed_producers_cannot_make_the_node_decode_floods_of_empty_events() {
    let db = TestDb::create().await;
    // Every caller allowed (no keys): what is measured is the count before decoding.
    let node = ProcNode::spawn_with(&db.url, &[("ER_AUTH_ENABLED", "false")]).await;
    let before = node.status_kb("VmHWM:");
    let url = format!("http://{}/eventrelay.EventRelay/PublishEvents", node.0.grpc);
    // Just under the 4 MiB message limit: two million empty events, half a gigabyte decoded.
    let body = empty_events((4 << 20) - 64);
    let deadline = Instant::now() + Duration::from_secs(4);
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (url, body) = (url.clone(), body.clone());
        clients.push(tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .http2_prior_knowledge()
                .build()
                .unwrap();
            let mut refused = 0;
            while Instant::now() < deadline {
                let r = http
                    .post(&url)
                    .header("content-type", "application/grpc")
                    .header("te", "trailers")
                    .body(body.clone())
                    .send()
                    .await
                    .expect("the node answers");
                let message = r.headers().get("grpc-message").cloned();
                assert_eq!(r.headers().get("grpc-status").unwrap(), "3", "{message:?}");
                let message = message.unwrap();
                // grpc-message is percent-encoded.
                assert!(
                    message
                        .to_str()
                        .unwrap()
                        .starts_with("too%20many%20events:%202097"),
                    "{message:?}"
                );
                refused += 1;
            }
            refused
        }));
    }
    let mut refused = 0;
    for c in clients {
        refused += c.await.unwrap();
    }
    let peak = node.status_kb("VmHWM:");
    eprintln!(
        "{refused} floods refused; peak RSS {} MB (at start {} MB)",
        peak / 1024,
        before / 1024
    );
    assert!(refused >= 8);
    assert!(
        peak < 200 * 1024,
        "peak RSS {} MB while allowed clients sent floods of empty events",
        peak / 1024
    );
}

#[tokio::test]
async fn a_node_refuses_to_start_without_a_long_jwt_secret() {
    eventrelay::install_crypto_provider();
    let db = TestDb::create().await;
    let run = |secret: Option<&str>| {
        let mut cmd = Command::new(node_bin());
        cmd.arg("serve")
            .env_clear()
            .env("DATABASE_URL", &db.url)
            .env("ER_GRPC_ADDR", free_addr().to_string())
            .env("ER_HTTP_ADDR", free_addr().to_string())
            .env("RUST_LOG", "warn")
            .kill_on_drop(true);
        if let Some(s) = secret {
            cmd.env("ER_JWT_SECRET", s);
        }
        async move {
            let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
                .await
                .expect("the node exits by itself")
                .unwrap();
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
    };
    let (ok, stderr) = run(None).await;
    assert!(
        !ok && stderr.contains("ER_JWT_SECRET is required"),
        "{stderr}"
    );
    let (ok, stderr) = run(Some("thirty-one-bytes-is-one-too-few")).await;
    assert!(!ok && stderr.contains("at least 32 bytes"), "{stderr}");
}

#[tokio::test]
async fn producer_keys_cannot_read_through_subscriptions() {
    let c = TestCluster::start(1).await;
    create_topic(&c, "users").await;
    let sub = sub_id(&create_subscription(&c, "users_sub", "users", "").await);
    // A producer key associated with the subscription (as AddSubscriptionsToApiKey allows).
    let (producer, _) = c.key(KeyType::Producer, &["users"], &[sub]).await;
    let mut api = c.client(0).await;
    let r = api
        .stream_events(authed(&producer, by_sub(sub, Some(0))))
        .await;
    assert_code(
        r,
        Code::PermissionDenied,
        Some("producer keys may not read events"),
    );
    let r = api
        .get_subscription(authed(
            &producer,
            proto::GetSubscriptionRequest {
                id: sub.to_string(),
            },
        ))
        .await;
    assert_code(r, Code::PermissionDenied, None);

    // The websocket consumer join refuses the producer's token too.
    let token = jwt(&c, &producer).await;
    let mut ws = Ws::connect(c.nodes[0].http, true).await;
    let reply = ws
        .join(sub, serde_json::json!({ "consumer_token": token }))
        .await;
    assert_eq!(reply["status"], "error", "{reply}");
    // A consumer key of the same subscription still reads.
    let (consumer, _) = c.key(KeyType::Consumer, &[], &[sub]).await;
    let mut ws = Ws::connect(c.nodes[0].http, true).await;
    let token = jwt(&c, &consumer).await;
    let reply = ws
        .join(sub, serde_json::json!({ "consumer_token": token }))
        .await;
    assert_eq!(reply["status"], "ok", "{reply}");
}

fn filters(n: usize) -> Vec<PullEventsFilter> {
    (0..n)
        .map(|i| PullEventsFilter {
            field: "data.n".into(),
            comparison: "!=".into(),
            value: i.to_string(),
        })
        .collect()
}

#[tokio::test]
async fn filters_are_capped_per_pull_and_stream() {
    let c = TestCluster::start(1).await;
    create_topic(&c, "users").await;
    publish(&c, 0, "users", vec![event("e", r#"{"n": 99}"#)]).await;
    let mut api = c.client(0).await;
    let pull = |n| PullEventsRequest {
        topic: "users".into(),
        filters: filters(n),
        ..Default::default()
    };
    let ok = api.pull_events(authed(&c.admin, pull(10))).await.unwrap();
    assert_eq!(ok.into_inner().events.len(), 1);
    let r = api.pull_events(authed(&c.admin, pull(11))).await;
    assert_code(
        r,
        Code::InvalidArgument,
        Some("too many filters: 11, at most 10 allowed"),
    );
    let r = api
        .stream_events(authed(
            &c.admin,
            StreamEventsRequest {
                topic: "users".into(),
                filters: filters(11),
                ..Default::default()
            },
        ))
        .await;
    assert_code(r, Code::InvalidArgument, None);
}

#[tokio::test]
async fn scoped_pulls_run_under_a_statement_timeout() {
    let c = TestCluster::start_with(1, |cfg| cfg.pull_timeout_ms = 300).await;
    create_topic(&c, "users").await;
    publish(&c, 0, "users", vec![event("e", r#"{"n": 1}"#)]).await;
    // A lock held elsewhere makes any read of the table wait: the timeout must end the wait.
    let mut locker = c.pool.begin().await.unwrap();
    sqlx::query(r#"LOCK TABLE "users_events" IN ACCESS EXCLUSIVE MODE"#)
        .execute(&mut *locker)
        .await
        .unwrap();
    let mut api = c.client(0).await;
    let req = PullEventsRequest {
        topic: "users".into(),
        filters: filters(1),
        ..Default::default()
    };
    let r = tokio::time::timeout(
        Duration::from_secs(20),
        api.pull_events(authed(&c.admin, req)),
    )
    .await;
    locker.rollback().await.unwrap();
    let r = r.expect("the pull waited for the lock instead of timing out");
    match r {
        Ok(_) => panic!("the pull returned although the table was locked"),
        Err(s) => {
            assert_eq!(s.code(), Code::ResourceExhausted, "{}", s.message());
            assert!(
                s.message().contains("ER_PULL_TIMEOUT_MS"),
                "{}",
                s.message()
            );
        }
    }
}

#[tokio::test]
async fn filtered_total_count_is_capped() {
    let c = TestCluster::start(1).await;
    create_topic(&c, "users").await;
    let cap = eventrelay::events::COUNT_CAP as usize;
    for start in (0..cap + 5).step_by(1000) {
        let n = (cap + 5 - start).min(1000);
        publish(&c, 0, "users", vec![event("e", r#"{"n": 1}"#); n]).await;
    }
    let mut api = c.client(0).await;
    let pull = |filters| PullEventsRequest {
        topic: "users".into(),
        batch_size: 10,
        filters,
        ..Default::default()
    };
    let all = api
        .pull_events(authed(&c.admin, pull(vec![])))
        .await
        .unwrap();
    assert_eq!(
        all.into_inner().total_count64,
        (cap + 5) as i64,
        "unfiltered: exact"
    );
    let filtered = api
        .pull_events(authed(&c.admin, pull(filters(1))))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(filtered.total_count64, cap as i64, "filtered: capped");
    assert_eq!(filtered.events.len(), 10);
}

#[tokio::test]
async fn stream_opens_count_against_the_pull_rate_limit() {
    let c = TestCluster::start_with(1, |cfg| cfg.rate_limit_pull = 2).await;
    create_topic(&c, "users").await;
    let mut api = c.client(0).await;
    let open = || {
        authed(
            &c.admin,
            StreamEventsRequest {
                topic: "users".into(),
                ..Default::default()
            },
        )
    };
    // Within one second: two opens pass, the third is over the limit.
    let mut refused = None;
    let mut open_streams = Vec::new();
    for _ in 0..3 {
        match api.stream_events(open()).await {
            Ok(s) => open_streams.push(s),
            Err(s) => refused = Some(s),
        }
    }
    let s = refused.expect("a third stream opened within the limit of two a second");
    assert_eq!(s.code(), Code::ResourceExhausted, "{}", s.message());
}

#[tokio::test]
async fn grpc_health_reports_not_serving_while_not_ready() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let c = TestCluster::start(1).await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", c.nodes[0].grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let health = HealthClient::new(channel);
    let status = |service: &str| {
        let mut health = health.clone();
        let service = service.to_owned();
        async move {
            health
                .check(HealthCheckRequest { service })
                .await
                .unwrap()
                .into_inner()
                .status
        }
    };
    let serving = ServingStatus::Serving as i32;
    let not_serving = ServingStatus::NotServing as i32;
    assert_eq!(status("eventrelay.EventRelay").await, serving);
    // A migration goes missing: /readyz says not ready, and so must the health service.
    let (version, row): (i64, Vec<u8>) = sqlx::query_as(
        "SELECT version, checksum FROM _sqlx_migrations ORDER BY version DESC LIMIT 1",
    )
    .fetch_one(&c.pool)
    .await
    .unwrap();
    let desc: String =
        sqlx::query_scalar("SELECT description FROM _sqlx_migrations WHERE version = $1")
            .bind(version)
            .fetch_one(&c.pool)
            .await
            .unwrap();
    sqlx::query("DELETE FROM _sqlx_migrations WHERE version = $1")
        .bind(version)
        .execute(&c.pool)
        .await
        .unwrap();
    let readyz = format!("http://{}/readyz", c.nodes[0].http);
    assert_eq!(reqwest::get(&readyz).await.unwrap().status(), 503);
    let mut seen = Vec::new();
    for _ in 0..50 {
        seen.push((status("").await, status("eventrelay.EventRelay").await));
        if *seen.last().unwrap() == (not_serving, not_serving) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen.last(), Some(&(not_serving, not_serving)), "{seen:?}");
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES ($1, $2, true, $3, 0)",
    )
    .bind(version)
    .bind(desc)
    .bind(row)
    .execute(&c.pool)
    .await
    .unwrap();
    let mut back = false;
    for _ in 0..50 {
        if status("eventrelay.EventRelay").await == serving {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(back, "the health service did not come back to SERVING");
}

#[tokio::test]
async fn metrics_are_served_on_their_own_address_only() {
    eventrelay::install_crypto_provider();
    let metrics = free_addr();
    let c = TestCluster::start_with(1, |cfg| cfg.metrics_addr = Some(metrics)).await;
    let on_http = reqwest::get(format!("http://{}/metrics", c.nodes[0].http))
        .await
        .unwrap();
    assert_eq!(on_http.status(), 404, "metrics still on the HTTP port");
    let own = reqwest::get(format!("http://{metrics}/metrics"))
        .await
        .unwrap();
    assert_eq!(own.status(), 200);
    assert!(own.text().await.unwrap().contains("eventrelay_"));
}
