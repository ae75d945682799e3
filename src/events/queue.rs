//! A writer lane's queue: the publish requests it has received and not yet launched, and how
//! the next transaction's batch is cut from them (at most [`MAX_BATCH_EVENTS`] events, at
//! least one request). The lane itself is in `writer.rs`.

use super::handoff::{Mailbox, Reply};
use super::model::ValidEvent;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::{Notify, mpsc};

/// Most events stored in one transaction.
pub(super) const MAX_BATCH_EVENTS: usize = 5_000;

/// One publish request waiting for its lane.
pub(super) struct Job {
    pub(super) identifier: String,
    pub(super) events: Vec<ValidEvent>,
    pub(super) reply: Reply,
    /// The requester's thread's mailbox, when it has one (see `handoff.rs`).
    pub(super) home: Option<Arc<Mailbox>>,
}

/// Events sent to a lane that the lane has not taken yet, counted by its senders. While a
/// transaction runs, the lane does not listen to its channel (each message would wake the
/// writer thread, for nothing: the requests wait for the transaction's end anyway); it is
/// woken only when this count reaches the size worth a second transaction.
pub(super) struct Waiting {
    events: AtomicUsize,
    enough: Notify,
    threshold: usize,
}

impl Waiting {
    pub(super) fn new(threshold: usize) -> Self {
        Waiting {
            events: AtomicUsize::new(0),
            enough: Notify::new(),
            threshold,
        }
    }

    /// A sender is about to send `n` events.
    pub(super) fn add(&self, n: usize) {
        let before = self.events.fetch_add(n, Ordering::SeqCst);
        if before < self.threshold && before + n >= self.threshold {
            self.enough.notify_one();
        }
    }

    /// Events sent and not taken yet.
    pub(super) fn events(&self) -> usize {
        self.events.load(Ordering::SeqCst)
    }

    /// Resolves once [`Waiting::add`] has crossed the threshold since it last resolved.
    pub(super) async fn enough(&self) {
        self.enough.notified().await
    }

    fn taken(&self, n: usize) {
        // Saturating: a job pushed without a count (tests) must not wrap it.
        let _ = self
            .events
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |e| {
                Some(e.saturating_sub(n))
            });
    }
}

/// The requests a lane has received and not yet launched, and their events' count.
pub(super) struct Queue {
    pub(super) jobs: Vec<Job>,
    pub(super) events: usize,
    pub(super) waiting: Arc<Waiting>,
}

impl Queue {
    pub(super) fn new(waiting: Arc<Waiting>) -> Self {
        Queue {
            jobs: Vec::new(),
            events: 0,
            waiting,
        }
    }

    /// Takes a job received from the lane's channel.
    pub(super) fn push(&mut self, job: Job) {
        self.waiting.taken(job.events.len());
        self.events += job.events.len();
        self.jobs.push(job);
    }

    /// Takes what is waiting in `rx`, up to [`MAX_BATCH_EVENTS`]; false once `rx` is closed
    /// (after taking what was sent before the close).
    pub(super) fn take_from(&mut self, rx: &mut mpsc::Receiver<Job>) -> bool {
        while self.events < MAX_BATCH_EVENTS {
            match rx.try_recv() {
                Ok(job) => self.push(job),
                Err(mpsc::error::TryRecvError::Empty) => return true,
                Err(mpsc::error::TryRecvError::Disconnected) => return false,
            }
        }
        true
    }

    /// The first jobs holding up to [`MAX_BATCH_EVENTS`] events (at least one job).
    pub(super) fn take_batch(&mut self) -> Vec<Job> {
        let mut size = 0;
        let mut n = 0;
        for job in self.jobs.iter() {
            if n > 0 && size + job.events.len() > MAX_BATCH_EVENTS {
                break;
            }
            size += job.events.len();
            n += 1;
        }
        self.events -= size;
        self.jobs.drain(..n).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(events: usize) -> Job {
        Job {
            identifier: String::new(),
            events: vec![super::super::model::tick(); events],
            reply: tokio::sync::oneshot::channel().0,
            home: None,
        }
    }

    #[test]
    fn take_from_drains_what_waits_and_notices_the_close() {
        let (tx, mut rx) = mpsc::channel(8);
        let mut q = Queue::new(Arc::new(Waiting::new(100)));
        for n in [1, 2, 3] {
            assert!(tx.try_send(job(n)).is_ok(), "room");
        }
        assert!(q.take_from(&mut rx), "open while a sender lives");
        assert_eq!((q.jobs.len(), q.events), (3, 6));
        assert!(tx.try_send(job(4)).is_ok(), "room");
        drop(tx);
        // Closed: what was sent before the close is still taken, then the close is seen.
        assert!(!q.take_from(&mut rx), "closed and drained");
        assert_eq!((q.jobs.len(), q.events), (4, 10));
    }

    #[test]
    fn batches_stop_at_the_limit_but_always_take_one_request() {
        let mut q = Queue::new(Arc::new(Waiting::new(100)));
        q.push(job(MAX_BATCH_EVENTS - 1));
        q.push(job(2));
        q.push(job(MAX_BATCH_EVENTS + 5));
        let first = q.take_batch();
        assert_eq!(first.len(), 1, "the second request would pass the limit");
        assert_eq!(q.events, 2 + MAX_BATCH_EVENTS + 5);
        let second = q.take_batch();
        assert_eq!(second.len(), 1);
        // A request larger than the limit on its own still goes, alone.
        let third = q.take_batch();
        assert_eq!(third[0].events.len(), MAX_BATCH_EVENTS + 5);
        assert_eq!((q.jobs.len(), q.events), (0, 0));
    }

    #[tokio::test]
    async fn waiting_wakes_the_lane_only_when_the_threshold_is_crossed() {
        use futures::FutureExt;
        let w = Waiting::new(10);
        w.add(4);
        w.add(5);
        assert!(w.enough().now_or_never().is_none(), "9 of 10: no wake-up");
        w.add(3);
        assert_eq!(w.events(), 12);
        assert!(w.enough().now_or_never().is_some(), "crossed: one wake-up");
        w.add(1);
        assert!(
            w.enough().now_or_never().is_none(),
            "already past: none again"
        );
        // The lane takes the jobs: the count falls (never below zero) and can cross again.
        let mut q = Queue::new(Arc::new(w));
        q.push(job(8));
        q.push(job(8));
        assert_eq!(q.waiting.events(), 0);
        q.waiting.add(10);
        assert!(q.waiting.enough().now_or_never().is_some());
    }
}
