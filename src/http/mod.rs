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
use serde_json::json;

/// The router of one node. `/metrics` is here unless `ER_METRICS_ADDR` moves it to
/// [`metrics_router`] on an address of its own.
pub fn router(app: App) -> Router {
    let routes = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/socket/websocket", socket::route(&app))
        .route("/docs", get(api_docs))
        .merge(ui::router(app.clone()));
    let routes = if app.config.metrics_addr.is_none() {
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

/// The client's address: the peer's, or, when the peer is one of the `trusted` proxies, the
/// nearest address in `X-Forwarded-For` that is not a trusted proxy. Read from the right:
/// entries to the left of the first untrusted one are the client's own say, and ignored.
pub fn client_addr(
    peer: std::net::IpAddr,
    headers: &axum::http::HeaderMap,
    trusted: &[ipnet::IpNet],
) -> std::net::IpAddr {
    let is_trusted = |ip: &std::net::IpAddr| {
        let ip = match ip {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(*ip, std::net::IpAddr::V4),
            v4 => *v4,
        };
        trusted.iter().any(|n| n.contains(&ip))
    };
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect();
    for hop in hops.iter().rev() {
        match hop.trim().parse::<std::net::IpAddr>() {
            Ok(ip) if is_trusted(&ip) => continue,
            Ok(ip) => return ip,
            Err(_) => break,
        }
    }
    peer
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
