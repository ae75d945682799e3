//! `er-webhook-bench`: webhook delivery on one in-process node (fresh database `er_bench_<uuid>`,
//! 127.0.0.1:0) to a local axum receiver, beside a baseline measured in the same run: the same
//! receiver driven directly by a plain reqwest loop at the same concurrency.
//!
//! Scenarios:
//! - a: aggregate deliveries/s, 50 webhook subscriptions on one topic, a backlog of events;
//!   baseline: 50 tasks POSTing the same bodies in a loop;
//! - b: commit-to-receipt latency at 200 events/s on one subscription, p50/p95, measured from
//!   the start of the publish call (so it includes the commit itself: the receiver often has the
//!   event before the publisher has its acknowledgement); baseline: one POST's round trip at
//!   200 requests/s;
//! - c: throughput of one ordered subscription; baseline: one task POSTing in a loop.

use anyhow::{Context, Result};
use axum::extract::State;
use axum::routing::post;
use clap::Parser;
use eventrelay::proto::event_relay_client::EventRelayClient;
use eventrelay::proto::{
    CreateSubscriptionRequest, CreateTopicRequest, NewEvent, NewSubscription, PublishEventsRequest,
};
use eventrelay_testkit::{BENCH_PREFIX, Node, TestDb, admin_key, authed};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tonic::transport::Channel;

#[derive(Parser)]
struct Args {
    /// Postgres server to create the bench database on.
    #[arg(
        long,
        env = "ER_BENCH_DATABASE_URL",
        default_value = eventrelay_testkit::DEFAULT_ADMIN_URL
    )]
    admin_url: String,
    /// Events in the backlog of scenario a (each goes to 50 subscriptions).
    #[arg(long, default_value_t = 200)]
    fanout_events: usize,
    /// Seconds of scenario b.
    #[arg(long, default_value_t = 10)]
    latency_seconds: u64,
    /// Events of scenario c.
    #[arg(long, default_value_t = 3000)]
    ordered_events: usize,
}

/// Receipts: (subscription path, event id) with the time they arrived.
type Receipts = mpsc::UnboundedSender<(String, String, Instant)>;

async fn receiver() -> Result<(
    SocketAddr,
    mpsc::UnboundedReceiver<(String, String, Instant)>,
)> {
    let (tx, rx) = mpsc::unbounded_channel();
    async fn hook(
        State(tx): State<Receipts>,
        uri: axum::http::Uri,
        headers: axum::http::HeaderMap,
        _body: axum::body::Bytes,
    ) -> &'static str {
        let id = headers
            .get("webhook-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let _ = tx.send((uri.path().to_owned(), id, Instant::now()));
        "ok"
    }
    let app = axum::Router::new()
        .route("/{*path}", post(hook))
        .with_state(tx);
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((addr, rx))
}

fn events(n: usize) -> Vec<NewEvent> {
    (0..n)
        .map(|i| NewEvent {
            name: "bench.event".into(),
            data: format!(r#"{{"i": {i}, "payload": "{}"}}"#, "x".repeat(200)),
            ..Default::default()
        })
        .collect()
}

struct Bench {
    client: EventRelayClient<Channel>,
    token: String,
    hook: SocketAddr,
}

impl Bench {
    async fn topic_with_hooks(&mut self, topic: &str, hooks: usize) -> Result<()> {
        self.client
            .create_topic(authed(
                &self.token,
                CreateTopicRequest {
                    name: topic.into(),
                    ..Default::default()
                },
            ))
            .await?;
        for i in 0..hooks {
            let config = [(
                "endpoint_url".to_string(),
                format!("http://{}/{topic}/{i}", self.hook),
            )];
            let s = NewSubscription {
                name: format!("{topic}_{i}"),
                topic_name: topic.into(),
                subscription_type: "webhook".into(),
                config: config.into_iter().collect(),
                ..Default::default()
            };
            self.client
                .create_subscription(authed(
                    &self.token,
                    CreateSubscriptionRequest {
                        subscription: Some(s),
                    },
                ))
                .await?;
        }
        Ok(())
    }

    /// Publishes and returns each stored event's id with the time the publish call started.
    async fn publish(&mut self, topic: &str, n: usize) -> Result<Vec<(String, Instant)>> {
        let r = PublishEventsRequest {
            topic: topic.into(),
            events: events(n),
            durable: true,
            ..Default::default()
        };
        let at = Instant::now();
        let stored = self
            .client
            .publish_events(authed(&self.token, r))
            .await?
            .into_inner()
            .events;
        Ok(stored.into_iter().map(|e| (e.id, at)).collect())
    }
}

/// Requests/s of `tasks` loops POSTing `per_task` bodies each to `url`.
async fn baseline(url: String, tasks: usize, per_task: usize) -> Result<f64> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(tasks)
        .build()?;
    let body = serde_json::to_vec(&serde_json::json!({"payload": "x".repeat(200)}))?;
    let start = Instant::now();
    let mut joins = Vec::new();
    for _ in 0..tasks {
        let (http, url, body) = (http.clone(), url.clone(), body.clone());
        joins.push(tokio::spawn(async move {
            for _ in 0..per_task {
                let _ = http
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await?
                    .bytes()
                    .await;
            }
            Ok::<_, reqwest::Error>(())
        }));
    }
    for j in joins {
        j.await??;
    }
    Ok((tasks * per_task) as f64 / start.elapsed().as_secs_f64())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let db = TestDb::create_on(&args.admin_url, BENCH_PREFIX).await?;
    let result = run(&args, &db.url).await;
    db.drop_db().await?;
    result
}

async fn run(args: &Args, url: &str) -> Result<()> {
    let mut config = eventrelay::Config::for_database(url);
    config.webhook_allowed_networks = vec!["127.0.0.0/8".parse()?];
    config.auth_enabled = true;
    let mut node = Node::try_start(config).await?;
    let client = eventrelay_testkit::connect(node.grpc).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let token = admin_key(url, "bench").await?;
    let (hook, mut receipts) = receiver().await?;
    let mut b = Bench {
        client,
        token,
        hook,
    };
    println!(
        "webhook benchmark: one node in-process, receiver on {hook}, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    // a: 50 subscriptions, a backlog of events.
    b.topic_with_hooks("fanout", 50).await?;
    tokio::time::sleep(Duration::from_secs(2)).await; // every subscription owned
    let start = Instant::now();
    let mut left = args.fanout_events;
    while left > 0 {
        let n = left.min(100);
        b.publish("fanout", n).await?;
        left -= n;
    }
    let want = args.fanout_events * 50;
    let mut got = 0;
    while got < want {
        let (path, _, _) = receipts.recv().await.context("receiver stopped")?;
        if path.starts_with("/fanout/") {
            got += 1;
        }
    }
    let a = want as f64 / start.elapsed().as_secs_f64();
    let a_base = baseline(format!("http://{hook}/base/a"), 50, args.fanout_events).await?;
    while receipts.try_recv().is_ok() {}
    println!(
        "a  aggregate, 50 subscriptions: {a:>8.0} deliveries/s   baseline plain client x50: {a_base:>8.0} req/s   ({:.0} %)",
        100.0 * a / a_base
    );

    // b: latency at 200 events/s.
    b.topic_with_hooks("latency", 1).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let acked: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let total = (args.latency_seconds * 200) as usize;
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    let mut lat = Vec::with_capacity(total);
    let mut early: HashMap<String, Instant> = HashMap::new();
    for _ in 0..total {
        tick.tick().await;
        for (id, at) in b.publish("latency", 1).await? {
            acked
                .lock()
                .map_err(|_| anyhow::anyhow!("poisoned"))?
                .insert(id, at);
        }
        while let Ok((path, id, at)) = receipts.try_recv() {
            if path.starts_with("/latency/") {
                early.insert(id, at);
            }
        }
    }
    while early.len() < total {
        let (path, id, at) = receipts.recv().await.context("receiver stopped")?;
        if path.starts_with("/latency/") {
            early.insert(id, at);
        }
    }
    {
        let acked = acked.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        for (id, got) in &early {
            if let Some(sent) = acked.get(id) {
                lat.push(got.saturating_duration_since(*sent).as_secs_f64() * 1000.0);
            }
        }
    }
    lat.sort_by(f64::total_cmp);
    let http = reqwest::Client::new();
    let mut base = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    for _ in 0..total.min(1000) {
        tick.tick().await;
        let t = Instant::now();
        http.post(format!("http://{hook}/base/b"))
            .body("{}")
            .send()
            .await?
            .bytes()
            .await?;
        base.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    while receipts.try_recv().is_ok() {}
    base.sort_by(f64::total_cmp);
    println!(
        "b  commit-to-receipt at 200/s:   p50 {:>6.1} ms  p95 {:>6.1} ms   baseline one POST: p50 {:>5.2} ms  p95 {:>5.2} ms   ({} events)",
        percentile(&lat, 0.5),
        percentile(&lat, 0.95),
        percentile(&base, 0.5),
        percentile(&base, 0.95),
        lat.len()
    );

    // c: one ordered subscription.
    b.topic_with_hooks("ordered", 1).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let start = Instant::now();
    let mut left = args.ordered_events;
    while left > 0 {
        let n = left.min(500);
        b.publish("ordered", n).await?;
        left -= n;
    }
    let mut got = 0;
    while got < args.ordered_events {
        let (path, _, _) = receipts.recv().await.context("receiver stopped")?;
        if path.starts_with("/ordered/") {
            got += 1;
        }
    }
    let c = args.ordered_events as f64 / start.elapsed().as_secs_f64();
    let c_base = baseline(format!("http://{hook}/base/c"), 1, args.ordered_events).await?;
    println!(
        "c  one ordered subscription:     {c:>8.0} deliveries/s   baseline plain client x1:  {c_base:>8.0} req/s   ({:.0} %)",
        100.0 * c / c_base
    );

    if let Err(e) = node.try_stop(Duration::from_secs(30)).await {
        eprintln!("node stopped with an error: {e:#}");
    }
    Ok(())
}
