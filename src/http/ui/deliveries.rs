//! The pages that show server-side delivery work: one subscription with its owner node,
//! cursor, lag and delivery attempts (with pause, resume and replay from an offset), and the
//! cluster's nodes with their heartbeats and what each owns. Everything here reads the
//! delivery and cluster services, so this is the one UI file that follows their changes.

use super::forms::{Errors, Input, field, message, pager};
use super::session::CurrentUser;
use super::{UiResult, as_admin, layout, respond, see_other};
use crate::app::App;
use crate::error::Error;
use crate::events::format_time;
use crate::page::PageRequest;
use crate::redis::RedisState;
use crate::subscriptions::{Subscription, SubscriptionType};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Extension, Form, Router};
use maud::{Markup, html};
use serde::Deserialize;
use uuid::Uuid;

/// Routes of this file (the detail page itself is routed by `subscriptions`).
pub fn routes() -> Router<App> {
    Router::new()
        .route("/subscriptions/{id}/pause", post(pause))
        .route("/subscriptions/{id}/resume", post(resume))
        .route("/subscriptions/{id}/replay", post(replay))
}

/// Query of the detail page: the page of attempts.
#[derive(Deserialize, Default)]
pub struct DetailQuery {
    #[serde(default)]
    page: i32,
}

/// GET /subscriptions/{id}: facts, delivery state, attempts and actions.
pub async fn detail(
    State(app): State<App>,
    Extension(user): Extension<CurrentUser>,
    Path(id): Path<Uuid>,
    Query(q): Query<DetailQuery>,
) -> UiResult {
    render(&app, &user, id, q.page, "", &Errors::new(), StatusCode::OK).await
}

async fn render(
    app: &App,
    user: &CurrentUser,
    id: Uuid,
    page: i32,
    replay_value: &str,
    errors: &Errors,
    code: StatusCode,
) -> UiResult {
    let s = app.subscriptions.get(&as_admin(), id).await?;
    let delivery = if s.kind == SubscriptionType::Webhook {
        Some(delivery_section(app, user, &s, page, replay_value, errors).await?)
    } else {
        None
    };
    let body = html! {
        dl.facts {
            dt { "Topic" } dd { a href={ "/topics/" (s.topic.name) "/events" } { (s.topic) } }
            dt { "Type" } dd { (s.kind.as_str()) }
            dt { "Endpoint" } dd.mono { (s.config.get("endpoint_url").map(String::as_str).unwrap_or("—")) }
            dt { "State" } dd #state { @if s.paused { "paused" } @else { "active" } }
            dt { "Id" } dd.mono { (s.id) }
        }
        div.actions {
            a href={ "/subscriptions/" (id) "/edit" } { "Edit" }
            @if s.kind == SubscriptionType::Webhook {
                @if s.paused {
                    form method="post" action={ "/subscriptions/" (id) "/resume" } { (user.csrf()) button type="submit" { "Resume" } }
                } @else {
                    form method="post" action={ "/subscriptions/" (id) "/pause" } { (user.csrf()) button.secondary type="submit" { "Pause" } }
                }
            }
            a.danger href={ "/subscriptions/" (id) "/delete" } { "Delete…" }
        }
        @match delivery {
            Some(d) => { (d) }
            None => { p { "Clients read this subscription themselves (" (s.kind.as_str()) "); the server delivers nothing, so there is no owner, cursor or attempt to show." } }
        }
    };
    Ok(respond(
        code,
        layout(
            user,
            "/subscriptions",
            &format!("Subscription {}", s.name),
            body,
        ),
    ))
}

async fn delivery_section(
    app: &App,
    user: &CurrentUser,
    s: &Subscription,
    page: i32,
    replay_value: &str,
    errors: &Errors,
) -> Result<Markup, Error> {
    let pos = app.cluster.position(s.id).await?;
    let req = PageRequest::new(page, 25);
    let d = app.delivery.deliveries(&as_admin(), s.id, req).await?;
    Ok(html! {
        h2 { "Delivery" }
        dl.facts {
            dt { "Owner node" } dd #owner { (pos.owner.as_deref().unwrap_or(if s.paused { "none (paused)" } else { "none yet" })) }
            dt { "Cursor" } dd #cursor { @match pos.delivered_offset { Some(o) => { "delivered up to offset " (o) }, None => { "not started" } } }
            dt { "Lag" } dd #lag { @match pos.lag() { Some(l) => { (l) " event(s) behind offset " (pos.last_offset) }, None => { "—" } } }
            dt { "Failed attempts at the next event" } dd { (pos.attempts) }
            @if let Some(at) = pos.next_attempt_at { dt { "Next attempt" } dd.mono { (format_time(&at)) } }
        }
        h3 { "Replay" }
        form.inline method="post" action={ "/subscriptions/" (s.id) "/replay" } novalidate {
            (user.csrf())
            (field(errors, "offset", "Continue after offset", Input::Text("number"), replay_value, Some("0 replays everything; the topic's last offset skips to now")))
            button type="submit" { "Replay" }
        }
        h3 { "Attempts (" (d.page.total_count) ")" }
        @if d.page.items.is_empty() { p { "No attempts yet." } } @else {
            table #deliveries {
                thead { tr {
                    th scope="col" { "Offset" } th scope="col" { "Attempt" } th scope="col" { "Status" }
                    th scope="col" { "HTTP" } th scope="col" { "Error" } th scope="col" { "Took" } th scope="col" { "When" }
                } }
                tbody { @for a in &d.page.items {
                    tr {
                        td { a href={ "/topics/" (s.topic.name) "/events/" (a.event_offset) } { (a.event_offset) } }
                        td { (a.attempt) }
                        td { (a.status) }
                        td { @if let Some(c) = a.response_status { (c) } }
                        td.clip { (a.error.as_deref().unwrap_or("")) }
                        td { (a.duration_ms) " ms" }
                        td.mono { (format_time(&a.attempted_at)) }
                    }
                } }
            }
        }
        (pager(&format!("/subscriptions/{}?", s.id), req.page, d.page.previous_page, d.page.next_page, d.page.total_pages))
    })
}

async fn pause(State(app): State<App>, Path(id): Path<Uuid>) -> UiResult {
    app.delivery.pause(&as_admin(), id).await?;
    Ok(see_other(&format!("/subscriptions/{id}")))
}

async fn resume(State(app): State<App>, Path(id): Path<Uuid>) -> UiResult {
    app.delivery.resume(&as_admin(), id).await?;
    Ok(see_other(&format!("/subscriptions/{id}")))
}

#[derive(Deserialize)]
struct ReplayForm {
    #[serde(default)]
    offset: String,
}

async fn replay(
    State(app): State<App>,
    Extension(user): Extension<CurrentUser>,
    Path(id): Path<Uuid>,
    Form(f): Form<ReplayForm>,
) -> UiResult {
    let mut errors = Errors::new();
    match f.offset.trim().parse::<i64>() {
        Err(_) => errors.add("offset", "enter a whole number (an offset)"),
        Ok(offset) => match app.delivery.reset_cursor(&as_admin(), id, offset).await {
            Ok(_) => return Ok(see_other(&format!("/subscriptions/{id}"))),
            Err(e @ Error::InvalidArgument(_)) => errors.add("offset", message(&e)),
            Err(e) => return Err(e.into()),
        },
    }
    render(
        &app,
        &user,
        id,
        1,
        &f.offset,
        &errors,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await
}

/// GET /cluster: nodes, heartbeats and ownership.
pub async fn cluster(State(app): State<App>, Extension(user): Extension<CurrentUser>) -> UiResult {
    let ttl = app.node.ttl;
    let nodes = app.cluster.nodes().await?;
    let body = html! {
        p { "This page was served by " strong { (app.node.name) } ". A node counts as alive while its heartbeat is younger than " (ttl.as_secs()) " s; Redis is "
            @if app.bus.redis_state() != RedisState::Disabled { "configured" } @else { "not configured (live events travel over Postgres NOTIFY)" } "." }
        @if nodes.is_empty() { p { "No node has reported a heartbeat yet." } } @else {
            table #nodes {
                thead { tr {
                    th scope="col" { "Node" } th scope="col" { "State" } th scope="col" { "Last heartbeat" }
                    th scope="col" { "Started" } th scope="col" { "Owns" }
                } }
                tbody { @for n in &nodes {
                    tr {
                        td { (n.name) br; span.mono.hint { (n.id) } }
                        td { @if n.alive { "alive" } @else { "gone" } }
                        td.mono { (format_time(&n.heartbeat_at)) }
                        td.mono { (format_time(&n.started_at)) }
                        td { @if n.owns.is_empty() { "—" } @else { ul { @for o in &n.owns {
                            li { a href={ "/subscriptions/" (o.id) } { (o.name) } " (epoch " (o.epoch) ")" }
                        } } } }
                    }
                } }
            }
        }
    };
    Ok(respond(
        StatusCode::OK,
        layout(&user, "/cluster", "Cluster", body),
    ))
}
