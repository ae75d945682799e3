//! The admin web UI, server-rendered by every node at `/` of the HTTP port: sign-in, topics,
//! events and their live tail, subscriptions and deliveries, API keys, dead letters, users and
//! the cluster. Pages are maud templates (HTML-escaped by construction); the CSS and the few
//! lines of JavaScript are vendored into the binary, so air-gapped clusters need no CDN.
//!
//! Every page but sign-in goes through [`session::require_session`], which also refuses any
//! POST whose CSRF token is not the session's. Handlers act as an anonymous admin principal:
//! a signed-in UI user may do everything an admin key may.

mod admin;
mod deliveries;
mod events;
mod forms;
mod keys;
mod page;
mod retention;
mod session;
mod subscriptions;
mod topics;

pub use events::MAX_TAILS;
pub use page::MAX_BODY_BYTES;
use page::{UiResult, enc, respond, see_other};
pub use session::{LOGIN_COOKIE, SESSION_COOKIE};

use crate::app::App;
use crate::auth::Principal;
use axum::http::{HeaderValue, header};
use axum::middleware;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use maud::{DOCTYPE, Markup, html};
use session::CurrentUser;

/// Largest sign-in form (an email, a password of at most 1 KiB, two tokens).
const MAX_LOGIN_BYTES: usize = 8 * 1024;

const CSS: &str = include_str!("assets/ui.css");
const TAIL_JS: &str = include_str!("assets/tail.js");

/// The UI's routes, to be merged into the node's router.
pub fn router(app: App) -> Router<App> {
    let signed_in = Router::new()
        .route("/", get(|| async { Redirect::to("/topics") }))
        .route("/logout", post(session::logout))
        .merge(topics::routes())
        .merge(retention::routes())
        .merge(events::routes())
        .merge(subscriptions::routes())
        .merge(keys::routes())
        .merge(admin::routes())
        .merge(deliveries::routes())
        .route_layer(middleware::from_fn_with_state(
            app,
            session::require_session,
        ));
    Router::new()
        .route(
            "/login",
            get(session::login_page)
                .post(session::login)
                .layer(axum::extract::DefaultBodyLimit::max(MAX_LOGIN_BYTES)),
        )
        .route(
            "/assets/ui.css",
            get(|| asset(CSS, "text/css; charset=utf-8")),
        )
        .route(
            "/assets/tail.js",
            get(|| asset(TAIL_JS, "text/javascript; charset=utf-8")),
        )
        .merge(signed_in)
        .layer(Extension(events::TailPermits::default()))
        .layer(middleware::map_response(security_headers))
}

/// Headers on every UI response: only this origin's scripts and styles run (so injected
/// markup could not execute even if escaping failed), no framing (clickjacking), no sniffing.
async fn security_headers(mut res: Response) -> Response {
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    res
}

async fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// The principal UI actions run as: signed-in users are admins.
fn as_admin() -> Principal {
    Principal::anonymous_admin()
}

/// Navigation entries: path prefix and label.
const NAV: [(&str, &str); 6] = [
    ("/topics", "Topics"),
    ("/subscriptions", "Subscriptions"),
    ("/keys", "API keys"),
    ("/dead-letters", "Dead letters"),
    ("/users", "Users"),
    ("/cluster", "Cluster"),
];

/// The page shell: head, skip link, navigation with the current section marked, sign-out.
fn layout(user: &CurrentUser, section: &str, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · EventRelay" }
                link rel="stylesheet" href="/assets/ui.css";
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header {
                    nav aria-label="Main" {
                        span.brand { "EventRelay" }
                        @for (path, label) in NAV {
                            @if path == section {
                                a href=(path) aria-current="page" { (label) }
                            } @else {
                                a href=(path) { (label) }
                            }
                        }
                        form.signout method="post" action="/logout" {
                            (user.csrf())
                            span { (user.session.email) }
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main #main tabindex="-1" {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}
