//! What every UI page handler shares and that needs no session: the body limit, the error
//! page (the one mapping of the domain error for the UI), status responses, redirects and
//! query encoding. The page shell, which shows the signed-in user, is `layout` in `mod.rs`.

use crate::error::Error;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{DOCTYPE, Markup, html};

/// Largest request body the node's HTTP routes read (UI forms: filters, subscription
/// settings). Larger bodies are refused with 413 before they are parsed.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A page with a status code.
pub(super) fn respond(code: StatusCode, page: Markup) -> Response {
    (code, page).into_response()
}

/// A domain error as a page. Internal causes are logged, never shown.
pub(super) struct UiError(pub(super) Error);

impl From<Error> for UiError {
    fn from(e: Error) -> Self {
        UiError(e)
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        // The JSON mapping of the transport decides the status (and logs internal causes).
        let status = self.0.to_string();
        let code = crate::error::Error::into_response(self.0).status();
        let page = html! {
            (DOCTYPE)
            html lang="en" {
                head { meta charset="utf-8"; title { "Error · EventRelay" } link rel="stylesheet" href="/assets/ui.css"; }
                body { main #main {
                    h1 { "Something went wrong" }
                    p.error role="alert" { (status) }
                    p { a href="/topics" { "Back to topics" } }
                } }
            }
        };
        (code, page).into_response()
    }
}

/// Handler result: a page, or an error page.
pub(super) type UiResult = Result<Response, UiError>;

/// Redirect after a successful POST (303, so reloading does not resubmit).
pub(super) fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}

/// Percent-encodes a query value.
pub(super) fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
