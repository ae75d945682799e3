//! What a step makes of what it found: an attempt's outcome ([`Worker::decide`]: the attempt
//! record, the cursor's move and the next step, by the response, the retry schedule and the
//! subscription's exhaustion rule), and a cursor that retention has passed
//! ([`Worker::behind_retention`]).

use super::{Step, StopReason, Worker};
use crate::delivery::client::PostOutcome;
use crate::delivery::settings::OnExhausted;
use crate::delivery::store::{AttemptRecord, CursorState, CursorUpdate};
use crate::error::Result;
use crate::events::Event;
use chrono::Utc;
use std::time::Duration;

impl Worker {
    /// The cursor is below the topic's first retained offset: the events after it are gone.
    /// Records the skipped range, then moves the cursor to the first retained event (a topic
    /// with `drop_undelivered`) or pauses the subscription (otherwise: an operator decides).
    pub(super) async fn behind_retention(&mut self, st: &CursorState) -> Result<Step> {
        let (from, to) = (st.delivered_offset + 1, st.first_offset - 1);
        let gone = format!("offsets {from}-{to} were removed by retention before delivery");
        let (status, error, update, step) = if st.drop_undelivered {
            let update = CursorUpdate {
                delivered_offset: to,
                attempts: 0,
                next_attempt_at: None,
                pause: false,
            };
            ("skipped", gone, update, Step::Advanced)
        } else {
            let update = CursorUpdate {
                delivered_offset: st.delivered_offset,
                attempts: 0,
                next_attempt_at: None,
                pause: true,
            };
            let error = format!("{gone}; paused: reset the cursor to continue");
            (
                "behind_retention",
                error,
                update,
                Step::Stop(StopReason::Paused),
            )
        };
        let now = Utc::now();
        let record = AttemptRecord {
            event_offset: to,
            event_id: uuid::Uuid::nil(),
            attempt: 0,
            status,
            response_status: None,
            error: Some(error),
            duration_ms: 0,
            attempted_at: now,
            expires_at: self.delivery.retention().attempt_expiry(status, now),
        };
        if !self.record(&record, &update).await? {
            return Ok(Step::Stop(StopReason::Fenced));
        }
        tracing::warn!(subscription = %self.subscription.id, from, to, status, "cursor was behind retention");
        self.buffer.clear();
        self.known = None;
        Ok(step)
    }

    /// What an attempt's outcome means for the record, the cursor and the next step.
    pub(super) fn decide(
        &self,
        st: &CursorState,
        event: &Event,
        outcome: PostOutcome,
        took: Duration,
        attempted_at: chrono::DateTime<Utc>,
    ) -> (AttemptRecord, CursorUpdate, Step) {
        let attempt = st.attempts.saturating_add(1);
        let stay = CursorUpdate {
            delivered_offset: st.delivered_offset,
            attempts: 0,
            next_attempt_at: None,
            pause: false,
        };
        let advance = CursorUpdate {
            delivered_offset: event.offset,
            ..stay.clone()
        };
        let (response_status, error, retry_after) = match &outcome {
            PostOutcome::Response {
                status,
                retry_after,
                body,
            } => (
                Some(i32::from(*status)),
                (!(200..300).contains(status)).then(|| format!("HTTP {status}: {body}")),
                *retry_after,
            ),
            PostOutcome::Error(e) => (None, Some(e.clone()), None),
        };
        let record = |status| AttemptRecord {
            event_offset: event.offset,
            event_id: event.id,
            attempt,
            status,
            response_status,
            error: error.clone(),
            duration_ms: i32::try_from(took.as_millis()).unwrap_or(i32::MAX),
            attempted_at,
            expires_at: self
                .delivery
                .retention()
                .attempt_expiry(status, attempted_at),
        };
        match response_status {
            Some(200..=299) => (record("delivered"), advance, Step::Advanced),
            Some(410) => (
                record("gone"),
                CursorUpdate {
                    pause: true,
                    ..stay
                },
                Step::Stop(StopReason::Paused),
            ),
            _ if attempt as u32 >= self.settings.max_attempts => match self.settings.on_exhausted {
                OnExhausted::Skip => (record("undeliverable"), advance, Step::Advanced),
                OnExhausted::Pause => (
                    record("undeliverable"),
                    CursorUpdate {
                        pause: true,
                        ..stay
                    },
                    Step::Stop(StopReason::Paused),
                ),
            },
            _ => {
                let scheduled = self
                    .settings
                    .schedule
                    .jittered_delay_before(attempt as u32 + 1);
                let delay = retry_after.map_or(scheduled, |r| r.max(scheduled));
                let next = attempted_at
                    + chrono::Duration::from_std(took + delay).unwrap_or(chrono::Duration::MAX);
                (
                    record("failed"),
                    CursorUpdate {
                        attempts: attempt,
                        next_attempt_at: Some(next),
                        ..stay
                    },
                    Step::Retry(delay),
                )
            }
        }
    }
}
