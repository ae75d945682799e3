//! er-telemetry-bench: what tracing costs. Runs the same durable publish load against two
//! node processes in one run, one with tracing off and one exporting every span over OTLP to
//! a local collector, and prints throughput and latency side by side with their ratio.
//! Metrics are always on (they are cheap counters), so "off" is the baseline of the product
//! as shipped. Loopback only, bounded in time.
//!
//! `cargo build --release --bin eventrelay --bin er-telemetry-bench && target/release/er-telemetry-bench`

use anyhow::Context;
use clap::Parser;
use eventrelay::auth::{ApiKeys, KeyType};
use eventrelay::proto::event_relay_client::EventRelayClient;
use eventrelay::proto::{CreateTopicRequest, NewEvent, PublishEventsRequest};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    /// Postgres server to create the bench databases on.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    admin_url: String,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Concurrent publishing clients.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// The eventrelay binary (default: beside this one).
    #[arg(long)]
    bin: Option<std::path::PathBuf>,
}

struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A local OTLP collector that accepts every export and counts them.
async fn collector(exports: Arc<AtomicU64>) -> anyhow::Result<String> {
    let app = axum::Router::new().fallback(move || {
        let exports = exports.clone();
        async move {
            exports.fetch_add(1, Ordering::Relaxed);
            (
                [("content-type", "application/grpc"), ("grpc-status", "0")],
                "",
            )
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(format!("http://{addr}"))
}

struct Figures {
    events_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
}

async fn load(addr: &str, token: &str, batch: usize, args: &Args) -> anyhow::Result<Figures> {
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let mut api = EventRelayClient::connect(addr.to_owned()).await?;
        let token = token.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let events: Vec<NewEvent> = (0..batch)
                .map(|i| NewEvent {
                    name: "bench".into(),
                    data: format!("{{\"i\":{i}}}"),
                    ..Default::default()
                })
                .collect();
            while Instant::now() < deadline {
                let mut req = tonic::Request::new(PublishEventsRequest {
                    topic: "bench".into(),
                    events: events.clone(),
                    durable: true,
                });
                if let Ok(v) = format!("Bearer {token}").parse() {
                    req.metadata_mut().insert("authorization", v);
                }
                let t = Instant::now();
                if api.publish_events(req).await.is_ok() {
                    lat.push(t.elapsed());
                }
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await?);
    }
    lat.sort();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    Ok(Figures {
        events_per_sec: (lat.len() * batch) as f64 / args.seconds as f64,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
    })
}

async fn measure(
    args: &Args,
    bin: &std::path::Path,
    otlp: Option<&str>,
) -> anyhow::Result<(Figures, Figures)> {
    let db = format!("er_bench_tel_{}", uuid::Uuid::new_v4().simple());
    let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&args.admin_url).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{db}\"")))
        .execute(&mut admin)
        .await?;
    let url = format!(
        "{}/{db}",
        args.admin_url.rsplit_once('/').map_or("", |(s, _)| s)
    );
    let (grpc, http) = (free_port()?, free_port()?);
    let mut cmd = Command::new(bin);
    cmd.arg("serve")
        .env("DATABASE_URL", &url)
        .env("ER_GRPC_ADDR", format!("127.0.0.1:{grpc}"))
        .env("ER_HTTP_ADDR", format!("127.0.0.1:{http}"))
        .env("ER_JWT_SECRET", "telemetry-bench-secret")
        .env("RUST_LOG", "warn")
        .env_remove("REDIS_URL")
        .env_remove("ER_OTLP_ENDPOINT")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(endpoint) = otlp {
        cmd.env("ER_OTLP_ENDPOINT", endpoint);
    }
    let node = Node(cmd.spawn().context("starting eventrelay")?);
    let client = reqwest::Client::new();
    let mut ready = false;
    for _ in 0..300 {
        if client
            .get(format!("http://127.0.0.1:{http}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::ensure!(ready, "node did not become ready");
    let pool = eventrelay::db::connect(&url, 2).await?;
    let token = ApiKeys::new(pool.clone())
        .create(KeyType::Admin, "bench", &[], &[])
        .await?
        .bearer_token()
        .unwrap_or_default();
    let addr = format!("http://127.0.0.1:{grpc}");
    let mut api = EventRelayClient::connect(addr.clone()).await?;
    let mut req = tonic::Request::new(CreateTopicRequest {
        name: "bench".into(),
        ..Default::default()
    });
    req.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    api.create_topic(req).await?;
    let one = load(&addr, &token, 1, args).await?;
    let hundred = load(&addr, &token, 100, args).await?;
    drop(node);
    pool.close().await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await?;
    Ok((one, hundred))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    eventrelay::install_crypto_provider();
    let args = Args::parse();
    let bin = match &args.bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()?.with_file_name("eventrelay"),
    };
    let exports = Arc::new(AtomicU64::new(0));
    let endpoint = collector(exports.clone()).await?;
    println!(
        "er-telemetry-bench: {} s per figure, {} clients, durable publishes",
        args.seconds, args.concurrency
    );
    let (off1, off100) = measure(&args, &bin, None).await?;
    let (on1, on100) = measure(&args, &bin, Some(&endpoint)).await?;
    println!(
        "{:<32} {:>12} {:>9} {:>9} {:>10}",
        "scenario", "events/s", "p50 ms", "p99 ms", "vs off"
    );
    for (name, f, base) in [
        ("1-event, tracing off", &off1, &off1),
        ("1-event, tracing on (OTLP)", &on1, &off1),
        ("100-event, tracing off", &off100, &off100),
        ("100-event, tracing on (OTLP)", &on100, &off100),
    ] {
        println!(
            "{name:<32} {:>12.0} {:>9.2} {:>9.2} {:>9.2}x",
            f.events_per_sec,
            f.p50_ms,
            f.p99_ms,
            f.events_per_sec / base.events_per_sec.max(1.0)
        );
    }
    println!(
        "OTLP export requests received by the collector: {}",
        exports.load(Ordering::Relaxed)
    );
    Ok(())
}
