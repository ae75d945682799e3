//! Answering the requests of a writer's transaction: each request's events numbered as the
//! statement stored them (`answer`), or the error that stopped them (`settle`), through the
//! requests' oneshots. The writer itself is in `writer.rs`.

use super::keyed::Outcome;
use super::model::Event;
use super::queue::Job;
use super::queue::{Stored, WriteError};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::topics::TopicName;
use std::collections::HashMap;

/// Answers a topic's requests with the outcome of their transaction.
pub(super) fn settle(
    topic: &TopicName,
    jobs: Vec<Job>,
    result: Result<Option<Outcome>>,
    metrics: &Metrics,
) {
    match result {
        Ok(Some(outcome)) => {
            let stored = jobs.iter().map(|j| j.events.len()).sum::<usize>();
            metrics.committed(topic.as_str(), stored);
            answer(topic, jobs, outcome)
        }
        // No row reserved: the topic is gone (dropped, or dropped and made again later).
        Ok(None) | Err(Error::NotFound(_)) => {
            for job in jobs {
                let _ = job.reply.send(Err(WriteError::TopicGone(job.events)));
            }
        }
        // A request stored alone gets its own error; a batch's requests get copies.
        Err(e) if jobs.len() == 1 => {
            if let Some(job) = jobs.into_iter().next() {
                let _ = job.reply.send(Err(WriteError::Failed(e)));
            }
        }
        Err(e) => {
            for job in jobs {
                let _ = job.reply.send(Err(WriteError::Failed(clone_error(&e))));
            }
        }
    }
}

/// Numbers the events of a topic's requests as their statement stored them: rows in order
/// from the first offset, except rows whose key was stored before (the original's id and
/// offset) and a key's second occurrence in the batch (answered like its first).
fn answer(topic: &TopicName, jobs: Vec<Job>, outcome: Outcome) {
    let mut offset = outcome.first;
    let mut row = 0;
    // Keys met in this batch: the id and offset that answer them.
    let mut keys: HashMap<String, (uuid::Uuid, i64)> = HashMap::new();
    for job in jobs {
        let events = job
            .events
            .into_iter()
            .map(|v| {
                let key = v.key().map(str::to_owned);
                let known = key.as_ref().and_then(|k| keys.get(k).copied());
                let (id, at, duplicate) = match known {
                    Some((id, at)) => (id, at, true),
                    None => {
                        let before = outcome.stored_before.get(&row).copied();
                        row += 1;
                        let (id, at) = before.unwrap_or_else(|| {
                            offset += 1;
                            (v.id, offset - 1)
                        });
                        if let Some(k) = key {
                            keys.insert(k, (id, at));
                        }
                        (id, at, before.is_some())
                    }
                };
                let mut event = Event::from_valid(v, topic.as_str(), &job.identifier, at);
                event.id = id;
                Stored { event, duplicate }
            })
            .collect();
        // The requester may have gone away (client cancelled); the events are stored anyway.
        let _ = job.reply.send(Ok(events));
    }
}

fn clone_error(e: &Error) -> Error {
    match e {
        Error::Unavailable(m) => Error::Unavailable(m.clone()),
        Error::Conflict(c) => Error::Conflict(c.clone()),
        other => Error::Internal(anyhow::anyhow!("batched write failed: {other}")),
    }
}
