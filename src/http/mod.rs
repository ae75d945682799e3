//! The HTTP transport (axum): liveness, readiness, Prometheus metrics. Websockets and the admin UI mount
//! here as they land. Handlers are thin: they call the domain and map its error once.

mod docs;
mod phoenix;
pub mod socket;
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
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/socket/websocket", socket::route(&app))
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
        (code, Json(json!({ "error": self.to_string() }))).into_response()
    }
}
