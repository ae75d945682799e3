//! The results: one `ResultRow` per scenario, the `Report` that `--json` prints as it is, and
//! the table printed otherwise.

use crate::PULL_BATCH;
use crate::args::Plan;
use crate::scenarios::{Measured, percentile_ms};
use crate::settle::CpuUse;
use serde::Serialize;
use std::time::Duration;

#[derive(Serialize)]
pub(crate) struct Report {
    pub(crate) settings: Plan,
    pub(crate) topic: String,
    pub(crate) topic_events_before_f: Option<i64>,
    pub(crate) rows: Vec<ResultRow>,
}

#[derive(Serialize)]
pub(crate) struct ResultRow {
    pub(crate) id: String,
    pub(crate) scenario: String,
    pub(crate) events_per_sec: Option<f64>,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) requests: u64,
    pub(crate) events: u64,
    pub(crate) errors: u64,
    pub(crate) first_error: Option<String>,
    pub(crate) seconds: f64,
    /// This row over its reference (throughput; for the deep pull, latency).
    pub(crate) ratio: Option<f64>,
    pub(crate) ratio_to: Option<String>,
    pub(crate) target: Option<String>,
    pub(crate) target_met: Option<bool>,
    /// Checkpoints and autovacuum work seen during the scenario, if any.
    pub(crate) background: Option<String>,
    /// CPU spent during the scenario.
    pub(crate) cpu: Option<CpuUse>,
    /// Publish scenarios: average events per writer transaction (warm-up included).
    pub(crate) events_per_commit: Option<f64>,
}

impl ResultRow {
    pub(crate) fn measured(id: &str, scenario: &str, m: &Measured) -> ResultRow {
        ResultRow {
            id: id.into(),
            scenario: scenario.into(),
            events_per_sec: Some(m.events_per_sec()),
            p50_ms: m.p(0.50),
            p99_ms: m.p(0.99),
            requests: m.latencies.len() as u64,
            events: m.events,
            errors: m.errors,
            first_error: m.first_error.clone(),
            seconds: m.elapsed.as_secs_f64(),
            ratio: None,
            ratio_to: None,
            target: None,
            target_met: None,
            background: None,
            cpu: m.cpu,
            events_per_commit: None,
        }
    }

    pub(crate) fn point(id: &str, scenario: String, lat: &[Duration]) -> ResultRow {
        ResultRow {
            id: id.into(),
            scenario,
            events_per_sec: None,
            p50_ms: percentile_ms(lat, 0.50),
            p99_ms: percentile_ms(lat, 0.99),
            requests: lat.len() as u64,
            events: lat.len() as u64 * PULL_BATCH as u64,
            errors: 0,
            first_error: None,
            seconds: lat.iter().map(Duration::as_secs_f64).sum(),
            ratio: None,
            ratio_to: None,
            target: None,
            target_met: None,
            background: None,
            cpu: None,
            events_per_commit: None,
        }
    }
}

pub(crate) fn thousands(v: f64) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    let s = format!("{:.0}", v.round());
    let (sign, digits) = s.strip_prefix('-').map_or(("", s.as_str()), |d| ("-", d));
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    format!("{sign}{out}")
}

fn ms(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.2}")
    } else {
        "-".into()
    }
}

pub(crate) fn print_report(r: &Report) {
    let s = &r.settings;
    println!();
    println!(
        "er-loadgen: {}; {} clients over {} gRPC channels, on a client thread per core; {} s per scenario after {} s warm-up; prefill {}{}",
        s.mode,
        s.concurrency,
        s.channels,
        s.seconds,
        s.warmup,
        thousands(s.prefill as f64),
        s.server_db_pool_size
            .map(|p| format!("; server pool {p} connections"))
            .unwrap_or_default(),
    );
    println!(
        "Postgres {} before each scenario",
        if s.settle {
            "settled (CHECKPOINT, autovacuum idle)"
        } else {
            "not settled"
        }
    );
    println!();
    println!(
        "{:<3} {:<46} {:>10} {:>9} {:>9} {:>12}  {:<34} {:<4}",
        "", "scenario", "events/s", "p50 ms", "p99 ms", "ratio", "target", "met"
    );
    println!("{}", "-".repeat(136));
    for row in &r.rows {
        let ratio = match (row.ratio, &row.ratio_to) {
            (Some(x), Some(to)) => format!("{x:.2} x {to}"),
            _ => String::new(),
        };
        let met = match row.target_met {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "",
        };
        println!(
            "{:<3} {:<46} {:>10} {:>9} {:>9} {:>12}  {:<34} {:<4}",
            row.id,
            row.scenario,
            row.events_per_sec.map_or_else(|| "-".into(), thousands),
            ms(row.p50_ms),
            ms(row.p99_ms),
            ratio,
            row.target.as_deref().unwrap_or(""),
            met
        );
    }
    println!();
    for row in &r.rows {
        if let Some(c) = &row.cpu
            && row.events_per_sec.is_some()
        {
            // The CPU figures cover the nominal window of `seconds`.
            let window_events = row.events_per_sec.unwrap_or(0.0) * r.settings.seconds;
            let per_k = |s: f64| 1e6 * s / window_events.max(1.0);
            println!(
                "{}: CPU: this process {:.1} s, rest of the machine {:.1} s ({:.2} + {:.2} ms per \
                 1,000 events); machine {:.0}% busy",
                row.id,
                c.own_s,
                c.others_s,
                per_k(c.own_s),
                per_k(c.others_s),
                c.machine_busy_pct
            );
        }
        if let Some(n) = row.events_per_commit {
            println!(
                "{}: {n:.1} events per writer transaction on average (group commit)",
                row.id
            );
        }
        if let Some(bg) = &row.background {
            println!("{}: background during the scenario: {bg}", row.id);
        }
    }
    for row in &r.rows {
        if row.errors > 0 {
            println!(
                "{}: {} failed requests; first: {}",
                row.id,
                row.errors,
                row.first_error.as_deref().unwrap_or("?")
            );
        }
    }
}
