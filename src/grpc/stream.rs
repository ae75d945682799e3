//! StreamEvents: a server-streaming read of a topic or a subscription's topic, optionally
//! replaying stored events after an offset first, then live, with no gap and no duplicate for
//! durable events (a [`Feed`]).
//!
//! The response stream is polled by tonic only as fast as HTTP/2 flow control lets the
//! client take events, so a slow client never slows anyone else: it falls behind in the hub's
//! bounded per-topic ring and is ended with RESOURCE_EXHAUSTED. The key is re-checked every
//! half second, and the stream ends with UNAUTHENTICATED within two seconds of a revocation.

use super::convert;
use crate::app::App;
use crate::auth::Principal;
use crate::error::{Error, Result};
use crate::live::Feed;
use crate::proto;
use crate::topics::{TopicName, TopicRef};
use futures::Stream;
use std::collections::VecDeque;
use std::pin::Pin;
use std::time::Duration;
use tokio::sync::OwnedSemaphorePermit;
use tonic::Status;

/// How often the caller's key is checked for revocation.
const KEY_CHECK: Duration = Duration::from_millis(500);

/// The response stream of StreamEvents.
pub type EventStream =
    Pin<Box<dyn Stream<Item = std::result::Result<proto::Event, Status>> + Send>>;

/// Authorizes the request and opens the stream (errors here are the call's status).
pub async fn open(
    app: &App,
    principal: Principal,
    r: proto::StreamEventsRequest,
) -> Result<EventStream> {
    let topic = match (r.topic.trim(), r.subscription_id.trim()) {
        ("", "") => return Err(Error::invalid("topic or subscription_id is required")),
        (_, "") => {
            let topic = TopicRef::parse(r.topic.trim())?;
            principal.authorize_read(&topic)?;
            topic
        }
        ("", id) => {
            let id = convert::parse_id(id, "subscription_id")?;
            principal.authorize_subscription(id)?;
            let s = app.subscriptions.find(id).await?;
            TopicRef {
                name: TopicName::parse(&s.topic_name)?,
                identifier: (!s.topic_identifier.is_empty()).then_some(s.topic_identifier),
            }
        }
        _ => return Err(Error::invalid("give topic or subscription_id, not both")),
    };
    let filters = convert::filters(r.filters)?;
    let permit = app.live.admit().ok_or_else(|| {
        Error::Unavailable("node is at its connection limit; connect to another".into())
    })?;
    let feed = Feed::open(&app.live, &app.pool, topic, filters, r.after_offset).await?;
    let state = State {
        app: app.clone(),
        key: principal.key_id,
        feed,
        pending: VecDeque::new(),
        check: tokio::time::interval(KEY_CHECK),
        done: false,
        _permit: permit,
    };
    Ok(Box::pin(futures::stream::unfold(state, next)))
}

struct State {
    app: App,
    key: uuid::Uuid,
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
            _ = st.check.tick() => match st.app.auth.still_active(st.key).await {
                Ok(false) => Some(Error::Unauthenticated("api key revoked".into())),
                _ => None,
            },
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
