//! `er-live-bench --storm`: the reconnect storm after a node is drained, beside fresh joins of
//! the same clients with the same backlogs, in one run.
//!
//! Three release nodes share a fresh database and Redis: A, which is drained; B, which the
//! clients move to; and C, which only publishes (so the publisher is neither drained nor
//! competing with the rejoins on B). The topic first gets `--history` durable events. Then:
//!
//! 1. **Storm.** `--clients` websocket clients join on A after the history's last offset, while
//!    C publishes `--storm-rate` durable events per second. After `--calm` seconds (Postgres'
//!    CPU with only the publishing: the background), A gets SIGTERM: it closes its sockets
//!    spread over `ER_DRAIN_SPREAD_SECONDS` (code 1001), and each client, `--reconnect-ms`
//!    later, rejoins on B after the last offset it saw. The window runs from SIGTERM until
//!    every client has resumed (its rejoin answered) and caught up (been pushed everything
//!    published before that answer); Postgres' CPU is summed over it.
//! 2. **Fresh joins.** The same number of new clients join B at once, no drain, while C
//!    publishes at the same rate, each after an offset that leaves it the backlog one storm
//!    client had at its rejoin (client i of the storm gives client i here its backlog).
//!
//! Every client keeps a ledger (`live_ledger`): every durable event exactly once and in order
//! from its first join to the end, or the duplicates, disorder and gaps are counted.

use crate::live_nodes::{Server, Streamed, exited, streamed};
use crate::live_pgcpu::PgCpu;
use crate::live_publisher::{Steady, history};
use crate::live_resume::{Outcome, Plan, Progress, client};
use crate::live_storm_report::{Phase, compare};
use anyhow::Result;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Joins on A waiting for their answer at once while the storm's clients are set up.
const JOIN_PARALLEL: usize = 100;
/// How long deliveries may take to reach every client after the publisher stops.
const SETTLE: Duration = Duration::from_secs(3);
/// How long the clients may take to catch up once every one could have reconnected.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(60);

/// The storm's knobs (the flags of `er-live-bench`).
pub struct StormArgs {
    pub clients: usize,
    pub spread: u64,
    pub replay_concurrency: usize,
    pub history: u64,
    pub rate: u64,
    pub event_bytes: usize,
    pub reconnect_ms: u64,
    pub calm: u64,
}

/// Waits until `counter` reaches `n`, at most `limit`; whether it did.
async fn reached(counter: &AtomicUsize, n: usize, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while counter.load(Ordering::Relaxed) < n {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    true
}

/// Stops the clients after the publisher has stopped and deliveries have settled.
async fn collect(p: &Progress, tasks: Vec<JoinHandle<Outcome>>) -> Vec<Outcome> {
    tokio::time::sleep(SETTLE).await;
    p.stop.cancel();
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        if let Ok(o) = t.await {
            out.push(o);
        }
    }
    out
}

pub async fn run(args: &StormArgs, bin: &Path, db_url: &str, redis_url: &str) -> Result<()> {
    let n = args.clients;
    let grace = (args.spread * 2 + 5).max(25);
    let env = [
        ("ER_DRAIN_SPREAD_SECONDS", args.spread.to_string()),
        ("ER_SHUTDOWN_GRACE_SECONDS", grace.to_string()),
        (
            "ER_LIVE_REPLAY_CONCURRENCY",
            args.replay_concurrency.to_string(),
        ),
        // Every client comes from 127.0.0.1, and the per-key pull limit counts joins.
        ("ER_MAX_CONNECTIONS_PER_ADDRESS", "0".to_string()),
        ("ER_RATE_LIMIT_PULL_PER_SECOND", "0".to_string()),
    ];
    println!("storm     {n} clients; nodes with:");
    for (k, v) in &env {
        println!("          {k}={v}");
    }
    println!(
        "          (replays read {} events per turn; the spread is at most half the grace)",
        eventrelay::live::REPLAY_BATCH
    );
    let cluster = format!("bench{}", uuid::Uuid::new_v4().simple());
    let a = Server::start_with(bin, db_url, redis_url, &cluster, "a", &env).await?;
    let b = Server::start_with(bin, db_url, redis_url, &cluster, "b", &env).await?;
    let c = Server::start_with(bin, db_url, redis_url, &cluster, "c", &env).await?;
    let Streamed { admin, sub, jwt } = streamed(&c, db_url).await?;
    let t = Instant::now();
    let head0 = history(c.grpc, &admin, args.history, args.event_bytes).await?;
    println!(
        "history   {} durable events ({} bytes of filler each), last offset {head0}, in {:.1} s",
        args.history,
        args.event_bytes,
        t.elapsed().as_secs_f64()
    );
    let (sub, jwt): (Arc<str>, Arc<str>) = (sub.into(), jwt.into());

    // 1. The storm.
    let p = Arc::new(Progress::default());
    p.head.store(head0, Ordering::Relaxed);
    let plan = Plan::Storm {
        first: a.http,
        then: b.http,
        after: head0,
        pause: Duration::from_millis(args.reconnect_ms),
    };
    let mut tasks = Vec::with_capacity(n);
    let deadline = Instant::now() + Duration::from_secs(60);
    for _ in 0..n {
        while tasks.len() - p.joined.load(Ordering::Relaxed) >= JOIN_PARALLEL {
            anyhow::ensure!(Instant::now() < deadline, "joins on node A stalled");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        tasks.push(tokio::spawn(client(
            plan,
            sub.clone(),
            jwt.clone(),
            p.clone(),
        )));
    }
    anyhow::ensure!(
        reached(
            &p.joined,
            n,
            deadline.saturating_duration_since(Instant::now())
        )
        .await,
        "only {} of {n} clients joined on node A",
        p.joined.load(Ordering::Relaxed)
    );
    let publisher = Steady::start(c.grpc, &admin, args.rate, args.event_bytes, p.head.clone());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let calm = PgCpu::start();
    tokio::time::sleep(Duration::from_secs(args.calm)).await;
    let background = calm.stop() / args.calm as f64;
    println!(
        "calm      {n} clients on A, {} events/s published on C: Postgres {background:.3} CPU-s/s",
        args.rate
    );

    let term = Instant::now();
    let cpu = PgCpu::start();
    a.terminate()?;
    let a_exit = tokio::spawn(exit_of(a.pid(), term, Duration::from_secs(grace + 5)));
    let limit = Duration::from_secs(args.spread) + CATCH_UP_LIMIT;
    let all = reached(&p.caught_up, n, limit).await;
    let (storm_cpu, window) = (cpu.stop(), term.elapsed());
    if !all {
        println!("          not every client caught up within {limit:?}");
    }
    let (published, failed) = publisher.finish().await?;
    let outcomes = collect(&p, tasks).await;
    let storm = Phase {
        name: "storm",
        outcomes,
        head: p.head.load(Ordering::Relaxed),
        origin: term,
        cpu: storm_cpu,
        window,
        background,
    };
    storm.print(published, failed);
    match a_exit.await.ok().flatten() {
        Some(d) => println!(
            "          node A exited {:.1} s after SIGTERM",
            d.as_secs_f64()
        ),
        None => println!(
            "          node A had not exited {} s after SIGTERM",
            grace + 5
        ),
    }

    // 2. Fresh joins with the same backlogs, no drain.
    let p = Arc::new(Progress::default());
    p.head.store(storm.head, Ordering::Relaxed);
    let publisher = Steady::start(c.grpc, &admin, args.rate, args.event_bytes, p.head.clone());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let head = p.head.load(Ordering::Relaxed);
    let start = Instant::now();
    let cpu = PgCpu::start();
    let tasks: Vec<_> = storm
        .outcomes
        .iter()
        .map(|o| {
            let after = (head - o.backlog).max(0);
            let plan = Plan::Fresh {
                node: b.http,
                after,
            };
            tokio::spawn(client(plan, sub.clone(), jwt.clone(), p.clone()))
        })
        .collect();
    let all = reached(&p.caught_up, tasks.len(), CATCH_UP_LIMIT).await;
    let (fresh_cpu, window) = (cpu.stop(), start.elapsed());
    if !all {
        println!("          not every fresh client caught up within {CATCH_UP_LIMIT:?}");
    }
    let (published, failed) = publisher.finish().await?;
    let fresh = Phase {
        name: "fresh",
        outcomes: collect(&p, tasks).await,
        head: p.head.load(Ordering::Relaxed),
        origin: start,
        cpu: fresh_cpu,
        window,
        background,
    };
    fresh.print(published, failed);
    compare(&storm, &fresh);
    drop((a, b, c));
    Ok(())
}

/// How long after `term` process `pid` ended, if it did within `limit`.
async fn exit_of(pid: u32, term: Instant, limit: Duration) -> Option<Duration> {
    while !exited(pid) {
        if term.elapsed() >= limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Some(term.elapsed())
}
