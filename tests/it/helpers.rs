//! Test cluster: a fresh Postgres database per test and any number of real nodes on it, each
//! serving gRPC and HTTP on port 0. Dropping the cluster stops the nodes and drops the database.
//! The pieces (database, node, admin key, client) are eventrelay-testkit's (tests/support),
//! shared with the benchmarks; this module adds the cluster and the tests' gRPC shorthands.

#![allow(dead_code)]

use eventrelay::Config;
use eventrelay::auth::{ApiKeys, KeyType};
use eventrelay::proto::event_relay_client::EventRelayClient;
use eventrelay::topics::TopicRef;
use tonic::transport::Channel;
use uuid::Uuid;

// The set-up shared with the benchmarks lives in tests/support (eventrelay-testkit); these
// names stay reachable as `helpers::...`.
pub use eventrelay_testkit::{
    Node, NodeProcess, TestDb, admin_url, authed, redis_url, unique_cluster_name,
};

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
        let admin = eventrelay_testkit::admin_key(&db.url, "test admin")
            .await
            .expect("admin key");
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
        ..Default::default()
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
        ..Default::default()
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

/// A fresh `ER_JWT_SECRET` for a node run as its own process (long enough to be accepted).
pub fn jwt_secret() -> String {
    eventrelay::users::random_token(48)
}

/// Rows in a table of the cluster's database (`table` is a test's literal name).
pub async fn count_rows(pool: &sqlx::PgPool, table: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("count {table}: {e}"))
}

/// An event with an idempotency key (the key also in its data, for checks in SQL).
pub fn keyed(key: &str) -> eventrelay::proto::NewEvent {
    eventrelay::proto::NewEvent {
        idempotency_key: key.into(),
        ..event("keyed", &format!(r#"{{"k": "{key}"}}"#))
    }
}

/// Sends a whole publish request as the admin to node `node`.
pub async fn publish_request(
    c: &TestCluster,
    node: usize,
    r: eventrelay::proto::PublishEventsRequest,
) -> Result<eventrelay::proto::PublishEventsResponse, tonic::Status> {
    let out = c
        .client(node)
        .await
        .publish_events(authed(&c.admin, r))
        .await?;
    Ok(out.into_inner())
}

/// A durable publish request of `events` to `topic`.
pub fn durable(
    topic: &str,
    events: Vec<eventrelay::proto::NewEvent>,
) -> eventrelay::proto::PublishEventsRequest {
    eventrelay::proto::PublishEventsRequest {
        topic: topic.into(),
        events,
        durable: true,
        ..Default::default()
    }
}

/// The offsets of events.
pub fn offsets_of(events: &[eventrelay::proto::Event]) -> Vec<i64> {
    events.iter().map(|e| e.offset64).collect()
}

/// Rows stored in a topic's events table, and how many distinct `data.k` they hold.
pub async fn stored_rows(c: &TestCluster, topic: &str) -> (i64, i64) {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT count(*), count(DISTINCT data->>'k') FROM {topic}_events"
    )))
    .fetch_one(&c.pool)
    .await
    .unwrap()
}

/// Holds topic `topic`'s offset row in a transaction of the test's own, so every publish of
/// the topic waits for it; returns the holder (commit or drop it to release the row).
pub async fn hold_offsets(
    c: &TestCluster,
    topic: &str,
) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut holder = c.pool.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO topic_offsets (name, reserved, marked) VALUES ($1, 0, 0)
         ON CONFLICT (name) DO UPDATE SET reserved = topic_offsets.reserved",
    )
    .bind(topic)
    .execute(&mut *holder)
    .await
    .unwrap();
    holder
}

/// Waits until at least `n` statements of this test's database wait for a lock (a bound of
/// 30 s, not a timing: they reach it within moments).
pub async fn lock_waiters(c: &TestCluster, n: i64) {
    for _ in 0..300 {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&c.pool)
        .await
        .unwrap();
        if waiting >= n {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("fewer than {n} statements ever waited for a lock");
}

/// Moves the expiry of `key`'s idempotency record in `topic` one second into the past: its
/// dedupe window has passed (the clock, not a wait).
pub async fn expire_key(pool: &sqlx::PgPool, topic: &str, key: &str) {
    sqlx::query(
        "UPDATE idempotency_digests SET expires_at = now() - interval '1 second'
         WHERE (digest_hi, digest_lo) = (SELECT * FROM idempotency_key_digest(
             (SELECT id FROM topics WHERE name = $1), $2))",
    )
    .bind(topic)
    .bind(key)
    .execute(pool)
    .await
    .unwrap();
}
