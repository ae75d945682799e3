//! Wiring and lifecycle of one node: build the domain services over one pool, serve gRPC and
//! HTTP on listeners the caller bound (tests bind port 0), and drain on cancellation:
//! readiness off, stop accepting, finish in-flight work, then return.

use crate::auth::{ApiKeys, Auth, Jwt};
use crate::cluster::bus::Bus;
use crate::cluster::membership::NodeId;
use crate::cluster::ownership::Ownership;
use crate::config::Config;
use crate::delivery::Delivery;
use crate::events::{Events, Limits, Writer};
use crate::live::Live;
use crate::metrics::Metrics;
use crate::retention::{Pruner, Retention};
use crate::subscriptions::Subscriptions;
use crate::topics::Topics;
use crate::users::Users;
use crate::{db, grpc, http, proto};
use anyhow::Context;
use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Largest gRPC reply sent (a pull of a full batch of large events). Requests are bounded by
/// `ER_GRPC_MAX_MESSAGE_BYTES` instead.
const MAX_GRPC_REPLY: usize = 64 * 1024 * 1024;

/// The services of one node, cheap to clone (everything inside is shared).
#[derive(Clone)]
pub struct App {
    /// Configuration in force.
    pub config: Arc<Config>,
    /// The shared Postgres pool.
    pub pool: PgPool,
    /// Topics.
    pub topics: Topics,
    /// Events.
    pub events: Events,
    /// Subscriptions.
    pub subscriptions: Subscriptions,
    /// Authentication.
    pub auth: Auth,
    /// Local live hub.
    pub live: Live,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// Admin UI users and their sessions.
    pub users: Users,
    /// Per-key rate limits.
    pub limiter: Arc<crate::ratelimit::RateLimiter>,
    /// The Redis client, when `REDIS_URL` is set.
    pub redis: Option<fred::clients::Client>,
    /// Webhook delivery (workers run on the owner node; control RPCs on any node).
    pub delivery: Delivery,
    /// The cluster bus: local hub plus cross-node fan-out of published events.
    pub bus: Bus,
    /// Retention policies and statistics (the pruners run on their topics' owners).
    pub retention: Retention,
    writer: Writer,
    draining: Arc<AtomicBool>,
    /// Ends websockets, gRPC streams and SSE streams, spread over a window, when draining
    /// starts, so the servers can stop; recycles old websockets.
    pub drain: crate::drain::Drain,
    // Ends the cluster task: it hands its subscriptions over, after in-flight attempts.
    cluster_stop: CancellationToken,
    // Ends the bus: only once the websockets and streams a drain spreads out have closed,
    // since until then they still receive the other nodes' events.
    bus_stop: CancellationToken,
}

impl App {
    /// Connects, migrates and builds the services. Background work is spawned on `tracker`.
    pub async fn start(config: Config, tracker: &TaskTracker) -> anyhow::Result<App> {
        config.validate().map_err(anyhow::Error::msg)?;
        let jwt_secret = config
            .serving_jwt_secret()
            .map_err(anyhow::Error::msg)?
            .to_owned();
        crate::install_crypto_provider();
        if config.jwt_secret.is_none() {
            tracing::warn!(
                "ER_INSECURE_DEV_JWT=true and no ER_JWT_SECRET: using the public development \
                 secret; anyone can forge tokens. Development only."
            );
        }
        if !config.auth_enabled {
            tracing::warn!("ER_AUTH_ENABLED=false: every caller is an admin. Development only.");
        }
        let pool = db::connect(&config.database_url, config.db_pool_size)
            .await
            .context("connecting to Postgres (DATABASE_URL)")?;
        db::migrate(&pool).await.context("applying migrations")?;
        let live = Live::with_buffers(config.live_buffer, config.live_buffer_bytes)
            .with_replay_budget(config.live_replay_concurrency);
        let metrics = Metrics::new();
        let redis = match &config.redis_url {
            Some(url) => {
                Some(crate::redis::connect(url).context("REDIS_URL is not a valid Redis URL")?)
            }
            None => None,
        };
        let limiter = Arc::new(crate::ratelimit::RateLimiter::new(
            crate::ratelimit::Limits {
                durable_publish: config.rate_limit_durable_publish,
                live_publish: config.rate_limit_live_publish,
                pull: config.rate_limit_pull,
                admin: config.rate_limit_admin,
            },
            redis.clone(),
            &config.cluster_name,
            metrics.clone(),
        ));
        let writer = Writer::start_with_window(
            pool.clone(),
            config.writers,
            tracker,
            metrics.clone(),
            config.dedupe_window_seconds as i64,
        );
        let delivery = Delivery::new(pool.clone(), &config, live.clone(), metrics.clone())
            .context("building the webhook client")?;
        let retention_settings =
            crate::retention::Settings::from_config(&config).map_err(anyhow::Error::msg)?;
        let cluster_stop = CancellationToken::new();
        let bus_stop = CancellationToken::new();
        {
            // Session advisory locks need their own direct connection (see cluster::ownership).
            let lock_options = PgConnectOptions::from_str(&config.database_url)
                .context("DATABASE_URL is not a valid Postgres URL")?;
            let node = NodeId::new(config.node_name());
            let ownership = Ownership::new(
                pool.clone(),
                lock_options.clone(),
                node.clone(),
                config.node_ttl(),
                Arc::new(delivery.clone()),
                tracker.clone(),
                metrics.clone(),
            );
            tracker.spawn(ownership.run(cluster_stop.clone(), config.shutdown_grace()));
            // Topic pruners: the same election, a lock connection of their own.
            let pruners = Ownership::new(
                pool.clone(),
                lock_options,
                node,
                config.node_ttl(),
                Arc::new(Pruner::new(pool.clone(), retention_settings.clone())),
                tracker.clone(),
                metrics.clone(),
            )
            .sharing_heartbeat();
            tracker.spawn(pruners.run(cluster_stop.clone(), config.shutdown_grace()));
        }
        let bus = Bus::start(
            &config,
            pool.clone(),
            live.clone(),
            redis.clone(),
            tracker,
            bus_stop.clone(),
            metrics.clone(),
        )
        .context("starting the cluster bus (REDIS_URL)")?;
        let limits = Limits {
            max_event_bytes: config.max_event_bytes,
            max_events_per_request: config.max_events_per_request,
        };
        Ok(App {
            topics: Topics::with_defaults(pool.clone(), retention_settings.defaults),
            retention: Retention::new(pool.clone(), retention_settings),
            events: Events::new(
                pool.clone(),
                writer.clone(),
                bus.clone(),
                limits,
                metrics.clone(),
            )
            .with_pull_timeout(config.pull_timeout()),
            subscriptions: Subscriptions::new(pool.clone()),
            auth: Auth::new(
                ApiKeys::new(pool.clone()),
                Jwt::new(&jwt_secret),
                config.auth_enabled,
            ),
            live,
            metrics,
            users: Users::new(pool.clone()),
            limiter,
            redis,
            delivery,
            bus,
            writer,
            draining: Arc::default(),
            drain: crate::drain::Drain::new(config.drain_spread(), config.ws_max_connection_age()),
            cluster_stop,
            bus_stop,
            pool,
            config: Arc::new(config),
        })
    }

    /// Whether the node is shutting down (readiness reports false).
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Cancelled when the node starts draining: long-lived streams end on it.
    pub fn streams_stop(&self) -> &CancellationToken {
        self.drain.stopping()
    }
}

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

/// Runs a node until `shutdown` is cancelled, then drains and returns.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let tracker = TaskTracker::new();
    let app = App::start(config, &tracker).await?;
    let grace = app.config.shutdown_grace();
    tracing::info!(
        node = %app.config.node_name(),
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
    let service = grpc::gate::service(&app, app.config.grpc_max_message_bytes, MAX_GRPC_REPLY);

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
            grpc::server::Settings::from_config(&app.config),
            stop_accepting.clone(),
        ))
    };
    let metrics_server = match app.config.metrics_addr {
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
