//! The publisher of `er-live-bench --storm`: the topic's durable history, written before the
//! clients join, and a steady stream of durable events while they move, published on a node of
//! their own so that neither the drained node nor the one the clients move to carries them.
//!
//! The steady publisher runs on its own thread and runtime with its own connection (as the
//! latency run's does): a producer is not one of the websocket clients, and a thousand woken
//! client tasks must not delay its requests. Each acknowledgement raises the shared head (the
//! highest offset known committed), which a resuming client reads to know what it has to be
//! pushed before it has caught up.

use crate::live_clients::now_micros;
use anyhow::{Context, Result};
use eventrelay::proto::{self, NewEvent};
use eventrelay_testkit::authed;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Events per request while writing the history.
const HISTORY_BATCH: u64 = 1_000;
/// Requests of the steady publisher in flight at once.
const IN_FLIGHT: usize = 64;

/// One bench event: the publish time, padded with `bytes` of filler (never an `"offset"` key,
/// so the clients find the event's own offset first).
fn event(i: u64, bytes: usize) -> NewEvent {
    NewEvent {
        name: format!("s{i}"),
        data: format!("{{\"t\":{},\"p\":\"{}\"}}", now_micros(), "x".repeat(bytes)),
        ..Default::default()
    }
}

/// Publishes `n` durable events to topic `bench` in requests of [`HISTORY_BATCH`]; returns the
/// topic's last offset.
pub async fn history(grpc: SocketAddr, admin: &str, n: u64, bytes: usize) -> Result<i64> {
    let mut c = eventrelay_testkit::connect(grpc).await?;
    let (mut done, mut head) = (0, 0);
    while done < n {
        let k = HISTORY_BATCH.min(n - done);
        let r = proto::PublishEventsRequest {
            topic: "bench".into(),
            events: (done..done + k).map(|i| event(i, bytes)).collect(),
            durable: true,
            ..Default::default()
        };
        let stored = c.publish_events(authed(admin, r)).await?.into_inner();
        head = stored
            .events
            .iter()
            .map(|e| i64::from(e.offset))
            .max()
            .unwrap_or(head);
        done += k;
    }
    Ok(head)
}

/// The steady publisher, running until [`Steady::finish`].
pub struct Steady {
    stop: CancellationToken,
    done: tokio::sync::oneshot::Receiver<Result<(u64, u64)>>,
}

impl Steady {
    /// Starts publishing one durable event per request, `rate` requests per second, raising
    /// `head` with every acknowledgement.
    pub fn start(
        grpc: SocketAddr,
        admin: &str,
        rate: u64,
        bytes: usize,
        head: Arc<AtomicI64>,
    ) -> Steady {
        let (stop, admin) = (CancellationToken::new(), admin.to_owned());
        let (tx, done) = tokio::sync::oneshot::channel();
        let until = stop.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            let result = match rt {
                Ok(rt) => rt.block_on(steady(grpc, admin, rate, bytes, head, until)),
                Err(e) => Err(e.into()),
            };
            let _ = tx.send(result);
        });
        Steady { stop, done }
    }

    /// Stops and waits for the requests in flight; returns the events published and the
    /// requests that failed.
    pub async fn finish(self) -> Result<(u64, u64)> {
        self.stop.cancel();
        self.done.await.context("publisher thread ended")?
    }
}

async fn steady(
    grpc: SocketAddr,
    admin: String,
    rate: u64,
    bytes: usize,
    head: Arc<AtomicI64>,
    stop: CancellationToken,
) -> Result<(u64, u64)> {
    let grpc = eventrelay_testkit::connect(grpc).await?;
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
    let limit = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let mut tasks = tokio::task::JoinSet::new();
    let failed = Arc::new(AtomicU64::new(0));
    let mut i = 0u64;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let permit = limit.clone().acquire_owned().await?;
        let (mut c, admin, head) = (grpc.clone(), admin.clone(), head.clone());
        let failed = failed.clone();
        let r = proto::PublishEventsRequest {
            topic: "bench".into(),
            events: vec![event(i, bytes)],
            durable: true,
            ..Default::default()
        };
        i += 1;
        tasks.spawn(async move {
            let stored = c.publish_events(authed(&admin, r)).await;
            drop(permit);
            let top = stored
                .ok()
                .and_then(|s| s.into_inner().events.first().map(|e| i64::from(e.offset)));
            if let Some(top) = top {
                head.fetch_max(top, Ordering::Relaxed);
            } else {
                failed.fetch_add(1, Ordering::Relaxed);
            }
        });
        // Finished requests are collected as they go, so the set stays small.
        while tasks.try_join_next().is_some() {}
    }
    tasks.join_all().await;
    let failed = failed.load(Ordering::Relaxed);
    Ok((i - failed, failed))
}
