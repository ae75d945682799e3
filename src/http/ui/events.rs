//! Event pages of a topic: pages of stored events (newest or oldest first, scoped by
//! identifier and filtered with the PullEvents filters), one event as pretty JSON, and the
//! live tail: a page whose few lines of vendored JavaScript read a Server-Sent Events stream
//! fed by [`crate::live::Live::subscribe`], so it shows events published on any node.

use super::forms::{Errors, Input, field};
use super::session::CurrentUser;
use super::{UiResult, as_admin, enc, layout, respond};
use crate::app::App;
use crate::error::Error;
use crate::events::{Event, Filter, PullQuery};
use crate::topics::{TopicName, TopicRef};
use axum::Extension;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::routing::get;
use maud::{Markup, html};
use serde::Deserialize;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Events per page.
const PAGE_SIZE: i32 = 50;
/// Live tails one node serves at once; more are refused rather than queued.
pub const MAX_TAILS: usize = 256;

/// The permits of this node's open live tails (one semaphore per node's router).
#[derive(Clone)]
pub struct TailPermits(pub Arc<Semaphore>);

impl Default for TailPermits {
    fn default() -> Self {
        TailPermits(Arc::new(Semaphore::new(MAX_TAILS)))
    }
}
/// Filter rows offered by the form.
const FILTER_FIELDS: [(&str, &str, &str); 3] =
    [("f0", "c0", "v0"), ("f1", "c1", "v1"), ("f2", "c2", "v2")];
const COMPARISONS: [(&str, &str); 6] = [
    ("==", "=="),
    ("!=", "!="),
    (">", ">"),
    (">=", ">="),
    ("<", "<"),
    ("<=", "<="),
];

/// Routes of this file.
pub fn routes() -> Router<App> {
    Router::new()
        .route("/topics/{topic}/events", get(list))
        .route("/topics/{topic}/events/{offset}", get(one))
        .route("/topics/{topic}/tail", get(tail))
        .route("/topics/{topic}/tail/stream", get(stream))
}

/// The list's query string: order, cursor, identifier and up to three filters.
#[derive(Deserialize, Default, Clone)]
struct ListQuery {
    #[serde(default)]
    order: String,
    #[serde(default)]
    after: i64,
    #[serde(default)]
    before: i64,
    #[serde(default)]
    identifier: String,
    #[serde(default)]
    f0: String,
    #[serde(default)]
    c0: String,
    #[serde(default)]
    v0: String,
    #[serde(default)]
    f1: String,
    #[serde(default)]
    c1: String,
    #[serde(default)]
    v1: String,
    #[serde(default)]
    f2: String,
    #[serde(default)]
    c2: String,
    #[serde(default)]
    v2: String,
}

impl ListQuery {
    fn rows(&self) -> [(&str, &str, &str); 3] {
        [
            (&self.f0, &self.c0, &self.v0),
            (&self.f1, &self.c1, &self.v1),
            (&self.f2, &self.c2, &self.v2),
        ]
        .map(|(f, c, v)| (f.as_str(), c.as_str(), v.as_str()))
    }

    fn oldest(&self) -> bool {
        self.order == "oldest"
    }

    /// The query string of this search without its cursor, ending in `&`.
    fn base(&self, topic: &str) -> String {
        let mut s = format!(
            "/topics/{topic}/events?order={}&identifier={}&",
            enc(&self.order),
            enc(&self.identifier)
        );
        for ((f, c, v), (fk, ck, vk)) in self.rows().iter().zip(FILTER_FIELDS) {
            if !f.is_empty() {
                s.push_str(&format!("{fk}={}&{ck}={}&{vk}={}&", enc(f), enc(c), enc(v)));
            }
        }
        s
    }
}

async fn list(
    State(app): State<App>,
    Extension(user): Extension<CurrentUser>,
    Path(topic): Path<String>,
    Query(q): Query<ListQuery>,
) -> UiResult {
    let name = TopicName::parse(&topic)?;
    let mut errors = Errors::new();
    let scope = if q.identifier.trim().is_empty() {
        topic.clone()
    } else {
        format!("{topic}:{}", q.identifier.trim())
    };
    let topic_ref = errors.check("identifier", TopicRef::parse(&scope));
    let mut filters = Vec::new();
    for ((f, c, v), (fk, _, _)) in q.rows().iter().zip(FILTER_FIELDS) {
        if !f.trim().is_empty() {
            filters.extend(errors.check(
                fk,
                Filter::parse(f.trim(), if c.is_empty() { "==" } else { c }, v),
            ));
        }
    }
    let mut events = Vec::new();
    let (mut total, mut next, mut prev) = (0, None, None);
    if let (Some(topic_ref), true) = (topic_ref, errors.is_empty()) {
        if q.oldest() {
            let pq = PullQuery::new(topic_ref, PAGE_SIZE, q.after.max(0), filters)?;
            let b = app.events.pull(&as_admin(), &pq).await?;
            total = b.total_count;
            next = (b.next_offset > 0).then(|| format!("after={}", b.next_offset));
            prev = (q.after > 0).then(|| format!("after={}", b.previous_offset));
            events = b.events;
        } else {
            let pq = PullQuery::new(topic_ref, PAGE_SIZE, 0, filters)?;
            events = app.events.pull_newest(&as_admin(), &pq, q.before).await?;
            total = app
                .events
                .pull(
                    &as_admin(),
                    &PullQuery {
                        batch_size: 1,
                        ..pq.clone()
                    },
                )
                .await?
                .total_count;
            if events.len() as i64 == pq.batch_size {
                next = events.last().map(|e| format!("before={}", e.offset));
            }
            prev = (q.before > 0).then(|| "before=0".to_owned());
        }
    } else if app.topics.get_by_name(&name).await?.is_none() {
        return Err(Error::not_found("Topic not found").into());
    }
    let base = q.base(&topic);
    let body = html! {
        p.links {
            a href={ "/topics/" (topic) "/tail" } { "Live tail" } " · "
            a href={ "/subscriptions/new?topic=" (topic) } { "New subscription" } " · "
            a href={ "/dead-letters?topic=" (topic) } { "Dead letters" }
        }
        (filter_form(&topic, &q, &errors))
        h2 { (total) " matching event(s), " @if q.oldest() { "oldest first" } @else { "newest first" } }
        (event_table(&topic, &events))
        nav.pager aria-label="Pages" {
            @if let Some(p) = prev { a href={ (base) (p) } rel="prev" { "← Previous" } }
            @if let Some(n) = next { a href={ (base) (n) } rel="next" { "Next →" } }
        }
    };
    let code = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    Ok(respond(
        code,
        layout(&user, "/topics", &format!("Events of {topic}"), body),
    ))
}

fn filter_form(topic: &str, q: &ListQuery, errors: &Errors) -> Markup {
    let orders = [("newest", "Newest first"), ("oldest", "Oldest first")];
    let order = if q.oldest() { "oldest" } else { "newest" };
    html! {
        form.filters method="get" action={ "/topics/" (topic) "/events" } novalidate {
            (errors.summary())
            div.row {
                (field(errors, "order", "Order", Input::Select(&orders), order, None))
                (field(errors, "identifier", "Identifier", Input::Text("text"), &q.identifier, Some("empty: every identifier")))
            }
            @for (i, ((f, c, v), (fk, ck, vk))) in q.rows().iter().zip(FILTER_FIELDS).enumerate() {
                fieldset.row {
                    legend { "Filter " (i + 1) }
                    (field(errors, fk, "Field", Input::Text("text"), f, (i == 0).then_some("name, source, offset, occurred_at, data.<path>…")))
                    (field(errors, ck, "Comparison", Input::Select(&COMPARISONS), c, None))
                    (field(errors, vk, "Value", Input::Text("text"), v, None))
                }
            }
            button type="submit" { "Apply" }
            " " a href={ "/topics/" (topic) "/events" } { "Reset" }
        }
    }
}

fn event_table(topic: &str, events: &[Event]) -> Markup {
    html! {
        @if events.is_empty() {
            p { "No events." }
        } @else {
            table {
                thead { tr {
                    th scope="col" { "Offset" } th scope="col" { "Name" } th scope="col" { "Identifier" }
                    th scope="col" { "Occurred at" } th scope="col" { "Data" }
                } }
                tbody {
                    @for e in events {
                        tr {
                            td { a href={ "/topics/" (topic) "/events/" (e.offset) } { (e.offset) } }
                            td { (e.name) }
                            td { (e.topic_identifier) }
                            td.mono { (crate::events::format_time(&e.occurred_at)) }
                            td.mono.clip { (e.data) }
                        }
                    }
                }
            }
        }
    }
}

async fn one(
    State(app): State<App>,
    Extension(user): Extension<CurrentUser>,
    Path((topic, offset)): Path<(String, i64)>,
) -> UiResult {
    let topic_ref = TopicRef::parse(&topic)?;
    let pq = PullQuery::new(topic_ref, 1, (offset - 1).max(0), vec![])?;
    let event = app
        .events
        .pull(&as_admin(), &pq)
        .await?
        .events
        .into_iter()
        .find(|e| e.offset == offset)
        .ok_or_else(|| Error::not_found("Event not found"))?;
    let pretty =
        serde_json::to_string_pretty(&event.to_json()).map_err(|e| Error::Internal(e.into()))?;
    let body = html! {
        p.links {
            a href={ "/topics/" (topic) "/events" } { "← All events of " (topic) }
            @if offset > 1 { " · " a href={ "/topics/" (topic) "/events/" (offset - 1) } { "Previous" } }
            " · " a href={ "/topics/" (topic) "/events/" (offset + 1) } { "Next" }
        }
        pre.json tabindex="0" { code { (pretty) } }
    };
    Ok(respond(
        StatusCode::OK,
        layout(&user, "/topics", &format!("{topic} event {offset}"), body),
    ))
}

async fn tail(
    State(app): State<App>,
    Extension(user): Extension<CurrentUser>,
    Path(topic): Path<String>,
) -> UiResult {
    let name = TopicName::parse(&topic)?;
    app.topics
        .get_by_name(&name)
        .await?
        .ok_or_else(|| Error::not_found("Topic not found"))?;
    let body = html! {
        p.links { a href={ "/topics/" (topic) "/events" } { "← Stored events of " (topic) } }
        p #tail-status role="status" aria-live="polite" data-state="connecting" { "Connecting…" }
        table #tail data-stream={ "/topics/" (topic) "/tail/stream" } data-topic=(topic) {
            caption { "New events appear at the top as they are published on any node (the last 200 are kept)." }
            thead { tr {
                th scope="col" { "Offset" } th scope="col" { "Name" } th scope="col" { "Identifier" }
                th scope="col" { "Occurred at" } th scope="col" { "Data" }
            } }
            tbody {}
        }
        script src="/assets/tail.js" {}
    };
    Ok(respond(
        StatusCode::OK,
        layout(&user, "/topics", &format!("Live tail of {topic}"), body),
    ))
}

/// State of one tail stream: the live receiver, pending SSE events, and a tick to notice a
/// draining node (so a shutdown is not held up by open tails) or an ended session (signed out
/// on any node, or expired): the stream ends within a tick of either.
struct Tail {
    rx: crate::live::Listener,
    pending: VecDeque<SseEvent>,
    tick: tokio::time::Interval,
    app: App,
    session: String,
    _permit: OwnedSemaphorePermit,
}

fn sse_of(e: &Event) -> SseEvent {
    let v = serde_json::json!({
        "offset": e.offset,
        "name": e.name,
        "identifier": e.topic_identifier,
        "occurred_at": crate::events::format_time(&e.occurred_at),
        "data": e.data,
    });
    SseEvent::default().event("event").data(v.to_string())
}

/// Whether the tail's session is gone (a failed lookup is not an answer: the tail goes on).
async fn session_ended(st: &Tail) -> bool {
    matches!(st.app.users.session(&st.session).await, Ok(None))
}

async fn stream(
    State(app): State<App>,
    Extension(permits): Extension<TailPermits>,
    Extension(user): Extension<CurrentUser>,
    Path(topic): Path<String>,
) -> UiResult {
    let name = TopicName::parse(&topic)?;
    let permit = permits.0.try_acquire_owned().map_err(|_| {
        Error::ResourceExhausted(format!(
            "this node already serves {MAX_TAILS} live tails; close one or use another node"
        ))
    })?;
    app.topics
        .get_by_name(&name)
        .await?
        .ok_or_else(|| Error::not_found("Topic not found"))?;
    let state = Tail {
        rx: app.live.subscribe(name.as_str()),
        pending: VecDeque::from([SseEvent::default().event("ready").data("live")]),
        tick: tokio::time::interval(Duration::from_secs(1)),
        app,
        session: user.token,
        _permit: permit,
    };
    let events = futures::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(e) = st.pending.pop_front() {
                return Some((Ok::<_, Infallible>(e), st));
            }
            tokio::select! {
                r = st.rx.recv() => match r {
                    Ok(batch) => st.pending.extend(batch.iter().map(sse_of)),
                    // A slow browser misses events rather than slowing publishers; it is told.
                    Err(RecvError::Lagged(n)) => st.pending.push_back(SseEvent::default().event("lagged").data(n.to_string())),
                    Err(RecvError::Closed) => return None,
                },
                _ = st.tick.tick() => if st.app.is_draining() || session_ended(&st).await { return None },
            }
        }
    });
    let sse = Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)));
    // Proxies such as nginx buffer responses by default, which would hold tail events back.
    Ok(([("x-accel-buffering", "no")], sse).into_response())
}
