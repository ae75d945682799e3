//! er-telemetry-bench: what tracing costs. Runs the same durable publish load against two
//! node processes in one run, one with tracing off and one exporting every span over OTLP to
//! a local collector, and prints throughput and latency side by side with their ratio.
//! Metrics are always on (they are cheap counters), so "off" is the baseline of the product
//! as shipped. Loopback only, bounded in time.
//!
//! `cargo build --release --bin eventrelay --bin er-telemetry-bench && target/release/er-telemetry-bench`

use clap::Parser;
use eventrelay::proto::{CreateTopicRequest, NewEvent, PublishEventsRequest};
use eventrelay_testkit::{BENCH_PREFIX, NodeProcess, TestDb, admin_key, authed};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    /// Postgres server to create the bench databases on.
    #[arg(long, default_value = eventrelay_testkit::DEFAULT_ADMIN_URL)]
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

async fn load(
    grpc: std::net::SocketAddr,
    token: &str,
    batch: usize,
    args: &Args,
) -> anyhow::Result<Figures> {
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let mut api = eventrelay_testkit::connect(grpc).await?;
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
                let req = authed(
                    &token,
                    PublishEventsRequest {
                        topic: "bench".into(),
                        events: events.clone(),
                        durable: true,
                        ..Default::default()
                    },
                );
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
    let db = TestDb::create_on(&args.admin_url, BENCH_PREFIX).await?;
    let mut cmd = Command::new(bin);
    cmd.env("DATABASE_URL", &db.url)
        .env(
            "ER_JWT_SECRET",
            "telemetry-bench-secret-not-for-production-0123",
        )
        .env("RUST_LOG", "warn")
        .env_remove("REDIS_URL")
        .env_remove("ER_OTLP_ENDPOINT")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(endpoint) = otlp {
        cmd.env("ER_OTLP_ENDPOINT", endpoint);
    }
    let node = NodeProcess::start(cmd).await?;
    let token = admin_key(&db.url, "bench").await?;
    node.client()
        .await?
        .create_topic(authed(
            &token,
            CreateTopicRequest {
                name: "bench".into(),
                ..Default::default()
            },
        ))
        .await?;
    let one = load(node.grpc, &token, 1, args).await?;
    let hundred = load(node.grpc, &token, 100, args).await?;
    drop(node);
    db.drop_db().await?;
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
