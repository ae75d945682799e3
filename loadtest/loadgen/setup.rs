//! Setup: the in-process node with the bench's settings, and the target (its gRPC channels
//! and, when known, its database), plus the load generator's own Postgres connections. The
//! bench database, the node itself and the admin key are eventrelay-testkit's.

use crate::MAX_MESSAGE;
use crate::threads::ClientThreads;
use anyhow::{Context, Result, anyhow};
use eventrelay::proto::event_relay_client::EventRelayClient;
use eventrelay::proto::{CreateTopicRequest, DeleteTopicRequest, PullEventsRequest};
use sqlx::PgConnection;
use std::time::Duration;
use tokio::task::JoinHandle;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};

/// A node running in this process (eventrelay-testkit's), with what the report says of it.
pub(crate) struct Node {
    pub(crate) grpc: std::net::SocketAddr,
    pub(crate) pool_size: u32,
    node: eventrelay_testkit::Node,
}

impl Node {
    pub(crate) async fn start(db_url: &str) -> Result<Node> {
        let mut config = eventrelay::Config::for_database(db_url);
        config.shutdown_grace_seconds = 5;
        // Capacity is measured, not policy: the per-key rate limits are off (one admin key
        // sends everything here).
        config.rate_limit_durable_publish = 0;
        config.rate_limit_live_publish = 0;
        config.rate_limit_pull = 0;
        config.rate_limit_admin = 0;
        let pool_size = config.db_pool_size;
        let node = eventrelay_testkit::Node::try_start(config)
            .await
            .context("the in-process node failed to start")?;
        Ok(Node {
            grpc: node.grpc,
            pool_size,
            node,
        })
    }

    pub(crate) async fn stop(mut self) {
        if let Err(e) = self.node.try_stop(Duration::from_secs(30)).await {
            eprintln!("node stopped with an error: {e:#}");
        }
    }
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

/// A connection of the load generator's own (slow statements on purpose: prefill, settling).
pub(crate) async fn connect(url: &str) -> Result<PgConnection, sqlx::Error> {
    eventrelay_testkit::quiet_connection(url, "er-loadgen").await
}

pub(crate) fn authed<T>(auth: &MetadataValue<Ascii>, msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert("authorization", auth.clone());
    r
}
