//! The gRPC scenarios (durable publish, the pull walk, single pulls), the events they send,
//! and how a scenario is measured. The Postgres baselines are measured the same way and insert
//! the same events, so that their figures compare.

use crate::args::Plan;
use crate::settle::{CpuUse, sample_cpu};
use crate::setup::{Target, authed};
use crate::{POINT_PULLS, PULL_BATCH};
use anyhow::{Context, Result, anyhow, bail};
use eventrelay::proto::{NewEvent, PublishEventsRequest, PullEventsRequest};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

// ---------------------------------------------------------------------------------------------
// Measurement: a time window shared by the workers and a simple latency recorder.

/// Requests started before `measure_from` are warm-up; none start at or after `until`.
#[derive(Clone, Copy)]
pub(crate) struct Window {
    pub(crate) measure_from: Instant,
    pub(crate) until: Instant,
}

impl Window {
    pub(crate) fn new(plan: &Plan) -> Window {
        let measure_from = Instant::now() + Duration::from_secs_f64(plan.warmup);
        Window {
            measure_from,
            until: measure_from + Duration::from_secs_f64(plan.seconds),
        }
    }

    /// The start time of the next request, or `None` when the window has closed.
    pub(crate) fn next(&self) -> Option<Instant> {
        let now = Instant::now();
        (now < self.until).then_some(now)
    }
}

/// One worker's figures: every latency (no histogram), counts and the first error.
#[derive(Default)]
pub(crate) struct Recorder {
    latencies: Vec<Duration>,
    events: u64,
    errors: u64,
    first_error: Option<String>,
    last_end: Option<Instant>,
}

impl Recorder {
    pub(crate) async fn record(&mut self, window: &Window, started: Instant, r: Result<u64>) {
        let end = Instant::now();
        let measured = started >= window.measure_from;
        if measured {
            self.last_end = Some(end);
        }
        match r {
            Ok(n) if measured => {
                self.latencies.push(end - started);
                self.events += n;
            }
            Ok(_) => {}
            Err(e) => {
                // Counted during warm-up too: any failure makes the figures suspect.
                self.errors += 1;
                self.first_error.get_or_insert_with(|| format!("{e:#}"));
                // Do not spin on a broken connection.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// The merged figures of one scenario.
pub(crate) struct Measured {
    pub(crate) latencies: Vec<Duration>,
    pub(crate) events: u64,
    pub(crate) errors: u64,
    pub(crate) first_error: Option<String>,
    pub(crate) elapsed: Duration,
    /// CPU over the nominal measured window, and the events completed per second in it.
    pub(crate) cpu: Option<CpuUse>,
}

impl Measured {
    pub(crate) async fn collect(
        window: Window,
        workers: Vec<JoinHandle<Recorder>>,
    ) -> Result<Measured> {
        let cpu = sample_cpu(window);
        let mut m = Measured {
            latencies: Vec::new(),
            events: 0,
            errors: 0,
            first_error: None,
            elapsed: Duration::ZERO,
            cpu: None,
        };
        let mut last_end = window.until;
        for w in workers {
            let r = w.await.context("a worker panicked")?;
            m.latencies.extend(r.latencies);
            m.events += r.events;
            m.errors += r.errors;
            if m.first_error.is_none() {
                m.first_error = r.first_error;
            }
            if let Some(e) = r.last_end {
                last_end = last_end.max(e);
            }
        }
        m.latencies.sort_unstable();
        m.elapsed = last_end.saturating_duration_since(window.measure_from);
        m.cpu = cpu.await.ok().flatten();
        Ok(m)
    }

    /// One scenario's slices as one measurement: every latency and event, the measured times
    /// added up, the CPU of all slices (only if every slice has it).
    pub(crate) fn combine(parts: Vec<Measured>) -> Measured {
        let cpus: Vec<_> = parts.iter().filter_map(|m| m.cpu).collect();
        let cpu = (cpus.len() == parts.len())
            .then(|| CpuUse::sum(&cpus))
            .flatten();
        let mut all = Measured {
            latencies: Vec::new(),
            events: 0,
            errors: 0,
            first_error: None,
            elapsed: Duration::ZERO,
            cpu,
        };
        for m in parts {
            all.latencies.extend(m.latencies);
            all.events += m.events;
            all.errors += m.errors;
            all.first_error = all.first_error.or(m.first_error);
            all.elapsed += m.elapsed;
        }
        all.latencies.sort_unstable();
        all
    }

    pub(crate) fn events_per_sec(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub(crate) fn p(&self, q: f64) -> f64 {
        percentile_ms(&self.latencies, q)
    }
}

/// Nearest-rank percentile of sorted durations, in milliseconds.
pub(crate) fn percentile_ms(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    let i = rank.clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

// ---------------------------------------------------------------------------------------------
// The events: one generator for the gRPC scenarios and the baselines, so rows are the same.

pub(crate) fn new_event(worker: usize, seq: u64) -> NewEvent {
    NewEvent {
        name: "order.created".into(),
        data: format!(
            r#"{{"order_id":{seq},"customer":"c{worker}","amount_cents":1999,"currency":"EUR","items":[{{"sku":"sku-1","qty":2}}]}}"#
        ),
        source: "er-loadgen".into(),
        user_id: format!("user-{worker}"),
        trace_key: format!("w{worker}-{seq}"),
        context: HashMap::from([("ip_address".to_owned(), "127.0.0.1".to_owned())]),
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Scenarios.

/// Durable PublishEvents of `per_request` events, `concurrency` requests in flight; with
/// `keyed`, every event carries an idempotency key never used before (`<run>-<worker>-<seq>`,
/// `<run>` the call's start in nanoseconds, so slices of one run never repeat a key).
pub(crate) async fn publish(
    plan: &Plan,
    t: &Target,
    topic: &str,
    per_request: usize,
    keyed: bool,
) -> Result<Measured> {
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let window = Window::new(plan);
    let mut workers = Vec::with_capacity(plan.concurrency);
    for w in 0..plan.concurrency {
        let mut client = t.client(w);
        let auth = t.auth.clone();
        let topic = topic.to_owned();
        workers.push(t.spawn(w, async move {
            let mut rec = Recorder::default();
            let mut seq = 0u64;
            while let Some(started) = window.next() {
                let events: Vec<NewEvent> = (0..per_request)
                    .map(|_| {
                        seq += 1;
                        let mut e = new_event(w, seq);
                        if keyed {
                            e.idempotency_key = format!("{run}-{w}-{seq}");
                        }
                        e
                    })
                    .collect();
                let req = PublishEventsRequest {
                    topic: topic.clone(),
                    events,
                    durable: true,
                    ..Default::default()
                };
                let r = match client.publish_events(authed(&auth, req)).await {
                    Ok(resp) => {
                        let stored = resp.into_inner().events.len();
                        if stored == per_request {
                            Ok(stored as u64)
                        } else {
                            Err(anyhow!("stored {stored} of {per_request} events"))
                        }
                    }
                    Err(s) => Err(anyhow!("PublishEvents: {:?}: {}", s.code(), s.message())),
                };
                rec.record(&window, started, r).await;
            }
            rec
        }));
    }
    Measured::collect(window, workers).await
}

/// PullEvents in batches of 1000, each client walking forward from its own starting point and
/// wrapping around at the end.
pub(crate) async fn pull_walk(plan: &Plan, t: &Target, topic: &str, last: i64) -> Result<Measured> {
    let window = Window::new(plan);
    let mut workers = Vec::with_capacity(plan.concurrency);
    for w in 0..plan.concurrency {
        let mut client = t.client(w);
        let auth = t.auth.clone();
        let topic = topic.to_owned();
        let start = last * w as i64 / plan.concurrency as i64;
        workers.push(t.spawn(w, async move {
            let mut rec = Recorder::default();
            let mut offset = i32::try_from(start).unwrap_or(0);
            while let Some(started) = window.next() {
                let req = PullEventsRequest {
                    topic: topic.clone(),
                    batch_size: PULL_BATCH,
                    offset,
                    filters: vec![],
                    offset64: None,
                };
                let r = match client.pull_events(authed(&auth, req)).await {
                    Ok(resp) => {
                        let b = resp.into_inner();
                        offset = b.next_offset; // 0 at the end: wrap around
                        Ok(b.events.len() as u64)
                    }
                    Err(s) => Err(anyhow!("PullEvents: {:?}: {}", s.code(), s.message())),
                };
                rec.record(&window, started, r).await;
            }
            rec
        }));
    }
    Measured::collect(window, workers).await
}

/// Latencies of single pulls (one at a time) at each position, taking turns.
pub(crate) async fn point_pulls(
    t: &Target,
    topic: &str,
    positions: &[i64],
) -> Result<Vec<Vec<Duration>>> {
    let mut client = t.client(0);
    let positions = positions
        .iter()
        .map(|&p| i32::try_from(p).context("offset beyond the wire's int32"))
        .collect::<Result<Vec<_>>>()?;
    let mut lat = vec![Vec::new(); positions.len()];
    for i in 0..(POINT_PULLS + 5) {
        for (&offset, out) in positions.iter().zip(lat.iter_mut()) {
            let req = PullEventsRequest {
                topic: topic.into(),
                batch_size: PULL_BATCH,
                offset,
                filters: vec![],
                offset64: None,
            };
            let started = Instant::now();
            let b = client
                .pull_events(t.request(req))
                .await
                .context("PullEvents")?
                .into_inner();
            let took = started.elapsed();
            if b.events.len() != PULL_BATCH as usize {
                bail!(
                    "pull at offset {offset} returned {} events, expected {PULL_BATCH}",
                    b.events.len()
                );
            }
            if i >= 5 {
                out.push(took); // the first five of each are warm-up
            }
        }
    }
    for l in &mut lat {
        l.sort_unstable();
    }
    Ok(lat)
}
