//! Sign-in, sign-out and the guard every UI page sits behind.
//!
//! Sessions last `ER_UI_SESSION_HOURS` (12 by default). The session cookie is HTTP-only and SameSite=Strict, and Secure when the request came over
//! https (`X-Forwarded-Proto: https` from a proxy) or `ER_UI_SECURE_COOKIES=true`. The guard
//! loads the session row (expired rows do not count), sends anyone without one to `/login`,
//! and refuses every POST whose `_csrf` field is not the session's token: a forged form
//! (another site) or a stale one (an earlier session) changes nothing. The sign-in form itself
//! is protected by a short-lived double-submit cookie, since no session exists yet.
//!
//! Files: this one (the cookies and the guard) and `signin.rs` (the sign-in page and form,
//! and sign-out).

mod signin;

pub use signin::{login, login_page, logout};

use super::page::{MAX_BODY_BYTES, UiError, enc, respond};
use crate::app::App;
use crate::users::Session;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{DOCTYPE, Markup, html};
use subtle::ConstantTimeEq;

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "er_session";
/// Name of the sign-in form's double-submit cookie.
pub const LOGIN_COOKIE: &str = "er_login";

/// The signed-in user of a request, put in its extensions by [`require_session`].
#[derive(Clone, Debug)]
pub struct CurrentUser {
    /// The session.
    pub session: Session,
    /// The cookie token (to keep this session when the password changes).
    pub token: String,
}

impl CurrentUser {
    /// The hidden field every form of this session carries.
    pub fn csrf(&self) -> Markup {
        html! { input type="hidden" name="_csrf" value=(self.session.csrf_token); }
    }
}

/// A cookie's value from the request headers.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// A `Set-Cookie` value with the UI's attributes; `max_age` 0 deletes the cookie.
fn set_cookie(
    app: &App,
    headers: &HeaderMap,
    name: &str,
    value: &str,
    max_age: u64,
) -> HeaderValue {
    let https = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"));
    let secure = if https || app.http.ui_secure_cookies {
        "; Secure"
    } else {
        ""
    };
    let v = format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}");
    // Names and values are alphanumeric tokens, so this cannot fail; fall back to deleting.
    HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static("er_session=; Max-Age=0"))
}

fn same(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

/// Only same-origin absolute paths are followed after sign-in (no open redirect): `next` must
/// start with one `/`, and hold no backslash and no control character anywhere (browsers
/// drop tabs and newlines from URLs, so `/\t/evil.example` would become `//evil.example`, and
/// read `\` as `/`). Anything else goes to `/`.
pub(crate) fn local_path(next: &str) -> &str {
    let safe = next.starts_with('/')
        && !next.starts_with("//")
        && !next.contains('\\')
        && !next.chars().any(char::is_control);
    if safe { next } else { "/" }
}

/// The guard of every signed-in page: session required, CSRF token checked on every POST.
pub async fn require_session(State(app): State<App>, req: Request, next: Next) -> Response {
    let token = cookie(req.headers(), SESSION_COOKIE);
    let session = match &token {
        Some(t) => app.users.session(t).await,
        None => Ok(None),
    };
    let session = match session {
        Ok(Some(s)) => s,
        Ok(None) => {
            let here = req.uri().path_and_query().map_or("/", |p| p.as_str());
            let to = if req.method() == Method::GET {
                format!("/login?next={}", enc(here))
            } else {
                "/login".to_owned()
            };
            return Redirect::to(&to).into_response();
        }
        Err(e) => return UiError(e).into_response(),
    };
    let mut req = req;
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let (parts, body) = req.into_parts();
        let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY_BYTES).await else {
            return (StatusCode::PAYLOAD_TOO_LARGE, "form too large").into_response();
        };
        let sent = url::form_urlencoded::parse(&bytes)
            .find(|(k, _)| k == "_csrf")
            .map(|(_, v)| v.into_owned());
        if !sent.is_some_and(|s| same(&s, &session.csrf_token)) {
            return refused();
        }
        req = Request::from_parts(parts, Body::from(bytes));
    }
    req.extensions_mut().insert(CurrentUser {
        session,
        token: token.unwrap_or_default(),
    });
    next.run(req).await
}

/// The answer to a forged or stale form: nothing was changed.
fn refused() -> Response {
    respond(
        StatusCode::FORBIDDEN,
        html! {
            (DOCTYPE)
            html lang="en" {
                head { meta charset="utf-8"; title { "Form refused · EventRelay" } link rel="stylesheet" href="/assets/ui.css"; }
                body { main #main {
                    h1 { "Form refused" }
                    p.error role="alert" {
                        "This form is stale or did not come from this site (its security token does not match your session). Nothing was changed."
                    }
                    p { a href="/topics" { "Reload the UI" } " and try again." }
                } }
            }
        },
    )
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed_after_sign_in() {
        let table = [
            ("/keys", "/keys"),
            (
                "/topics/users/events?order=oldest",
                "/topics/users/events?order=oldest",
            ),
            ("/", "/"),
            ("", "/"),
            ("https://evil.example", "/"),
            ("//evil.example/x", "/"),
            ("/\\evil.example", "/"),
            ("\\\\evil.example", "/"),
            ("/\t/evil.example", "/"),
            ("/\n/evil.example", "/"),
            ("/\r/evil.example", "/"),
            ("/keys\u{0}", "/"),
            ("/keys\u{7f}", "/"),
            ("/keys\u{85}", "/"),
            ("javascript:alert(1)", "/"),
            ("evil.example", "/"),
            (" /keys", "/"),
        ];
        for (next, want) in table {
            assert_eq!(local_path(next), want, "{next:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn next_never_leaves_the_origin(next in "\\PC{0,40}|[/\\\\\t\n\r:a-z.@%]{0,20}") {
            let out = local_path(&next);
            proptest::prop_assert!(out == next || out == "/");
            proptest::prop_assert!(out.starts_with('/') && !out.starts_with("//"));
            proptest::prop_assert!(!out.contains('\\') && !out.chars().any(char::is_control));
            let base = url::Url::parse("https://node.example/here").unwrap();
            let joined = base.join(out).unwrap();
            proptest::prop_assert_eq!(joined.host_str(), Some("node.example"));
            proptest::prop_assert_eq!(joined.scheme(), "https");
        }

        #[test]
        fn plain_paths_are_kept(path in "/[a-z0-9_/?=&.-]{0,40}") {
            proptest::prop_assume!(!path.starts_with("//"));
            proptest::prop_assert_eq!(local_path(&path), path.as_str());
        }
    }

    #[test]
    fn cookies_are_found_by_exact_name() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; er_session_x=2"),
        );
        h.append(header::COOKIE, HeaderValue::from_static("er_session=tok"));
        assert_eq!(cookie(&h, SESSION_COOKIE).as_deref(), Some("tok"));
        assert_eq!(cookie(&h, LOGIN_COOKIE), None);
        assert!(same("abc", "abc") && !same("abc", "abd") && !same("abc", "ab"));
    }
}
