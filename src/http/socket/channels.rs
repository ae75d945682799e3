//! The channels of one websocket: what each message does once parsed. Joins authenticate
//! their tokens and count against the rate limits of their keys as listeners; `publish_events` is
//! checked against the producer key's grants as they are now (not as they were at the join),
//! so withdrawing or narrowing a topic applies to open sockets at once; `refresh_token`
//! replaces a channel's tokens; and every channel's access is re-checked twice a second
//! ([`Access`]): a revoked key closes the socket, an expired token, a withdrawn grant or a
//! deleted subscription closes the channel (`phx_close` with the reason).

use super::io::{CLOSE_POLICY, Kill, Outbox, pump, slow_client};
use crate::app::App;
use crate::auth::{Grant, Principal};
use crate::error::{Conflict, Error, Result};
use crate::events::{Guard, Publish, Published};
use crate::http::phoenix::{
    Frame, FrameKind, JoinPayload, PublishPayload, Ref, RefreshPayload, Vsn, encode_raw, parse,
};
use crate::live::{Access, Feed, Lost, Target};
use crate::usecases::Call;
use serde_json::{Value, json};
use std::collections::HashMap;
use tokio::task::AbortHandle;
use uuid::Uuid;

/// The producer of a channel: its key and its token's expiry.
struct Producer {
    access: Access,
    expires: Option<i64>,
}

struct Joined {
    join_ref: Ref,
    subscription: Uuid,
    consumer: Option<Access>,
    producer: Option<Producer>,
    pump: Option<AbortHandle>,
}

impl Drop for Joined {
    fn drop(&mut self) {
        if let Some(p) = &self.pump {
            p.abort();
        }
    }
}

/// One connection's channels and the way back to its client.
pub(super) struct Conn {
    app: App,
    vsn: Vsn,
    out: Outbox,
    kill: Kill,
    channels: HashMap<String, Joined>,
    joined: bool,
}

impl Conn {
    pub(super) fn new(app: App, vsn: Vsn, out: Outbox, kill: Kill) -> Conn {
        Conn {
            app,
            vsn,
            out,
            kill,
            channels: HashMap::new(),
            joined: false,
        }
    }

    /// Whether a channel was ever joined on this socket (it authenticated).
    pub(super) fn joined(&self) -> bool {
        self.joined
    }

    fn send(&self, text: String) {
        if !self.out.push(text) {
            self.kill.fire(CLOSE_POLICY, slow_client());
        }
    }

    fn reply(&self, to: &Frame, status: &str, response: Value) {
        self.send(to.reply(self.vsn, status, response));
    }

    fn error(&self, to: &Frame, reason: impl std::fmt::Display) {
        self.reply(to, "error", json!({ "reason": reason.to_string() }));
    }

    pub(super) async fn handle(&mut self, text: &str) {
        let frame = match Frame::decode(text, self.vsn) {
            Ok(f) => f,
            Err(e) if !self.joined => {
                tracing::debug!(
                    error = e,
                    "closing an unjoined websocket: malformed message"
                );
                return self.kill.fire(CLOSE_POLICY, "not a Phoenix message");
            }
            Err(e) => {
                tracing::debug!(error = e, "ignoring a malformed websocket message");
                return;
            }
        };
        let kind = frame.kind();
        // Phoenix clients send phx_leave for a channel whose join was refused.
        if !self.joined
            && !matches!(
                kind,
                FrameKind::Heartbeat | FrameKind::Join | FrameKind::Leave
            )
        {
            let reason = "join a channel first: only heartbeat and phx_join are accepted before";
            return self.kill.fire(CLOSE_POLICY, reason);
        }
        match kind {
            FrameKind::Heartbeat => self.reply(&frame, "ok", json!({})),
            FrameKind::Join => self.join(frame).await,
            _ if !self.channels.contains_key(&frame.topic) => self.error(&frame, "unmatched topic"),
            FrameKind::Leave => {
                self.channels.remove(&frame.topic);
                self.reply(&frame, "ok", json!({}));
            }
            FrameKind::Publish => self.publish(frame).await,
            FrameKind::RefreshToken => self.refresh(frame).await,
            FrameKind::Other => self.error(&frame, "unknown event"),
        }
    }

    async fn join(&mut self, frame: Frame<'_>) {
        let id = frame
            .topic
            .strip_prefix("events:")
            .and_then(|s| Uuid::parse_str(s).ok());
        let Some(id) = id else {
            return self.error(&frame, "unmatched topic");
        };
        let payload: JoinPayload = match parse(frame.payload) {
            Ok(p) => p,
            Err(e) => return self.error(&frame, e),
        };
        let tokens = (payload.consumer_token(), payload.producer_token());
        let Some((consumer, producer)) = self.app.auth.authorize_join(id, tokens.0, tokens.1).await
        else {
            return self.error(&frame, "unauthorized");
        };
        // A join opens a stream of events: it counts once against each key that joined.
        for p in distinct_keys(&consumer, &producer) {
            if let Err(e) = self.app.calls.admit(p, Call::Listen("phx_join")).await {
                return self.error(&frame, e);
            }
        }
        let feed = match &consumer {
            Some(_) => match self.open_feed(id, payload.after_offset()).await {
                Ok(f) => Some(f),
                Err(e) => return self.error(&frame, e),
            },
            None => None,
        };
        // A second join of the same topic replaces the first (as in Phoenix).
        self.channels.remove(&frame.topic);
        // The reply is queued before the pump starts, so it precedes every push. It names the
        // first retained offset: a resume from before it starts there.
        let reply = feed.as_ref().map_or_else(
            || json!({}),
            |f| json!({ "first_offset": f.first_offset() }),
        );
        self.reply(&frame, "ok", reply);
        self.joined = true;
        let pump = feed.map(|feed| {
            let (out, kill, topic) = (self.out.clone(), self.kill.clone(), frame.topic.clone());
            let task = pump(feed, out, kill, self.vsn, frame.join_ref.clone(), topic);
            tokio::spawn(task).abort_handle()
        });
        let joined = Joined {
            join_ref: frame.join_ref,
            subscription: id,
            consumer: consumer.map(|(p, exp)| Access::new(&p, exp, Target::Subscription(id))),
            producer: producer.map(|(p, expires)| Producer {
                access: Access::new(&p, expires, Target::Publish),
                expires,
            }),
            pump,
        };
        self.channels.insert(frame.topic, joined);
    }

    async fn open_feed(&self, id: Uuid, after: Option<i64>) -> Result<Feed> {
        let app = &self.app;
        let topic = app.subscriptions.find(id).await?.topic;
        let feed = app.feeds.open(topic, vec![], after).await?;
        Ok(feed.with_json())
    }

    /// Replaces the tokens a channel is checked against; a refused token leaves the channel
    /// as it was.
    async fn refresh(&mut self, frame: Frame<'_>) {
        let payload: RefreshPayload = match parse(frame.payload) {
            Ok(p) => p,
            Err(e) => return self.error(&frame, e),
        };
        let Some(joined) = self.channels.get(&frame.topic) else {
            return self.error(&frame, "unmatched topic");
        };
        let (id, has_consumer) = (joined.subscription, joined.consumer.is_some());
        let has_producer = joined.producer.is_some();
        let consumer = match payload.consumer_token() {
            Some(_) if !has_consumer => {
                return self.error(&frame, "the channel was joined without a consumer_token");
            }
            Some(t) => match self.app.auth.consumer_token(id, t).await {
                Ok((p, exp)) => Some(Access::new(&p, exp, Target::Subscription(id))),
                Err(e) => return self.error(&frame, e),
            },
            None => None,
        };
        let producer = match payload.producer_token() {
            Some(_) if !has_producer => {
                return self.error(&frame, "the channel was joined without a producer_token");
            }
            Some(t) => match self.app.auth.producer_token(t).await {
                Ok((p, expires)) => Some(Producer {
                    access: Access::new(&p, expires, Target::Publish),
                    expires,
                }),
                Err(e) => return self.error(&frame, e),
            },
            None => None,
        };
        if consumer.is_none() && producer.is_none() {
            return self.error(
                &frame,
                "refresh_token needs a consumer_token or producer_token",
            );
        }
        if let Some(joined) = self.channels.get_mut(&frame.topic) {
            joined.consumer = consumer.or(joined.consumer.take());
            joined.producer = producer.or(joined.producer.take());
        }
        self.reply(&frame, "ok", json!({}));
    }

    async fn publish(&mut self, frame: Frame<'_>) {
        let producer = self
            .channels
            .get(&frame.topic)
            .and_then(|j| j.producer.as_ref())
            .map(|p| (p.access.key(), p.expires));
        let Some((key, expires)) = producer else {
            let reason = "a producer_token is required to publish";
            return self.reply(&frame, "unauthorized", json!({ "reason": reason }));
        };
        match self.publish_as(key, expires, &frame).await {
            Ok(p) => {
                // The original's answer, plus the request indexes of duplicates and dead
                // letters when there are any (as PublishEventsResponse carries them).
                let offsets: Vec<i64> = p.events.iter().map(|e| e.offset).collect();
                let mut answer = json!({ "offsets": offsets });
                if !p.duplicates.is_empty() {
                    answer["duplicate_indexes"] = json!(p.duplicates);
                }
                if !p.dead_lettered.is_empty() {
                    answer["dead_lettered_indexes"] = json!(p.dead_lettered);
                }
                self.reply(&frame, "ok", answer)
            }
            // The numbers a conditional producer goes on with, as gRPC's metadata carries them.
            Err(Error::Conflict(c)) => {
                let mut answer = json!({ "reason": c.to_string() });
                match &c {
                    Conflict::LastOffset { last, .. } => answer["last_offset"] = json!(last),
                    Conflict::Fenced { current, .. } => answer["producer_epoch"] = json!(current),
                }
                self.reply(&frame, "error", answer)
            }
            Err(Error::PermissionDenied(r) | Error::Unauthenticated(r)) => {
                self.reply(&frame, "unauthorized", json!({ "reason": r }));
            }
            Err(e) => {
                if let Error::Internal(cause) = &e {
                    tracing::error!(error = ?cause, "websocket publish failed");
                }
                self.error(&frame, e);
            }
        }
    }

    /// Publishes as the key as it is now: its current grants (cached for at most a second,
    /// like every other check), refused once its token expired or the key was revoked.
    async fn publish_as(
        &self,
        key: Uuid,
        expires: Option<i64>,
        frame: &Frame<'_>,
    ) -> Result<Published> {
        let app = &self.app;
        if expires.is_some_and(|exp| chrono::Utc::now().timestamp() >= exp) {
            return Err(Lost::Expired.into());
        }
        let principal = app.auth.current(key).await?.ok_or(Lost::Revoked)?;
        let req: PublishPayload = parse(frame.payload).map_err(Error::invalid)?;
        let guard = Guard::parse(
            req.expected_last_offset,
            req.producer_id.as_deref().unwrap_or_default(),
            req.producer_epoch,
        )?;
        let publish = Publish {
            topic: req.topic,
            events: req.events.into_iter().map(|e| e.into_new()).collect(),
            durable: req.durable,
            all_or_nothing: req.all_or_nothing,
            guard,
        };
        // Counted against the same per-key limits as PublishEvents over gRPC.
        app.calls.publish(&principal, publish).await
    }

    /// Re-checks every channel's access: closes the channels that lost it, and answers
    /// `Err` when a key was revoked (the whole socket then closes, as its client would only
    /// reconnect with the same tokens).
    pub(super) async fn check_access(&mut self) -> std::result::Result<(), Lost> {
        let app = &self.app;
        let mut ended = Vec::new();
        for (topic, joined) in &self.channels {
            let producer = joined.producer.as_ref().map(|p| &p.access);
            for access in joined.consumer.iter().chain(producer) {
                match access.lost(&app.auth, &app.subscriptions).await {
                    None => {}
                    Some(Lost::Revoked) => return Err(Lost::Revoked),
                    Some(lost) => {
                        ended.push((topic.clone(), lost));
                        break;
                    }
                }
            }
        }
        for (topic, lost) in ended {
            if let Some(joined) = self.channels.remove(&topic) {
                // Phoenix clients take a server's phx_close as the channel's end and do not
                // rejoin with tokens that would be refused.
                let payload = json!({ "reason": lost.to_string() }).to_string();
                let j = &joined.join_ref;
                self.send(encode_raw(self.vsn, j, j, &topic, "phx_close", &payload));
            }
        }
        Ok(())
    }
}

/// The principals of a join, one per distinct key.
fn distinct_keys<'a>(consumer: &'a Grant, producer: &'a Grant) -> Vec<&'a Principal> {
    let mut keys: Vec<&Principal> = [consumer, producer]
        .into_iter()
        .flatten()
        .map(|(p, _)| p)
        .collect();
    keys.dedup_by_key(|p| p.key_id);
    keys
}
