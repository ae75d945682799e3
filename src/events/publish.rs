//! Publishing: one request, as every transport hands it over ([`Publish`]), validated,
//! authorized, dead-lettered where it must be, written, announced on the bus, and answered
//! ([`Published`]) with what became of each event: stored, stored before under its
//! idempotency key (a duplicate), or dead-lettered. `all_or_nothing` turns "dead-letter the
//! faulty events, store the rest" into "store nothing, say why".

use super::guard::Guard;
use super::model::{Event, NewEvent, Refused, validate};
use super::queue::{Stored, WriteError};
use super::{Events, NO_TOPIC_MESSAGE};
use crate::auth::Principal;
use crate::error::{Error, Result};
use crate::topics::TopicRef;

/// Refused events named in an `all_or_nothing` refusal at most; the rest are counted.
const MAX_NAMED: usize = 20;

/// A publish request, transport-neutral.
#[derive(Clone, Debug, Default)]
pub struct Publish {
    /// `name` or `name:identifier`.
    pub topic: String,
    /// The events, in request order.
    pub events: Vec<NewEvent>,
    /// Store (and deliver) them; false: live only.
    pub durable: bool,
    /// Store nothing if any event would be dead-lettered.
    pub all_or_nothing: bool,
    /// Conditions on the topic (durable publishes only).
    pub guard: Option<Guard>,
}

/// What became of a request's events.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Published {
    /// Every event not dead-lettered, in request order; a duplicate carries the id and
    /// offset of the event stored before under its key.
    pub events: Vec<Event>,
    /// Request indexes (from 0) of the events whose key was stored before: nothing new
    /// was stored for them.
    pub duplicates: Vec<usize>,
    /// Request indexes of the events sent to the dead-letter table (absent from `events`).
    pub dead_lettered: Vec<usize>,
}

impl Events {
    /// Publishes a request's events to its topic (`name` or `name:identifier`).
    ///
    /// Request-level faults (no events, too many, one too large, not allowed, malformed
    /// conditions) refuse the whole request and store nothing. Per-event faults (blank name,
    /// invalid JSON, bad time, overlong key) and an unknown topic send those events to the
    /// dead-letter table and leave them out of the answer, or, with `all_or_nothing`, refuse
    /// the request (INVALID_ARGUMENT naming each event) and store nothing at all. A missing
    /// or malformed topic dead-letters everything and answers INVALID_ARGUMENT, so the
    /// producer notices.
    #[tracing::instrument(skip(self, principal, req), fields(n = req.events.len()))]
    pub async fn publish(&self, principal: &Principal, req: Publish) -> Result<Published> {
        self.check_limits(&req.events)?;
        if !req.durable && req.guard.is_some() {
            return Err(Error::invalid(
                "expected_last_offset and producer_id apply to durable publishes only",
            ));
        }
        let topic = req.topic.as_str();
        let topic_ref = if topic.trim().is_empty() {
            Err(Error::invalid(NO_TOPIC_MESSAGE))
        } else {
            TopicRef::parse(topic)
        };
        let topic_ref = match topic_ref {
            Ok(t) => t,
            Err(e) => {
                principal.may_publish_somewhere()?;
                if !req.all_or_nothing {
                    let reason = e.to_string();
                    let refused: Vec<_> = req
                        .events
                        .into_iter()
                        .map(|ev| Refused::new(ev, reason.clone()))
                        .collect();
                    self.dead_letter(topic, &refused).await?;
                }
                return Err(e);
            }
        };
        principal.authorize_publish(&topic_ref)?;

        let mut valid = Vec::with_capacity(req.events.len());
        let mut indexes = Vec::with_capacity(req.events.len());
        let mut refused = Vec::new();
        let mut dead_lettered = Vec::new();
        for (i, e) in req.events.into_iter().enumerate() {
            match validate(e) {
                Ok(v) => {
                    valid.push(v);
                    indexes.push(i);
                }
                Err(r) => {
                    refused.push(*r);
                    dead_lettered.push(i);
                }
            }
        }
        if req.all_or_nothing && !refused.is_empty() {
            let reasons = refused.iter().map(|r| r.errors.join(", "));
            return Err(refusal(dead_lettered.iter().copied().zip(reasons)));
        }
        self.dead_letter(topic, &refused).await?;
        if valid.is_empty() {
            return Ok(Published {
                dead_lettered,
                ..Published::default()
            });
        }

        let name = &topic_ref.name;
        let identifier = topic_ref.identifier_str();
        let outcome = if req.durable {
            self.writer.write(name, identifier, valid, req.guard).await
        } else if self.topic_exists(name).await? {
            Ok(valid
                .into_iter()
                .map(|v| Stored {
                    event: Event::from_valid(v, name.as_str(), identifier, 0),
                    duplicate: false,
                })
                .collect())
        } else {
            Err(WriteError::TopicGone(valid))
        };
        match outcome {
            Ok(stored) => {
                // Duplicates were announced when their originals were stored.
                let new: Vec<Event> = stored
                    .iter()
                    .filter(|s| !s.duplicate)
                    .map(|s| s.event.clone())
                    .collect();
                if !new.is_empty() {
                    self.fanout.published(name.as_str(), new);
                }
                let duplicates = stored
                    .iter()
                    .zip(&indexes)
                    .filter(|(s, _)| s.duplicate)
                    .map(|(_, &i)| i)
                    .collect();
                Ok(Published {
                    events: stored.into_iter().map(|s| s.event).collect(),
                    duplicates,
                    dead_lettered,
                })
            }
            Err(WriteError::TopicGone(_)) if req.all_or_nothing => Err(refusal(
                indexes
                    .into_iter()
                    .map(|i| (i, "Topic not found".to_owned())),
            )),
            Err(WriteError::TopicGone(valid)) => {
                let refused: Vec<_> = valid
                    .into_iter()
                    .map(|v| Refused::new(v.event, "Topic not found"))
                    .collect();
                self.dead_letter(topic, &refused).await?;
                dead_lettered.extend(indexes);
                dead_lettered.sort_unstable();
                Ok(Published {
                    dead_lettered,
                    ..Published::default()
                })
            }
            Err(WriteError::Failed(e)) => Err(e),
        }
    }
}

/// The INVALID_ARGUMENT of an `all_or_nothing` request: each refused event by index and
/// reason (the first [`MAX_NAMED`], then how many more).
fn refusal(refused: impl ExactSizeIterator<Item = (usize, String)>) -> Error {
    let total = refused.len();
    let mut named: Vec<String> = refused
        .take(MAX_NAMED)
        .map(|(i, reason)| format!("event {i}: {reason}"))
        .collect();
    if total > MAX_NAMED {
        named.push(format!("and {} more", total - MAX_NAMED));
    }
    Error::invalid(format!(
        "all_or_nothing: nothing was stored; {}",
        named.join("; ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_name_events_and_count_the_rest() {
        let e = refusal([(1, "name can't be blank".to_owned())].into_iter());
        assert_eq!(
            e.to_string(),
            "all_or_nothing: nothing was stored; event 1: name can't be blank"
        );
        let many = (0..25).map(|i| (i, "x".to_owned())).collect::<Vec<_>>();
        let e = refusal(many.into_iter()).to_string();
        assert!(e.contains("event 19: x; and 5 more"), "{e}");
    }
}
