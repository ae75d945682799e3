//! Postgres background work around each scenario (settling before it, the checkpoints and
//! autovacuum runs seen during it) and the CPU spent in its measured window, so that one
//! scenario's leftovers are not charged to the next and a figure can be read against its cost.

use crate::bench::say;
use crate::scenarios::Window;
use serde::Serialize;
use sqlx::{AssertSqlSafe, PgConnection};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// Cluster checkpoints and this database's autovacuum/autoanalyze runs so far.
#[derive(Clone, Copy)]
pub(crate) struct Background {
    checkpoints: i64,
    autovacuums: i64,
}

async fn background(conn: &mut PgConnection) -> Option<Background> {
    // pg_stat_bgwriter up to Postgres 16, pg_stat_checkpointer from 17.
    let checkpoints = match sqlx::query_scalar::<_, i64>(
        "SELECT (checkpoints_timed + checkpoints_req)::int8 FROM pg_stat_bgwriter",
    )
    .fetch_one(&mut *conn)
    .await
    {
        Ok(c) => c,
        Err(_) => sqlx::query_scalar::<_, i64>(
            "SELECT (num_timed + num_requested)::int8 FROM pg_stat_checkpointer",
        )
        .fetch_one(&mut *conn)
        .await
        .ok()?,
    };
    let autovacuums = sqlx::query_scalar::<_, i64>(
        "SELECT coalesce(sum(autovacuum_count + autoanalyze_count), 0)::int8
         FROM pg_stat_user_tables",
    )
    .fetch_one(&mut *conn)
    .await
    .ok()?;
    Some(Background {
        checkpoints,
        autovacuums,
    })
}

async fn autovacuum_workers(conn: &mut PgConnection) -> i64 {
    sqlx::query_scalar::<_, i64>(
        "SELECT count(*) FROM pg_stat_activity
         WHERE backend_type = 'autovacuum worker' AND datname = current_database()",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap_or(0)
}

/// CPU counters in clock ticks (USER_HZ, 100 on Linux): the whole machine's busy and idle time,
/// and this process's (the load generator, plus the node when it runs in-process).
#[derive(Clone, Copy)]
struct Cpu {
    busy: u64,
    idle: u64,
    own: u64,
}

const TICKS_PER_SECOND: f64 = 100.0;

/// Reads the counters from /proc; `None` where there is no /proc.
fn cpu_now() -> Option<Cpu> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let t: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal
    let at = |i: usize| t.get(i).copied().unwrap_or(0);
    let own_stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces): utime and stime are the 12th and
    // 13th after the closing parenthesis.
    let fields: Vec<&str> = own_stat.rsplit_once(')')?.1.split_whitespace().collect();
    let own = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Cpu {
        busy: at(0) + at(1) + at(2) + at(5) + at(6) + at(7),
        idle: at(3) + at(4),
        own,
    })
}

/// CPU spent during a scenario.
#[derive(Clone, Copy, Serialize)]
pub(crate) struct CpuUse {
    /// This process: the load generator, plus the node when it runs in-process.
    pub(crate) own_s: f64,
    /// The rest of the machine: Postgres, and anything else that ran meanwhile.
    pub(crate) others_s: f64,
    /// Share of the machine's CPU time that was busy.
    pub(crate) machine_busy_pct: f64,
}

impl CpuUse {
    /// CPU over several equally long slices: the seconds add up, the busy share is their
    /// mean. `None` for no slices.
    pub(crate) fn sum(parts: &[CpuUse]) -> Option<CpuUse> {
        if parts.is_empty() {
            return None;
        }
        let n = parts.len() as f64;
        Some(CpuUse {
            own_s: parts.iter().map(|c| c.own_s).sum(),
            others_s: parts.iter().map(|c| c.others_s).sum(),
            machine_busy_pct: parts.iter().map(|c| c.machine_busy_pct).sum::<f64>() / n,
        })
    }
}

fn cpu_use(before: Cpu, after: Cpu) -> CpuUse {
    let busy = after.busy.saturating_sub(before.busy) as f64;
    let idle = after.idle.saturating_sub(before.idle) as f64;
    let own = after.own.saturating_sub(before.own) as f64;
    CpuUse {
        own_s: own / TICKS_PER_SECOND,
        others_s: (busy - own).max(0.0) / TICKS_PER_SECOND,
        machine_busy_pct: 100.0 * busy / (busy + idle).max(1.0),
    }
}

/// Samples the CPU counters at the start and at the end of the measured window.
pub(crate) fn sample_cpu(window: Window) -> JoinHandle<Option<CpuUse>> {
    tokio::spawn(async move {
        tokio::time::sleep_until(window.measure_from.into()).await;
        let start = cpu_now()?;
        tokio::time::sleep_until(window.until.into()).await;
        Some(cpu_use(start, cpu_now()?))
    })
}

/// The bench's own connection to the server's database, when it has one.
pub(crate) struct Admin {
    pub(crate) conn: Option<PgConnection>,
    pub(crate) settle: bool,
}

impl Admin {
    /// Settles (if asked) and snapshots the background counters.
    pub(crate) async fn before(&mut self) -> Option<Background> {
        let conn = self.conn.as_mut()?;
        if self.settle {
            let deadline = Instant::now() + Duration::from_secs(60);
            while autovacuum_workers(conn).await > 0 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            if let Err(e) = sqlx::raw_sql("CHECKPOINT").execute(&mut *conn).await {
                say(&format!("   CHECKPOINT failed ({e}); not settling"));
                self.settle = false;
            }
        }
        background(conn).await
    }

    /// Average events per stored transaction over an offset range of the topic: every row of
    /// one writer transaction has the same `inserted_at` (`now()` is the transaction's start).
    pub(crate) async fn events_per_commit(
        &mut self,
        topic: &str,
        after: i64,
        upto: i64,
    ) -> Option<f64> {
        let conn = self.conn.as_mut()?;
        sqlx::query_scalar::<_, f64>(AssertSqlSafe(format!(
            r#"SELECT count(*)::float8 / greatest(count(DISTINCT inserted_at), 1)
               FROM "{topic}_events" WHERE "offset" > $1 AND "offset" <= $2"#
        )))
        .bind(after)
        .bind(upto)
        .fetch_one(conn)
        .await
        .ok()
    }

    /// What ran in the background since `before`.
    pub(crate) async fn after(&mut self, before: Option<Background>) -> Option<String> {
        let (conn, before) = (self.conn.as_mut()?, before?);
        let now = background(conn).await?;
        let running = autovacuum_workers(conn).await;
        let (c, v) = (
            now.checkpoints - before.checkpoints,
            now.autovacuums - before.autovacuums,
        );
        if c == 0 && v == 0 && running == 0 {
            return None;
        }
        Some(format!(
            "{c} checkpoint(s), {v} autovacuum/autoanalyze run(s) finished, {running} autovacuum \
             worker(s) still running at the end"
        ))
    }
}
