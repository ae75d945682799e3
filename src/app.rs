//! The services of one node, built once from the typed configuration over one pool: what the
//! transports are handed. Serving and draining them is `node.rs`.

use crate::auth::{ApiKeys, Auth, Jwt};
use crate::cluster::bus::Bus;
use crate::cluster::membership::NodeId;
use crate::cluster::ownership::Ownership;
use crate::cluster::status::ClusterStatus;
use crate::config::{self, Settings};
use crate::db;
use crate::delivery::Delivery;
use crate::events::{Events, Writer};
use crate::live::{Feeds, Live};
use crate::metrics::Metrics;
use crate::retention::{Pruner, Retention};
use crate::subscriptions::Subscriptions;
use crate::topics::Topics;
use crate::usecases::{Calls, TopicAdmin};
use crate::users::Users;
use anyhow::Context;
use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The services of one node, cheap to clone (everything inside is shared).
#[derive(Clone)]
pub struct App {
    /// This node in its cluster (name, heartbeat TTL, drain timings).
    pub node: Arc<config::Node>,
    /// The gRPC section of the configuration.
    pub grpc: config::Grpc,
    /// The HTTP section of the configuration (websockets, SSE, the UI).
    pub http: Arc<config::Http>,
    /// The shared Postgres pool (closed by the node when it stops; services hold their own
    /// handles to it).
    pub(crate) pool: PgPool,
    /// Live feeds (replay, then the hub) for websockets, streams and SSE.
    pub feeds: Feeds,
    /// What operators see of the cluster: nodes and owners.
    pub cluster: ClusterStatus,
    /// Topics.
    pub topics: Topics,
    /// Topic management as callers may do it (authorized, with retention).
    pub topic_admin: TopicAdmin,
    /// Events.
    pub events: Events,
    /// Publishing, pulling and every other call, counted against the caller's rate limits.
    pub calls: Calls,
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
    /// Webhook delivery (workers run on the owner node; control RPCs on any node).
    pub delivery: Delivery,
    /// The cluster bus: local hub plus cross-node fan-out of published events.
    pub bus: Bus,
    /// Retention policies and statistics (the pruners run on their topics' owners).
    pub retention: Retention,
    pub(crate) writer: Writer,
    pub(crate) draining: Arc<AtomicBool>,
    /// Ends websockets, gRPC streams and SSE streams, spread over a window, when draining
    /// starts, so the servers can stop; recycles old websockets.
    pub drain: crate::drain::Drain,
    // Ends the cluster task: it hands its subscriptions over, after in-flight attempts.
    pub(crate) cluster_stop: CancellationToken,
    // Ends the bus: only once the websockets and streams a drain spreads out have closed,
    // since until then they still receive the other nodes' events.
    pub(crate) bus_stop: CancellationToken,
}

impl App {
    /// Connects, migrates and builds the services. Background work is spawned on `tracker`.
    pub async fn start(settings: Settings, tracker: &TaskTracker) -> anyhow::Result<App> {
        let Settings {
            node,
            auth,
            db,
            redis_url,
            grpc,
            http,
            publish,
            rate_limits,
            live,
            delivery,
            retention,
        } = settings;
        crate::install_crypto_provider();
        if auth.insecure_dev_jwt {
            tracing::warn!(
                "ER_INSECURE_DEV_JWT=true and no ER_JWT_SECRET: using the public development \
                 secret; anyone can forge tokens. Development only."
            );
        }
        if !auth.enabled {
            tracing::warn!("ER_AUTH_ENABLED=false: every caller is an admin. Development only.");
        }
        let pool = db::connect(&db.url, db.pool_size)
            .await
            .context("connecting to Postgres (DATABASE_URL)")?;
        db::migrate(&pool).await.context("applying migrations")?;
        let live = Live::configured(&live);
        let metrics = Metrics::new();
        let redis = match &redis_url {
            Some(url) => {
                Some(crate::redis::connect(url).context("REDIS_URL is not a valid Redis URL")?)
            }
            None => None,
        };
        let limiter = crate::ratelimit::RateLimiter::new(
            rate_limits,
            redis.clone(),
            &node.cluster,
            metrics.clone(),
        );
        let writer = Writer::start_with_window(
            pool.clone(),
            db.writers,
            tracker,
            metrics.clone(),
            publish.dedupe_window.as_secs() as i64,
        );
        let delivery = Delivery::new(
            pool.clone(),
            &delivery,
            retention.clone(),
            live.clone(),
            metrics.clone(),
        )
        .context("building the webhook client")?;
        let cluster_stop = CancellationToken::new();
        let bus_stop = CancellationToken::new();
        {
            // Session advisory locks need their own direct connection (see cluster::ownership).
            let lock_options = PgConnectOptions::from_str(&db.url)
                .context("DATABASE_URL is not a valid Postgres URL")?;
            let id = NodeId::new(node.name.clone());
            let ownership = Ownership::new(
                pool.clone(),
                lock_options.clone(),
                id.clone(),
                node.ttl,
                Arc::new(delivery.clone()),
                tracker.clone(),
                metrics.clone(),
            );
            tracker.spawn(ownership.run(cluster_stop.clone(), node.shutdown_grace));
            // Topic pruners: the same election, a lock connection of their own.
            let pruners = Ownership::new(
                pool.clone(),
                lock_options,
                id,
                node.ttl,
                Arc::new(Pruner::new(pool.clone(), retention.clone())),
                tracker.clone(),
                metrics.clone(),
            )
            .sharing_heartbeat();
            tracker.spawn(pruners.run(cluster_stop.clone(), node.shutdown_grace));
        }
        let bus = Bus::start(
            &node.cluster,
            &db.url,
            redis_url.as_deref(),
            pool.clone(),
            live.clone(),
            redis,
            tracker,
            bus_stop.clone(),
            metrics.clone(),
        )
        .context("starting the cluster bus (REDIS_URL)")?;
        let live_hub = live.clone();
        let topics = Topics::with_defaults(pool.clone(), retention.defaults);
        let retention_service = Retention::new(pool.clone(), retention);
        let default_window = publish.dedupe_window.as_secs() as i64;
        let events = Events::new(
            pool.clone(),
            writer.clone(),
            Arc::new(bus.clone()),
            publish,
            metrics.clone(),
        )
        .with_pull_timeout(db.pull_timeout);
        Ok(App {
            topics: topics.clone(),
            topic_admin: TopicAdmin::new(topics, retention_service.clone(), default_window),
            retention: retention_service,
            calls: Calls::new(limiter, events.clone()),
            events,
            subscriptions: Subscriptions::new(pool.clone()),
            auth: Auth::new(
                ApiKeys::new(pool.clone()),
                Jwt::new(&auth.jwt_secret),
                auth.enabled,
            ),
            live,
            metrics,
            users: Users::new(pool.clone()),
            delivery,
            bus,
            writer,
            draining: Arc::default(),
            drain: crate::drain::Drain::new(node.drain_spread, http.ws_max_connection_age),
            cluster_stop,
            bus_stop,
            feeds: Feeds::new(live_hub, pool.clone()),
            cluster: ClusterStatus::new(pool.clone(), node.ttl),
            pool,
            node: Arc::new(node),
            grpc,
            http: Arc::new(http),
        })
    }

    /// Whether every migration this node knows is applied (Postgres answers and is current).
    pub async fn migrations_applied(&self) -> bool {
        db::migrations_applied(&self.pool).await
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
