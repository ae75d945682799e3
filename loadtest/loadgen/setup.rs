//! Setup: the bench database, the in-process node, the admin key, and the target (its gRPC
//! channels and, when known, its database), plus the load generator's own Postgres
//! connections.

use crate::MAX_MESSAGE;
use crate::threads::ClientThreads;
use anyhow::{Context, Result, anyhow, bail};
use eventrelay::auth::{ApiKeys, KeyType};
use eventrelay::proto::event_relay_client::EventRelayClient;
use eventrelay::proto::{CreateTopicRequest, DeleteTopicRequest, PullEventsRequest};
use sqlx::postgres::PgConnectOptions;
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, PgConnection};
use std::str::FromStr;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};

/// A fresh database, dropped by [`BenchDb::drop_db`].
pub(crate) struct BenchDb {
    admin_url: String,
    name: String,
    pub(crate) url: String,
}

impl BenchDb {
    pub(crate) async fn create(admin_url: &str) -> Result<BenchDb> {
        let name = format!("er_bench_{}", uuid::Uuid::new_v4().simple());
        let mut url = url::Url::parse(admin_url).context("--admin-url is not a URL")?;
        url.set_path(&format!("/{name}"));
        let mut conn = connect(admin_url)
            .await
            .with_context(|| "connecting to --admin-url")?;
        sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut conn)
            .await
            .context("creating the bench database")?;
        let _ = conn.close().await;
        eprintln!("bench database {name} created");
        Ok(BenchDb {
            admin_url: admin_url.to_owned(),
            name,
            url: url.to_string(),
        })
    }

    pub(crate) async fn drop_db(self) {
        let dropped = async {
            let mut conn = connect(&self.admin_url).await?;
            sqlx::raw_sql(AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            )))
            .execute(&mut conn)
            .await?;
            conn.close().await?;
            anyhow::Ok(())
        }
        .await;
        match dropped {
            Ok(()) => eprintln!("bench database {} dropped", self.name),
            Err(e) => eprintln!(
                "could not drop bench database {}: {e:#}; drop it by hand",
                self.name
            ),
        }
    }
}

/// A node running in this process.
pub(crate) struct Node {
    pub(crate) grpc: std::net::SocketAddr,
    pub(crate) pool_size: u32,
    pub(crate) grpc_threads: usize,
    shutdown: CancellationToken,
    handle: JoinHandle<Result<()>>,
}

impl Node {
    pub(crate) async fn start(db_url: &str, grpc_threads: usize) -> Result<Node> {
        let mut config = eventrelay::Config::for_database(db_url);
        config.shutdown_grace_seconds = 5;
        // Capacity is measured, not policy: the per-key rate limits are off (one admin key
        // sends everything here).
        config.rate_limit_durable_publish = 0;
        config.rate_limit_live_publish = 0;
        config.rate_limit_pull = 0;
        config.rate_limit_admin = 0;
        config.grpc_threads = grpc_threads;
        let pool_size = config.db_pool_size;
        let grpc_threads = config.grpc_threads();
        let grpc = TcpListener::bind("127.0.0.1:0").await?;
        let http = TcpListener::bind("127.0.0.1:0").await?;
        let (grpc_addr, http_addr) = (grpc.local_addr()?, http.local_addr()?);
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(eventrelay::run(
            config,
            eventrelay::Listeners { grpc, http },
            shutdown.clone(),
        ));
        let node = Node {
            grpc: grpc_addr,
            pool_size,
            grpc_threads,
            shutdown,
            handle,
        };
        let ready = format!("http://{http_addr}/readyz");
        for _ in 0..300 {
            if node.handle.is_finished() {
                break;
            }
            if let Ok(r) = reqwest::get(&ready).await
                && r.status().is_success()
            {
                return Ok(node);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        node.shutdown.cancel();
        match node.handle.await {
            Ok(Err(e)) => Err(e.context("the in-process node failed to start")),
            _ => bail!("the in-process node did not become ready at {ready}"),
        }
    }

    pub(crate) async fn stop(self) {
        self.shutdown.cancel();
        match tokio::time::timeout(Duration::from_secs(30), self.handle).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => eprintln!("node stopped with an error: {e:#}"),
            Ok(Err(e)) => eprintln!("node task failed: {e}"),
            Err(_) => eprintln!("node did not stop within 30 s"),
        }
    }
}

/// Creates an admin key directly in the database and returns its bearer token.
pub(crate) async fn admin_token(db_url: &str) -> Result<String> {
    let pool = eventrelay::db::connect(db_url, 2).await?;
    let key = ApiKeys::new(pool.clone())
        .create(KeyType::Admin, "er-loadgen", &[], &[])
        .await
        .map_err(|e| anyhow!("creating the admin key: {e}"))?;
    pool.close().await;
    key.bearer_token()
        .ok_or_else(|| anyhow!("a new key carries its secret"))
}

/// The server under test: gRPC channels, the authorization header, and (optionally) its
/// database for the baselines and the prefill.
pub(crate) struct Target {
    channels: Vec<Channel>,
    /// Where the clients run; channel `i` lives on thread `i` (modulo their number).
    pub(crate) threads: ClientThreads,
    pub(crate) auth: MetadataValue<Ascii>,
    pub(crate) db_url: Option<String>,
}

impl Target {
    pub(crate) async fn connect(
        url: &str,
        token: &str,
        db_url: Option<String>,
        channels: usize,
    ) -> Result<Target> {
        let endpoint = Endpoint::from_shared(url.to_owned())
            .context("bad gRPC URL")?
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(60));
        let threads = ClientThreads::start(channels)?;
        let mut chans = Vec::with_capacity(channels);
        for i in 0..channels {
            let endpoint = endpoint.clone();
            chans.push(
                threads
                    .spawn(i, async move { endpoint.connect().await })
                    .await
                    .context("a client thread stopped")?
                    .with_context(|| format!("connecting to {url}"))?,
            );
        }
        Ok(Target {
            channels: chans,
            threads,
            auth: format!("Bearer {token}")
                .parse()
                .context("the token is not a valid header value")?,
            db_url,
        })
    }

    pub(crate) fn client(&self, i: usize) -> EventRelayClient<Channel> {
        EventRelayClient::new(self.channels[i % self.channels.len()].clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }

    /// Runs client `i`'s loop on the thread of its channel ([`Target::client`]).
    pub(crate) fn spawn<F>(&self, i: usize, fut: F) -> JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.threads.spawn(i % self.channels.len(), fut)
    }

    pub(crate) fn request<T>(&self, msg: T) -> tonic::Request<T> {
        authed(&self.auth, msg)
    }

    pub(crate) async fn create_topic(&self, name: &str) -> Result<String> {
        let t = self
            .client(0)
            .create_topic(self.request(CreateTopicRequest {
                name: name.into(),
                ..Default::default()
            }))
            .await
            .context("CreateTopic")?
            .into_inner()
            .topic
            .ok_or_else(|| anyhow!("CreateTopic returned no topic"))?;
        Ok(t.id)
    }

    /// Highest offset of the topic (PullEvents' total_count without filters).
    pub(crate) async fn last_offset(&self, topic: &str) -> Result<i64> {
        let r = self
            .client(0)
            .pull_events(self.request(PullEventsRequest {
                topic: topic.into(),
                batch_size: 1,
                offset: 0,
                filters: vec![],
                offset64: None,
            }))
            .await
            .context("PullEvents")?
            .into_inner();
        Ok(i64::from(r.total_count))
    }

    pub(crate) async fn db(&self) -> Result<Option<PgConnection>> {
        match &self.db_url {
            Some(u) => Ok(Some(
                connect(u).await.context("connecting to the database")?,
            )),
            None => Ok(None),
        }
    }

    /// Removes what a run against a long-lived target left behind.
    pub(crate) async fn cleanup(&self, topic_id: &str) {
        let r = self
            .client(0)
            .delete_topic(self.request(DeleteTopicRequest {
                id: topic_id.into(),
            }))
            .await;
        if let Err(e) = r {
            eprintln!("could not delete the bench topic: {e}");
        }
        if let Ok(Some(mut c)) = self.db().await {
            let _ = sqlx::raw_sql("DROP TABLE IF EXISTS bench_baseline")
                .execute(&mut c)
                .await;
        }
    }
}

/// A connection of the load generator's own: its statements are slow on purpose (prefill,
/// DROP DATABASE), so sqlx's slow-statement warnings are off here (the node keeps its own).
pub(crate) async fn connect(url: &str) -> Result<PgConnection, sqlx::Error> {
    PgConnectOptions::from_str(url)?
        .application_name("er-loadgen")
        .disable_statement_logging()
        .connect()
        .await
}

pub(crate) fn authed<T>(auth: &MetadataValue<Ascii>, msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert("authorization", auth.clone());
    r
}
