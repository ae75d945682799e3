//! Conditional publishes: `expected_last_offset` (optimistic concurrency) and producer
//! fencing (`producer_id` + `producer_epoch`). Such a request takes the slow path: its own
//! transaction, never shared with other requests, so a refusal fails nobody else. The
//! transaction locks the topic's `topic_offsets` row first, the lock every publisher of the
//! topic takes, checks the conditions under it, and stores the events in the same
//! transaction: between the check and the commit no other publish of the topic, on any
//! node, can move the topic's last offset or the producer's epoch.

use super::keyed::TOPIC_HALVES;
use crate::error::{Conflict, Error, Result};
use crate::topics::TopicName;
use sqlx::{AssertSqlSafe, PgConnection};

/// Longest producer id accepted, in bytes.
pub const MAX_PRODUCER_ID_BYTES: usize = 128;

/// What a conditional publish requires of its topic.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Guard {
    /// Store only if the topic's last offset is exactly this (0: nothing stored yet).
    pub expected_last_offset: Option<i64>,
    /// Store only if no higher epoch of this producer id has published to the topic.
    pub producer: Option<ProducerEpoch>,
}

impl Guard {
    /// Parses the request's conditions; `None` when it has none (the group-commit path).
    pub fn parse(
        expected_last_offset: Option<i64>,
        producer_id: &str,
        producer_epoch: i64,
    ) -> Result<Option<Guard>> {
        if expected_last_offset.is_some_and(|o| o < 0) {
            return Err(Error::invalid("expected_last_offset must not be negative"));
        }
        let producer = if producer_id.is_empty() {
            if producer_epoch != 0 {
                return Err(Error::invalid("producer_epoch needs a producer_id"));
            }
            None
        } else if producer_id.len() > MAX_PRODUCER_ID_BYTES || producer_id.contains('\0') {
            return Err(Error::invalid(format!(
                "producer_id must be at most {MAX_PRODUCER_ID_BYTES} bytes, without NUL"
            )));
        } else if producer_epoch < 0 {
            return Err(Error::invalid("producer_epoch must not be negative"));
        } else {
            Some(ProducerEpoch {
                id: producer_id.to_owned(),
                epoch: producer_epoch,
            })
        };
        let guard = Guard {
            expected_last_offset,
            producer,
        };
        Ok((guard != Guard::default()).then_some(guard))
    }
}

/// A producer id and the epoch it publishes with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProducerEpoch {
    /// Chosen by the producer; one per logical producer (shared by its replacements).
    pub id: String,
    /// Raised by each replacement; lower epochs are fenced off.
    pub epoch: i64,
}

/// Why a guarded transaction does not go on to store.
pub(super) enum Check {
    /// Conditions hold: store.
    Pass,
    /// The topic is gone.
    Gone,
    /// Refused: answer this.
    Refused(Error),
}

/// Locks `topic`'s offsets and checks `guard` in `tx`. `keys` are the hashes of the
/// request's idempotency keys (`insert::digest`, in halves) and `all_keyed` whether every
/// event has one: a retry of an acknowledged conditional publish finds the last offset moved
/// by its own first attempt, and is answered with the duplicates instead of a refusal when
/// all its keys are stored.
pub(super) async fn check(
    tx: &mut PgConnection,
    topic: &TopicName,
    guard: &Guard,
    keys: &(Vec<i64>, Vec<i64>),
    all_keyed: bool,
) -> Result<Check, sqlx::Error> {
    // The events table first, then the offsets row: the order of the plain statement and
    // of DeleteTopic, so neither waits for the other in a cycle.
    let locked = sqlx::query(AssertSqlSafe(format!(
        "LOCK TABLE ONLY {} IN ROW EXCLUSIVE MODE",
        topic.events_table()
    )))
    .execute(&mut *tx)
    .await;
    if let Err(e) = locked {
        return match crate::error::sqlstate(&e).as_deref() {
            Some(crate::error::UNDEFINED_TABLE) => Ok(Check::Gone),
            _ => Err(e),
        };
    }
    // Row-locks the topic's offsets (making the row if the topic never had one) and reads
    // its last offset, as of every commit before the lock was granted.
    let last: Option<i64> = sqlx::query_scalar(
        "INSERT INTO topic_offsets AS o (name, reserved, marked)
         SELECT t.name, t.last_offset, t.last_offset FROM topics t WHERE t.name = $1
         ON CONFLICT (name) DO UPDATE
             SET reserved = GREATEST(o.reserved, EXCLUDED.reserved),
                 marked = GREATEST(o.marked, EXCLUDED.marked)
         RETURNING o.reserved",
    )
    .bind(topic.as_str())
    .fetch_optional(&mut *tx)
    .await?;
    let Some(last) = last else {
        return Ok(Check::Gone);
    };
    if let Some(p) = &guard.producer {
        let kept: Option<i64> = sqlx::query_scalar(
            "INSERT INTO producer_epochs AS p (topic, producer_id, epoch) VALUES ($1, $2, $3)
             ON CONFLICT (topic, producer_id) DO UPDATE
                 SET epoch = EXCLUDED.epoch, updated_at = now()
                 WHERE p.epoch <= EXCLUDED.epoch
             RETURNING epoch",
        )
        .bind(topic.as_str())
        .bind(&p.id)
        .bind(p.epoch)
        .fetch_optional(&mut *tx)
        .await?;
        if kept.is_none() {
            let current: i64 = sqlx::query_scalar(
                "SELECT epoch FROM producer_epochs WHERE topic = $1 AND producer_id = $2",
            )
            .bind(topic.as_str())
            .bind(&p.id)
            .fetch_one(&mut *tx)
            .await?;
            return Ok(Check::Refused(Error::Conflict(Conflict::Fenced {
                producer_id: p.id.clone(),
                epoch: p.epoch,
                current,
            })));
        }
    }
    if let Some(expected) = guard.expected_last_offset
        && expected != last
    {
        if all_keyed && all_stored(tx, topic, keys).await? {
            return Ok(Check::Pass);
        }
        return Ok(Check::Refused(Error::Conflict(Conflict::LastOffset {
            expected,
            last,
        })));
    }
    Ok(Check::Pass)
}

/// Whether every one of `keys` (hashes, see `insert::digest`) is stored and unexpired in
/// `topic`.
async fn all_stored(
    tx: &mut PgConnection,
    topic: &TopicName,
    keys: &(Vec<i64>, Vec<i64>),
) -> Result<bool, sqlx::Error> {
    let stored: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
        "WITH topic AS (SELECT {TOPIC_HALVES} FROM topics WHERE name = $1)
         SELECT count(*) FROM topic p, UNNEST($2::int8[], $3::int8[]) k(h1, h2),
              idempotency_digests d
         WHERE d.digest_hi = k.h1 # p.hi AND d.digest_lo = k.h2 # p.lo
           AND d.expires_at > now()"
    )))
    .bind(topic.as_str())
    .bind(&keys.0)
    .bind(&keys.1)
    .fetch_one(&mut *tx)
    .await?;
    Ok(stored as usize == keys.0.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_parse() {
        assert_eq!(Guard::parse(None, "", 0).unwrap(), None);
        let g = Guard::parse(Some(0), "p", 3).unwrap().unwrap();
        assert_eq!(g.expected_last_offset, Some(0));
        assert_eq!(g.producer.unwrap().epoch, 3);
        assert!(Guard::parse(Some(-1), "", 0).is_err());
        assert!(Guard::parse(None, "", 2).is_err());
        assert!(Guard::parse(None, "p", -1).is_err());
        assert!(Guard::parse(None, &"x".repeat(200), 1).is_err());
    }
}
