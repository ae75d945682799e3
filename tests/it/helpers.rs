//! Test cluster: a fresh Postgres database per test and any number of real nodes on it, each
//! serving gRPC and HTTP on port 0. Dropping the cluster stops the nodes and drops the database.

#![allow(dead_code)]

use eventrelay::auth::{ApiKeys, KeyType};
use eventrelay::proto::event_relay_client::EventRelayClient;
use eventrelay::topics::TopicRef;
use eventrelay::{Config, Listeners};
use std::net::SocketAddr;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use uuid::Uuid;

/// Postgres server the tests create their databases on.
pub fn admin_url() -> String {
    std::env::var("ER_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn db_url(name: &str) -> String {
    let base = admin_url();
    let (server, _) = base.rsplit_once('/').expect("database URL has a path");
    format!("{server}/{name}")
}

/// A fresh, empty database that is dropped with this value.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub async fn create() -> Self {
        let name = format!("er_test_{}", Uuid::new_v4().simple());
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin_url())
            .await
            .expect("connect to the test Postgres (ER_TEST_DATABASE_URL)");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut conn)
            .await
            .expect("create test database");
        TestDb {
            url: db_url(&name),
            name,
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs outside async context: a short-lived runtime on its own thread.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(rt) = rt {
                rt.block_on(async move {
                    if let Ok(mut c) =
                        <sqlx::PgConnection as sqlx::Connection>::connect(&admin_url()).await
                    {
                        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                        )))
                        .execute(&mut c)
                        .await;
                    }
                });
            }
        })
        .join();
    }
}

/// One running node.
pub struct Node {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub shutdown: CancellationToken,
    pub handle: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Node {
    pub async fn start(config: Config) -> Node {
        eventrelay::install_crypto_provider();
        let grpc = TcpListener::bind("127.0.0.1:0").await.expect("bind grpc");
        let http = TcpListener::bind("127.0.0.1:0").await.expect("bind http");
        let (grpc_addr, http_addr) = (grpc.local_addr().unwrap(), http.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(eventrelay::run(
            config,
            Listeners { grpc, http },
            shutdown.clone(),
        ));
        let node = Node {
            grpc: grpc_addr,
            http: http_addr,
            shutdown,
            handle: Some(handle),
        };
        node.wait_ready().await;
        node
    }

    async fn wait_ready(&self) {
        let url = format!("http://{}/readyz", self.http);
        for _ in 0..200 {
            if reqwest::get(&url)
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("node did not become ready at {url}");
    }

    pub async fn client(&self) -> EventRelayClient<Channel> {
        EventRelayClient::connect(format!("http://{}", self.grpc))
            .await
            .expect("connect gRPC")
            .max_decoding_message_size(64 * 1024 * 1024)
            .max_encoding_message_size(64 * 1024 * 1024)
    }

    /// Graceful stop: drain and wait.
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(h) = self.handle.take() {
            h.await.expect("node task").expect("node run");
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(h) = self.handle.take() {
            h.abort();
        }
    }
}

/// Nodes sharing one fresh database, with an admin key ready.
pub struct TestCluster {
    pub nodes: Vec<Node>,
    pub admin: String,
    pub pool: sqlx::PgPool,
    pub config: Config,
    pub db: TestDb,
}

impl TestCluster {
    pub async fn start(n: usize) -> Self {
        Self::start_with(n, |_| {}).await
    }

    pub async fn start_with(n: usize, tweak: impl Fn(&mut Config)) -> Self {
        let db = TestDb::create().await;
        let mut config = Config::for_database(&db.url);
        // Small pools: many tests, each with several nodes, share one Postgres.
        config.db_pool_size = 4;
        config.shutdown_grace_seconds = 5;
        tweak(&mut config);
        let mut nodes = Vec::new();
        for _ in 0..n {
            nodes.push(Node::start(config.clone()).await);
        }
        let pool = eventrelay::db::connect(&db.url, 4)
            .await
            .expect("test pool");
        let admin = ApiKeys::new(pool.clone())
            .create(KeyType::Admin, "test admin", &[], &[])
            .await
            .expect("admin key")
            .bearer_token()
            .expect("token");
        TestCluster {
            nodes,
            admin,
            pool,
            config,
            db,
        }
    }

    pub async fn client(&self, i: usize) -> EventRelayClient<Channel> {
        self.nodes[i].client().await
    }

    /// A key of that type with grants, returning its bearer token and id.
    pub async fn key(&self, t: KeyType, topics: &[&str], subs: &[Uuid]) -> (String, Uuid) {
        let topics: Vec<TopicRef> = topics.iter().map(|t| TopicRef::parse(t).unwrap()).collect();
        let k = ApiKeys::new(self.pool.clone())
            .create(t, "test", &topics, subs)
            .await
            .expect("key");
        (k.bearer_token().unwrap(), k.id)
    }
}

/// A request carrying a bearer token.
pub fn authed<T>(token: &str, msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("metadata value"),
    );
    r
}

/// A simple event.
pub fn event(name: &str, data: &str) -> eventrelay::proto::NewEvent {
    eventrelay::proto::NewEvent {
        name: name.into(),
        data: data.into(),
        source: "test".into(),
        ..Default::default()
    }
}

/// Creates a topic through the admin API.
pub async fn create_topic(c: &TestCluster, name: &str) -> eventrelay::proto::Topic {
    c.client(0)
        .await
        .create_topic(authed(
            &c.admin,
            eventrelay::proto::CreateTopicRequest {
                name: name.into(),
                ..Default::default()
            },
        ))
        .await
        .expect("create topic")
        .into_inner()
        .topic
        .expect("topic")
}

/// Publishes durably and returns the stored events.
pub async fn publish(
    c: &TestCluster,
    node: usize,
    topic: &str,
    events: Vec<eventrelay::proto::NewEvent>,
) -> Vec<eventrelay::proto::Event> {
    try_publish(c, node, topic, events).await.expect("publish")
}

/// Publishes durably as the admin; the stored events or the refusal.
pub async fn try_publish(
    c: &TestCluster,
    node: usize,
    topic: &str,
    events: Vec<eventrelay::proto::NewEvent>,
) -> Result<Vec<eventrelay::proto::Event>, tonic::Status> {
    let r = eventrelay::proto::PublishEventsRequest {
        topic: topic.into(),
        events,
        durable: true,
    };
    let out = c
        .client(node)
        .await
        .publish_events(authed(&c.admin, r))
        .await?;
    Ok(out.into_inner().events)
}

/// Asserts a gRPC error code (and, if given, the message).
#[track_caller]
pub fn assert_code<T: std::fmt::Debug>(
    r: Result<tonic::Response<T>, tonic::Status>,
    code: tonic::Code,
    message: Option<&str>,
) {
    match r {
        Ok(v) => panic!("expected {code:?}, got Ok({v:?})"),
        Err(s) => {
            assert_eq!(s.code(), code, "message: {}", s.message());
            if let Some(m) = message {
                assert_eq!(s.message(), m);
            }
        }
    }
}

/// Creates a pull ("api") subscription through the admin API.
pub async fn create_subscription(
    c: &TestCluster,
    name: &str,
    topic_name: &str,
    topic_identifier: &str,
) -> eventrelay::proto::Subscription {
    c.client(0)
        .await
        .create_subscription(authed(
            &c.admin,
            eventrelay::proto::CreateSubscriptionRequest {
                subscription: Some(eventrelay::proto::NewSubscription {
                    name: name.into(),
                    topic_name: topic_name.into(),
                    topic_identifier: topic_identifier.into(),
                    ..Default::default()
                }),
            },
        ))
        .await
        .expect("create subscription")
        .into_inner()
        .subscription
        .map(|s| eventrelay::proto::Subscription {
            // Only the creation response carries the signing secret; callers compare this
            // value with what GetSubscription and ListSubscriptions return.
            signing_secret: String::new(),
            ..s
        })
        .expect("subscription")
}

/// Parses a subscription id returned by the API.
pub fn sub_id(s: &eventrelay::proto::Subscription) -> Uuid {
    Uuid::parse_str(&s.id).expect("subscription id is a UUID")
}

/// Publishes one event durably with a given bearer token.
pub async fn publish_as(
    c: &mut EventRelayClient<Channel>,
    token: &str,
    topic: &str,
) -> Result<tonic::Response<eventrelay::proto::PublishEventsResponse>, tonic::Status> {
    let r = eventrelay::proto::PublishEventsRequest {
        topic: topic.into(),
        events: vec![event("user.created", r#"{"id": 1}"#)],
        durable: true,
    };
    c.publish_events(authed(token, r)).await
}

/// Pulls the first batch of a topic with a given bearer token.
pub async fn pull_as(
    c: &mut EventRelayClient<Channel>,
    token: &str,
    topic: &str,
) -> Result<tonic::Response<eventrelay::proto::PullEventsResponse>, tonic::Status> {
    let r = eventrelay::proto::PullEventsRequest {
        topic: topic.into(),
        ..Default::default()
    };
    c.pull_events(authed(token, r)).await
}

/// The `topic` of each event, in order.
pub fn event_topics(events: &[eventrelay::proto::Event]) -> Vec<&str> {
    events.iter().map(|e| e.topic.as_str()).collect()
}

/// Redis the tests share (each test namespaces itself with [`unique_cluster_name`]).
pub fn redis_url() -> String {
    std::env::var("ER_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A cluster name no other test uses: its Redis keys and channels are private to the test.
pub fn unique_cluster_name() -> String {
    format!("t{}", Uuid::new_v4().simple())
}

/// Rows in a table of the cluster's database (`table` is a test's literal name).
pub async fn count_rows(pool: &sqlx::PgPool, table: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("count {table}: {e}"))
}
