//! The benchmark itself: scenarios a to f against one topic (a with c, b with d, the sweep's
//! a<N> with c<N>, and f with f0 on a fresh topic, each pair measured in turns, `pair.rs`),
//! each stage under a deadline, then the ratios and the targets from the issue.

use crate::args::Plan;
use crate::baselines::{make_baseline_table, prefill};
use crate::pair::{Base, growth_pair, keys_pair, publish_pair};
use crate::report::{Report, ResultRow, thousands};
use crate::scenarios::{point_pulls, pull_walk};
use crate::settle::Admin;
use crate::setup::Target;
use crate::{
    BATCH, FULL_PREFILL, POINT_PULLS, PREFILL_LIMIT, PULL_BATCH, SETTLE_LIMIT, TARGET_BATCH_EPS,
    TARGET_BATCH_VS_BASELINE, TARGET_SINGLE_EPS, TARGET_SINGLE_VS_BASELINE,
};
use anyhow::{Result, anyhow};
use chrono::Utc;
use sqlx::Connection;
use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::time::{Duration, Instant};

/// Runs one stage of the benchmark with a deadline, so a stuck server or database ends the run
/// with the name of the stage instead of hanging.
pub(crate) async fn bounded<T>(
    what: &str,
    limit: Duration,
    stage: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    tokio::time::timeout(limit, stage)
        .await
        .map_err(|_| anyhow!("{what} did not finish within {} s", limit.as_secs()))?
}

/// A measured stage's deadline: warm-up, window, and the 60 s request timeout of the last
/// requests, with room to spare.
pub(crate) fn stage_limit(plan: &Plan) -> Duration {
    Duration::from_secs_f64(plan.warmup + plan.seconds + 90.0)
}

/// Settles Postgres, runs one measured stage under `limit`, then reads what ran in the
/// background meanwhile.
pub(crate) async fn settled<T>(
    admin: &mut Admin,
    what: &str,
    limit: Duration,
    stage: impl std::future::Future<Output = Result<T>>,
) -> Result<(T, Option<String>)> {
    let bg = bounded("settling", SETTLE_LIMIT, async { Ok(admin.before().await) }).await?;
    let out = bounded(what, limit, stage).await?;
    let background = bounded("reading pg_stat", SETTLE_LIMIT, async {
        Ok(admin.after(bg).await)
    })
    .await?;
    Ok((out, background))
}

pub(crate) fn say(msg: &str) {
    eprintln!("[{}] {msg}", Utc::now().format("%H:%M:%S"));
}

fn eps(r: &ResultRow) -> f64 {
    r.events_per_sec.unwrap_or(f64::NAN)
}

/// Sets a publish scenario's target (`min_eps` events/s absolute and at least `min_ratio` of
/// `base`, the same-run baseline named `label`) and whether it was met. Without the baseline
/// (it failed) only the absolute target is judged.
fn judge(r: &mut ResultRow, base: Option<&ResultRow>, label: &str, min_eps: f64, min_ratio: f64) {
    r.target = Some(format!(
        ">= {} ev/s and >= {:.0}% of {label}",
        thousands(min_eps),
        min_ratio * 100.0
    ));
    let absolute = eps(r) >= min_eps && r.errors == 0;
    r.target_met = Some(absolute);
    if let Some(base) = base {
        let ratio = eps(r) / eps(base);
        r.ratio = Some(ratio);
        r.ratio_to = Some(label.into());
        r.target_met = Some(absolute && ratio >= min_ratio);
    }
}

/// The 1-event pair again at each of `plan.sweep`'s client counts, as info rows: group commit
/// pays once requests queue up behind a transaction, so where it overtakes one transaction per
/// event depends on the load, and the curve says more than one point.
async fn sweep_single(
    admin: &mut Admin,
    plan: &Plan,
    t: &Target,
    topic: &str,
    base: Option<&Base<'_>>,
) -> Result<Vec<ResultRow>> {
    let mut rows = Vec::new();
    for &n in &plan.sweep {
        say(&format!("a{n}, c{n}: the 1-event pair with {n} clients"));
        let at = Plan {
            concurrency: n,
            ..plan.clone()
        };
        let (a_id, c_id) = (format!("a{n}"), format!("c{n}"));
        let a_name = format!("publish durable, 1 event/request, {n} clients");
        let c_name = format!("baseline: INSERT 1 row/txn, {n} connections");
        let names = [
            (a_id.as_str(), a_name.as_str()),
            (c_id.as_str(), c_name.as_str()),
        ];
        let (mut a, c) = publish_pair(admin, &at, t, topic, base, 1, names).await?;
        if let Some(c) = &c {
            a.ratio = Some(eps(&a) / eps(c));
            a.ratio_to = Some(c.id.clone());
            a.target = Some("info: a/c at this load".into());
        }
        rows.push(a);
        rows.extend(c);
    }
    Ok(rows)
}

pub(crate) async fn bench(plan: &Plan, t: &Target, topic: &str) -> Result<Report> {
    let mut admin = Admin {
        conn: t.db().await?,
        settle: plan.settle,
    };
    if admin.conn.is_none() {
        say("no database for this target: baselines c, d, the prefill and settling are skipped");
    }
    let secs = plan.seconds;
    let c = plan.concurrency;

    // a with c, then b with d, each pair in turns (pair.rs). The baselines need the database
    // (and bench_baseline); without it a and b run alone.
    let url = t.db_url.clone();
    let offsets = Arc::new(AtomicI64::new(0));
    let base = match (admin.conn.as_mut(), url.as_deref()) {
        (Some(conn), Some(url)) => {
            make_baseline_table(conn, topic).await?;
            Some(Base {
                url,
                offsets: &offsets,
            })
        }
        _ => None,
    };

    say(&format!(
        "a: durable publish, 1 event/request, {c} clients, {secs} s; \
         c: baseline, one INSERT transaction per event, {c} connections, {secs} s"
    ));
    let names = [
        ("a", "publish durable, 1 event/request"),
        ("c", "baseline: INSERT 1 row/transaction"),
    ];
    let (mut a, base_c) = publish_pair(&mut admin, plan, t, topic, base.as_ref(), 1, names).await?;
    let sweep = sweep_single(&mut admin, plan, t, topic, base.as_ref()).await?;

    say(&format!(
        "b: durable publish, {BATCH} events/request, {c} clients, {secs} s; \
         d: baseline, {BATCH}-row INSERT per statement, {c} connections, {secs} s"
    ));
    let names = [
        ("b", "publish durable, 100 events/request"),
        ("d", "baseline: INSERT 100 rows/statement"),
    ];
    let (mut b, base_d) =
        publish_pair(&mut admin, plan, t, topic, base.as_ref(), BATCH, names).await?;
    let stage = stage_limit(plan);

    // k1 with a1 and k100 with b100: idempotency keys on every event beside the same
    // publishing without, in turns (issue 19: keys may cost at most 15 %).
    let mut keyed_rows = Vec::new();
    for (n, k_id, p_id) in [(1, "k1", "a1"), (BATCH, "k100", "b100")] {
        say(&format!(
            "{k_id}: durable publish, {n} events/request with a key each, {c} clients; \
             {p_id}: the same without keys, in turns"
        ));
        let k_name = format!("publish durable, {n} ev/req, a key on every event");
        let p_name = format!("publish durable, {n} ev/req, no keys (beside {k_id})");
        let names = [(k_id, k_name.as_str()), (p_id, p_name.as_str())];
        let (mut k, p) = keys_pair(&mut admin, plan, t, topic, n, names).await?;
        k.ratio = Some(eps(&k) / eps(&p));
        k.ratio_to = Some(p.id.clone());
        k.target = Some(format!(">= 85% of {p_id}"));
        k.target_met = Some(eps(&k) >= 0.85 * eps(&p));
        keyed_rows.extend([k, p]);
    }

    if let Some(conn) = admin.conn.as_mut()
        && plan.prefill > 0
    {
        say(&format!(
            "e: prefilling {} rows with INSERT ... SELECT generate_series",
            plan.prefill
        ));
        let started = Instant::now();
        let last = bounded(
            "prefill",
            PREFILL_LIMIT,
            prefill(conn, topic, plan.prefill, plan.settle),
        )
        .await?;
        say(&format!(
            "   prefilled in {:.1} s; last offset now {last}",
            started.elapsed().as_secs_f64()
        ));
    }
    let last = t.last_offset(topic).await?;
    say(&format!(
        "e: pull walk, batch {PULL_BATCH}, {c} clients, {secs} s over {last} events"
    ));
    let (measured, background) =
        settled(&mut admin, "e", stage, pull_walk(plan, t, topic, last)).await?;
    let mut walk = ResultRow::measured("e", "pull, batch 1000, walking forward", &measured);
    walk.background = background;

    let want = if plan.prefill > 0 {
        plan.prefill
    } else {
        FULL_PREFILL
    };
    let deep = want.min(last - i64::from(PULL_BATCH)).max(0);
    let second = i64::from(PULL_BATCH).min(deep);
    say(&format!(
        "e: {POINT_PULLS} single pulls each at offsets 0, {second} and {deep}, taking turns"
    ));
    let bg = bounded("settling", SETTLE_LIMIT, async { Ok(admin.before().await) }).await?;
    let lat = bounded(
        "single pulls",
        PREFILL_LIMIT,
        point_pulls(t, topic, &[0, second, deep]),
    )
    .await?;
    let p0 = ResultRow::point("e0", "single pull at offset 0".into(), &lat[0]);
    let mut p1 = ResultRow::point(
        "e1",
        format!("single pull at offset {}", thousands(second as f64)),
        &lat[1],
    );
    let mut p2 = ResultRow::point(
        "e2",
        format!("single pull at offset {}", thousands(deep as f64)),
        &lat[2],
    );
    p2.background = bounded("reading pg_stat", SETTLE_LIMIT, async {
        Ok(admin.after(bg).await)
    })
    .await?;

    let topic_events_before_f = t.last_offset(topic).await?;
    let fresh = format!("{topic}_fresh");
    say(&format!(
        "f: durable publish, {BATCH} events/request, topic holds {topic_events_before_f} events; \
         f0: the same to a fresh topic, in turns"
    ));
    let fresh_id = t.create_topic(&fresh).await?;
    let f_name = format!(
        "publish durable, 100 ev/req, topic at {}",
        thousands(topic_events_before_f as f64)
    );
    let names = [
        ("f", f_name.as_str()),
        ("f0", "publish durable, 100 ev/req, fresh topic"),
    ];
    let growth = growth_pair(&mut admin, plan, t, (topic, &fresh), BATCH, names).await;
    t.cleanup(&fresh_id).await;
    let (mut f, f0) = growth?;
    if let Some(conn) = admin.conn {
        let _ = conn.close().await;
    }

    // Ratios and targets.
    judge(
        &mut a,
        base_c.as_ref(),
        "c",
        TARGET_SINGLE_EPS,
        TARGET_SINGLE_VS_BASELINE,
    );
    judge(
        &mut b,
        base_d.as_ref(),
        "d",
        TARGET_BATCH_EPS,
        TARGET_BATCH_VS_BASELINE,
    );
    f.ratio = Some(eps(&f) / eps(&f0));
    f.ratio_to = Some("f0".into());
    f.target = Some("info: ~1.0 x f0 expected".into());
    for p in [&mut p1, &mut p2] {
        p.ratio = Some(p.p50_ms / p0.p50_ms);
        p.ratio_to = Some("e0".into());
        p.target = Some("info: p50 latency ratio, ~1.0".into());
    }

    let mut rows = vec![a, b];
    rows.extend(base_c);
    rows.extend(base_d);
    rows.extend(sweep);
    rows.extend(keyed_rows);
    rows.extend([walk, p0, p1, p2, f, f0]);
    Ok(Report {
        settings: plan.clone(),
        topic: topic.to_owned(),
        topic_events_before_f: Some(topic_events_before_f),
        rows,
    })
}
