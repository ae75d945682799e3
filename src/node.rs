//! Lifecycle of one node: bind the listeners, build the [`App`] from the typed configuration,
//! serve gRPC and HTTP on the listeners the caller bound (tests bind port 0), and drain on
//! cancellation: readiness off, stop accepting, finish in-flight work, then return.

use crate::app::App;
use crate::config::Config;
use crate::{grpc, http, proto};
use anyhow::Context;
use std::sync::atomic::Ordering;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Largest gRPC reply sent (a pull of a full batch of large events). Requests are bounded by
/// `ER_GRPC_MAX_MESSAGE_BYTES` instead.
const MAX_GRPC_REPLY: usize = 64 * 1024 * 1024;

/// The sockets a node serves on, bound by the caller.
pub struct Listeners {
    /// gRPC.
    pub grpc: TcpListener,
    /// HTTP.
    pub http: TcpListener,
}

impl Listeners {
    /// Binds the configured addresses.
    pub async fn bind(config: &Config) -> anyhow::Result<Self> {
        Ok(Listeners {
            grpc: TcpListener::bind(config.grpc_addr)
                .await
                .with_context(|| format!("binding gRPC on {}", config.grpc_addr))?,
            http: TcpListener::bind(config.http_addr)
                .await
                .with_context(|| format!("binding HTTP on {}", config.http_addr))?,
        })
    }
}

/// Runs a node until `shutdown` is cancelled, then drains and returns. The configuration is
/// checked and turned into its typed sections here, once.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let settings = config
        .settings()
        .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
    let tracker = TaskTracker::new();
    let app = App::start(settings, &tracker).await?;
    let grace = app.node.shutdown_grace;
    tracing::info!(
        node = %app.node.name,
        grpc = %listeners.grpc.local_addr()?,
        http = %listeners.http.local_addr()?,
        "eventrelay node started"
    );

    let (health, health_service) = tonic_health::server::health_reporter();
    // The gRPC health service tells what /readyz tells, brought up to date every second.
    crate::health::set(&health, crate::health::check(&app).await.ready()).await;
    let health_stop = CancellationToken::new();
    tokio::spawn(crate::health::report(
        app.clone(),
        health.clone(),
        health_stop.clone(),
    ));
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    // Behind the gate, which authenticates each call before its body is read.
    let service = grpc::gate::service(&app, app.grpc.max_message_bytes, MAX_GRPC_REPLY);

    // Servers stop accepting when `stop_accepting` fires, after readiness has turned false.
    let stop_accepting = CancellationToken::new();
    let grpc_server = {
        let routes = tonic::service::Routes::new(health_service)
            .add_service(reflection)
            .add_service(reflection_alpha)
            .add_service(service);
        tokio::spawn(grpc::server::serve(
            routes,
            listeners.grpc,
            app.grpc,
            stop_accepting.clone(),
        ))
    };
    let metrics_server = match app.http.metrics_addr {
        None => None,
        Some(addr) => {
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding metrics on {addr} (ER_METRICS_ADDR)"))?;
            let stop = stop_accepting.clone();
            let router = http::metrics_router(app.clone());
            Some(tokio::spawn(async move {
                axum::serve(listener, router)
                    .with_graceful_shutdown(async move { stop.cancelled().await })
                    .await
            }))
        }
    };
    let http_server = {
        let stop = stop_accepting.clone();
        let router = http::router(app.clone());
        tokio::spawn(async move {
            // TCP_NODELAY here too: websocket pushes are small frames.
            let listener = axum::serve::ListenerExt::tap_io(listeners.http, |tcp| {
                let _ = tcp.set_nodelay(true);
            });
            // The peer address reaches handlers: sign-in throttling and the per-address
            // connection limit count it (see http::peer).
            let service = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
            axum::serve(listener, service)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        })
    };

    shutdown.cancelled().await;
    tracing::info!("shutdown requested: draining");
    app.draining.store(true, Ordering::Relaxed);
    app.drain.begin();
    health_stop.cancel();
    crate::health::set(&health, false).await;
    stop_accepting.cancel();
    // Hand webhook subscriptions over while the servers drain: the owner lets the attempts
    // in flight finish, then leaves the cluster and frees its locks.
    app.cluster_stop.cancel();
    let servers = async {
        // Websockets outlive the HTTP server (they were upgraded out of it): wait for them too.
        let (g, h, ()) = tokio::join!(grpc_server, http_server, app.drain.sockets_closed());
        if let Some(m) = metrics_server {
            let _ = m.await;
        }
        if let Ok(Err(e)) = &h {
            tracing::warn!(error = %e, "HTTP server ended with an error");
        }
        if let Ok(Err(e)) = &g {
            tracing::warn!(error = %e, "gRPC server ended with an error");
        }
    };
    let served = tokio::time::timeout(grace, servers).await;
    app.bus_stop.cancel();
    if served.is_err() {
        tracing::warn!("in-flight requests did not finish within the grace period");
    }
    // The writer stores what is queued, then its task ends with the other background tasks.
    app.writer.close();
    tracker.close();
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!("background tasks did not finish within the grace period");
    }
    app.pool.close().await;
    tracing::info!("node stopped");
    Ok(())
}
