//! Calm rollouts: when each long-lived connection (websocket, gRPC stream, SSE stream) of a
//! draining node ends, when long-lived websockets are recycled, and the tracking that lets the
//! node wait for its websockets before it closes its pool.
//!
//! Closing every client at the instant SIGTERM arrives makes them all reconnect, and replay
//! from Postgres, at the same moment on the remaining nodes. So each connection draws a slot
//! in the spread window when it opens, keeps serving while the node drains, and closes when
//! its slot comes. Recycling by age (`ER_WS_MAX_CONNECTION_AGE_SECONDS`) draws each socket's
//! age between 80 % and 100 % of the setting, so sockets opened together do not close
//! together either.

use rand::Rng;
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tokio_util::task::task_tracker::TrackedFuture;

/// The hint long-lived connections are closed with when their node drains.
pub const DRAINING: &str = "server shutting down: reconnect, resuming with after_offset";

/// The drain of one node.
#[derive(Clone)]
pub struct Drain {
    stop: CancellationToken,
    started: Arc<OnceLock<Instant>>,
    spread: Duration,
    max_age: Option<Duration>,
    sockets: TaskTracker,
}

/// Where in the spread window one connection closes.
#[derive(Clone, Copy, Debug)]
pub struct Slot(Duration);

impl Drain {
    /// A drain spreading closes over `spread`, recycling websockets after about `max_age`.
    pub fn new(spread: Duration, max_age: Option<Duration>) -> Drain {
        Drain {
            stop: CancellationToken::new(),
            started: Arc::default(),
            spread,
            max_age,
            sockets: TaskTracker::new(),
        }
    }

    /// Starts the drain: every connection's slot counts from now.
    pub fn begin(&self) {
        self.started.get_or_init(Instant::now);
        self.stop.cancel();
    }

    /// Cancelled when the drain begins (for what ends at once, like the UI's live tail).
    pub fn stopping(&self) -> &CancellationToken {
        &self.stop
    }

    /// A slot for a connection opening now.
    pub fn slot(&self) -> Slot {
        if self.spread.is_zero() {
            return Slot(Duration::ZERO);
        }
        Slot(rand::rng().random_range(Duration::ZERO..self.spread))
    }

    /// Resolves when the drain has begun and this connection's slot has come.
    pub async fn turn(&self, slot: Slot) {
        self.stop.cancelled().await;
        let started = *self.started.get_or_init(Instant::now);
        tokio::time::sleep_until(started + slot.0).await;
    }

    /// How long a websocket opening now may live; `None` when sockets are not recycled.
    pub fn lifetime(&self) -> Option<Duration> {
        self.max_age
            .map(|age| age.mul_f64(rand::rng().random_range(0.8..=1.0)))
    }

    /// Runs a websocket's task so that [`Drain::sockets_closed`] waits for it.
    pub fn track<F: Future>(&self, f: F) -> TrackedFuture<F> {
        self.sockets.track_future(f)
    }

    /// Resolves once every tracked websocket has ended (call after [`Drain::begin`]).
    pub async fn sockets_closed(&self) {
        self.sockets.close();
        self.sockets.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn turns_wait_for_the_drain_and_then_for_their_slot() {
        let d = Drain::new(Duration::from_secs(10), None);
        let (early, late) = (Slot(Duration::from_secs(1)), Slot(Duration::from_secs(9)));
        let t0 = Instant::now();
        let waiter = {
            let d = d.clone();
            tokio::spawn(async move {
                d.turn(early).await;
                let a = Instant::now();
                d.turn(late).await;
                (a, Instant::now())
            })
        };
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!waiter.is_finished(), "a turn came before the drain began");
        d.begin();
        let (a, b) = waiter.await.unwrap();
        assert_eq!(
            (a - t0, b - t0),
            (Duration::from_secs(6), Duration::from_secs(14))
        );
        for _ in 0..100 {
            assert!(d.slot().0 < Duration::from_secs(10));
        }
        assert_eq!(Drain::new(Duration::ZERO, None).slot().0, Duration::ZERO);
    }

    #[test]
    fn lifetimes_are_drawn_below_the_maximum_age() {
        assert!(Drain::new(Duration::ZERO, None).lifetime().is_none());
        let d = Drain::new(Duration::ZERO, Some(Duration::from_secs(100)));
        let ages: Vec<Duration> = (0..200).filter_map(|_| d.lifetime()).collect();
        assert!(ages.iter().all(|a| (80..=100).contains(&a.as_secs())));
        assert!(ages.iter().any(|a| *a != ages[0]), "no jitter: {ages:?}");
    }
}
