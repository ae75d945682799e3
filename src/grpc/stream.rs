//! StreamEvents: a server-streaming read of a topic or a subscription's topic, optionally
//! replaying stored events after an offset first, then live, with no gap and no duplicate for
//! durable events (a [`Feed`]).
//!
//! The response stream is polled by tonic only as fast as HTTP/2 flow control lets the
//! client take events, so a slow client never slows anyone else: it falls behind in the hub's
//! bounded per-topic ring and is ended with RESOURCE_EXHAUSTED. Access is re-checked twice a
//! second ([`Access`]): within two seconds of a revocation or of its JWT's expiry the stream
//! ends with UNAUTHENTICATED, of a withdrawn grant with PERMISSION_DENIED, of its
//! subscription's deletion with NOT_FOUND.

use super::convert;
use crate::app::App;
use crate::auth::Principal;
use crate::error::{Error, Result};
use crate::live::{ACCESS_CHECK, Access, Feed, Target};
use crate::proto;
use crate::topics::{TopicName, TopicRef};
use futures::Stream;
use std::collections::VecDeque;
use std::pin::Pin;
use tokio::sync::OwnedSemaphorePermit;
use tonic::Status;

/// The response stream of StreamEvents.
pub type EventStream =
    Pin<Box<dyn Stream<Item = std::result::Result<proto::Event, Status>> + Send>>;

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
    r: proto::StreamEventsRequest,
) -> Result<(EventStream, i64)> {
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
            let s = app.subscriptions.find(id).await?;
            let topic = TopicRef {
                name: TopicName::parse(&s.topic_name)?,
                identifier: (!s.topic_identifier.is_empty()).then_some(s.topic_identifier),
            };
            (topic, Target::Subscription(id))
        }
        _ => return Err(Error::invalid("give topic or subscription_id, not both")),
    };
    let filters = convert::filters(r.filters)?;
    let permit = app.live.admit().ok_or_else(|| {
        Error::Unavailable("node is at its connection limit; connect to another".into())
    })?;
    let feed = Feed::open(&app.live, &app.pool, topic, filters, r.after_offset).await?;
    let first = feed.first_offset();
    let state = State {
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
        let stop = st.app.streams_stop().clone();
        let end = tokio::select! {
            _ = stop.cancelled() => Some(Error::Unavailable("server shutting down".into())),
            _ = st.check.tick() => st
                .access
                .lost(&st.app.auth, &st.app.subscriptions)
                .await
                .map(Error::from),
            r = st.feed.next() => match r {
                Ok(batch) => {
                    st.pending.extend(batch.iter().cloned());
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
