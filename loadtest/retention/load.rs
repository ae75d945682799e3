//! Part 1's load: closed-loop producers and a pull probe over gRPC, recorded per window (A:
//! no prune, P: the prune, B: no prune), and the report that sets P beside A and B.

use crate::Args;
use crate::setup::{Node, authed};
use anyhow::Result;
use eventrelay::proto::UpdateTopicRequest;
use eventrelay::proto::event_relay_client::EventRelayClient;
use eventrelay::proto::{NewEvent, PublishEventsRequest, PullEventsRequest, Topic, TopicRetention};
use eventrelay::topics::{TopicName, partitions};
use sqlx::PgPool;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint};

/// Phases: warm-up (not recorded), A, P while the prune runs, the rest of P, B, stop.
const WARMUP: usize = 0;
const STOP: usize = 5;
const NAMES: [&str; 4] = [
    "A  no prune",
    "P  prune 10x",
    "P' prune only",
    "B  no prune",
];

/// What one window saw.
#[derive(Default, Clone)]
pub(crate) struct Window {
    /// Samples of what the database's active sessions waited on, by wait event.
    waits: std::collections::BTreeMap<String, u32>,
    seconds: f64,
    events: u64,
    errors: u64,
    publish_us: Vec<u32>,
    tail_us: Vec<u32>,
    head_us: Vec<u32>,
}

/// Part 1's outcome.
pub(crate) struct PruneResult {
    windows: Vec<Window>,
    /// From UpdateTopic to the last partition below the mark dropped.
    pub(crate) prune_took: Duration,
    /// The first retained offset then.
    pub(crate) first_after: i64,
}

struct Shared {
    phase: AtomicUsize,
    last: AtomicI64,
    windows: Mutex<Vec<Window>>,
}

impl Shared {
    fn record(&self, phase: usize, f: impl FnOnce(&mut Window)) {
        if (1..=4).contains(&phase) {
            let mut w = self.windows.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut w[phase - 1]);
        }
    }
}

impl Window {
    fn merge(&mut self, o: &Window) {
        self.seconds += o.seconds;
        self.events += o.events;
        self.errors += o.errors;
        self.publish_us.extend(&o.publish_us);
        self.tail_us.extend(&o.tail_us);
        self.head_us.extend(&o.head_us);
        for (k, v) in &o.waits {
            *self.waits.entry(k.clone()).or_default() += v;
        }
    }

    /// The three wait events seen most, with their share of the samples.
    fn top_waits(&self) -> String {
        let total: u32 = self.waits.values().sum();
        let mut v: Vec<_> = self.waits.iter().collect();
        v.sort_by(|a, b| b.1.cmp(a.1));
        v.iter()
            .take(3)
            .map(|(k, n)| {
                format!(
                    "{k} {:.0}%",
                    100.0 * f64::from(**n) / f64::from(total.max(1))
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

/// Runs the three windows under load; the prune starts at the beginning of the second.
pub(crate) async fn prune_under_load(
    args: &Args,
    node: &Node,
    admin: &str,
    topic: &Topic,
    pool: &PgPool,
) -> Result<PruneResult> {
    let shared = Arc::new(Shared {
        phase: AtomicUsize::new(WARMUP),
        last: AtomicI64::new(args.events),
        windows: Mutex::new(vec![Window::default(); 4]),
    });
    let mut channels = Vec::new();
    for _ in 0..4 {
        channels.push(
            Endpoint::from_shared(format!("http://{}", node.grpc))?
                .connect()
                .await?,
        );
    }
    let mut tasks = Vec::new();
    for i in 0..args.clients {
        let api = EventRelayClient::new(channels[i % channels.len()].clone());
        tasks.push(tokio::spawn(publisher(
            api,
            admin.to_owned(),
            args.batch,
            shared.clone(),
        )));
    }
    let api = EventRelayClient::new(channels[0].clone());
    tasks.push(tokio::spawn(puller(api, admin.to_owned(), shared.clone())));
    tasks.push(tokio::spawn(sample_waits(pool.clone(), shared.clone())));

    // Warm-up, not recorded: connections, prepared statements, the lanes.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut seconds = [0.0; 4];
    let started = Instant::now();
    shared.phase.store(1, Ordering::Relaxed);
    tokio::time::sleep(args.window()).await;
    seconds[0] = started.elapsed().as_secs_f64();

    let started = Instant::now();
    shared.phase.store(2, Ordering::Relaxed);
    let mut api = EventRelayClient::new(channels[1].clone());
    let keep = TopicRetention {
        max_events: args.keep,
        ..Default::default()
    };
    let r = UpdateTopicRequest {
        id: topic.id.clone(),
        retention: Some(keep),
        ..Default::default()
    };
    api.update_topic(authed(admin, r)).await?;
    let name = TopicName::parse(&topic.name)?;
    let first_after = wait_pruned(pool, &name, args.events - args.keep + 1).await?;
    let prune_took = started.elapsed();
    seconds[1] = prune_took.as_secs_f64();
    shared.phase.store(3, Ordering::Relaxed);
    if let Some(rest) = args.window().checked_sub(prune_took) {
        tokio::time::sleep(rest).await;
    }
    seconds[2] = started.elapsed().as_secs_f64() - seconds[1];

    let started = Instant::now();
    shared.phase.store(4, Ordering::Relaxed);
    tokio::time::sleep(args.window()).await;
    seconds[3] = started.elapsed().as_secs_f64();
    shared.phase.store(STOP, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let mut parts = shared
        .windows
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    for (w, s) in parts.iter_mut().zip(seconds) {
        w.seconds = s;
    }
    // Rows: A, the whole of P, P while the prune ran, B.
    let mut whole = parts[1].clone();
    whole.merge(&parts[2]);
    let windows = vec![parts[0].clone(), whole, parts[1].clone(), parts[3].clone()];
    Ok(PruneResult {
        windows,
        prune_took,
        first_after,
    })
}

/// Waits until the mark is at least `want` and no partition wholly below it is left.
async fn wait_pruned(pool: &PgPool, topic: &TopicName, want: i64) -> Result<i64> {
    let layout = partitions::events_layout(pool, topic)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no retention row"))?;
    loop {
        let first: i64 =
            sqlx::query_scalar("SELECT first_offset FROM topic_retention WHERE name = $1")
                .bind(topic.as_str())
                .fetch_one(pool)
                .await?;
        let left = partitions::children(pool, &topic.events_table())
            .await?
            .iter()
            .any(|c| {
                c.detaching
                    || partitions::events_number(topic, &c.table)
                        .and_then(|n| layout.upper(n))
                        .is_some_and(|u| u <= first)
            });
        if first >= want && !left {
            return Ok(first);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn publisher(
    mut api: EventRelayClient<Channel>,
    admin: String,
    batch: usize,
    s: Arc<Shared>,
) {
    let events: Vec<NewEvent> = (0..batch)
        .map(|i| NewEvent {
            name: "order.created".into(),
            data: format!(r#"{{"order_id": {i}, "customer": "c{i}", "amount_cents": 1999}}"#),
            source: "er-retention-bench".into(),
            ..Default::default()
        })
        .collect();
    loop {
        let phase = s.phase.load(Ordering::Relaxed);
        if phase == STOP {
            return;
        }
        let r = PublishEventsRequest {
            topic: "big".into(),
            events: events.clone(),
            durable: true,
            ..Default::default()
        };
        let t = Instant::now();
        let out = api.publish_events(authed(&admin, r)).await;
        let took = micros(t.elapsed());
        match out {
            Ok(r) => {
                if let Some(e) = r.into_inner().events.last() {
                    s.last.fetch_max(e.offset64, Ordering::Relaxed);
                }
                s.record(phase, |w| {
                    w.events += batch as u64;
                    w.publish_us.push(took);
                });
            }
            Err(_) => s.record(phase, |w| w.errors += 1),
        }
    }
}

/// Every 100 ms, what the database's active sessions wait on (CPU when nothing), so an odd
/// window can be told apart from the node's own behaviour (a checkpoint's IO, a lock).
async fn sample_waits(pool: PgPool, s: Arc<Shared>) {
    loop {
        let phase = s.phase.load(Ordering::Relaxed);
        if phase == STOP {
            return;
        }
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT COALESCE(wait_event_type || ':' || wait_event, 'CPU') FROM pg_stat_activity
             WHERE datname = current_database() AND state = 'active' AND pid <> pg_backend_pid()",
        )
        .fetch_all(&pool)
        .await
        .unwrap_or_default();
        s.record(phase, |w| {
            for (e,) in rows {
                *w.waits.entry(e).or_default() += 1;
            }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Pulls alternately near the end (a consumer keeping up) and from offset 0 (one catching
/// up from the first retained event, which the prune moves).
async fn puller(mut api: EventRelayClient<Channel>, admin: String, s: Arc<Shared>) {
    let mut tail = true;
    loop {
        let phase = s.phase.load(Ordering::Relaxed);
        if phase == STOP {
            return;
        }
        let after = if tail {
            (s.last.load(Ordering::Relaxed) - 1_000).max(0)
        } else {
            0
        };
        let r = PullEventsRequest {
            topic: "big".into(),
            batch_size: 100,
            offset64: Some(after),
            ..Default::default()
        };
        let t = Instant::now();
        let ok = api.pull_events(authed(&admin, r)).await.is_ok();
        let took = micros(t.elapsed());
        s.record(phase, |w| match (ok, tail) {
            (false, _) => w.errors += 1,
            (true, true) => w.tail_us.push(took),
            (true, false) => w.head_us.push(took),
        });
        tail = !tail;
    }
}

fn pct(v: &[u32], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut v = v.to_vec();
    v.sort_unstable();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    f64::from(v[i]) / 1000.0
}

/// Prints the windows and P beside the mean of A and B.
pub(crate) fn report(r: &PruneResult) {
    println!(
        "{:<14} {:>7} {:>10} {:>16} {:>16} {:>16} {:>6}",
        "window",
        "seconds",
        "events/s",
        "publish p50/p99",
        "tail pull p50/99",
        "pull@0 p50/p99",
        "errors"
    );
    let rows: Vec<[f64; 7]> = r
        .windows
        .iter()
        .map(|w| {
            [
                w.events as f64 / w.seconds.max(1e-9),
                pct(&w.publish_us, 0.5),
                pct(&w.publish_us, 0.99),
                pct(&w.tail_us, 0.5),
                pct(&w.tail_us, 0.99),
                pct(&w.head_us, 0.5),
                pct(&w.head_us, 0.99),
            ]
        })
        .collect();
    for ((w, row), name) in r.windows.iter().zip(&rows).zip(NAMES) {
        println!(
            "{name:<14} {:>7.1} {:>10.0} {:>7.2}/{:<7.2}ms {:>7.2}/{:<7.2}ms {:>7.2}/{:<7.2}ms {:>6}",
            w.seconds, row[0], row[1], row[2], row[3], row[4], row[5], row[6], w.errors
        );
    }
    for (w, name) in r.windows.iter().zip(NAMES) {
        println!("  {name}: sessions waited on {}", w.top_waits());
    }
    for (row, label) in [(1, "P"), (2, "P'")] {
        let ratio = |i: usize| rows[row][i] / ((rows[0][i] + rows[3][i]) / 2.0);
        println!(
            "{label} / mean(A, B): throughput {:.3}; publish p50 {:.3}, p99 {:.3}; tail pull \
             p50 {:.3}, p99 {:.3}; pull@0 p50 {:.3}, p99 {:.3}",
            ratio(0),
            ratio(1),
            ratio(2),
            ratio(3),
            ratio(4),
            ratio(5),
            ratio(6)
        );
    }
}
