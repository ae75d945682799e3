//! The command line (`Args`) and what it resolves to (`Plan`): defaults that depend on
//! `--quick`, bounds, and the rule that every URL stays on this machine.

use crate::{DEFAULT_ADMIN_URL, FULL_PREFILL, QUICK_PREFILL};
use anyhow::{Context, Result, bail};
use clap::Parser;
use serde::Serialize;

#[derive(Parser, Debug)]
#[command(
    name = "er-loadgen",
    about = "Benchmark EventRelay durable publish and pull against plain Postgres baselines"
)]
pub(crate) struct Args {
    /// Postgres server on which the bench database is created (and dropped at the end).
    #[arg(long, default_value = DEFAULT_ADMIN_URL)]
    pub(crate) admin_url: String,
    /// Measure a running server at this gRPC URL instead of starting one in-process.
    #[arg(long)]
    pub(crate) target: Option<String>,
    /// Bearer token (Base64 key:secret or JWT) of an admin key, with --target.
    #[arg(long, env = "ER_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
    /// With --target: the target's database, for the baselines and the prefill.
    #[arg(long)]
    pub(crate) database_url: Option<String>,
    /// Measured seconds per scenario [default: 10, or 2 with --quick].
    #[arg(long)]
    seconds: Option<f64>,
    /// Unmeasured warm-up seconds before each scenario [default: 1, or 0.5 with --quick].
    #[arg(long)]
    warmup: Option<f64>,
    /// Concurrent clients (gRPC requests in flight, or Postgres connections for baselines).
    /// The default is the load of the original's ghz load test and of `loadtest/ghz`: ghz's
    /// default of 50 workers.
    #[arg(long, default_value_t = 50)]
    concurrency: usize,
    /// Also measure the 1-event pair (a with c) at these client counts, as info rows a<N>
    /// and c<N>: where group commit starts to beat one transaction per event
    /// [default: 16,32,64, or none with --quick; `--sweep` alone: none].
    #[arg(long, value_delimiter = ',', num_args = 0..)]
    sweep: Option<Vec<usize>>,
    /// gRPC channels (HTTP/2 connections) the clients share.
    #[arg(long, default_value_t = 4)]
    channels: usize,
    /// Rows inserted straight into the topic before the pull scenario
    /// [default: 1,000,000, or 100,000 with --quick].
    #[arg(long)]
    prefill: Option<i64>,
    /// Smoke run: 2 s per scenario, prefill 100,000.
    #[arg(long)]
    quick: bool,
    /// Print the results as JSON instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
    /// Do not settle Postgres before each scenario. By default (when the database is reachable)
    /// each scenario starts after a CHECKPOINT and after running autovacuum workers finish (at
    /// most 60 s), and the prefill is followed by VACUUM (ANALYZE), so that one scenario's WAL
    /// and dead tuples are not paid for by the next.
    #[arg(long)]
    no_settle: bool,
}

/// Client counts the 1-event pair is also measured at in a full run.
const DEFAULT_SWEEP: [usize; 3] = [16, 32, 64];

/// What to run, after defaults.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Plan {
    pub(crate) mode: String,
    pub(crate) seconds: f64,
    pub(crate) warmup: f64,
    pub(crate) concurrency: usize,
    /// Extra client counts for the 1-event pair (info rows).
    pub(crate) sweep: Vec<usize>,
    pub(crate) channels: usize,
    pub(crate) prefill: i64,
    pub(crate) server_db_pool_size: Option<u32>,
    pub(crate) settle: bool,
}

impl Plan {
    pub(crate) fn from_args(a: &Args) -> Result<Plan> {
        let seconds = a.seconds.unwrap_or(if a.quick { 2.0 } else { 10.0 });
        let warmup = a.warmup.unwrap_or(if a.quick { 0.5 } else { 1.0 });
        let prefill = a
            .prefill
            .unwrap_or(if a.quick { QUICK_PREFILL } else { FULL_PREFILL });
        if !(0.1..=600.0).contains(&seconds) {
            bail!("--seconds must be between 0.1 and 600");
        }
        if !(0.0..=60.0).contains(&warmup) {
            bail!("--warmup must be between 0 and 60");
        }
        if !(1..=256).contains(&a.concurrency) {
            bail!("--concurrency must be between 1 and 256");
        }
        if a.channels == 0 || a.channels > a.concurrency {
            bail!("--channels must be between 1 and --concurrency");
        }
        let sweep = a.sweep.clone().unwrap_or_else(|| {
            if a.quick {
                Vec::new()
            } else {
                DEFAULT_SWEEP
                    .iter()
                    .copied()
                    .filter(|n| *n != a.concurrency)
                    .collect()
            }
        });
        if sweep.iter().any(|n| !(a.channels..=256).contains(n)) {
            bail!("--sweep client counts must be between --channels and 256");
        }
        if !(0..=10_000_000).contains(&prefill) {
            bail!("--prefill must be between 0 and 10,000,000");
        }
        for (flag, url) in [
            ("--admin-url", Some(&a.admin_url)),
            ("--target", a.target.as_ref()),
            ("--database-url", a.database_url.as_ref()),
        ] {
            if let Some(u) = url {
                ensure_loopback(flag, u)?;
            }
        }
        if a.target.is_some() && a.token.is_none() {
            bail!("--target needs --token (or ER_TOKEN): the bearer token of an admin key");
        }
        Ok(Plan {
            mode: match &a.target {
                Some(t) => format!("target {t}"),
                None => "in-process node on a fresh database".into(),
            },
            seconds,
            warmup,
            concurrency: a.concurrency,
            sweep,
            channels: a.channels,
            prefill,
            server_db_pool_size: None,
            settle: !a.no_settle,
        })
    }
}

/// The load stays on this machine: every URL must name a loopback host (or, for Postgres, a
/// local socket).
fn ensure_loopback(flag: &str, raw: &str) -> Result<()> {
    let url = url::Url::parse(raw).with_context(|| format!("{flag} is not a URL"))?;
    let host = url.host_str().unwrap_or("");
    let local = match host.trim_start_matches('[').trim_end_matches(']') {
        "" | "localhost" => true,
        h => h
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
    };
    if !local {
        bail!("{flag} must point at this machine (loopback), not {host}");
    }
    Ok(())
}
