//! The Server-Sent Events fallback, for networks and proxies that do not pass websockets:
//! `GET /sse?subscription_id=<id>` streams a subscription's events as the websocket pushes
//! them, to `EventSource` or any HTTP client.
//!
//! - Authorization: `Authorization: Bearer <API key token or JWT>`, or `token=<JWT>` in the
//!   query for `EventSource`, which cannot send headers (a JWT, never an API key secret: URLs
//!   end up in logs). The key must be allowed the subscription, as for a websocket join, and
//!   the open counts against its pull rate limit.
//! - Each event is one SSE message whose `data` is the websocket push's JSON; durable events
//!   carry their offset as `id`, so `EventSource` resumes by itself with `Last-Event-ID` after
//!   a reconnect (`after_offset` in the query does the same for the first connection;
//!   `Last-Event-ID` wins). Non-durable events carry no id.
//! - The stream ends with an `event: close` message whose `data` is `{"reason": ...}`: access
//!   lost (checked twice a second, as for websockets), a slow client (it fell more than the
//!   hub's buffer behind), or the node's drain (at the connection's slot; `retry` tells
//!   `EventSource` to come back after a second).
//! - A comment line every `ER_KEEPALIVE_SECONDS` keeps proxies from cutting an idle stream.

use super::peer::{PeerAddr, Peers};
use crate::app::App;
use crate::auth::looks_like_jwt;
use crate::drain::DRAINING;
use crate::error::{Error, Result};
use crate::live::{ACCESS_CHECK, Access, Feed, Target};
use crate::usecases::Call;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use futures::future::BoxFuture;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// How long `EventSource` waits before reconnecting after the server ends a stream.
const RETRY: Duration = Duration::from_secs(1);

#[derive(Clone)]
struct SseState {
    app: App,
    peers: Arc<Peers>,
}

/// The `/sse` route; `peers` counts places per source address (shared with websockets).
pub fn route(app: &App, peers: Arc<Peers>) -> MethodRouter<App> {
    get(open).with_state(SseState {
        app: app.clone(),
        peers,
    })
}

#[derive(serde::Deserialize)]
struct Params {
    subscription_id: String,
    after_offset: Option<i64>,
    token: Option<String>,
}

async fn open(
    State(s): State<SseState>,
    PeerAddr(peer): PeerAddr,
    headers: HeaderMap,
    Query(q): Query<Params>,
) -> Result<Response> {
    let app = &s.app;
    if app.is_draining() {
        return Err(Error::Unavailable(format!(
            "{DRAINING}; connect to another node"
        )));
    }
    let id = Uuid::parse_str(q.subscription_id.trim())
        .map_err(|_| Error::invalid("subscription_id must be a UUID"))?;
    let (principal, expires) = match &q.token {
        Some(t) if !looks_like_jwt(t) => {
            return Err(Error::Unauthenticated(
                "the token parameter takes a JWT (CreateJWT); send API keys as a bearer header"
                    .into(),
            ));
        }
        Some(t) => app.auth.authenticate_jwt_until(t).await?,
        None => {
            let bearer = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            app.auth.authenticate_until(bearer).await?
        }
    };
    principal.authorize_subscription(id)?;
    app.calls.admit(&principal, Call::Listen("sse")).await?;
    let after = match headers.get("last-event-id") {
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|v| v.trim().parse::<i64>().ok())
                .ok_or_else(|| Error::invalid("Last-Event-ID must be an offset"))?,
        ),
        None => q.after_offset,
    };
    let permit = app.live.admit().ok_or_else(|| {
        Error::Unavailable("node is at its connection limit; connect to another".into())
    })?;
    let place = s
        .peers
        .admit(s.peers.source(peer, &headers))
        .map_err(|too_many| Error::ResourceExhausted(too_many.to_string()))?;
    let topic = app.subscriptions.find(id).await?.topic;
    let feed = app.feeds.open(topic, vec![], after).await?.with_json();
    let drain = app.drain.clone();
    let slot = drain.slot();
    let state = Stream {
        app: app.clone(),
        access: Access::new(&principal, expires, Target::Subscription(id)),
        feed,
        pending: VecDeque::new(),
        check: tokio::time::interval(ACCESS_CHECK),
        turn: Box::pin(async move { drain.turn(slot).await }),
        done: false,
        _places: (permit, place),
    };
    let events = futures::stream::unfold(state, next);
    let keepalive = KeepAlive::new().interval(app.http.keepalive);
    let headers = [
        // nginx buffers responses unless told not to, which would hold events back.
        ("x-accel-buffering", "no"),
        ("cache-control", "no-cache"),
    ];
    Ok((headers, Sse::new(events).keep_alive(keepalive)).into_response())
}

/// State of one SSE stream.
struct Stream {
    app: App,
    access: Access,
    feed: Feed,
    pending: VecDeque<SseEvent>,
    check: tokio::time::Interval,
    turn: BoxFuture<'static, ()>,
    done: bool,
    _places: (tokio::sync::OwnedSemaphorePermit, super::peer::SourcePermit),
}

/// The message that ends a stream.
fn close(reason: impl std::fmt::Display) -> SseEvent {
    let data = serde_json::json!({ "reason": reason.to_string() }).to_string();
    SseEvent::default().event("close").retry(RETRY).data(data)
}

async fn next(mut st: Stream) -> Option<(std::result::Result<SseEvent, Infallible>, Stream)> {
    loop {
        if let Some(e) = st.pending.pop_front() {
            return Some((Ok(e), st));
        }
        if st.done {
            return None;
        }
        let end = tokio::select! {
            _ = &mut st.turn => Some(DRAINING.to_owned()),
            _ = st.check.tick() => st
                .access
                .lost(&st.app.auth, &st.app.subscriptions)
                .await
                .map(|lost| lost.to_string()),
            r = st.feed.next() => match r {
                Ok(batch) => {
                    for (e, json) in batch.iter().zip(batch.json()) {
                        let mut m = SseEvent::default().data(&**json);
                        if e.offset > 0 {
                            m = m.id(e.offset.to_string());
                        }
                        st.pending.push_back(m);
                    }
                    None
                }
                Err(e) => Some(e.to_string()),
            },
        };
        if let Some(reason) = end {
            st.done = true;
            st.pending.push_back(close(reason));
        }
    }
}
