//! `er-loadgen`: a bounded, loopback-only benchmark of EventRelay's durable publish and pull
//! paths, set beside plain Postgres baselines on the same machine.
//!
//! By default it creates a fresh database `er_bench_<uuid>`, starts one node in-process on
//! 127.0.0.1:0, makes an admin key straight in the database and a topic (the database, node
//! and key from eventrelay-testkit, as the integration tests make them), runs the
//! scenarios below for `--seconds` each with `--concurrency` concurrent clients, prints a table
//! (or JSON), and drops the database. With `--target http://host:port --token <bearer>` it
//! measures a running server instead; the Postgres baselines and the prefill then need
//! `--database-url` of that server's database and are skipped without it.
//!
//! Scenarios:
//! - a: durable PublishEvents, 1 event per request;
//! - b: durable PublishEvents, 100 events per request;
//! - c: baseline, one INSERT transaction per event straight into Postgres;
//! - d: baseline, multi-row INSERT of 100 rows per statement;
//! - e: PullEvents walking forward in batches of 1000 after a prefill of 1,000,000 rows, and
//!   single pulls at offsets 0, 1,000 and 1,000,000 (50 each, taking turns);
//! - k1, k100: durable publishing of 1 and 100 events per request with an idempotency key on
//!   every event, in turns with a1, b100, the same without keys (what keys cost);
//! - f: b again, now that the topic holds over 1,000,000 events, in turns with f0, the same to a
//!   fresh topic;
//! - a<N>, c<N>: a and c again with N clients for each N of `--sweep` (16, 32, 64 in a full
//!   run), as information: where group commit overtakes one transaction per event.
//!
//! Each pair (a and c, b and d, f and f0) is measured in turns (a, c, c, a in slices of half the
//! seconds; `loadgen/pair.rs`), so each ratio compares the same moments of the host.
//!
//! The in-process node runs with its defaults except the per-key rate limits, which are off:
//! everything here is sent with one admin key, and the point is capacity, not policy.
//!
//! This file holds the limits the scenarios share and the entry point, which sets up and always
//! cleans up; the modules in `loadgen/` hold the rest.

// A crate root resolves `mod x;` next to itself (loadtest/x.rs), among the other benches; the
// paths keep this binary's modules in loadtest/loadgen/.
#[path = "loadgen/args.rs"]
mod args;
#[path = "loadgen/baselines.rs"]
mod baselines;
#[path = "loadgen/bench.rs"]
mod bench;
#[path = "loadgen/pair.rs"]
mod pair;
#[path = "loadgen/report.rs"]
mod report;
#[path = "loadgen/rt.rs"]
mod rt;
#[path = "loadgen/scenarios.rs"]
mod scenarios;
#[path = "loadgen/settle.rs"]
mod settle;
#[path = "loadgen/setup.rs"]
mod setup;
#[path = "loadgen/threads.rs"]
mod threads;

use anyhow::{Result, anyhow, bail};
use args::{Args, Plan};
use bench::bench;
use clap::Parser;
use eventrelay_testkit::{BENCH_PREFIX, TestDb, admin_key};
use report::{Report, print_report};
use setup::{Node, Target};
use std::time::Duration;

const DEFAULT_ADMIN_URL: &str = eventrelay_testkit::DEFAULT_ADMIN_URL;
/// Events per request in the batched scenarios (b, d, f).
const BATCH: usize = 100;
/// Events per PullEvents request.
const PULL_BATCH: i32 = 1000;
/// Single pulls measured at each position.
const POINT_PULLS: usize = 50;
/// Deep pull position of a full run (and prefill size).
const FULL_PREFILL: i64 = 1_000_000;
/// Prefill of a `--quick` run.
const QUICK_PREFILL: i64 = 100_000;
const MAX_MESSAGE: usize = eventrelay_testkit::MAX_MESSAGE;
/// Deadline of settling (autovacuum wait and CHECKPOINT) and of reading statistics.
const SETTLE_LIMIT: Duration = Duration::from_secs(180);
/// Deadline of the prefill (INSERT, VACUUM) and of the single pulls.
const PREFILL_LIMIT: Duration = Duration::from_secs(900);

/// Targets from the issue.
const TARGET_SINGLE_EPS: f64 = 1_500.0;
const TARGET_SINGLE_VS_BASELINE: f64 = 1.0;
const TARGET_BATCH_EPS: f64 = 15_000.0;
const TARGET_BATCH_VS_BASELINE: f64 = 0.70;
fn main() -> std::process::ExitCode {
    match main_inner() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One readable line (with its causes), not a backtrace.
            eprintln!("er-loadgen: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn main_inner() -> Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    eventrelay::install_crypto_provider();
    let plan = Plan::from_args(&args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(run(&args, plan))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    Ok(())
}

/// Sets up (database, node or target), benchmarks, and always cleans up.
async fn run(args: &Args, mut plan: Plan) -> Result<Report> {
    let db = match &args.target {
        Some(_) => None,
        None => {
            let db = TestDb::create_on(&args.admin_url, BENCH_PREFIX).await?;
            eprintln!("bench database {} created", db.name);
            Some(db)
        }
    };
    let result = async {
        let mut node = None;
        let (grpc_url, db_url) = match (&args.target, &db) {
            (Some(t), _) => (t.clone(), args.database_url.clone()),
            (None, Some(db)) => {
                let n = Node::start(&db.url).await?;
                plan.server_db_pool_size = Some(n.pool_size);
                let url = format!("http://{}", n.grpc);
                node = Some(n);
                (url, Some(db.url.clone()))
            }
            (None, None) => bail!("no database and no target"),
        };
        let outcome = async {
            let token = match (&args.target, &db) {
                (Some(_), _) => args.token.clone().unwrap_or_default(),
                (None, Some(db)) => admin_key(&db.url, "er-loadgen").await?,
                (None, None) => bail!("no database and no target"),
            };
            let target = Target::connect(&grpc_url, &token, db_url, plan.channels).await?;
            let topic = format!("bench_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
            let topic_id = target.create_topic(&topic).await?;
            let outcome = tokio::select! {
                r = bench(&plan, &target, &topic) => r,
                _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
            };
            if args.target.is_some() {
                target.cleanup(&topic_id).await;
            }
            outcome
        }
        .await;
        if let Some(n) = node {
            n.stop().await;
        }
        outcome
    }
    .await;
    if let Some(db) = db {
        let name = db.name.clone();
        match db.drop_db().await {
            Ok(()) => eprintln!("bench database {name} dropped"),
            Err(e) => eprintln!("could not drop bench database {name}: {e:#}; drop it by hand"),
        }
    }
    result
}
