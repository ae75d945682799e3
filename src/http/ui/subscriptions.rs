//! Subscription pages: the paginated list, create and edit forms (validated field by field
//! before anything is saved), a detail page with the delivery state and attempts (see
//! [`super::deliveries`]), pause, resume, replay and deletion behind a confirmation.

use super::forms::{Errors, Input, field, message, pager};
use super::session::CurrentUser;
use super::{UiResult, as_admin, deliveries, layout, respond, see_other};
use crate::app::App;
use crate::error::Error;
use crate::page::PageRequest;
use crate::subscriptions::{
    NewSubscription, Subscription, SubscriptionType, SubscriptionUpdate, check_name,
};
use crate::topics::{TopicName, parse_identifier};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Extension, Form, Router};
use maud::{Markup, html};
use serde::Deserialize;
use std::collections::BTreeMap;
use uuid::Uuid;

const KINDS: [(&str, &str); 3] = [
    ("webhook", "Webhook (POST to a URL)"),
    ("websocket", "Websocket"),
    ("api", "Pull (API)"),
];

/// Routes of this file.
pub fn routes() -> Router<App> {
    Router::new()
        .route("/subscriptions", get(list).post(create))
        .route("/subscriptions/new", get(new_form))
        .route("/subscriptions/{id}", get(deliveries::detail))
        .route("/subscriptions/{id}/edit", get(edit_form).post(edit))
        .route(
            "/subscriptions/{id}/delete",
            get(confirm_delete).post(delete),
        )
}

#[derive(Deserialize, Default)]
struct ListQuery {
    #[serde(default)]
    page: i32,
    #[serde(default)]
    topic: String,
}

async fn list(
    State(app): State<App>,
    Extension(user): Extension<CurrentUser>,
    Query(q): Query<ListQuery>,
) -> UiResult {
    let req = PageRequest::new(q.page, 50);
    let page = app.subscriptions.list(&as_admin(), req).await?;
    let body = html! {
        p { a href="/subscriptions/new" { "New subscription" } }
        @if page.items.is_empty() {
            p { "No subscriptions yet." }
        } @else {
            table {
                thead { tr {
                    th scope="col" { "Name" } th scope="col" { "Topic" } th scope="col" { "Type" }
                    th scope="col" { "Endpoint" } th scope="col" { "State" }
                } }
                tbody {
                    @for s in &page.items {
                        tr {
                            td { a href={ "/subscriptions/" (s.id) } { (s.name) } }
                            td { (s.topic) }
                            td { (s.kind.as_str()) }
                            td.mono.clip { (s.config.get("endpoint_url").map(String::as_str).unwrap_or("")) }
                            td { @if s.paused { "paused" } @else { "active" } }
                        }
                    }
                }
            }
        }
        (pager("/subscriptions?", req.page, page.previous_page, page.next_page, page.total_pages))
    };
    Ok(respond(
        StatusCode::OK,
        layout(&user, "/subscriptions", "Subscriptions", body),
    ))
}

/// The create and edit form as posted.
#[derive(Deserialize, Default)]
struct SubForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    topic: String,
    #[serde(default)]
    identifier: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    endpoint_url: String,
    #[serde(default)]
    settings: String,
    #[serde(default)]
    paused: Option<String>,
}

/// Parses `key=value` lines (blank lines ignored).
fn parse_settings(s: &str) -> crate::error::Result<BTreeMap<String, String>> {
    let mut m = BTreeMap::new();
    for (i, line) in s
        .lines()
        .map(str::trim)
        .enumerate()
        .filter(|(_, l)| !l.is_empty())
    {
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| Error::invalid(format!("line {} is not key=value", i + 1)))?;
        let k = k.trim();
        if k.is_empty() || k == "endpoint_url" {
            return Err(Error::invalid(format!(
                "line {}: use a key other than endpoint_url",
                i + 1
            )));
        }
        m.insert(k.to_owned(), v.trim().to_owned());
    }
    Ok(m)
}

/// Checks every field, collecting errors, and returns the settings if all are fine.
fn check(
    f: &SubForm,
    errors: &mut Errors,
    kind: SubscriptionType,
) -> Option<BTreeMap<String, String>> {
    errors.check("name", check_name(&f.name));
    if !f.identifier.trim().is_empty() {
        errors.check("identifier", parse_identifier(f.identifier.trim()));
    }
    let mut config = errors.check("settings", parse_settings(&f.settings))?;
    let url = f.endpoint_url.trim();
    if kind == SubscriptionType::Webhook && url.is_empty() {
        errors.add("endpoint_url", "webhook subscriptions need an endpoint URL");
    } else if !url.is_empty() {
        errors.check("endpoint_url", crate::subscriptions::validate_endpoint(url));
        config.insert("endpoint_url".into(), url.to_owned());
    }
    errors.is_empty().then_some(config)
}

fn form_body(
    user: &CurrentUser,
    action: &str,
    f: &SubForm,
    errors: &Errors,
    editing: bool,
) -> Markup {
    html! {
        form method="post" action=(action) novalidate {
            (user.csrf())
            (errors.summary())
            (field(errors, "name", "Name", Input::Text("text"), &f.name, None))
            @if editing {
                p { "Topic: " strong { (f.topic) } " · type: " strong { (f.kind) } " (fixed once created)" }
            } @else {
                (field(errors, "topic", "Topic", Input::Text("text"), &f.topic, None))
                (field(errors, "kind", "Type", Input::Select(&KINDS), &f.kind, None))
            }
            (field(errors, "identifier", "Identifier", Input::Text("text"), &f.identifier, Some("empty: every identifier of the topic")))
            (field(errors, "endpoint_url", "Endpoint URL", Input::Text("url"), &f.endpoint_url, Some("webhooks: the http(s) URL events are POSTed to")))
            (field(errors, "settings", "Other settings", Input::Area, &f.settings, Some("key=value, one per line")))
            @if !editing {
                div.field {
                    label { input type="checkbox" name="paused" value="on" checked[f.paused.is_some()]; " Create paused" }
                }
            }
            button type="submit" { @if editing { "Save changes" } @else { "Create subscription" } }
        }
    }
}

async fn new_form(Extension(user): Extension<CurrentUser>, Query(q): Query<ListQuery>) -> UiResult {
    let f = SubForm {
        topic: q.topic,
        kind: "webhook".into(),
        ..SubForm::default()
    };
    let body = form_body(&user, "/subscriptions", &f, &Errors::new(), false);
    Ok(respond(
        StatusCode::OK,
        layout(&user, "/subscriptions", "New subscription", body),
    ))
}

async fn create(
    State(app): State<App>,
    Extension(user): Extension<CurrentUser>,
    Form(f): Form<SubForm>,
) -> UiResult {
    let mut errors = Errors::new();
    let kind = errors
        .check("kind", SubscriptionType::parse(&f.kind))
        .unwrap_or(SubscriptionType::Api);
    let topic = errors.check("topic", TopicName::parse(f.topic.trim()));
    if let (Some(config), Some(topic)) = (check(&f, &mut errors, kind), topic) {
        let new = NewSubscription {
            name: f.name.trim().to_owned(),
            topic_name: topic.as_str().to_owned(),
            topic_identifier: f.identifier.trim().to_owned(),
            push: kind != SubscriptionType::Api,
            config,
            paused: f.paused.is_some(),
            subscription_type: kind.as_str().to_owned(),
        };
        match app.subscriptions.create(&as_admin(), new).await {
            Ok(s) => return Ok(see_other(&format!("/subscriptions/{}", s.id))),
            Err(e @ Error::AlreadyExists(_)) => errors.add("name", message(&e)),
            Err(e @ Error::NotFound(_)) => errors.add("topic", message(&e)),
            Err(e @ Error::InvalidArgument(_)) => errors.add("settings", message(&e)),
            Err(e) => return Err(e.into()),
        }
    }
    let body = form_body(&user, "/subscriptions", &f, &errors, false);
    Ok(respond(
        StatusCode::UNPROCESSABLE_ENTITY,
        layout(&user, "/subscriptions", "New subscription", body),
    ))
}

fn form_of(s: &Subscription) -> SubForm {
    SubForm {
        name: s.name.clone(),
        topic: s.topic.name.to_string(),
        identifier: s.topic.identifier_str().to_owned(),
        kind: s.kind.as_str().to_owned(),
        endpoint_url: s.config.get("endpoint_url").cloned().unwrap_or_default(),
        settings: s
            .config
            .iter()
            .filter(|(k, _)| *k != "endpoint_url")
            .map(|(k, v)| format!("{k}={v}\n"))
            .collect(),
        paused: s.paused.then(|| "on".to_owned()),
    }
}

async fn edit_form(
    State(app): State<App>,
    Extension(user): Extension<CurrentUser>,
    Path(id): Path<Uuid>,
) -> UiResult {
    let s = app.subscriptions.get(&as_admin(), id).await?;
    let body = form_body(
        &user,
        &format!("/subscriptions/{id}/edit"),
        &form_of(&s),
        &Errors::new(),
        true,
    );
    Ok(respond(
        StatusCode::OK,
        layout(&user, "/subscriptions", &format!("Edit {}", s.name), body),
    ))
}

async fn edit(
    State(app): State<App>,
    Extension(user): Extension<CurrentUser>,
    Path(id): Path<Uuid>,
    Form(mut f): Form<SubForm>,
) -> UiResult {
    let s = app.subscriptions.get(&as_admin(), id).await?;
    (f.topic, f.kind) = (s.topic.name.to_string(), s.kind.as_str().to_owned());
    let mut errors = Errors::new();
    if let Some(config) = check(&f, &mut errors, s.kind) {
        let u = SubscriptionUpdate {
            name: f.name.trim().to_owned(),
            topic_identifier: f.identifier.trim().to_owned(),
            push: s.push,
            config,
        };
        match app.subscriptions.update(&as_admin(), id, u).await {
            Ok(_) => return Ok(see_other(&format!("/subscriptions/{id}"))),
            Err(e @ Error::AlreadyExists(_)) => errors.add("name", message(&e)),
            Err(e @ Error::InvalidArgument(_)) => errors.add("settings", message(&e)),
            Err(e) => return Err(e.into()),
        }
    }
    let body = form_body(
        &user,
        &format!("/subscriptions/{id}/edit"),
        &f,
        &errors,
        true,
    );
    Ok(respond(
        StatusCode::UNPROCESSABLE_ENTITY,
        layout(&user, "/subscriptions", &format!("Edit {}", s.name), body),
    ))
}

async fn confirm_delete(
    State(app): State<App>,
    Extension(user): Extension<CurrentUser>,
    Path(id): Path<Uuid>,
) -> UiResult {
    let s = app.subscriptions.get(&as_admin(), id).await?;
    let body = html! {
        p { "Deleting subscription " strong { (s.name) } " (" (s.topic) ") stops its deliveries, removes its delivery position and its API key associations. The topic and its events stay." }
        form method="post" action={ "/subscriptions/" (id) "/delete" } {
            (user.csrf())
            button.danger type="submit" { "Delete " (s.name) }
            " " a href={ "/subscriptions/" (id) } { "Cancel" }
        }
    };
    Ok(respond(
        StatusCode::OK,
        layout(
            &user,
            "/subscriptions",
            &format!("Delete subscription {}?", s.name),
            body,
        ),
    ))
}

async fn delete(State(app): State<App>, Path(id): Path<Uuid>) -> UiResult {
    app.subscriptions.delete(&as_admin(), id).await?;
    Ok(see_other("/subscriptions"))
}
