//! The HTTP transport (axum): liveness, readiness, Prometheus metrics, the websocket endpoint,
//! its Server-Sent Events fallback and the admin UI. Handlers are thin: they call the domain
//! and map its error once (a 503 says when to come back with `Retry-After`).

mod docs;
pub mod peer;
mod phoenix;
pub mod socket;
mod sse;
pub mod ui;

use crate::app::App;
use crate::error::Error;
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use fred::prelude::ClientLike;
use serde_json::json;

/// The router of one node.
pub fn router(app: App) -> Router {
    // Websockets and SSE streams share the places of each source address.
    let peers = peer::Peers::new(
        app.config.trusted_proxies.clone(),
        app.config.max_connections_per_address,
    );
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/socket/websocket", socket::route(&app, peers.clone()))
        .route("/sse", sse::route(&app, peers))
        .route("/docs", get(api_docs))
        .merge(ui::router(app.clone()))
        .with_state(app)
}

/// Alive as long as the process answers.
async fn healthz() -> &'static str {
    "ok"
}

/// The API documentation, generated from the proto the node was built with.
async fn api_docs() -> axum::response::Html<&'static str> {
    axum::response::Html(docs::page())
}

/// Prometheus text exposition.
async fn metrics(State(app): State<App>) -> Response {
    app.metrics.set_live_connections(app.live.connections());
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        app.metrics.render(),
    )
        .into_response()
}

/// Ready when not draining, Postgres answers and every migration is applied.
async fn readyz(State(app): State<App>) -> Response {
    let draining = app.is_draining();
    // Bounded, so a probe gets an answer well within its own timeout while Postgres hangs.
    let postgres = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        crate::db::migrations_applied(&app.pool),
    )
    .await
    .unwrap_or(false);
    let ready = !draining && postgres;
    let body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "draining": draining,
        "postgres": if postgres { "ok" } else { "unavailable" },
        // Redis is reported, not required: nodes fall back to Postgres while it is away.
        "redis": match &app.redis {
            None => "disabled",
            Some(r) if r.is_connected() => "connected",
            Some(_) => "disconnected",
        },
    });
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let code = match &self {
            Error::InvalidArgument(_) => StatusCode::BAD_REQUEST,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::AlreadyExists(_) | Error::FailedPrecondition(_) => StatusCode::CONFLICT,
            Error::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Error::PermissionDenied(_) => StatusCode::FORBIDDEN,
            Error::ResourceExhausted(_) => StatusCode::TOO_MANY_REQUESTS,
            Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Internal(cause) => {
                tracing::error!(error = ?cause, "internal error");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        let mut response = (code, Json(json!({ "error": self.to_string() }))).into_response();
        if code == StatusCode::SERVICE_UNAVAILABLE {
            // A few seconds, drawn, so refused clients do not all come back at once.
            let secs = rand::Rng::random_range(&mut rand::rng(), 1..=5u32);
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(secs),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unavailable_answers_say_when_to_come_back() {
        let r = Error::Unavailable("draining".into()).into_response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        let secs: u32 = r.headers()[axum::http::header::RETRY_AFTER]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=5).contains(&secs));
        let r = Error::ResourceExhausted("slow".into()).into_response();
        assert!(r.headers().get(axum::http::header::RETRY_AFTER).is_none());
    }
}
