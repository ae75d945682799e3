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
use serde_json::json;

/// The router of one node. `/metrics` is here unless `ER_METRICS_ADDR` moves it to
/// [`metrics_router`] on an address of its own.
pub fn router(app: App) -> Router {
    // Websockets and SSE streams share the places of each source address.
    let peers = peer::Peers::new(
        app.http.trusted_proxies.clone(),
        app.http.max_connections_per_address,
    );
    let routes = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/socket/websocket", socket::route(&app, peers.clone()))
        .route("/sse", sse::route(&app, peers))
        .route("/docs", get(api_docs))
        .merge(ui::router(app.clone()));
    let routes = if app.http.metrics_addr.is_none() {
        routes.route("/metrics", get(metrics))
    } else {
        routes
    };
    routes
        .layer(axum::extract::DefaultBodyLimit::max(ui::MAX_BODY_BYTES))
        .with_state(app)
}

/// The router of the metrics address (`ER_METRICS_ADDR`): `/metrics` alone.
pub fn metrics_router(app: App) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
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
    // Per-topic retention gauges come from Postgres; a failed read keeps the last values.
    if let Err(e) = app.retention.refresh_metrics(&app.metrics).await {
        tracing::warn!(error = %e, "reading retention statistics for /metrics failed");
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        app.metrics.render(),
    )
        .into_response()
}

/// Ready when not draining, Postgres answers and every migration is applied (see
/// [`crate::health`], which the gRPC health service reports too).
async fn readyz(State(app): State<App>) -> Response {
    let r = crate::health::check(&app).await;
    let ready = r.ready();
    let body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "draining": r.draining,
        "postgres": if r.postgres { "ok" } else { "unavailable" },
        "redis": r.redis,
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
            Error::AlreadyExists(_) | Error::FailedPrecondition(_) | Error::Conflict(_) => {
                StatusCode::CONFLICT
            }
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
