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

/// Largest gRPC message accepted: room for a full request of large events.
const MAX_GRPC_MESSAGE: usize = 64 * 1024 * 1024;

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
    // Ends websockets and gRPC streams when draining starts, so the servers can stop.
    streams_stop: CancellationToken,
    // Ends the cluster task: it hands its subscriptions over, after in-flight attempts.
    cluster_stop: CancellationToken,
}

impl App {
    /// Connects, migrates and builds the services. Background work is spawned on `tracker`.
    pub async fn start(config: Config, tracker: &TaskTracker) -> anyhow::Result<App> {
        config.validate().map_err(anyhow::Error::msg)?;
        crate::install_crypto_provider();
        if config.jwt_secret.is_none() {
            tracing::warn!(
                "ER_JWT_SECRET is not set: using the public development secret; \
                 anyone can forge tokens. Set ER_JWT_SECRET in production."
            );
        }
        if !config.auth_enabled {
            tracing::warn!("ER_AUTH_ENABLED=false: every caller is an admin. Development only.");
        }
        // A quarter of the connections belong to the writer lanes (their own runtime, see
        // events::writer), the rest to everything else.
        let writer_connections = (config.db_pool_size / 4).clamp(1, 16);
        let pool = db::connect(
            &config.database_url,
            config.db_pool_size - writer_connections,
        )
        .await
        .context("connecting to Postgres (DATABASE_URL)")?;
        db::migrate(&pool).await.context("applying migrations")?;
        let live = Live::with_buffer(config.live_buffer);
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
        let writer = Writer::start(&pool, writer_connections, tracker.clone(), metrics.clone())
            .await
            .context("starting the writer lanes")?;
        let delivery = Delivery::new(pool.clone(), &config, live.clone(), metrics.clone())
            .context("building the webhook client")?;
        let retention_settings =
            crate::retention::Settings::from_config(&config).map_err(anyhow::Error::msg)?;
        let cluster_stop = CancellationToken::new();
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
        let streams_stop = CancellationToken::new();
        let bus = Bus::start(
            &config,
            pool.clone(),
            live.clone(),
            redis.clone(),
            tracker,
            cluster_stop.clone(),
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
            ),
            subscriptions: Subscriptions::new(pool.clone()),
            auth: Auth::new(
                ApiKeys::new(pool.clone()),
                Jwt::new(config.jwt_secret()),
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
            streams_stop,
            cluster_stop,
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
        &self.streams_stop
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
    health
        .set_serving::<proto::event_relay_server::EventRelayServer<grpc::Service>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let service = proto::event_relay_server::EventRelayServer::new(grpc::Service::new(app.clone()))
        .max_decoding_message_size(MAX_GRPC_MESSAGE)
        .max_encoding_message_size(MAX_GRPC_MESSAGE);

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
            app.config.grpc_threads(),
            stop_accepting.clone(),
        )?)
    };
    let http_server = {
        let stop = stop_accepting.clone();
        let router = http::router(app.clone());
        tokio::spawn(async move {
            // TCP_NODELAY here too: websocket pushes are small frames.
            let listener = axum::serve::ListenerExt::tap_io(listeners.http, |tcp| {
                let _ = tcp.set_nodelay(true);
            });
            axum::serve(listener, router)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        })
    };

    shutdown.cancelled().await;
    tracing::info!("shutdown requested: draining");
    app.draining.store(true, Ordering::Relaxed);
    app.streams_stop.cancel();
    health
        .set_not_serving::<proto::event_relay_server::EventRelayServer<grpc::Service>>()
        .await;
    stop_accepting.cancel();
    // Hand webhook subscriptions over while the servers drain: the owner lets the attempts
    // in flight finish, then leaves the cluster and frees its locks.
    app.cluster_stop.cancel();
    let servers = async {
        let (g, h) = tokio::join!(grpc_server, http_server);
        if let Ok(Err(e)) = &h {
            tracing::warn!(error = %e, "HTTP server ended with an error");
        }
        match g {
            Ok(Ok(threads)) => Some(threads),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "gRPC server ended with an error");
                None
            }
            Err(_) => None,
        }
    };
    // Dropped only after the pool is closed (see grpc::server::ServerThreads).
    let grpc_threads = tokio::time::timeout(grace, servers).await;
    if grpc_threads.is_err() {
        tracing::warn!("in-flight requests did not finish within the grace period");
    }
    app.writer.close();
    tracker.close();
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!("background tasks did not finish within the grace period");
    }
    app.writer.shutdown().await;
    app.pool.close().await;
    drop(grpc_threads);
    tracing::info!("node stopped");
    Ok(())
}
