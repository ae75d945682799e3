//! Topic pages: the searchable, paginated list with a create form, and deletion behind a
//! confirmation page that names every table and record the drop removes.

use super::forms::{Errors, Input, field, pager};
use super::session::CurrentUser;
use super::{UiResult, as_admin, enc, layout, respond, see_other};
use crate::app::App;
use crate::error::Error;
use crate::page::PageRequest;
use crate::topics::TopicName;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Extension, Form, Router};
use maud::html;
use serde::Deserialize;

/// Topics per page.
const PAGE_SIZE: i32 = 25;

/// Routes of this file.
pub fn routes() -> Router<App> {
    Router::new()
        .route("/topics", get(list).post(create))
        .route("/topics/{topic}/delete", get(confirm_delete).post(delete))
}

#[derive(Deserialize, Default)]
struct ListQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    page: i32,
}

#[derive(Deserialize)]
struct CreateForm {
    #[serde(default)]
    name: String,
}

async fn list(
    State(app): State<App>,
    Extension(user): Extension<CurrentUser>,
    Query(q): Query<ListQuery>,
) -> UiResult {
    render(&app, &user, &q, "", &Errors::new(), StatusCode::OK).await
}

async fn render(
    app: &App,
    user: &CurrentUser,
    q: &ListQuery,
    new_name: &str,
    errors: &Errors,
    code: StatusCode,
) -> UiResult {
    let req = PageRequest::new(q.page, PAGE_SIZE);
    let page = app
        .topic_admin
        .list(&as_admin(), req, q.q.trim())
        .await?
        .map(|t| t.topic);
    let body = html! {
        section aria-labelledby="create-h" {
            h2 #create-h { "Create a topic" }
            form.inline method="post" action="/topics" novalidate {
                (user.csrf())
                (errors.summary())
                (field(errors, "name", "Name", Input::Text("text"), new_name,
                    Some("1-50 characters: lowercase letters, digits and _")))
                button type="submit" { "Create topic" }
            }
        }
        section aria-labelledby="list-h" {
            h2 #list-h { "Topics (" (page.total_count) ")" }
            form.inline role="search" method="get" action="/topics" {
                div.field {
                    label for="q" { "Search by name" }
                    input #q type="search" name="q" value=(q.q);
                }
                button type="submit" { "Search" }
            }
            @if page.items.is_empty() {
                p { "No topics" @if !q.q.is_empty() { " match \u{201c}" (q.q) "\u{201d}" } "." }
            } @else {
                table {
                    thead { tr { th scope="col" { "Name" } th scope="col" { "Id" } th scope="col" { "Actions" } } }
                    tbody {
                        @for t in &page.items {
                            tr {
                                td { a href={ "/topics/" (t.name) "/events" } { (t.name) } }
                                td.mono { (t.id) }
                                td.actions {
                                    a href={ "/topics/" (t.name) "/tail" } { "Live tail" }
                                    a href={ "/topics/" (t.name) "/retention" } { "Retention" }
                                    a.danger href={ "/topics/" (t.name) "/delete" } { "Delete…" }
                                }
                            }
                        }
                    }
                }
            }
            (pager(&format!("/topics?q={}&", enc(&q.q)), req.page, page.previous_page, page.next_page, page.total_pages))
        }
    };
    Ok(respond(code, layout(user, "/topics", "Topics", body)))
}

async fn create(
    State(app): State<App>,
    Extension(user): Extension<CurrentUser>,
    Form(f): Form<CreateForm>,
) -> UiResult {
    let mut errors = Errors::new();
    if let Some(name) = errors.check("name", TopicName::parse(f.name.trim())) {
        let window = crate::topics::DedupeWindow::NODE_DEFAULT;
        match app
            .topic_admin
            .create(&as_admin(), &name, None, window)
            .await
        {
            Ok(t) => return Ok(see_other(&format!("/topics/{}/events", t.topic.name))),
            Err(e @ Error::AlreadyExists(_)) => errors.add("name", e.to_string()),
            Err(e) => return Err(e.into()),
        }
    }
    let q = ListQuery::default();
    render(
        &app,
        &user,
        &q,
        &f.name,
        &errors,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await
}

async fn confirm_delete(
    State(app): State<App>,
    Extension(user): Extension<CurrentUser>,
    Path(topic): Path<String>,
) -> UiResult {
    let name = TopicName::parse(&topic)?;
    let t = app
        .topics
        .get_by_name(&name)
        .await?
        .ok_or_else(|| Error::not_found("Topic not found"))?;
    let events = app.topics.bounds(&name).await?.retained();
    let subs = app.subscriptions.count_for_topic(&name).await?;
    let body = html! {
        p { "Deleting topic " strong { (t.name) } " cannot be undone. It drops:" }
        ul {
            li { "table " code { (name.events_table().trim_matches('"')) } " with its " (events) " events" }
            li { "table " code { (name.deliveries_table().trim_matches('"')) } " with every webhook delivery attempt" }
            li { (subs) " subscription(s) of this topic" }
            li { "every API key grant on this topic" }
        }
        form method="post" action={ "/topics/" (t.name) "/delete" } {
            (user.csrf())
            button.danger type="submit" { "Delete " (t.name) " and its tables" }
            " "
            a href="/topics" { "Cancel" }
        }
    };
    Ok(respond(
        StatusCode::OK,
        layout(&user, "/topics", &format!("Delete topic {}?", t.name), body),
    ))
}

async fn delete(State(app): State<App>, Path(topic): Path<String>) -> UiResult {
    let name = TopicName::parse(&topic)?;
    let t = app
        .topics
        .get_by_name(&name)
        .await?
        .ok_or_else(|| Error::not_found("Topic not found"))?;
    app.topic_admin.delete(&as_admin(), t.id).await?;
    Ok(see_other("/topics"))
}
