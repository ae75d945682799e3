//! One subscription's delivery worker. [`Worker::try_deliver_next`] is the single step (tests
//! drive it directly): read the cursor, fetch the next event, POST it, record the attempt and
//! move the cursor under the fencing epoch. [`Worker::run`] is the loop around it, woken by new
//! events of the topic and, as a backstop, by a slow poll. A cursor that retention has passed
//! (the topic drops undelivered events, or a race with a reset) records the skipped range
//! and moves on, or pauses the subscription, as the topic says.
//!
//! Files: this one (the worker, its step and its loop) and `outcome.rs` (what an attempt's
//! outcome, or a cursor behind retention, means for the record, the cursor and the next step).

mod outcome;

use super::settings::DeliverySettings;
use super::signing::SigningKey;
use super::store::{self, AttemptRecord, CursorState, CursorUpdate};
use super::{Delivery, Lease};
use crate::error::{Error, Result};
use crate::events::{Event, read_after};
use crate::subscriptions::Subscription;
use crate::topics::TopicRef;
use chrono::Utc;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use std::collections::VecDeque;
use std::time::{Duration, Instant};
use tokio::sync::broadcast::error::RecvError;

/// Events read ahead per query.
const READ_AHEAD: i64 = 100;
/// Longest a worker goes on its own writes without re-reading its cursor row.
const STATE_REUSE: Duration = Duration::from_millis(200);
/// Pause after an unexpected error (a database hiccup) before the next step.
const ERROR_BACKOFF: Duration = Duration::from_secs(1);

/// Why a worker stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The epoch moved on: another owner took over, or the cursor was reset.
    Fenced,
    /// The subscription is paused (by an operator, a 410, or exhaustion).
    Paused,
    /// The subscription was deleted.
    Deleted,
    /// The subscription's settings changed: restart with the new ones.
    Changed,
}

/// What one step did, and when the next one is due.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// An event was acknowledged (or given up on): the cursor moved; go on at once.
    Advanced,
    /// The attempt failed; the next one is due after this delay.
    Retry(Duration),
    /// Not yet: a retry or the rate limit is due after this delay.
    Wait(Duration),
    /// No event after the cursor.
    Idle,
    /// The worker must stop.
    Stop(StopReason),
}

/// The delivery worker of one subscription under one ownership epoch.
pub struct Worker {
    delivery: Delivery,
    subscription: Subscription,
    topic: TopicRef,
    epoch: i64,
    settings: DeliverySettings,
    key: SigningKey,
    fixed_headers: HeaderMap,
    buffer: VecDeque<Event>,
    last_sent: Option<Instant>,
    seen_update: Option<chrono::DateTime<Utc>>,
    // The state this worker itself just wrote, and when it last read the row, so a busy
    // subscription reads the row at most every STATE_REUSE instead of before every event.
    known: Option<(CursorState, Instant)>,
}

impl Worker {
    /// A worker for `subscription`, acquired under `epoch`.
    pub fn new(delivery: Delivery, subscription: Subscription, epoch: i64) -> Result<Self> {
        let topic = subscription.topic.clone();
        let (settings, problems) =
            DeliverySettings::for_subscription(delivery.defaults(), &subscription.config);
        for p in problems {
            tracing::warn!(subscription = %subscription.id, "ignoring bad config value: {p}");
        }
        let key = SigningKey::parse(&subscription.signing_secret)?;
        let mut fixed_headers = HeaderMap::new();
        fixed_headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (name, value) in [
            ("x-event-relay-subscription-id", subscription.id.to_string()),
            (
                "x-event-relay-subscription-topic-name",
                topic.name.to_string(),
            ),
            (
                "x-event-relay-subscription-topic-identifier",
                topic.identifier_str().to_owned(),
            ),
        ] {
            fixed_headers.insert(name, header_value(&value)?);
        }
        Ok(Worker {
            delivery,
            subscription,
            topic,
            epoch,
            settings,
            key,
            fixed_headers,
            buffer: VecDeque::new(),
            last_sent: None,
            seen_update: None,
            known: None,
        })
    }

    /// The effective settings.
    pub fn settings(&self) -> &DeliverySettings {
        &self.settings
    }

    /// One step: deliver (or retry) the event after the cursor, if one is due.
    #[tracing::instrument(skip(self), fields(subscription = %self.subscription.id, epoch = self.epoch))]
    pub async fn try_deliver_next(&mut self) -> Result<Step> {
        let (st, read_at) = match self.known.take() {
            Some((st, read_at)) if read_at.elapsed() < STATE_REUSE => (st, read_at),
            _ => match store::state(self.delivery.pool(), self.subscription.id).await? {
                Some(st) => (st, Instant::now()),
                None => return Ok(Step::Stop(StopReason::Deleted)),
            },
        };
        if st.epoch != self.epoch {
            return Ok(Step::Stop(StopReason::Fenced));
        }
        if st.paused {
            return Ok(Step::Stop(StopReason::Paused));
        }
        if *self.seen_update.get_or_insert(st.subscription_updated_at) != st.subscription_updated_at
        {
            return Ok(Step::Stop(StopReason::Changed));
        }
        if st.delivered_offset + 1 < st.first_offset {
            return self.behind_retention(&st).await;
        }
        if let Some(left) = st
            .next_attempt_at
            .and_then(|at| (at - Utc::now()).to_std().ok())
        {
            return Ok(Step::Wait(left));
        }
        if let (Some(min), Some(last)) = (self.settings.min_interval(), self.last_sent)
            && last.elapsed() < min
        {
            return Ok(Step::Wait(min - last.elapsed()));
        }
        let Some(event) = self.next_event(st.delivered_offset).await? else {
            return Ok(Step::Idle);
        };
        let body = serde_json::to_vec(&event.to_json()).map_err(|e| Error::Internal(e.into()))?;
        let timestamp = Utc::now().timestamp();
        let mut headers = self.fixed_headers.clone();
        let webhook_id = event.id.to_string();
        headers.insert("webhook-id", header_value(&webhook_id)?);
        headers.insert("webhook-timestamp", header_value(&timestamp.to_string())?);
        let signature = self.key.sign(&webhook_id, timestamp, &body);
        headers.insert("webhook-signature", header_value(&signature)?);
        // With tracing on, the receiver can join this attempt's trace.
        for (name, value) in crate::telemetry::trace_headers() {
            if let Ok(name) = reqwest::header::HeaderName::from_bytes(name.as_bytes()) {
                headers.insert(name, header_value(&value)?);
            }
        }
        let url = self
            .subscription
            .config
            .get("endpoint_url")
            .cloned()
            .unwrap_or_default();

        let attempted_at = Utc::now();
        let (outcome, took) = {
            // The node-wide cap on concurrent requests; closed only when the node stops.
            let Ok(_permit) = self.delivery.permits().acquire().await else {
                return Ok(Step::Stop(StopReason::Fenced));
            };
            self.delivery
                .client()
                .post(&url, headers, body, self.settings.timeout)
                .await
        };
        self.last_sent = Some(Instant::now());
        let (record, update, step) = self.decide(&st, &event, outcome, took, attempted_at);
        self.delivery.metrics().webhook_attempt(record.status, took);
        if !self.record(&record, &update).await? {
            return Ok(Step::Stop(StopReason::Fenced));
        }
        if update.delivered_offset > st.delivered_offset {
            self.buffer.pop_front();
        }
        if step == Step::Advanced {
            // The fenced write just succeeded, so this is the row as it now stands (a pause,
            // reset or edit since is noticed at the next read, at most STATE_REUSE later).
            let st = CursorState {
                delivered_offset: update.delivered_offset,
                attempts: 0,
                next_attempt_at: None,
                ..st
            };
            self.known = Some((st, read_at));
        }
        Ok(step)
    }

    /// Records an attempt and moves the cursor under this worker's epoch; false when the
    /// subscription was taken over (fenced) and nothing was written.
    async fn record(&self, record: &AttemptRecord, update: &CursorUpdate) -> Result<bool> {
        store::record(
            self.delivery.pool(),
            &self.topic.name,
            self.subscription.id,
            self.epoch,
            record,
            update,
        )
        .await
    }

    /// The first event after `delivered`, from the read-ahead buffer or the table.
    async fn next_event(&mut self, delivered: i64) -> Result<Option<Event>> {
        while self.buffer.front().is_some_and(|e| e.offset <= delivered) {
            self.buffer.pop_front();
        }
        if self.buffer.is_empty() {
            let events = read_after(
                self.delivery.pool(),
                &self.topic,
                delivered,
                READ_AHEAD,
                &[],
            )
            .await?;
            self.buffer.extend(events);
        }
        Ok(self.buffer.front().cloned())
    }

    /// Steps until the lease ends: `stop` lets the in-flight attempt finish, `lost` (the lock
    /// connection is gone) abandons it at once.
    pub async fn run(mut self, lease: Lease) {
        let mut wake = self
            .delivery
            .live()
            .subscribe(self.subscription.topic.name.as_str());
        let poll = self.delivery.poll_interval();
        loop {
            if lease.stop.is_cancelled() {
                break;
            }
            let step = tokio::select! {
                biased;
                _ = lease.lost.cancelled() => break,
                step = self.try_deliver_next() => step,
            };
            let (wait, wake_on_event) = match step {
                Ok(Step::Advanced) => continue,
                Ok(Step::Retry(d) | Step::Wait(d)) => (d.min(poll), false),
                Ok(Step::Idle) => (poll, true),
                Ok(Step::Stop(reason)) => {
                    tracing::info!(subscription = %self.subscription.id, ?reason, "delivery worker stops");
                    break;
                }
                Err(e) => {
                    tracing::warn!(subscription = %self.subscription.id, error = %e, "delivery step failed");
                    (ERROR_BACKOFF, false)
                }
            };
            tokio::select! {
                _ = lease.lost.cancelled() => break,
                _ = lease.stop.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
                r = wake.recv(), if wake_on_event => {
                    if matches!(r, Err(RecvError::Closed)) {
                        wake = self.delivery.live().subscribe(self.subscription.topic.name.as_str());
                    }
                }
            }
        }
    }
}

fn header_value(s: &str) -> Result<HeaderValue> {
    HeaderValue::from_str(s).map_err(|e| Error::Internal(e.into()))
}
