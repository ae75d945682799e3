//! A publish scenario and what it is compared with, measured in turns: its Postgres baseline
//! (a with c, b with d) or the same publishing to a fresh topic (f with f0), so that the ratio
//! the targets are judged on compares like with like.
//!
//! Measured one after the other, a scenario and its baseline see different moments of a shared
//! host: on this machine the same baseline moved by a third between runs minutes apart, and a
//! ratio taken across such a drift is the drift as much as the server (docs/benchmarks.md,
//! "Seventh session"). So each of the two runs in four slices of half the scenario's seconds,
//! in the order scenario, baseline, baseline, scenario (ABBA): any drift that is linear over
//! the four slices falls on both sides equally, and each still runs its full measured time.
//! Every slice has its own warm-up and settling, as a whole scenario has.

use crate::args::Plan;
use crate::baselines::baseline;
use crate::bench::{say, settled, stage_limit};
use crate::report::ResultRow;
use crate::scenarios::{Measured, publish};
use crate::settle::Admin;
use crate::setup::Target;
use anyhow::Result;
use std::sync::Arc;
use std::sync::atomic::AtomicI64;

/// One side of a pair.
#[derive(Clone, Copy)]
enum Side<'a> {
    /// Durable PublishEvents to this topic with this many events per request.
    Publish(&'a str, usize),
    /// The same with an idempotency key on every event.
    Keyed(&'a str, usize),
    /// Rows straight into Postgres with this many rows per INSERT.
    Baseline(usize),
}

/// What a pair needs to run its baseline: the database URL and the offsets counter the
/// baselines share.
pub(crate) struct Base<'a> {
    pub(crate) url: &'a str,
    pub(crate) offsets: &'a Arc<AtomicI64>,
}

/// A measured side: its figures over all its slices, and background work seen meanwhile.
struct Sided {
    measured: Measured,
    background: Option<String>,
}

/// Runs `side` once for `plan.seconds`, settling before and reading the background after.
async fn slice(
    admin: &mut Admin,
    plan: &Plan,
    t: &Target,
    base: Option<&Base<'_>>,
    side: Side<'_>,
) -> Result<(Measured, Option<String>)> {
    let limit = stage_limit(plan);
    match (side, base) {
        (Side::Publish(topic, n), _) => {
            settled(admin, "publish", limit, publish(plan, t, topic, n, false)).await
        }
        (Side::Keyed(topic, n), _) => {
            settled(admin, "publish", limit, publish(plan, t, topic, n, true)).await
        }
        (Side::Baseline(n), Some(b)) => {
            let rows = baseline(plan, &t.threads, b.url, b.offsets, n);
            settled(admin, "baseline", limit, rows).await
        }
        (Side::Baseline(_), None) => anyhow::bail!("a baseline needs the database"),
    }
}

/// Durable publishing of `per_request` events and its baseline of as many rows per INSERT,
/// in turns, as the rows `(id, scenario)` of `names`.
pub(crate) async fn publish_pair(
    admin: &mut Admin,
    plan: &Plan,
    t: &Target,
    topic: &str,
    base: Option<&Base<'_>>,
    per_request: usize,
    names: [(&str, &str); 2],
) -> Result<(ResultRow, Option<ResultRow>)> {
    let other = Side::Baseline(per_request);
    published_with(admin, plan, t, (topic, per_request), (base, other), names).await
}

/// Publishing of `per_request` events to the `grown` topic and to a `fresh` one, in turns,
/// as the rows `(id, scenario)` of `names`: whether publishing slows as a topic grows,
/// compared at the same moments of the host (f with f0). Measured apart, f trailed b by 6-15%
/// in runs where the node's own CPU per event, not Postgres', made the difference.
pub(crate) async fn growth_pair(
    admin: &mut Admin,
    plan: &Plan,
    t: &Target,
    (grown, fresh): (&str, &str),
    per_request: usize,
    names: [(&str, &str); 2],
) -> Result<(ResultRow, ResultRow)> {
    let other = Side::Publish(fresh, per_request);
    let (g, f) = published_with(admin, plan, t, (grown, per_request), (None, other), names).await?;
    let f = f.ok_or_else(|| anyhow::anyhow!("the fresh topic's side did not run"))?;
    Ok((g, f))
}

/// Publishing of `per_request` events with an idempotency key on each and the same without
/// keys, to the same topic, in turns, as the rows `(id, scenario)` of `names` (keyed first):
/// what keys cost, at the same moments of the host.
pub(crate) async fn keys_pair(
    admin: &mut Admin,
    plan: &Plan,
    t: &Target,
    topic: &str,
    per_request: usize,
    names: [(&str, &str); 2],
) -> Result<(ResultRow, ResultRow)> {
    let [(id, scenario), (other_id, other_scenario)] = names;
    let sides = (
        Side::Keyed(topic, per_request),
        Side::Publish(topic, per_request),
    );
    let (keyed, plain) = measure_pair(admin, plan, t, None, sides).await?;
    let plain = plain.ok_or_else(|| anyhow::anyhow!("the side without keys did not run"))?;
    Ok((keyed.row(id, scenario), plain.row(other_id, other_scenario)))
}

/// Publishing to `topic` in turns with `other`; the publish row also gets its average events
/// per writer transaction (only its slices write to the topic).
async fn published_with(
    admin: &mut Admin,
    plan: &Plan,
    t: &Target,
    (topic, per_request): (&str, usize),
    (base, other): (Option<&Base<'_>>, Side<'_>),
    names: [(&str, &str); 2],
) -> Result<(ResultRow, Option<ResultRow>)> {
    let [(id, scenario), (other_id, other_scenario)] = names;
    let start = t.last_offset(topic).await?;
    let sides = (Side::Publish(topic, per_request), other);
    let (published, second) = measure_pair(admin, plan, t, base, sides).await?;
    let mut row = published.row(id, scenario);
    let end = t.last_offset(topic).await?;
    row.events_per_commit = admin.events_per_commit(topic, start, end).await;
    Ok((row, second.map(|s| s.row(other_id, other_scenario))))
}

/// Measures `first` and, when it can run (a baseline needs the database), `second` in ABBA
/// order (see the module header); otherwise `first` alone for its full time.
async fn measure_pair(
    admin: &mut Admin,
    plan: &Plan,
    t: &Target,
    base: Option<&Base<'_>>,
    (first, second): (Side<'_>, Side<'_>),
) -> Result<(Sided, Option<Sided>)> {
    if matches!(second, Side::Baseline(_)) && base.is_none() {
        let (m, bg) = slice(admin, plan, t, None, first).await?;
        return Ok((Sided::of(vec![(m, bg)]), None));
    }
    let half = Plan {
        seconds: plan.seconds / 2.0,
        ..plan.clone()
    };
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for (i, side) in [first, second, second, first].into_iter().enumerate() {
        say(&format!("   slice {} of 4 ({} s)", i + 1, half.seconds));
        let part = slice(admin, &half, t, base, side).await?;
        if i == 0 || i == 3 { &mut a } else { &mut b }.push(part);
    }
    Ok((Sided::of(a), Some(Sided::of(b))))
}

impl Sided {
    fn of(parts: Vec<(Measured, Option<String>)>) -> Sided {
        let mut backgrounds = Vec::new();
        let mut measured = Vec::new();
        for (m, bg) in parts {
            backgrounds.extend(bg);
            measured.push(m);
        }
        Sided {
            measured: Measured::combine(measured),
            background: (!backgrounds.is_empty()).then(|| backgrounds.join("; ")),
        }
    }

    fn row(&self, id: &str, scenario: &str) -> ResultRow {
        let mut row = ResultRow::measured(id, scenario, &self.measured);
        row.background = self.background.clone();
        row
    }
}
