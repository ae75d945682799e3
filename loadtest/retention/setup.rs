//! The bench's database, in-process node, admin key and topic, and the events generated
//! straight into the topic's partitions.

use anyhow::{Context, Result};
use eventrelay::auth::{ApiKeys, KeyType};
use eventrelay::proto::event_relay_client::EventRelayClient;
use eventrelay::proto::{CreateTopicRequest, Topic};
use eventrelay::topics::{TopicName, partitions};
use sqlx::{AssertSqlSafe, Connection, PgConnection, PgPool};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Events per generating statement.
const CHUNK: i64 = 1_000_000;

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
        let mut conn = PgConnection::connect(admin_url).await?;
        sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut conn)
            .await?;
        let _ = conn.close().await;
        Ok(BenchDb {
            admin_url: admin_url.to_owned(),
            name,
            url: url.to_string(),
        })
    }

    pub(crate) async fn drop_db(self) {
        let dropped = async {
            let mut conn = PgConnection::connect(&self.admin_url).await?;
            sqlx::raw_sql(AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            )))
            .execute(&mut conn)
            .await?;
            anyhow::Ok(())
        }
        .await;
        if let Err(e) = dropped {
            eprintln!("could not drop {}: {e:#}; drop it by hand", self.name);
        }
    }
}

/// A node in this process, with the per-key rate limits off (capacity is measured).
pub(crate) struct Node {
    pub(crate) grpc: SocketAddr,
    shutdown: CancellationToken,
    handle: JoinHandle<anyhow::Result<()>>,
}

impl Node {
    pub(crate) async fn start(db_url: &str, span: i64, drop_pause_ms: u64) -> Result<Node> {
        let mut config = eventrelay::Config::for_database(db_url);
        config.rate_limit_durable_publish = 0;
        config.rate_limit_pull = 0;
        config.rate_limit_admin = 0;
        config.retention_partition_events = u64::try_from(span)?;
        // The prune starts within a second of UpdateTopic (the default is 10 s).
        config.retention_interval_ms = 1_000;
        config.retention_drop_pause_ms = drop_pause_ms;
        let grpc = TcpListener::bind("127.0.0.1:0").await?;
        let http = TcpListener::bind("127.0.0.1:0").await?;
        let (grpc_addr, http_addr) = (grpc.local_addr()?, http.local_addr()?);
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(eventrelay::run(
            config,
            eventrelay::Listeners { grpc, http },
            shutdown.clone(),
        ));
        let ready = format!("http://{http_addr}/readyz");
        for _ in 0..300 {
            if reqwest::get(&ready)
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return Ok(Node {
                    grpc: grpc_addr,
                    shutdown,
                    handle,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!("the node did not become ready")
    }

    pub(crate) async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.handle.await;
    }
}

pub(crate) async fn admin_key(pool: &PgPool) -> Result<String> {
    ApiKeys::new(pool.clone())
        .create(KeyType::Admin, "bench", &[], &[])
        .await?
        .bearer_token()
        .context("admin token")
}

/// A request with the admin's bearer token.
pub(crate) fn authed<T>(token: &str, msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Ok(v) = format!("Bearer {token}").parse() {
        r.metadata_mut().insert("authorization", v);
    }
    r
}

pub(crate) async fn create_topic(grpc: SocketAddr, admin: &str, name: &str) -> Result<Topic> {
    let mut api = EventRelayClient::connect(format!("http://{grpc}")).await?;
    let r = CreateTopicRequest {
        name: name.into(),
        ..Default::default()
    };
    api.create_topic(authed(admin, r))
        .await?
        .into_inner()
        .topic
        .context("created topic")
}

/// Writes `n` small events (rows of about 150 bytes, so ten million fit in about 2.5 GB with
/// their indexes) straight into the topic's partitions, moves its counters, and vacuums;
/// returns how long it took.
pub(crate) async fn generate(pool: &PgPool, topic: &str, n: i64, span: i64) -> Result<Duration> {
    let start = Instant::now();
    let name = TopicName::parse(topic)?;
    partitions::ensure_events(pool, &name, 1, n + span).await?;
    let mut from = 1;
    while from <= n {
        let to = (from + CHUNK - 1).min(n);
        sqlx::query(AssertSqlSafe(format!(
            r#"INSERT INTO "{topic}_events"
                   ("offset", id, name, data, source, user_id, occurred_at)
               SELECT g, gen_random_uuid(), 'order.created',
                      jsonb_build_object('order_id', g, 'amount_cents', 1999),
                      'er-retention-bench', 'user-' || (g % 32), now()
               FROM generate_series($1::bigint, $2::bigint) AS g"#
        )))
        .bind(from)
        .bind(to)
        .execute(pool)
        .await?;
        eprintln!("  generated up to {to}");
        from = to + 1;
    }
    sqlx::query("UPDATE topics SET last_offset = $2 WHERE name = $1")
        .bind(topic)
        .bind(n)
        .execute(pool)
        .await?;
    sqlx::query(
        "INSERT INTO topic_offsets (name, reserved, marked) VALUES ($1, $2, $2)
         ON CONFLICT (name) DO UPDATE SET reserved = $2, marked = $2",
    )
    .bind(topic)
    .bind(n)
    .execute(pool)
    .await?;
    let mut conn = pool.acquire().await?;
    sqlx::raw_sql("SET statement_timeout = 0")
        .execute(&mut *conn)
        .await?;
    sqlx::raw_sql(AssertSqlSafe(format!(
        r#"VACUUM (ANALYZE) "{topic}_events""#
    )))
    .execute(&mut *conn)
    .await?;
    sqlx::raw_sql("RESET statement_timeout")
        .execute(&mut *conn)
        .await?;
    Ok(start.elapsed())
}

/// Lets the machine settle after bulk writes, so the first measured window does not pay for
/// them: a CHECKPOINT (the generated rows' dirty pages written now, not during a window),
/// then a wait (at most two minutes) for autovacuum workers in this database to finish.
pub(crate) async fn settle(pool: &PgPool) -> Result<()> {
    let mut conn = pool.acquire().await?;
    sqlx::raw_sql("SET statement_timeout = 0; CHECKPOINT; RESET statement_timeout")
        .execute(&mut *conn)
        .await?;
    for _ in 0..240 {
        let busy: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE backend_type = 'autovacuum worker' AND datname = current_database()",
        )
        .fetch_one(&mut *conn)
        .await?;
        if busy == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}

/// The database's size and the topic's tables' (every partition, indexes included).
pub(crate) struct Sizes {
    pub(crate) database: i64,
    pub(crate) topic: i64,
}

impl Sizes {
    pub(crate) async fn measure(pool: &PgPool, topic: &str) -> Result<Sizes> {
        let database: i64 = sqlx::query_scalar("SELECT pg_database_size(current_database())")
            .fetch_one(pool)
            .await?;
        let topic = partitions::bytes_on_disk(pool, &format!("\"{topic}_events\"")).await?;
        Ok(Sizes { database, topic })
    }
}
