//! API key pages: the list with a create form (the secret and bearer token are shown once, on
//! the page that answers the creation, and never again), a detail page with the key's topic and
//! subscription grants and forms to add or remove them, and revocation.

use super::forms::{Errors, Input, field, message};
use super::session::CurrentUser;
use super::{UiResult, as_admin, layout, respond, see_other};
use crate::app::App;
use crate::auth::{ApiKey, KeyType};
use crate::error::{Error, Result};
use crate::page::PageRequest;
use crate::topics::TopicRef;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use maud::{Markup, html};
use serde::Deserialize;
use uuid::Uuid;

const TYPES: [(&str, &str); 3] = [
    ("producer", "Producer (publishes to its topics)"),
    ("consumer", "Consumer (reads its subscriptions)"),
    ("admin", "Admin (everything)"),
];

/// Routes of this file.
pub fn routes() -> Router<App> {
    Router::new()
        .route("/keys", get(list).post(create))
        .route("/keys/{id}", get(detail))
        .route("/keys/{id}/revoke", post(revoke))
        .route("/keys/{id}/grants", post(grants))
}

#[derive(Deserialize, Default)]
struct CreateForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    key_type: String,
    #[serde(default)]
    topics: String,
    #[serde(default)]
    subscriptions: String,
}

/// Comma- or space-separated topics.
fn parse_topics(s: &str) -> Result<Vec<TopicRef>> {
    s.split([',', ' ', '\n'])
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(TopicRef::parse)
        .collect()
}

/// Comma- or space-separated subscription ids.
fn parse_ids(s: &str) -> Result<Vec<Uuid>> {
    s.split([',', ' ', '\n'])
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| {
            Uuid::parse_str(t)
                .map_err(|_| Error::invalid(format!("{t:?} is not a subscription id")))
        })
        .collect()
}

fn key_table(keys: &[ApiKey]) -> Markup {
    html! {
        table {
            thead { tr { th scope="col" { "Name" } th scope="col" { "Key" } th scope="col" { "Type" } th scope="col" { "Status" } } }
            tbody {
                @for k in keys {
                    tr {
                        td { a href={ "/keys/" (k.id) } { @if k.name.is_empty() { "(unnamed)" } @else { (k.name) } } }
                        td.mono { (k.key) }
                        td { (k.key_type.as_str()) }
                        td { @if k.revoked { "revoked" } @else { "active" } }
                    }
                }
            }
        }
    }
}

async fn render(
    app: &App,
    user: &CurrentUser,
    f: &CreateForm,
    errors: &Errors,
    code: StatusCode,
) -> UiResult {
    let keys = app.auth.list_keys(&as_admin()).await?;
    let body = html! {
        section aria-labelledby="create-h" {
            h2 #create-h { "Create a key" }
            form method="post" action="/keys" novalidate {
                (user.csrf())
                (errors.summary())
                div.row {
                    (field(errors, "name", "Name", Input::Text("text"), &f.name, None))
                    (field(errors, "key_type", "Type", Input::Select(&TYPES), &f.key_type, None))
                }
                (field(errors, "topics", "Topics (producers)", Input::Text("text"), &f.topics, Some("comma-separated, e.g. users, orders:42")))
                (field(errors, "subscriptions", "Subscription ids (consumers)", Input::Text("text"), &f.subscriptions, Some("comma-separated ids")))
                button type="submit" { "Create key" }
            }
        }
        h2 { "Keys (" (keys.len()) ")" }
        (key_table(&keys))
    };
    Ok(respond(code, layout(user, "/keys", "API keys", body)))
}

async fn list(State(app): State<App>, Extension(user): Extension<CurrentUser>) -> UiResult {
    let f = CreateForm {
        key_type: "producer".into(),
        ..CreateForm::default()
    };
    render(&app, &user, &f, &Errors::new(), StatusCode::OK).await
}

async fn create(
    State(app): State<App>,
    Extension(user): Extension<CurrentUser>,
    Form(f): Form<CreateForm>,
) -> UiResult {
    let mut errors = Errors::new();
    let key_type = errors.check("key_type", KeyType::parse(&f.key_type));
    let topics = errors.check("topics", parse_topics(&f.topics));
    let subs = errors.check("subscriptions", parse_ids(&f.subscriptions));
    if f.name.len() > 255 {
        errors.add("name", "use at most 255 characters");
    }
    if let (Some(key_type), Some(topics), Some(subs), true) =
        (key_type, topics, subs, errors.is_empty())
    {
        match app
            .auth
            .create_key(&as_admin(), key_type, f.name.trim(), &topics, &subs)
            .await
        {
            Ok(k) => return Ok(created(&user, &k)),
            Err(e @ Error::NotFound(_)) => errors.add("subscriptions", message(&e)),
            Err(e @ Error::InvalidArgument(_)) => errors.add("name", message(&e)),
            Err(e) => return Err(e.into()),
        }
    }
    render(&app, &user, &f, &errors, StatusCode::UNPROCESSABLE_ENTITY).await
}

/// The only page that ever shows the secret; not cached.
fn created(user: &CurrentUser, k: &ApiKey) -> axum::response::Response {
    let body = html! {
        div.notice role="alert" {
            p { strong { "Copy the secret now: it is not stored and will not be shown again." } }
            dl.facts {
                dt { "Key" } dd.mono { (k.key) }
                dt { "Secret" } dd { code.secret #secret { (k.secret.as_deref().unwrap_or("")) } }
                dt { "Bearer token" } dd { code.secret #bearer { (k.bearer_token().unwrap_or_default()) } }
            }
        }
        p { a href={ "/keys/" (k.id) } { "Manage this key" } " · " a href="/keys" { "All keys" } }
    };
    let page = layout(user, "/keys", "Key created", body);
    (
        StatusCode::CREATED,
        [(header::CACHE_CONTROL, "no-store")],
        page,
    )
        .into_response()
}

async fn detail(
    State(app): State<App>,
    Extension(user): Extension<CurrentUser>,
    Path(id): Path<Uuid>,
) -> UiResult {
    render_detail(&app, &user, id, &Errors::new(), "", StatusCode::OK).await
}

async fn render_detail(
    app: &App,
    user: &CurrentUser,
    id: Uuid,
    errors: &Errors,
    topic_value: &str,
    code: StatusCode,
) -> UiResult {
    let (k, p) = app.auth.key(&as_admin(), id).await?;
    let subs = app
        .subscriptions
        .list(&as_admin(), PageRequest::new(1, 200))
        .await?
        .items;
    let name = if k.name.is_empty() {
        "(unnamed)".to_owned()
    } else {
        k.name.clone()
    };
    let body = html! {
        dl.facts {
            dt { "Key" } dd.mono { (k.key) }
            dt { "Type" } dd { (k.key_type.as_str()) }
            dt { "Status" } dd { @if k.revoked { "revoked" } @else { "active" } }
        }
        (errors.summary())
        h2 { "Topics" }
        @if p.topics.is_empty() { p { "No topic grants." } }
        ul { @for t in &p.topics {
            @let label = if t.identifier.is_empty() { t.name.clone() } else { format!("{}:{}", t.name, t.identifier) };
            li { (label) " " (grant_button(user, id, "remove_topic", &label, "Remove")) }
        } }
        (grant_form(user, id, errors, "add_topic", "Grant a topic", html! {
            input #add_topic name="value" type="text" placeholder="users or users:42" value=(topic_value)
                aria-invalid=[errors.get("add_topic").map(|_| "true")] aria-describedby=[errors.get("add_topic").map(|_| "add_topic-error")];
        }))
        h2 { "Subscriptions" }
        @if p.subscriptions.is_empty() { p { "No subscription associations." } }
        ul { @for s in &p.subscriptions {
            li { a href={ "/subscriptions/" (s.id) } { (s.id) } " " (grant_button(user, id, "remove_subscription", &s.id.to_string(), "Remove")) }
        } }
        (grant_form(user, id, errors, "add_subscription", "Associate a subscription", html! {
            select #add_subscription name="value" { @for s in &subs { option value=(s.id) { (s.name) " (" (s.topic.name) ")" } } }
        }))
        @if !k.revoked {
            h2 { "Revoke" }
            form method="post" action={ "/keys/" (id) "/revoke" } {
                (user.csrf())
                p { "Every node refuses a revoked key within a second. This cannot be undone." }
                button.danger type="submit" { "Revoke this key" }
            }
        }
    };
    Ok(respond(
        code,
        layout(user, "/keys", &format!("API key {name}"), body),
    ))
}

fn grant_button(user: &CurrentUser, id: Uuid, op: &str, value: &str, label: &str) -> Markup {
    html! {
        form.grant method="post" action={ "/keys/" (id) "/grants" } {
            (user.csrf())
            input type="hidden" name="op" value=(op);
            input type="hidden" name="value" value=(value);
            button.secondary type="submit" aria-label={ (label) " " (value) } { (label) }
        }
    }
}

fn grant_form(
    user: &CurrentUser,
    id: Uuid,
    errors: &Errors,
    op: &'static str,
    label: &str,
    input: Markup,
) -> Markup {
    html! {
        form.inline method="post" action={ "/keys/" (id) "/grants" } {
            (user.csrf())
            input type="hidden" name="op" value=(op);
            div.field {
                label for=(op) { (label) }
                (input)
                @if let Some(e) = errors.get(op) { p.field-error id={ (op) "-error" } { (e) } }
            }
            button type="submit" { "Add" }
        }
    }
}

#[derive(Deserialize)]
struct GrantForm {
    #[serde(default)]
    op: String,
    #[serde(default)]
    value: String,
}

async fn grants(
    State(app): State<App>,
    Extension(user): Extension<CurrentUser>,
    Path(id): Path<Uuid>,
    Form(f): Form<GrantForm>,
) -> UiResult {
    let (auth, admin) = (&app.auth, as_admin());
    let mut errors = Errors::new();
    let done = match f.op.as_str() {
        "add_topic" => match errors.check("add_topic", parse_topics(&f.value)) {
            Some(t) if t.is_empty() => {
                errors.add("add_topic", "enter a topic");
                false
            }
            Some(t) => auth.grant_topics(&admin, id, &t).await.map(|_| true)?,
            None => false,
        },
        "remove_topic" => auth
            .withdraw_topics(&admin, id, &parse_topics(&f.value)?)
            .await
            .map(|_| true)?,
        "add_subscription" => match errors.check("add_subscription", parse_ids(&f.value)) {
            Some(ids) => match auth.grant_subscriptions(&admin, id, &ids).await {
                Ok(_) => true,
                Err(e @ Error::NotFound(_)) => {
                    errors.add("add_subscription", message(&e));
                    false
                }
                Err(e) => return Err(e.into()),
            },
            None => false,
        },
        "remove_subscription" => auth
            .withdraw_subscriptions(&admin, id, &parse_ids(&f.value)?)
            .await
            .map(|_| true)?,
        _ => return Err(Error::invalid("unknown grant operation").into()),
    };
    if done {
        return Ok(see_other(&format!("/keys/{id}")));
    }
    let topic_value = if f.op == "add_topic" {
        f.value.as_str()
    } else {
        ""
    };
    render_detail(
        &app,
        &user,
        id,
        &errors,
        topic_value,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await
}

async fn revoke(State(app): State<App>, Path(id): Path<Uuid>) -> UiResult {
    app.auth.revoke_key(&as_admin(), id).await?;
    Ok(see_other(&format!("/keys/{id}")))
}
