//! The sign-in page and form, and sign-out: the form carries a short-lived double-submit
//! cookie (no session exists yet), a right password starts a session and sets its cookie, and
//! sign-out ends the session and deletes the cookie.

use super::{CurrentUser, LOGIN_COOKIE, SESSION_COOKIE, cookie, local_path, same, set_cookie};
use crate::app::App;
use crate::http::ui::page::UiError;
use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{DOCTYPE, html};
use serde::Deserialize;

/// Query of the sign-in page.
#[derive(Deserialize, Default)]
pub struct LoginQuery {
    #[serde(default)]
    next: String,
}

/// The sign-in form as posted.
#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    next: String,
    #[serde(default, rename = "_csrf")]
    csrf: String,
}

fn login_form(
    app: &App,
    headers: &HeaderMap,
    email: &str,
    next: &str,
    error: Option<&str>,
    code: StatusCode,
) -> Response {
    let token = crate::users::random_token(32);
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Sign in · EventRelay" }
                link rel="stylesheet" href="/assets/ui.css";
            }
            body.login { main #main {
                h1 { "Sign in to EventRelay" }
                form method="post" action="/login" novalidate {
                    input type="hidden" name="_csrf" value=(token);
                    input type="hidden" name="next" value=(next);
                    div.field {
                        label for="email" { "Email" }
                        input #email type="email" name="email" value=(email) autocomplete="username" required autofocus;
                    }
                    div.field {
                        label for="password" { "Password" }
                        input #password type="password" name="password" autocomplete="current-password" required
                            aria-invalid=[error.map(|_| "true")] aria-describedby=[error.map(|_| "password-error")];
                        @if let Some(e) = error {
                            p.field-error #password-error role="alert" { (e) }
                        }
                    }
                    button type="submit" { "Sign in" }
                }
            } }
        }
    };
    let cookie = set_cookie(app, headers, LOGIN_COOKIE, &token, 3600);
    (code, [(header::SET_COOKIE, cookie)], page).into_response()
}

/// GET /login: the form (or straight on, when already signed in).
pub async fn login_page(
    State(app): State<App>,
    headers: HeaderMap,
    Query(q): Query<LoginQuery>,
) -> Response {
    if let Some(t) = cookie(&headers, SESSION_COOKIE)
        && matches!(app.users.session(&t).await, Ok(Some(_)))
    {
        return Redirect::to(local_path(&q.next)).into_response();
    }
    login_form(&app, &headers, "", &q.next, None, StatusCode::OK)
}

/// POST /login: checks the password and starts a session.
pub async fn login(
    State(app): State<App>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    let expected = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if expected.is_empty() || !same(&expected, &f.csrf) {
        return login_form(
            &app,
            &headers,
            &f.email,
            &f.next,
            Some("The sign-in form expired. Please try again."),
            StatusCode::FORBIDDEN,
        );
    }
    let addr = crate::http::peer::source(peer.ip(), &headers, &app.http.trusted_proxies);
    let checked = match app
        .users
        .check_credentials(&f.email, &f.password, addr)
        .await
    {
        Ok(Some(u)) => Ok(u),
        Ok(None) => {
            tracing::info!("UI sign-in refused: wrong email or password");
            Err((
                "Wrong email or password.".to_owned(),
                StatusCode::UNAUTHORIZED,
            ))
        }
        Err(e @ crate::error::Error::ResourceExhausted(_)) => {
            Err((e.to_string(), StatusCode::TOO_MANY_REQUESTS))
        }
        Err(e @ crate::error::Error::InvalidArgument(_)) => {
            Err((e.to_string(), StatusCode::BAD_REQUEST))
        }
        Err(e) => return UiError(e).into_response(),
    };
    // A refusal shows the form again, with its reason, under the status it deserves.
    let user = match checked {
        Ok(u) => u,
        Err((msg, status)) => {
            return login_form(&app, &headers, &f.email, &f.next, Some(&msg), status);
        }
    };
    let (token, _) = match app
        .users
        .start_session(user.id, app.http.ui_session_ttl)
        .await
    {
        Ok(s) => s,
        Err(e) => return UiError(e).into_response(),
    };
    tracing::info!(user = %user.email, "UI sign-in");
    let mut res = Redirect::to(local_path(&f.next)).into_response();
    let h = res.headers_mut();
    h.append(
        header::SET_COOKIE,
        set_cookie(
            &app,
            &headers,
            SESSION_COOKIE,
            &token,
            app.http.ui_session_ttl.as_secs(),
        ),
    );
    h.append(
        header::SET_COOKIE,
        set_cookie(&app, &headers, LOGIN_COOKIE, "", 0),
    );
    res
}

/// POST /logout: ends the session everywhere.
pub async fn logout(
    State(app): State<App>,
    headers: HeaderMap,
    axum::Extension(user): axum::Extension<CurrentUser>,
) -> Response {
    if let Err(e) = app.users.end_session(&user.token).await {
        return UiError(e).into_response();
    }
    let mut res = Redirect::to("/login").into_response();
    res.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&app, &headers, SESSION_COOKIE, "", 0),
    );
    res
}
