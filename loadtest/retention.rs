//! er-retention-bench: what retention costs the topic it prunes.
//!
//! Part 1 (through a node, over gRPC): a topic holding `--events` (10 million) events,
//! generated in Postgres with INSERT ... SELECT generate_series into its partitions, takes a
//! publish load (`--clients` closed-loop producers of `--batch`-event requests) and a pull
//! probe (one client alternating a pull near the end and a pull from offset 0). Three windows
//! of `--seconds`: A without pruning; P, in which the topic's retention is set to its newest
//! `--keep` (1 million) events, so its pruner moves the mark and detaches and drops nine
//! partitions (the window lasts at least until the prune is done); B without pruning again.
//! P, and P' (only the seconds while the prune ran), are printed beside the mean of A and B
//! (the same load, on either side in time, so a drift of the shared host falls on both),
//! with the prune's duration and the database and topic sizes before and after.
//!
//! Part 2 (the library, no node): the same publish path (the writer lanes) and the same read
//! (`read_after`) against a partitioned topic and a plain one, in turns (plain, partitioned,
//! partitioned, plain), to show what the partitioned layout itself costs.
//!
//! Run with `cargo build --release --bin er-retention-bench && target/release/er-retention-bench`
//! (about 10 minutes; `--quick` for a smoke run); figures in docs/benchmarks.md.

#[path = "retention/layout.rs"]
mod layout;
#[path = "retention/load.rs"]
mod load;
#[path = "retention/setup.rs"]
mod setup;

use anyhow::Result;
use clap::Parser;
use std::time::Duration;

/// What retention costs a topic that is pruned while it is published to and read.
#[derive(Parser, Clone, Debug)]
#[command(name = "er-retention-bench")]
pub(crate) struct Args {
    /// Postgres to create the bench database on.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    admin_url: String,
    /// Events the topic holds before the prune.
    #[arg(long, default_value_t = 10_000_000)]
    events: i64,
    /// Events retention keeps.
    #[arg(long, default_value_t = 1_000_000)]
    keep: i64,
    /// Offsets per events partition.
    #[arg(long, default_value_t = 1_000_000)]
    span: i64,
    /// Concurrent producers.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Events per publish request.
    #[arg(long, default_value_t = 10)]
    batch: usize,
    /// Seconds per window of part 1 (the prune's window lasts at least until it is done).
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// The node's pause between two partition drops (ER_RETENTION_DROP_PAUSE_MS).
    #[arg(long, default_value_t = 10_000)]
    drop_pause_ms: u64,
    /// Seconds per slice of part 2.
    #[arg(long, default_value_t = 5)]
    slice_seconds: u64,
    /// A smoke run: 300,000 events kept to 30,000 in partitions of 30,000, short windows.
    #[arg(long)]
    quick: bool,
}

impl Args {
    fn resolved(mut self) -> Self {
        if self.quick {
            self.events = 300_000;
            self.keep = 30_000;
            self.span = 30_000;
            self.seconds = 4;
            self.slice_seconds = 2;
        }
        self
    }

    fn window(&self) -> Duration {
        Duration::from_secs(self.seconds)
    }
}

fn main() -> Result<()> {
    let args = Args::parse().resolved();
    eventrelay::install_crypto_provider();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let db = setup::BenchDb::create(&args.admin_url).await?;
        let outcome = run(&args, &db.url).await;
        db.drop_db().await;
        outcome
    })
}

async fn run(args: &Args, url: &str) -> Result<()> {
    println!(
        "er-retention-bench: {} events kept to {} (partitions of {}, {} ms between drops), {} \
         producers x {} events, {} s windows",
        args.events,
        args.keep,
        args.span,
        args.drop_pause_ms,
        args.clients,
        args.batch,
        args.seconds
    );
    let node = setup::Node::start(url, args.span, args.drop_pause_ms).await?;
    let pool = eventrelay::db::connect(url, 4).await?;
    let admin = setup::admin_key(&pool).await?;
    let topic = setup::create_topic(node.grpc, &admin, "big").await?;
    let took = setup::generate(&pool, "big", args.events, args.span).await?;
    println!(
        "generated {} events in {:.1} s (INSERT ... SELECT generate_series, then VACUUM ANALYZE; \
         a CHECKPOINT follows before the windows)",
        args.events,
        took.as_secs_f64()
    );
    setup::settle(&pool).await?;
    let before = setup::Sizes::measure(&pool, "big").await?;
    let result = load::prune_under_load(args, &node, &admin, &topic, &pool).await?;
    let after = setup::Sizes::measure(&pool, "big").await?;
    node.stop().await;
    load::report(&result);
    println!(
        "prune: {:.2} s from UpdateTopic to the last partition dropped (mark moved {} -> {})",
        result.prune_took.as_secs_f64(),
        1,
        result.first_after
    );
    println!(
        "sizes: database {} -> {} MB; topic tables {} -> {} MB",
        before.database / 1_048_576,
        after.database / 1_048_576,
        before.topic / 1_048_576,
        after.topic / 1_048_576
    );
    layout::compare(args, url).await?;
    Ok(())
}
