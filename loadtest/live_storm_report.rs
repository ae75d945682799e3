//! The figures of `er-live-bench --storm`: for each phase (the storm after a drain, the fresh
//! joins), how long until every client had resumed and caught up, per-client times, backlogs,
//! the exactly-once tally and Postgres' CPU; then the storm over the fresh joins.

use crate::live_ledger::Tally;
use crate::live_resume::Outcome;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::time::Instant;

/// One measured phase.
pub struct Phase {
    pub name: &'static str,
    pub outcomes: Vec<Outcome>,
    /// The topic's last offset at the end (every client expects everything up to it).
    pub head: i64,
    /// SIGTERM (storm) or the start of the joins (fresh).
    pub origin: Instant,
    /// Postgres CPU-seconds over the window.
    pub cpu: f64,
    /// From `origin` until every client had caught up (or the limit).
    pub window: Duration,
    /// Postgres CPU-seconds per second with only the publisher running.
    pub background: f64,
}

/// p50, p99 and maximum (nearest rank) of durations in milliseconds.
fn spread(mut v: Vec<f64>) -> String {
    if v.is_empty() {
        return "none".into();
    }
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    format!(
        "p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        at(0.5),
        at(0.99),
        v[v.len() - 1]
    )
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl Phase {
    /// From the first close (storm) or the start (fresh) until the last client's `at`.
    fn all(&self, at: impl Fn(&Outcome) -> Option<Instant>) -> Option<Duration> {
        let last = self.outcomes.iter().map(&at).collect::<Option<Vec<_>>>()?;
        // A storm client cut off before SIGTERM is not part of the storm's start.
        let starts = self.outcomes.iter().map(|o| o.started);
        let first = starts.filter(|s| *s >= self.origin).min()?;
        Some(last.into_iter().max()?.saturating_duration_since(first))
    }

    fn resumed_all(&self) -> Option<Duration> {
        self.all(|o| o.resumed)
    }

    fn caught_up_all(&self) -> Option<Duration> {
        self.all(|o| o.caught_up)
    }

    /// Postgres CPU-seconds beyond the background's over the window.
    fn excess(&self) -> f64 {
        self.cpu - self.background * self.window.as_secs_f64()
    }

    fn per_client(&self, at: impl Fn(&Outcome) -> Option<Instant>) -> Vec<f64> {
        let os = self.outcomes.iter();
        os.filter_map(|o| Some(ms(at(o)?.saturating_duration_since(o.started))))
            .collect()
    }

    pub fn print(&self, published: u64, failed: u64) {
        let (n, name) = (self.outcomes.len(), self.name);
        let from = if name == "storm" {
            "from the first close"
        } else {
            "from the start of the joins"
        };
        let secs =
            |d: Option<Duration>| d.map_or("never".into(), |d| format!("{:.2} s", d.as_secs_f64()));
        if name == "storm" {
            let closes: Vec<f64> = self
                .outcomes
                .iter()
                .filter_map(|o| Some(ms(o.closed?.0.saturating_duration_since(self.origin))))
                .collect();
            let mut codes = BTreeMap::new();
            for o in &self.outcomes {
                *codes.entry(o.closed.map(|c| c.1)).or_insert(0) += 1;
            }
            println!(
                "{name}     closes after SIGTERM: {} ({} closed; by close code: {codes:?})",
                spread(closes.clone()),
                closes.len()
            );
            let first = closes.iter().copied().fold(f64::INFINITY, f64::min);
            let early = self
                .outcomes
                .iter()
                .filter(|o| o.closed.is_some_and(|c| c.0 < self.origin));
            println!(
                "          first close {first:.0} ms after SIGTERM; {} closed before SIGTERM",
                early.count()
            );
            let mut reasons = BTreeMap::new();
            for r in self
                .outcomes
                .iter()
                .filter_map(|o| o.close_reason.as_deref())
            {
                *reasons.entry(r).or_insert(0) += 1;
            }
            if !reasons.is_empty() {
                println!("          closes other than the drain's, by reason: {reasons:?}");
            }
        }
        let resumed = self.outcomes.iter().filter(|o| o.resumed.is_some()).count();
        let caught = self
            .outcomes
            .iter()
            .filter(|o| o.caught_up.is_some())
            .count();
        println!(
            "{name}     all {n} resumed {from} in {} ({resumed} resumed), all caught up in {} ({caught})",
            secs(self.resumed_all()),
            secs(self.caught_up_all())
        );
        let lead = if name == "storm" { "close" } else { "start" };
        println!(
            "          per client, {lead} → join answered: {}",
            spread(self.per_client(|o| o.resumed))
        );
        println!(
            "          per client, {lead} → caught up: {}",
            spread(self.per_client(|o| o.caught_up))
        );
        let backlogs: Vec<i64> = self.outcomes.iter().map(|o| o.backlog).collect();
        let mean = backlogs.iter().sum::<i64>() as f64 / backlogs.len().max(1) as f64;
        let retries: u32 = self.outcomes.iter().map(|o| o.retries).sum();
        let later: u32 = self.outcomes.iter().map(|o| o.later_closes).sum();
        println!(
            "          backlog at the answer: mean {mean:.1}, max {} events; {retries} failed \
             connection attempts, {later} sockets ended after resuming",
            backlogs.iter().max().unwrap_or(&0)
        );
        let mut sum = Tally::default();
        let mut exact = 0;
        for o in &self.outcomes {
            let t = o.ledger.tally(self.head);
            exact += usize::from(t.exact());
            sum.add(t);
        }
        println!(
            "          exactly once and in order: {exact} of {n} clients; {} of {} expected \
             deliveries, {} duplicates, {} out of order, {} missing (last offset {}; {published} \
             events published during the phase, {failed} publishes failed)",
            sum.delivered, sum.expected, sum.duplicates, sum.out_of_order, sum.missing, self.head
        );
        println!(
            "          Postgres CPU {:.2} s over {:.2} s ({} to the last catch-up); {:.2} s beyond \
             the background's {:.3} CPU-s/s",
            self.cpu,
            self.window.as_secs_f64(),
            if name == "storm" { "SIGTERM" } else { "start" },
            self.excess(),
            self.background
        );
    }
}

/// The storm over the fresh joins.
pub fn compare(storm: &Phase, fresh: &Phase) {
    let ratio = |a: f64, b: f64| {
        if b > 0.0 {
            format!("{:.2} x", a / b)
        } else {
            "n/a".into()
        }
    };
    let secs = |d: Option<Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64());
    let p99 = |p: &Phase| {
        let mut v = p.per_client(|o| o.resumed);
        v.sort_by(f64::total_cmp);
        v.get((v.len() * 99).div_ceil(100).saturating_sub(1))
            .copied()
            .unwrap_or(f64::NAN)
    };
    println!(
        "storm / fresh: all resumed {}, all caught up {}, per-client resume p99 {}, Postgres CPU {} \
         (beyond the background {})",
        ratio(secs(storm.resumed_all()), secs(fresh.resumed_all())),
        ratio(secs(storm.caught_up_all()), secs(fresh.caught_up_all())),
        ratio(p99(storm), p99(fresh)),
        ratio(storm.cpu, fresh.cpu),
        ratio(storm.excess(), fresh.excess())
    );
}
