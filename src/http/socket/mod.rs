//! The websocket endpoint `/socket/websocket`, speaking the Phoenix Channels protocol of the
//! original: heartbeats, `phx_join` on `events:<subscription_id>` with consumer and/or
//! producer JWTs (and `after_offset` to resume), `event:published` pushes, `publish_events`
//! from producers, `phx_leave`.
//!
//! Each connection is a reader (this task), a writer task draining a bounded queue of
//! outgoing messages, and one pump task per joined channel moving its [`Feed`] into that
//! queue. Nothing ever waits for a client: a pump that finds the queue full, or a feed that
//! fell behind the hub, disconnects the client with a close reason. Every channel's access is
//! re-checked twice a second ([`Access`]): a revoked key closes the socket, an expired token,
//! a withdrawn grant or a deleted subscription closes the channel (`phx_close` with the
//! reason), within two seconds on every node.

mod io;

pub use io::{CLIENT_BUFFER, CLIENT_BYTES};

use super::phoenix::{Frame, PublishPayload, Vsn, encode_raw};
use crate::app::App;
use crate::auth::Principal;
use crate::error::{Error, Result};
use crate::live::{ACCESS_CHECK, Access, Feed, Lost, Target};
use crate::ratelimit::CallKind;
use crate::topics::{TopicName, TopicRef};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use futures::StreamExt;
use io::{
    CLOSE_GOING_AWAY, CLOSE_POLICY, CLOSE_TIMEOUT, CLOSE_UNSUPPORTED, Kill, Outbox, WRITE_BUFFER,
    pump, slow_client, write,
};
use serde_json::{Value, json};
use std::collections::HashMap;
use tokio::task::AbortHandle;
use uuid::Uuid;

/// Largest message a client may send (a full `publish_events` of large events).
const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// State of the websocket route.
#[derive(Clone)]
pub struct Sockets {
    app: App,
}

/// The `/socket/websocket` route.
pub fn route(app: &App) -> MethodRouter<App> {
    get(upgrade).with_state(Sockets { app: app.clone() })
}

async fn upgrade(
    State(s): State<Sockets>,
    Query(q): Query<HashMap<String, String>>,
    ws: WebSocketUpgrade,
) -> Response {
    if s.app.is_draining() {
        return Error::Unavailable("node is shutting down; connect to another".into())
            .into_response();
    }
    let Some(permit) = s.app.live.admit() else {
        return Error::Unavailable("node is at its connection limit; connect to another".into())
            .into_response();
    };
    let vsn = Vsn::parse(q.get("vsn").map(String::as_str));
    // Small read buffers keep an idle connection cheap; large messages still fit.
    ws.read_buffer_size(4 * 1024)
        .write_buffer_size(WRITE_BUFFER)
        .max_message_size(MAX_MESSAGE)
        .on_upgrade(move |socket| async move {
            run(s, vsn, socket).await;
            drop(permit);
        })
}

struct Joined {
    join_ref: Value,
    producer: Option<Principal>,
    access: Vec<Access>,
    pump: Option<AbortHandle>,
}

impl Drop for Joined {
    fn drop(&mut self) {
        if let Some(p) = &self.pump {
            p.abort();
        }
    }
}

struct Conn {
    s: Sockets,
    vsn: Vsn,
    out: Outbox,
    kill: Kill,
    channels: HashMap<String, Joined>,
}

async fn run(s: Sockets, vsn: Vsn, socket: WebSocket) {
    let (sink, mut stream) = socket.split();
    let (out, rx) = io::queue();
    let kill = Kill::default();
    let writer = tokio::spawn(write(sink, rx, kill.clone()));
    let stop = s.app.streams_stop().clone();
    let mut conn = Conn {
        s,
        vsn,
        out,
        kill: kill.clone(),
        channels: HashMap::new(),
    };
    let mut check = tokio::time::interval(ACCESS_CHECK);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => {
                kill.fire(CLOSE_GOING_AWAY, "server shutting down");
                break;
            }
            _ = kill.token.cancelled() => break,
            _ = check.tick() => if let Err(revoked) = conn.check_access().await {
                kill.fire(CLOSE_POLICY, revoked.to_string());
                break;
            },
            m = stream.next() => match m {
                Some(Ok(Message::Text(t))) => conn.handle(t.as_str()).await,
                Some(Ok(Message::Binary(_))) => {
                    kill.fire(CLOSE_UNSUPPORTED, "binary messages are not supported");
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {} // pings are answered by the websocket library
            },
        }
    }
    conn.channels.clear(); // stops the pumps
    kill.token.cancel();
    let _ = tokio::time::timeout(CLOSE_TIMEOUT * 2, writer).await;
}

impl Conn {
    fn send(&self, text: String) {
        if !self.out.push(text) {
            self.kill.fire(CLOSE_POLICY, slow_client());
        }
    }

    fn reply(&self, to: &Frame, status: &str, response: Value) {
        self.send(to.reply(status, response).encode(self.vsn));
    }

    async fn handle(&mut self, text: &str) {
        let frame = match Frame::decode(text, self.vsn) {
            Ok(f) => f,
            Err(e) => {
                tracing::debug!(error = e, "ignoring a malformed websocket message");
                return;
            }
        };
        match frame.event.as_str() {
            "heartbeat" if frame.topic == "phoenix" => self.reply(&frame, "ok", json!({})),
            "phx_join" => self.join(frame).await,
            _ if !self.channels.contains_key(&frame.topic) => {
                self.reply(&frame, "error", json!({"reason": "unmatched topic"}));
            }
            "phx_leave" => {
                self.channels.remove(&frame.topic);
                self.reply(&frame, "ok", json!({}));
            }
            "publish_events" => self.publish(frame).await,
            _ => self.reply(&frame, "error", json!({"reason": "unknown event"})),
        }
    }

    async fn join(&mut self, frame: Frame) {
        let id = frame
            .topic
            .strip_prefix("events:")
            .and_then(|s| Uuid::parse_str(s).ok());
        let Some(id) = id else {
            return self.reply(&frame, "error", json!({"reason": "unmatched topic"}));
        };
        let (consumer, producer) = match self.authorize(id, &frame.payload).await {
            Some(p) => p,
            None => return self.reply(&frame, "error", json!({"reason": "unauthorized"})),
        };
        let feed = match &consumer {
            Some(_) => match self.open_feed(id, &frame.payload).await {
                Ok(f) => Some(f),
                Err(e) => return self.reply(&frame, "error", json!({"reason": e.to_string()})),
            },
            None => None,
        };
        // A second join of the same topic replaces the first (as in Phoenix).
        self.channels.remove(&frame.topic);
        // The reply is queued before the pump starts, so it precedes every push. It names the
        // first retained offset: a resume from before it starts there.
        let joined = feed.as_ref().map_or_else(
            || json!({}),
            |f| json!({ "first_offset": f.first_offset() }),
        );
        self.reply(&frame, "ok", joined);
        let pump = feed.map(|feed| {
            tokio::spawn(pump(
                feed,
                self.out.clone(),
                self.kill.clone(),
                self.vsn,
                frame.join_ref.clone(),
                frame.topic.clone(),
            ))
            .abort_handle()
        });
        let access = [
            consumer.map(|(p, exp)| Access::new(&p, exp, Target::Subscription(id))),
            producer
                .as_ref()
                .map(|(p, exp)| Access::new(p, *exp, Target::Publish)),
        ]
        .into_iter()
        .flatten()
        .collect();
        self.channels.insert(
            frame.topic,
            Joined {
                join_ref: frame.join_ref,
                producer: producer.map(|(p, _)| p),
                access,
                pump,
            },
        );
    }

    /// The consumer and producer of a join, each with its token's expiry; `None` when no
    /// valid token was given or one of the given tokens is invalid or not allowed.
    async fn authorize(&self, id: Uuid, payload: &Value) -> Option<(Grant, Grant)> {
        let app = &self.s.app;
        if !app.config.auth_enabled {
            let p = Principal::anonymous_admin();
            return Some((Some((p.clone(), None)), Some((p, None))));
        }
        let token = |k: &str| {
            payload
                .get(k)
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
        };
        let consumer = match token("consumer_token") {
            None => None,
            Some(t) => {
                let (p, exp) = app.auth.authenticate_jwt_until(t).await.ok()?;
                p.authorize_subscription(id).ok()?;
                Some((p, exp))
            }
        };
        let producer = match token("producer_token") {
            None => None,
            Some(t) => {
                let (p, exp) = app.auth.authenticate_jwt_until(t).await.ok()?;
                p.may_publish_somewhere().ok()?;
                Some((p, exp))
            }
        };
        (consumer.is_some() || producer.is_some()).then_some((consumer, producer))
    }

    async fn open_feed(&self, id: Uuid, payload: &Value) -> Result<Feed> {
        let app = &self.s.app;
        let sub = app.subscriptions.find(id).await?;
        let topic = TopicRef {
            name: TopicName::parse(&sub.topic_name)?,
            identifier: (!sub.topic_identifier.is_empty()).then_some(sub.topic_identifier),
        };
        let after = match payload.get("after_offset") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_i64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                    .ok_or_else(|| Error::invalid("after_offset must be an integer"))?,
            ),
        };
        let feed = Feed::open(&app.live, &app.pool, topic, vec![], after).await?;
        Ok(feed.with_json())
    }

    async fn publish(&mut self, frame: Frame) {
        let producer = self
            .channels
            .get(&frame.topic)
            .and_then(|j| j.producer.clone());
        let Some(p) = producer else {
            let reason = "a producer_token is required to publish";
            return self.reply(&frame, "unauthorized", json!({ "reason": reason }));
        };
        let req: PublishPayload = match serde_json::from_value(frame.payload.clone()) {
            Ok(r) => r,
            Err(e) => {
                let reason = format!("invalid publish_events payload: {e}");
                return self.reply(&frame, "error", json!({ "reason": reason }));
            }
        };
        // The same per-key limits as PublishEvents over gRPC.
        let kind = if req.durable {
            CallKind::DurablePublish
        } else {
            CallKind::LivePublish
        };
        let limited = self
            .s
            .app
            .limiter
            .check(p.key_id, kind, "PublishEvents")
            .await;
        let events = req.events.into_iter().map(|e| e.into_new()).collect();
        let published = match limited {
            Ok(()) => {
                let app = &self.s.app;
                app.events
                    .publish(&p, &req.topic, events, req.durable)
                    .await
            }
            Err(e) => Err(e),
        };
        match published {
            Ok(stored) => {
                let offsets: Vec<i64> = stored.iter().map(|e| e.offset).collect();
                self.reply(&frame, "ok", json!({ "offsets": offsets }));
            }
            Err(Error::PermissionDenied(r) | Error::Unauthenticated(r)) => {
                self.reply(&frame, "unauthorized", json!({ "reason": r }));
            }
            Err(e) => {
                if let Error::Internal(cause) = &e {
                    tracing::error!(error = ?cause, "websocket publish failed");
                }
                self.reply(&frame, "error", json!({ "reason": e.to_string() }));
            }
        }
    }

    /// Re-checks every channel's access: closes the channels that lost it, and answers
    /// `Err` when a key was revoked (the whole socket then closes, as its client would only
    /// reconnect with the same tokens).
    async fn check_access(&mut self) -> std::result::Result<(), Lost> {
        let app = &self.s.app;
        let mut ended = Vec::new();
        for (topic, joined) in &self.channels {
            for access in &joined.access {
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

/// A principal of a join and its token's expiry, when that token was given.
type Grant = Option<(Principal, Option<i64>)>;
