//! StreamEvents: a server-streaming read of a topic or a subscription's topic, optionally
//! replaying stored events after an offset first, then live, with no gap and no duplicate for
//! durable events (a [`Feed`]).
//!
//! The response stream is polled by tonic only as fast as HTTP/2 flow control lets the
//! client take events, so a slow client never slows anyone else: it falls behind in the hub's
//! bounded per-topic ring and is ended with RESOURCE_EXHAUSTED. Access is re-checked twice a
//! second ([`Access`]): within two seconds of a revocation or of its JWT's expiry the stream
//! ends with UNAUTHENTICATED, of a withdrawn grant with PERMISSION_DENIED, of its
//! subscription's deletion with NOT_FOUND. A draining node ends each stream with UNAVAILABLE
//! at the stream's slot of the drain window ([`crate::drain`]), not all at once; the client
//! reopens it elsewhere with `after_offset` and misses nothing.
//!
//! Keepalive: HTTP/2 pings (ER_KEEPALIVE_SECONDS) keep the connection alive, which is enough
//! for nginx; HAProxy times out a stream that carries no message for `timeout server`
//! whatever the pings (tests/it/proxies.rs). A client that sends the request header
//! `x-eventrelay-keepalive: 1` gets an empty `Event` (every field at its default, `id`
//! empty) after each ER_KEEPALIVE_SECONDS without events, and skips those; other clients
//! never see one.

use super::convert;
use crate::app::App;
use crate::auth::Principal;
use crate::error::{Error, Result};
use crate::live::{ACCESS_CHECK, Access, Feed, Target};
use crate::proto;
use crate::topics::TopicRef;
use crate::usecases::Call;
use futures::Stream;
use std::collections::VecDeque;
use std::pin::Pin;
use tokio::sync::OwnedSemaphorePermit;
use tonic::Status;

/// The response stream of StreamEvents.
pub type EventStream =
    Pin<Box<dyn Stream<Item = std::result::Result<proto::Event, Status>> + Send>>;

/// The request header by which a client asks for keepalive messages.
pub const KEEPALIVE_HEADER: &str = "x-eventrelay-keepalive";

/// Whether the call asked for keepalive messages.
pub fn wants_keepalive(m: &tonic::metadata::MetadataMap) -> bool {
    m.get(KEEPALIVE_HEADER).is_some_and(|v| v == "1")
}

/// The initial metadata key naming the topic's first retained offset: a stream asked to
/// replay after an earlier offset starts there.
pub const FIRST_OFFSET_HEADER: &str = "first-offset";

/// Authorizes the request and opens the stream (errors here are the call's status), with the
/// topic's first retained offset. `expires` is the `exp` of the caller's JWT, when it called
/// with one.
pub async fn open(
    app: &App,
    principal: Principal,
    expires: Option<i64>,
    keepalive: bool,
    r: proto::StreamEventsRequest,
) -> Result<(EventStream, i64)> {
    let listen = Call::Listen("StreamEvents");
    app.calls.admit(&principal, listen).await?;
    let (topic, target) = match (r.topic.trim(), r.subscription_id.trim()) {
        ("", "") => return Err(Error::invalid("topic or subscription_id is required")),
        (_, "") => {
            let topic = TopicRef::parse(r.topic.trim())?;
            principal.authorize_read(&topic)?;
            (topic.clone(), Target::Topic(topic))
        }
        ("", id) => {
            let id = convert::parse_id(id, "subscription_id")?;
            principal.authorize_subscription(id)?;
            let topic = app.subscriptions.find(id).await?.topic;
            (topic, Target::Subscription(id))
        }
        _ => return Err(Error::invalid("give topic or subscription_id, not both")),
    };
    let filters = convert::filters(r.filters)?;
    let permit = app.live.admit().ok_or_else(|| {
        Error::Unavailable("node is at its connection limit; connect to another".into())
    })?;
    let feed = app
        .feeds
        .open(topic, filters, r.after_offset)
        .await?
        .with_timeout(app.events.pull_timeout());
    let first = feed.first_offset();
    let drain = app.drain.clone();
    let slot = drain.slot();
    let state = State {
        turn: Box::pin(async move { drain.turn(slot).await }),
        keepalive: keepalive.then(|| {
            let every = app.grpc.keepalive;
            tokio::time::interval_at(tokio::time::Instant::now() + every, every)
        }),
        app: app.clone(),
        access: Access::new(&principal, expires, target),
        feed,
        pending: VecDeque::new(),
        check: tokio::time::interval(ACCESS_CHECK),
        done: false,
        _permit: permit,
    };
    Ok((Box::pin(futures::stream::unfold(state, next)), first))
}

struct State {
    app: App,
    access: Access,
    feed: Feed,
    pending: VecDeque<crate::events::Event>,
    check: tokio::time::Interval,
    turn: futures::future::BoxFuture<'static, ()>,
    // Ticks for a client that asked for keepalive messages; reset by every event.
    keepalive: Option<tokio::time::Interval>,
    done: bool,
    _permit: OwnedSemaphorePermit,
}

type Item = std::result::Result<proto::Event, Status>;

async fn next(mut st: State) -> Option<(Item, State)> {
    loop {
        if let Some(e) = st.pending.pop_front() {
            return Some((Ok(convert::event(e)), st));
        }
        if st.done {
            return None;
        }
        let end = tokio::select! {
            _ = &mut st.turn => Some(Error::Unavailable(crate::drain::DRAINING.into())),
            _ = st.check.tick() => st
                .access
                .lost(&st.app.auth, &st.app.subscriptions)
                .await
                .map(Error::from),
            _ = async { st.keepalive.as_mut()?.tick().await; Some(()) }, if st.keepalive.is_some() => {
                return Some((Ok(proto::Event::default()), st));
            }
            r = st.feed.next() => match r {
                Ok(batch) => {
                    st.pending.extend(batch.iter().cloned());
                    if let Some(k) = st.keepalive.as_mut() {
                        k.reset();
                    }
                    None
                }
                Err(e) => Some(e),
            },
        };
        if let Some(e) = end {
            st.done = true;
            return Some((Err(Status::from(e)), st));
        }
    }
}
