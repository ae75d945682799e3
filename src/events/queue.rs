//! The writer's queue: the publish requests it has received and not yet stored, and how the
//! next transaction's batch is cut from them (at most [`MAX_BATCH_EVENTS`] events, at least one
//! request) and grouped by topic, with the conditional requests (a [`Guard`]) set apart for
//! transactions of their own. The writer itself is in `writer.rs`.

use super::guard::Guard;
use super::model::{Event, ValidEvent};
use crate::error::Error;
use crate::topics::TopicName;
use std::collections::BTreeMap;
use tokio::sync::{mpsc, oneshot};

/// Most events stored in one transaction.
pub(super) const MAX_BATCH_EVENTS: usize = 5_000;

/// An event as the writer answers it: stored now, or stored before under the same
/// idempotency key (`duplicate`, with the original's id and offset).
#[derive(Clone, Debug, PartialEq)]
pub struct Stored {
    /// The event; a duplicate's id and offset are the original's.
    pub event: Event,
    /// Whether its key was stored before (inside the window) and nothing was stored now.
    pub duplicate: bool,
}

/// Why a write did not store the events.
#[derive(Debug)]
pub enum WriteError {
    /// The topic does not exist (any more); the events come back for the dead-letter table.
    TopicGone(Vec<ValidEvent>),
    /// Anything else.
    Failed(Error),
}

/// Where a request's answer goes.
pub(super) type Reply = oneshot::Sender<Result<Vec<Stored>, WriteError>>;

/// One publish request waiting for the writer.
pub(super) struct Job {
    pub(super) topic: TopicName,
    pub(super) identifier: String,
    pub(super) events: Vec<ValidEvent>,
    /// Conditions: the request takes a transaction of its own.
    pub(super) guard: Option<Guard>,
    pub(super) reply: Reply,
}

/// A batch's requests by topic, topics in name order (the order their offset rows are
/// locked in), each topic's requests in arrival order.
pub(super) type Groups = Vec<(TopicName, Vec<Job>)>;

/// The requests received and not yet stored, and their events' count.
#[derive(Default)]
pub(super) struct Queue {
    jobs: Vec<Job>,
    events: usize,
}

impl Queue {
    pub(super) fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// Takes a job received from the writer's channel.
    pub(super) fn push(&mut self, job: Job) {
        self.events += job.events.len();
        self.jobs.push(job);
    }

    /// Takes what is waiting in `rx`, up to [`MAX_BATCH_EVENTS`].
    pub(super) fn take_from(&mut self, rx: &mut mpsc::Receiver<Job>) {
        while self.events < MAX_BATCH_EVENTS {
            match rx.try_recv() {
                Ok(job) => self.push(job),
                Err(_) => return,
            }
        }
    }

    /// The first jobs holding up to [`MAX_BATCH_EVENTS`] events (at least one job): those
    /// without conditions by topic, and the conditional ones in arrival order.
    pub(super) fn take_batch(&mut self) -> (Groups, Vec<Job>) {
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
        let mut groups = BTreeMap::<TopicName, Vec<Job>>::new();
        let mut guarded = Vec::new();
        for job in self.jobs.drain(..n) {
            if job.guard.is_some() {
                guarded.push(job);
            } else {
                groups.entry(job.topic.clone()).or_default().push(job);
            }
        }
        (groups.into_iter().collect(), guarded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(topic: &str, events: usize) -> Job {
        Job {
            topic: TopicName::parse(topic).expect("valid name"),
            identifier: String::new(),
            events: vec![super::super::model::tick(); events],
            guard: None,
            reply: oneshot::channel().0,
        }
    }

    fn sizes(groups: &Groups) -> Vec<(&str, Vec<usize>)> {
        groups
            .iter()
            .map(|(t, jobs)| (t.as_str(), jobs.iter().map(|j| j.events.len()).collect()))
            .collect()
    }

    #[test]
    fn take_from_drains_what_waits() {
        let (tx, mut rx) = mpsc::channel(8);
        let mut q = Queue::default();
        for n in [1, 2, 3] {
            assert!(tx.try_send(job("a", n)).is_ok(), "room");
        }
        q.take_from(&mut rx);
        assert_eq!((q.jobs.len(), q.events), (3, 6));
    }

    #[test]
    fn batches_group_topics_in_name_order_and_keep_each_topics_arrival_order() {
        let mut q = Queue::default();
        for (t, n) in [("b", 1), ("a", 2), ("b", 3), ("a_1", 4), ("a", 5)] {
            q.push(job(t, n));
        }
        let (groups, _) = q.take_batch();
        // Byte order, as Postgres' "C" collation sorts: '_' (0x5f) before the letters.
        assert_eq!(
            sizes(&groups),
            vec![("a", vec![2, 5]), ("a_1", vec![4]), ("b", vec![1, 3])]
        );
        assert!(q.is_empty());
    }

    #[test]
    fn batches_stop_at_the_limit_but_always_take_one_request() {
        let mut q = Queue::default();
        q.push(job("a", MAX_BATCH_EVENTS - 1));
        q.push(job("b", 2));
        q.push(job("a", MAX_BATCH_EVENTS + 5));
        let (first, _) = q.take_batch();
        assert_eq!(sizes(&first), vec![("a", vec![MAX_BATCH_EVENTS - 1])]);
        assert_eq!(q.events, 2 + MAX_BATCH_EVENTS + 5);
        let (second, _) = q.take_batch();
        assert_eq!(sizes(&second), vec![("b", vec![2])]);
        // A request larger than the limit on its own still goes, alone.
        let (third, _) = q.take_batch();
        assert_eq!(sizes(&third), vec![("a", vec![MAX_BATCH_EVENTS + 5])]);
        assert_eq!((q.jobs.len(), q.events), (0, 0));
    }
}
