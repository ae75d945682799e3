//! Clients through real load balancers (issue 20): nginx and HAProxy, started from their
//! Debian packages with the configuration files `docs/deploy.md` shows (`proxies/`), in front
//! of three real node processes. Websocket clients (the npm `phoenix` client and a raw one),
//! a gRPC stream and an SSE client connect through the proxy; they sit idle for longer than
//! the proxy's idle timeout without being dropped; then, while events are published, one node
//! is drained (SIGTERM) and another killed (SIGKILL). Every client reconnects through the
//! proxy, resumes, and ends with every durable event exactly once and in order.

use crate::helpers::{NodeProcess, TestDb, authed, event, redis_url, unique_cluster_name};
use crate::live_support::WAIT;
use crate::ws_rollout::SseReader;
use eventrelay::auth::{ApiKeys, KeyType};
use eventrelay::proto;
use eventrelay::proto::event_relay_client::EventRelayClient;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::process::{Child, Command};
use uuid::Uuid;

/// The proxies' idle timeout here: short, so the idle period outlasts it.
const IDLE_TIMEOUT: &str = "3s";
/// Events published before the idle period, and during the drain and the kill.
const BEFORE: usize = 20;
const DURING: usize = 100;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Installs nginx, HAProxy and the npm phoenix client when they are missing.
async fn ensure_tools() {
    for (bin, package) in [
        ("/usr/sbin/nginx", "nginx"),
        ("/usr/sbin/haproxy", "haproxy"),
    ] {
        if Path::new(bin).exists() {
            continue;
        }
        let ok = Command::new("apt-get")
            .args(["install", "-y", "-qq", package])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .await
            .is_ok_and(|s| s.success());
        assert!(
            ok && Path::new(bin).exists(),
            "`apt-get install {package}` failed"
        );
    }
    let dir = root().join("tests/ws");
    if !dir.join("node_modules/phoenix").exists() {
        let ok = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .status()
            .await
            .is_ok_and(|s| s.success());
        assert!(ok, "npm ci in tests/ws failed");
    }
}

/// One node as its own process (SIGKILL must be real), in `cluster` on the shared Redis.
async fn start_node(db: &str, cluster: &str, name: &str) -> NodeProcess {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_eventrelay"));
    command
        .env("DATABASE_URL", db)
        .env("REDIS_URL", redis_url())
        .env("ER_CLUSTER_NAME", cluster)
        .env("ER_NODE_NAME", name)
        .env("ER_JWT_SECRET", "proxy-test-secret-of-at-least-32-bytes")
        .env("ER_DB_POOL_SIZE", "6")
        .env("ER_KEEPALIVE_SECONDS", "1")
        .env("ER_WS_IDLE_TIMEOUT_SECONDS", "5")
        .env("ER_SHUTDOWN_GRACE_SECONDS", "6")
        .env("ER_DRAIN_SPREAD_SECONDS", "2")
        .env("ER_TRUSTED_PROXIES", "127.0.0.0/8")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null());
    NodeProcess::start(command)
        .await
        .unwrap_or_else(|e| panic!("node {name}: {e:#}"))
}

/// A proxy process with its rendered configuration.
struct Proxy {
    child: Child,
    http: u16,
    grpc: u16,
    _dir: TempDir,
}

impl Drop for Proxy {
    /// Stops the proxy with SIGTERM and waits for it (5 s at most): nginx's master then stops
    /// its worker too, where the SIGKILL of `kill_on_drop` would leave the worker running,
    /// orphaned, after the test.
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
            for _ in 0..100 {
                if !matches!(self.child.try_wait(), Ok(None)) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `proxies/<file>` with its placeholders filled in.
pub fn render(file: &str, values: &[(&str, String)]) -> String {
    let mut text = std::fs::read_to_string(root().join("proxies").join(file)).unwrap();
    for (k, v) in values {
        text = text.replace(&format!("@{k}@"), v);
    }
    assert!(!text.contains('@'), "unfilled placeholder in {file}");
    text
}

impl Proxy {
    async fn start(kind: &str, nodes: &[&NodeProcess]) -> Proxy {
        let dir = std::env::temp_dir().join(format!("er-{kind}-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let (http, grpc) = (free_port(), free_port());
        let lines = |f: &dyn Fn(&NodeProcess) -> String| {
            nodes
                .iter()
                .map(|n| f(n))
                .collect::<Vec<_>>()
                .join("\n        ")
        };
        let (file, servers) = if kind == "nginx" {
            (
                "nginx.conf",
                [
                    lines(&|n| format!("server {} max_fails=1 fail_timeout=3s;", n.http)),
                    lines(&|n| format!("server {} max_fails=1 fail_timeout=3s;", n.grpc)),
                ],
            )
        } else {
            (
                "haproxy.cfg",
                [
                    lines(&|n| {
                        format!(
                            "server n{0} 127.0.0.1:{0} check inter 500ms fall 1 rise 2",
                            n.http.port()
                        )
                    }),
                    lines(&|n| {
                        format!(
                            "server n{0} 127.0.0.1:{0} proto h2 check port {1} inter 500ms fall 1 rise 2",
                            n.grpc.port(),
                            n.http.port()
                        )
                    }),
                ],
            )
        };
        let [http_servers, grpc_servers] = servers;
        let text = render(
            file,
            &[
                ("RUN_DIR", dir.display().to_string()),
                ("HTTP_LISTEN", format!("127.0.0.1:{http}")),
                ("GRPC_LISTEN", format!("127.0.0.1:{grpc}")),
                ("HTTP_SERVERS", http_servers),
                ("GRPC_SERVERS", grpc_servers),
                ("IDLE_TIMEOUT", IDLE_TIMEOUT.into()),
            ],
        );
        let conf = dir.join(file);
        std::fs::write(&conf, text).unwrap();
        let conf = conf.display().to_string();
        let mut cmd = if kind == "nginx" {
            let mut c = Command::new("/usr/sbin/nginx");
            c.args([
                "-g",
                "daemon off;",
                "-c",
                &conf,
                "-p",
                &dir.display().to_string(),
            ]);
            c
        } else {
            let mut c = Command::new("/usr/sbin/haproxy");
            c.args(["-db", "-f", &conf]);
            c
        };
        let child = cmd
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start {kind}: {e}"));
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", http))
                .await
                .is_ok()
                && tokio::net::TcpStream::connect(("127.0.0.1", grpc))
                    .await
                    .is_ok()
            {
                // Give HAProxy's first health checks a moment to mark the nodes up.
                tokio::time::sleep(Duration::from_millis(1500)).await;
                return Proxy {
                    child,
                    http,
                    grpc,
                    _dir: TempDir(dir),
                };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{kind} did not listen");
    }
}

/// What one client saw: offsets in arrival order, and how many times it (re)connected.
#[derive(Default)]
struct Seen {
    offsets: Vec<i64>,
    connects: usize,
}

type Shared = Arc<Mutex<Seen>>;

fn last(s: &Shared) -> i64 {
    s.lock().unwrap().offsets.last().copied().unwrap_or(0)
}

/// A raw Phoenix client through the proxy (v2 arrays over tokio-tungstenite), rejoining with
/// `after_offset` after every close or failed connect.
async fn raw_ws(http: u16, sub: Uuid, token: String, seen: Shared, total: i64) {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let url = format!("ws://127.0.0.1:{http}/socket/websocket?vsn=2.0.0");
    while last(&seen) < total {
        let Ok((mut ws, _)) = tokio_tungstenite::connect_async(&url).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let payload = json!({"consumer_token": token, "after_offset": last(&seen)});
        let join = json!(["1", "1", format!("events:{sub}"), "phx_join", payload]);
        if ws.send(Message::text(join.to_string())).await.is_err() {
            continue;
        }
        while let Some(Ok(m)) = ws.next().await {
            let Message::Text(t) = m else { continue };
            let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
            match v[3].as_str() {
                Some("phx_reply") if v[4]["status"] == "ok" => seen.lock().unwrap().connects += 1,
                Some("phx_reply") => break,
                Some("event:published") => {
                    seen.lock()
                        .unwrap()
                        .offsets
                        .push(v[4]["offset"].as_i64().unwrap());
                    if last(&seen) >= total {
                        return;
                    }
                }
                _ => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A gRPC stream through the proxy, reopened with `after_offset` after every end.
async fn grpc_stream(grpc: u16, sub: Uuid, bearer: String, seen: Shared, total: i64) {
    while last(&seen) < total {
        let channel =
            match tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{grpc}"))
                .unwrap()
                .connect()
                .await
            {
                Ok(c) => c,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
        let req = proto::StreamEventsRequest {
            subscription_id: sub.to_string(),
            after_offset: Some(last(&seen)),
            ..Default::default()
        };
        let mut req = authed(&bearer, req);
        // Keepalive messages (empty events, skipped below): HAProxy cuts a silent stream.
        req.metadata_mut().insert(
            eventrelay::grpc::stream::KEEPALIVE_HEADER,
            "1".parse().unwrap(),
        );
        let Ok(stream) = EventRelayClient::new(channel).stream_events(req).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        seen.lock().unwrap().connects += 1;
        let mut stream = stream.into_inner();
        loop {
            match stream.message().await {
                Ok(Some(e)) if e.id.is_empty() => {} // a keepalive
                Ok(Some(e)) => {
                    seen.lock().unwrap().offsets.push(e.offset64);
                    if last(&seen) >= total {
                        return;
                    }
                }
                Ok(None) => break,
                Err(status) => {
                    eprintln!("gRPC stream ended: {status:?}");
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// An SSE client through the proxy, reconnecting with `Last-Event-ID` as EventSource does.
async fn sse(http: u16, sub: Uuid, jwt: String, seen: Shared, total: i64) {
    let url = format!("http://127.0.0.1:{http}/sse?subscription_id={sub}&token={jwt}");
    while last(&seen) < total {
        let r = reqwest::Client::new()
            .get(&url)
            .header("last-event-id", last(&seen).to_string())
            .send()
            .await;
        let Ok(r) = r.and_then(|r| r.error_for_status()) else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        seen.lock().unwrap().connects += 1;
        let mut reader = SseReader::new(r);
        while let Some(m) = reader.next().await {
            if let Some(id) = m.id {
                seen.lock().unwrap().offsets.push(id.parse().unwrap());
                if last(&seen) >= total {
                    return;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The npm phoenix client through the proxy (tests/ws/resume_client.js).
async fn phoenix(http: u16, sub: Uuid, token: String, seen: Shared, total: i64) {
    use tokio::io::AsyncBufReadExt;
    let dir = root().join("tests/ws");
    let mut child = Command::new("node")
        .arg(dir.join("resume_client.js"))
        .env("ER_WS_URL", format!("ws://127.0.0.1:{http}/socket"))
        .env("ER_SUB", sub.to_string())
        .env("ER_CONSUMER", token)
        .env("ER_LAST", total.to_string())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let mut s = seen.lock().unwrap();
        if let Some(o) = v["offset"].as_i64() {
            s.offsets.push(o);
        } else if v.get("joined").is_some() {
            s.connects += 1;
        }
    }
    let _ = child.wait().await;
}

async fn publish_on(grpc: u16, admin: &str, i: usize) {
    let mut api = EventRelayClient::connect(format!("http://127.0.0.1:{grpc}"))
        .await
        .expect("the surviving node");
    let req = proto::PublishEventsRequest {
        topic: "lb_orders".into(),
        events: vec![event(&format!("e{i}"), "{}")],
        durable: true,
        ..Default::default()
    };
    api.publish_events(authed(admin, req))
        .await
        .expect("publish");
}

async fn through(kind: &str) {
    eventrelay::install_crypto_provider();
    ensure_tools().await;
    let db = TestDb::create().await;
    let cluster = unique_cluster_name();
    let a = start_node(&db.url, &cluster, "a").await;
    let b = start_node(&db.url, &cluster, "b").await;
    let c = start_node(&db.url, &cluster, "c").await;
    let proxy = Proxy::start(kind, &[&a, &b, &c]).await;

    let pool = eventrelay::db::connect(&db.url, 2).await.unwrap();
    let keys = ApiKeys::new(pool.clone());
    let admin = keys.create(KeyType::Admin, "t", &[], &[]).await.unwrap();
    let admin = admin.bearer_token().unwrap();
    let mut api = EventRelayClient::connect(format!("http://{}", c.grpc))
        .await
        .unwrap();
    let topic = proto::CreateTopicRequest {
        name: "lb_orders".into(),
        ..Default::default()
    };
    api.create_topic(authed(&admin, topic)).await.unwrap();
    let new = proto::NewSubscription {
        name: "lb_sub".into(),
        topic_name: "lb_orders".into(),
        ..Default::default()
    };
    let req = proto::CreateSubscriptionRequest {
        subscription: Some(new),
    };
    let sub = api.create_subscription(authed(&admin, req)).await.unwrap();
    let sub = Uuid::parse_str(&sub.into_inner().subscription.unwrap().id).unwrap();
    let consumer = keys
        .create(KeyType::Consumer, "c", &[], &[sub])
        .await
        .unwrap();
    let bearer = consumer.bearer_token().unwrap();
    let req = proto::CreateJwtRequest { expiration: 0 };
    let token = api
        .create_jwt(authed(&bearer, req))
        .await
        .unwrap()
        .into_inner()
        .jwt;

    let total = (BEFORE + DURING) as i64;
    let clients: Vec<(&str, Shared)> = ["phoenix", "raw websocket", "gRPC stream", "SSE"]
        .into_iter()
        .map(|n| (n, Shared::default()))
        .collect();
    let mut tasks = Vec::new();
    for (name, seen) in &clients {
        let (seen, token, bearer) = (seen.clone(), token.clone(), bearer.clone());
        tasks.push(match *name {
            "phoenix" => tokio::spawn(phoenix(proxy.http, sub, token, seen, total)),
            "raw websocket" => tokio::spawn(raw_ws(proxy.http, sub, token, seen, total)),
            "gRPC stream" => tokio::spawn(grpc_stream(proxy.grpc, sub, bearer, seen, total)),
            _ => tokio::spawn(sse(proxy.http, sub, token, seen, total)),
        });
    }
    // Every client connected (joins that come after a publish would miss it: no after_offset
    // on a first join).
    let connected = async {
        while clients.iter().any(|(_, s)| s.lock().unwrap().connects == 0) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(WAIT, connected)
        .await
        .expect("every client connected");
    for i in 0..BEFORE {
        publish_on(c.grpc.port(), &admin, i).await;
    }
    let clients = &clients;
    let caught_up = |n: i64| async move {
        while clients.iter().any(|(_, s)| last(s) < n) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(WAIT, caught_up(BEFORE as i64))
        .await
        .expect("every client got the first events");

    // Idle for longer than the proxy's idle timeout: nobody is cut.
    tokio::time::sleep(Duration::from_secs(5)).await;
    for (name, seen) in clients {
        assert_eq!(
            seen.lock().unwrap().connects,
            1,
            "{name} was cut while idle through {kind}"
        );
    }

    // Publish on node c while a drains and b is killed.
    let publisher = {
        let admin = admin.clone();
        let grpc = c.grpc.port();
        tokio::spawn(async move {
            for i in BEFORE..BEFORE + DURING {
                publish_on(grpc, &admin, i).await;
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.terminate().expect("SIGTERM");
    tokio::time::sleep(Duration::from_millis(500)).await;
    b.signal("-KILL").expect("SIGKILL");
    publisher.await.unwrap();
    tokio::time::timeout(Duration::from_secs(90), caught_up(total))
        .await
        .unwrap_or_else(|_| {
            let got: Vec<_> = clients.iter().map(|(n, s)| (*n, last(s))).collect();
            panic!("clients did not resume through {kind}: {got:?}")
        });
    for t in tasks {
        let _ = tokio::time::timeout(WAIT, t).await;
    }
    for (name, seen) in clients {
        let s = seen.lock().unwrap();
        assert_eq!(
            s.offsets,
            (1..=total).collect::<Vec<_>>(),
            "{name} through {kind}"
        );
        println!("{kind}: {name} connected {} times", s.connects);
    }
    drop(proxy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clients_survive_idle_drain_and_kill_through_nginx() {
    through("nginx").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clients_survive_idle_drain_and_kill_through_haproxy() {
    through("haproxy").await;
}

#[test]
fn deploy_docs_show_the_tested_proxy_files() {
    let docs = std::fs::read_to_string(root().join("docs/deploy.md")).unwrap();
    for file in ["nginx.conf", "haproxy.cfg"] {
        let text = std::fs::read_to_string(root().join("proxies").join(file)).unwrap();
        assert!(
            docs.contains(&text),
            "docs/deploy.md does not show proxies/{file} as it is"
        );
    }
}
