//! Operator pages: dead letters with their errors, UI users (add, remove, change password),
//! and the cluster (rendered by [`super::deliveries::cluster`], which knows the membership and
//! ownership state).

use super::forms::{Errors, Input, field, message, pager};
use super::session::CurrentUser;
use super::{UiResult, as_admin, deliveries, enc, layout, respond, see_other};
use crate::app::App;
use crate::error::Error;
use crate::page::PageRequest;
use crate::users::{Email, check_password};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use maud::html;
use serde::Deserialize;
use uuid::Uuid;

/// Routes of this file.
pub fn routes() -> Router<App> {
    Router::new()
        .route("/dead-letters", get(dead_letters))
        .route("/users", get(users).post(add_user))
        .route("/users/{id}/delete", post(remove_user))
        .route(
            "/users/{id}/password",
            get(password_form).post(change_password),
        )
        .route("/cluster", get(deliveries::cluster))
}

#[derive(Deserialize, Default)]
struct DeadQuery {
    #[serde(default)]
    topic: String,
    #[serde(default)]
    page: i32,
}

async fn dead_letters(
    State(app): State<App>,
    Extension(user): Extension<CurrentUser>,
    Query(q): Query<DeadQuery>,
) -> UiResult {
    let req = PageRequest::new(q.page, 50);
    let page = app
        .events
        .dead_letters(&as_admin(), q.topic.trim(), req)
        .await?;
    let body = html! {
        form.inline role="search" method="get" action="/dead-letters" {
            div.field { label for="topic" { "Topic name" } input #topic type="search" name="topic" value=(q.topic); }
            button type="submit" { "Show" }
        }
        h2 { (page.total_count) " dead letter(s)" }
        @if page.items.is_empty() { p { "None." } } @else {
            table {
                thead { tr { th scope="col" { "When" } th scope="col" { "Topic" } th scope="col" { "Event" } th scope="col" { "Errors" } th scope="col" { "Data" } } }
                tbody { @for d in &page.items {
                    tr {
                        td.mono { (crate::events::format_time(&d.inserted_at)) }
                        td { @if d.topic.is_empty() { em { "(none)" } } @else { (d.topic) } }
                        td { (d.event.name) }
                        td { ul { @for e in &d.errors { li.error { (e) } } } }
                        td.mono.clip { (d.event.data) }
                    }
                } }
            }
        }
        (pager(&format!("/dead-letters?topic={}&", enc(&q.topic)), req.page, page.previous_page, page.next_page, page.total_pages))
    };
    Ok(respond(
        StatusCode::OK,
        layout(&user, "/dead-letters", "Dead letters", body),
    ))
}

#[derive(Deserialize, Default)]
struct UserForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
}

async fn render_users(
    app: &App,
    user: &CurrentUser,
    email: &str,
    errors: &Errors,
    code: StatusCode,
) -> UiResult {
    let users = app.users.list().await?;
    let body = html! {
        section aria-labelledby="add-h" {
            h2 #add-h { "Add a user" }
            form method="post" action="/users" novalidate {
                (user.csrf())
                (errors.summary())
                div.row {
                    (field(errors, "email", "Email", Input::Text("email"), email, None))
                    (field(errors, "password", "Password", Input::Text("password"), "", Some("at least 8 characters")))
                }
                button type="submit" { "Add user" }
            }
        }
        h2 { "Users (" (users.len()) ")" }
        table {
            thead { tr { th scope="col" { "Email" } th scope="col" { "Added" } th scope="col" { "Actions" } } }
            tbody { @for u in &users {
                tr {
                    td { (u.email) @if u.id == user.session.user_id { " (you)" } }
                    td.mono { (crate::events::format_time(&u.inserted_at)) }
                    td.actions {
                        a href={ "/users/" (u.id) "/password" } { "Change password" }
                        @if u.id != user.session.user_id {
                            form method="post" action={ "/users/" (u.id) "/delete" } {
                                (user.csrf())
                                button.danger type="submit" aria-label={ "Remove " (u.email) } { "Remove" }
                            }
                        }
                    }
                }
            } }
        }
    };
    Ok(respond(code, layout(user, "/users", "Users", body)))
}

async fn users(State(app): State<App>, Extension(user): Extension<CurrentUser>) -> UiResult {
    render_users(&app, &user, "", &Errors::new(), StatusCode::OK).await
}

async fn add_user(
    State(app): State<App>,
    Extension(user): Extension<CurrentUser>,
    Form(f): Form<UserForm>,
) -> UiResult {
    let mut errors = Errors::new();
    let email = errors.check("email", Email::parse(&f.email));
    errors.check("password", check_password(&f.password));
    if let (Some(email), true) = (email, errors.is_empty()) {
        match app.users.create(&email, &f.password).await {
            Ok(_) => return Ok(see_other("/users")),
            Err(e @ Error::AlreadyExists(_)) => errors.add("email", message(&e)),
            Err(e) => return Err(e.into()),
        }
    }
    render_users(
        &app,
        &user,
        &f.email,
        &errors,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await
}

async fn remove_user(
    State(app): State<App>,
    Extension(user): Extension<CurrentUser>,
    Path(id): Path<Uuid>,
) -> UiResult {
    if id == user.session.user_id {
        return Err(Error::FailedPrecondition("you cannot remove yourself".into()).into());
    }
    app.users.delete(id).await?;
    Ok(see_other("/users"))
}

async fn password_page(
    app: &App,
    user: &CurrentUser,
    id: Uuid,
    errors: &Errors,
    code: StatusCode,
) -> UiResult {
    let target = app
        .users
        .list()
        .await?
        .into_iter()
        .find(|u| u.id == id)
        .ok_or_else(|| Error::not_found("User not found"))?;
    let body = html! {
        form method="post" action={ "/users/" (id) "/password" } novalidate {
            (user.csrf())
            (errors.summary())
            (field(errors, "password", "New password", Input::Text("password"), "", Some("at least 8 characters; the user's other sessions are signed out")))
            (field(errors, "confirm", "Repeat the new password", Input::Text("password"), "", None))
            button type="submit" { "Change password" }
            " " a href="/users" { "Cancel" }
        }
    };
    Ok(respond(
        code,
        layout(
            user,
            "/users",
            &format!("Change the password of {}", target.email),
            body,
        ),
    ))
}

async fn password_form(
    State(app): State<App>,
    Extension(user): Extension<CurrentUser>,
    Path(id): Path<Uuid>,
) -> UiResult {
    password_page(&app, &user, id, &Errors::new(), StatusCode::OK).await
}

#[derive(Deserialize)]
struct PasswordForm {
    #[serde(default)]
    password: String,
    #[serde(default)]
    confirm: String,
}

async fn change_password(
    State(app): State<App>,
    Extension(user): Extension<CurrentUser>,
    Path(id): Path<Uuid>,
    Form(f): Form<PasswordForm>,
) -> UiResult {
    let mut errors = Errors::new();
    errors.check("password", check_password(&f.password));
    if f.password != f.confirm {
        errors.add("confirm", "the two passwords differ");
    }
    if errors.is_empty() {
        app.users
            .set_password(id, &f.password, Some(&user.token))
            .await?;
        return Ok(see_other("/users"));
    }
    password_page(&app, &user, id, &errors, StatusCode::UNPROCESSABLE_ENTITY).await
}
