//! `er-live-bench`: a bounded, loopback-only benchmark of live streaming across nodes, beside
//! two baselines measured in the same run (raw Redis pub/sub, and the machine's fan-out floor).
//!
//! It creates a fresh database, starts release nodes of `eventrelay` as child processes (the
//! binary next to this one) sharing it and one Redis, and measures:
//! 1. baselines: Redis PUBLISH-to-subscriber latency at the same rate (one subscriber), and
//!    the fan-out floor (the same frames to the same clients from a bare loop, no node);
//! 2. cross-node publish-to-receipt latency: `--clients` websocket clients on node B, one
//!    event per PublishEvents on node A at `--rate` per second for `--seconds` (timestamps in
//!    the event data, p50/p99 over every delivery);
//! 3. maximum deliveries per second sustained: rising publish rates (batches of 10) for
//!    `--flood-seconds` each to fresh clients, until clients are cut off or fall behind;
//! 4. memory per idle websocket: a fresh node's RSS before and after `--idle` connections
//!    that each joined the subscription (`ulimit -n` must allow them; it is 20,000 here).
//!
//! With `--storm` it measures the reconnect storm after a node is drained instead, beside
//! fresh joins (live_storm.rs).
//!
//! Run: `cargo build --release && target/release/er-live-bench` (`--quick` for a smoke run).

use anyhow::{Context, Result, bail};
use clap::Parser;
use eventrelay::proto::{self, NewEvent};
use eventrelay_testkit::{BENCH_PREFIX, TestDb, authed};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

mod live_baselines;
mod live_clients;
mod live_ledger;
mod live_nodes;
mod live_pgcpu;
mod live_publisher;
mod live_resume;
mod live_storm;
mod live_storm_report;

use live_clients::{Clients, now_micros};
use live_nodes::{Server, interrupted};

#[derive(Parser)]
#[command(about = "Cross-node live streaming benchmark (loopback, bounded in time)")]
struct Args {
    /// Postgres server on which the bench database is created (and dropped at the end).
    #[arg(long, default_value = eventrelay_testkit::DEFAULT_ADMIN_URL)]
    admin_url: String,
    /// Redis shared by the nodes (channels are namespaced by a fresh cluster name).
    #[arg(long, default_value = eventrelay_testkit::DEFAULT_REDIS_URL)]
    redis_url: String,
    /// Websocket clients for the latency and throughput runs.
    #[arg(long, default_value_t = 1_000)]
    clients: usize,
    /// Publishes per second in the latency run.
    #[arg(long, default_value_t = 500)]
    rate: u64,
    /// Length of the latency run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Length of the throughput run.
    #[arg(long, default_value_t = 5)]
    flood_seconds: u64,
    /// Idle websocket connections for the memory measurement.
    #[arg(long, default_value_t = 10_000)]
    idle: usize,
    /// Small numbers everywhere: a smoke run.
    #[arg(long)]
    quick: bool,
    /// Run the reconnect storm instead (live_storm.rs): `--clients` on node A, A drained,
    /// every client resuming on node B, beside as many fresh joins on B with the same backlogs.
    #[arg(long)]
    storm: bool,
    /// Storm: the nodes' ER_DRAIN_SPREAD_SECONDS (their default).
    #[arg(long, default_value_t = 10)]
    spread: u64,
    /// Storm: the nodes' ER_LIVE_REPLAY_CONCURRENCY (their default).
    #[arg(long, default_value_t = eventrelay::live::REPLAY_CONCURRENCY)]
    replay_concurrency: usize,
    /// Storm: durable events in the topic before the clients join.
    #[arg(long, default_value_t = 100_000)]
    history: u64,
    /// Storm: durable events published per second (one per request) while clients move.
    #[arg(long, default_value_t = 50)]
    storm_rate: u64,
    /// Storm: bytes of filler in each event's data.
    #[arg(long, default_value_t = 200)]
    event_bytes: usize,
    /// Storm: milliseconds a client waits after its socket closes before it reconnects (the
    /// Phoenix client's first step).
    #[arg(long, default_value_t = 10)]
    reconnect_ms: u64,
    /// Storm: seconds of publishing alone before the drain, for Postgres' background CPU.
    #[arg(long, default_value_t = 3)]
    calm: u64,
    /// Internal: run as the fan-out floor's sender for this many clients (see live_baselines).
    #[arg(long, hide = true)]
    floor_sender: Option<usize>,
}

pub(crate) const JWT_SECRET: &str = "bench-secret-not-for-production-use-0123456789";

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = Args::parse();
    if let Some(n) = args.floor_sender {
        return live_baselines::sender(n, args.rate, args.seconds).await;
    }
    if args.quick {
        (args.clients, args.seconds, args.flood_seconds, args.idle) = (50, 2, 2, 500);
        (args.spread, args.history, args.storm_rate, args.calm) = (2, 5_000, 20, 1);
    }
    eventrelay::install_crypto_provider();
    let bin = std::env::current_exe()?.with_file_name("eventrelay");
    if !bin.exists() {
        bail!(
            "{} not found: build it (cargo build --release)",
            bin.display()
        );
    }
    let db = TestDb::create_on(&args.admin_url, BENCH_PREFIX).await?;
    // Interrupted, the run is dropped: its nodes (killed on drop) and the database go too.
    let storm = live_storm::StormArgs {
        clients: args.clients,
        spread: args.spread,
        replay_concurrency: args.replay_concurrency,
        history: args.history,
        rate: args.storm_rate,
        event_bytes: args.event_bytes,
        reconnect_ms: args.reconnect_ms,
        calm: args.calm.max(1),
    };
    let bench = async {
        if args.storm {
            live_storm::run(&storm, &bin, &db.url, &args.redis_url).await
        } else {
            run(&args, &bin, &db.url).await
        }
    };
    let result = tokio::select! {
        r = bench => r,
        s = interrupted() => Err(anyhow::anyhow!("interrupted by {s}")),
    };
    db.drop_db().await?;
    result
}

async fn run(args: &Args, bin: &std::path::Path, db_url: &str) -> Result<()> {
    let cluster = format!("bench{}", uuid::Uuid::new_v4().simple());
    let a = Server::start(bin, db_url, &args.redis_url, &cluster, "a").await?;
    let b = Server::start(bin, db_url, &args.redis_url, &cluster, "b").await?;
    let live_nodes::Streamed { admin, sub, jwt } = live_nodes::streamed(&a, db_url).await?;

    let baseline = live_baselines::redis(&args.redis_url, args.rate, args.seconds).await?;
    println!(
        "baseline  Redis PUBLISH→subscriber at {}/s: p50 {:.2} ms, p99 {:.2} ms ({} samples)",
        args.rate,
        pct(&baseline, 0.50),
        pct(&baseline, 0.99),
        baseline.len()
    );

    // A tenth of the clients first, to show how latency scales with the fan-out.
    // Each beside the floor: the same frames to the same number of the same clients from one
    // bare loop with no node (live_baselines), so the ratio is what the nodes add.
    for n in [(args.clients / 10).max(1), args.clients] {
        let floor = live_baselines::measure(n, args.rate, args.seconds).await?;
        println!(
            "floor     bare loopback fan-out, same frames to {n} clients at {}/s, no node: \
             p50 {:.2} ms, p99 {:.2} ms ({} deliveries)",
            args.rate,
            pct(&floor, 0.50),
            pct(&floor, 0.99),
            floor.len()
        );
        let clients = Clients::connect(b.http, n, &sub, &jwt, 100).await?;
        clients.record.store(true, Ordering::Relaxed);
        let (published, acks) = paced(a.grpc, &admin, args.rate, 1, args.seconds).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        clients.record.store(false, Ordering::Relaxed);
        let dropped = clients.closed.load(Ordering::Relaxed);
        clients.stop.cancel();
        let mut lat = clients.samples().await;
        lat.sort_unstable();
        println!(
            "latency   node A publish → node B websocket, {n} clients at {}/s for {} s: \
             p50 {:.2} ms, p99 {:.2} ms ({} of {} deliveries within 2 s of the end; {} clients cut off)",
            args.rate,
            args.seconds,
            pct(&lat, 0.50),
            pct(&lat, 0.99),
            lat.len(),
            published * n as u64,
            dropped
        );
        println!(
            "          = {:.2} x the floor's p50, {:.2} x its p99",
            pct(&lat, 0.50) / pct(&floor, 0.50),
            pct(&lat, 0.99) / pct(&floor, 0.99)
        );
        println!(
            "          of which publish → acknowledged (commit) p50 {:.2} ms, p99 {:.2} ms",
            pct(&acks, 0.50),
            pct(&acks, 0.99)
        );
    }

    // Throughput: rising publish rates (batches of 10) to fresh clients, until clients can
    // no longer keep up (cut off, or deliveries lag) on this machine.
    let mut best = 0.0f64;
    for eps in [1_000u64, 2_000, 4_000, 8_000] {
        let clients = Clients::connect(b.http, args.clients, &sub, &jwt, 100).await?;
        let started = Instant::now();
        let (published, _) = paced(a.grpc, &admin, eps / 10, 10, args.flood_seconds).await?;
        let expected = published * args.clients as u64;
        let deadline = Instant::now() + Duration::from_secs(5);
        while clients.received.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let secs = started.elapsed().as_secs_f64();
        let got = clients.received.load(Ordering::Relaxed);
        let cut = clients.closed.load(Ordering::Relaxed);
        clients.stop.cancel();
        let rate = got as f64 / secs;
        println!(
            "throughput {eps} events/s to {} clients: {rate:.0} deliveries/s, {got} of {expected} \
             delivered, {cut} clients cut off as slow",
            args.clients
        );
        if cut > 0 || got < expected {
            break;
        }
        best = best.max(rate);
    }
    println!("throughput max sustained: {best:.0} deliveries/s");

    let c = Server::start(bin, db_url, &args.redis_url, &cluster, "c").await?;
    let warm = Clients::connect(c.http, 1, &sub, &jwt, 1).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = c.rss_kib()?;
    let idle = Clients::connect(c.http, args.idle, &sub, &jwt, 200).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = c.rss_kib()?;
    let per = (after.saturating_sub(before)) as f64 * 1024.0 / args.idle as f64;
    println!(
        "memory    {} idle joined websockets: RSS {} → {} KiB, {:.1} KB per connection",
        args.idle,
        before,
        after,
        per / 1000.0
    );
    idle.stop.cancel();
    warm.stop.cancel();
    drop((a, b, c));
    Ok(())
}

fn stamped(name: &str) -> NewEvent {
    NewEvent {
        name: name.into(),
        data: format!("{{\"t\":{}}}", now_micros()),
        ..Default::default()
    }
}

fn pct(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as f64 / 1000.0
}

/// `requests` PublishEvents per second of `batch` events each, for `seconds`; returns the
/// events published and each request's publish-to-acknowledgement time (microseconds).
///
/// The publisher runs on its own thread and runtime with its own connection: a producer is
/// not one of the websocket clients, and sharing their runtime would put its requests and
/// acknowledgements behind a run queue of a thousand woken client tasks.
async fn paced(
    grpc: SocketAddr,
    admin: &str,
    requests: u64,
    batch: usize,
    seconds: u64,
) -> Result<(u64, Vec<u64>)> {
    let admin = admin.to_owned();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        let result = match rt {
            Ok(rt) => rt.block_on(publish_paced(grpc, admin, requests, batch, seconds)),
            Err(e) => Err(e.into()),
        };
        let _ = tx.send(result);
    });
    rx.await.context("publisher thread ended")?
}

async fn publish_paced(
    grpc: SocketAddr,
    admin: String,
    requests: u64,
    batch: usize,
    seconds: u64,
) -> Result<(u64, Vec<u64>)> {
    let grpc = eventrelay_testkit::connect(grpc).await?;
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / requests.max(1)));
    let limit = Arc::new(tokio::sync::Semaphore::new(64));
    let mut tasks = Vec::new();
    for i in 0..requests * seconds {
        tick.tick().await;
        let permit = limit.clone().acquire_owned().await?;
        let (mut c, admin) = (grpc.clone(), admin.clone());
        tasks.push(tokio::spawn(async move {
            let r = proto::PublishEventsRequest {
                topic: "bench".into(),
                events: (0..batch).map(|j| stamped(&format!("p{i}_{j}"))).collect(),
                durable: true,
                ..Default::default()
            };
            let t0 = now_micros();
            let ok = c.publish_events(authed(&admin, r)).await.is_ok();
            drop(permit);
            ok.then(|| now_micros().saturating_sub(t0))
        }));
    }
    let (mut n, mut acks) = (0, Vec::new());
    for t in tasks {
        if let Ok(Some(ack)) = t.await {
            n += batch as u64;
            acks.push(ack);
        }
    }
    acks.sort_unstable();
    Ok((n, acks))
}
