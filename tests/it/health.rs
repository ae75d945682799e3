//! Health and metrics: `/healthz`, `/readyz`, the standard gRPC health service, and
//! Prometheus metrics that move with traffic.

use crate::helpers::*;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

#[tokio::test]
async fn health_endpoints_and_grpc_health() {
    let c = TestCluster::start(1).await;
    let base = format!("http://{}", c.nodes[0].http);
    let live = reqwest::get(format!("{base}/healthz")).await.unwrap();
    assert_eq!(live.status(), 200);
    let ready = reqwest::get(format!("{base}/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["postgres"], "ok");

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", c.nodes[0].grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    let status = health
        .check(HealthCheckRequest {
            service: "eventrelay.EventRelay".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::Serving as i32);
}

#[tokio::test]
async fn metrics_move_with_traffic() {
    let c = TestCluster::start(1).await;
    create_topic(&c, "users").await;
    publish(&c, 0, "users", vec![event("a", "{}"), event("b", "{}")]).await;
    publish(&c, 0, "nosuch", vec![event("c", "{}")]).await;
    let text = reqwest::get(format!("http://{}/metrics", c.nodes[0].http))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for want in [
        r#"eventrelay_events_stored_total{topic="users"} 2"#,
        r#"eventrelay_grpc_requests_total{rpc="PublishEvents",code="ok"} 2"#,
        r#"eventrelay_grpc_requests_total{rpc="CreateTopic",code="ok"} 1"#,
        "eventrelay_dead_letters_total 1",
        "eventrelay_grpc_request_duration_seconds_count{rpc=\"PublishEvents\"} 2",
        "eventrelay_live_connections 0",
        "eventrelay_bus_lag_seconds_count",
        "eventrelay_owned_subscriptions",
    ] {
        assert!(text.contains(want), "missing {want} in:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn live_connections_and_bus_lag_are_measured_across_nodes() {
    let c = TestCluster::start_with(2, |cfg| {
        cfg.redis_url = Some(redis_url());
        cfg.cluster_name = unique_cluster_name();
    })
    .await;
    create_topic(&c, "users").await;
    let mut stream = c
        .client(1)
        .await
        .stream_events(authed(
            &c.admin,
            eventrelay::proto::StreamEventsRequest {
                topic: "users".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let metrics = || async {
        reqwest::get(format!("http://{}/metrics", c.nodes[1].http))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let announced = |text: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix("eventrelay_bus_lag_seconds_count "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .is_some_and(|n| n > 0)
    };
    // Publish on node 0 until node 1's stream has an event and node 1 has had an announcement
    // (its bus subscription may lag the stream's start by a moment; an event published before
    // it reaches the stream through node 1's sweep instead). Bounded; the asserts below say
    // what was missing.
    let mut got = None;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            publish(&c, 0, "users", vec![event("a", "{}")]).await;
            if let Ok(Ok(Some(e))) =
                tokio::time::timeout(std::time::Duration::from_millis(300), stream.message()).await
            {
                got = Some(e);
            }
            if got.is_some() && announced(&metrics().await) {
                return;
            }
        }
    })
    .await;
    let got = got.expect("an event crossed the nodes");
    assert_eq!(got.name, "a");
    let text = metrics().await;
    assert!(text.contains("eventrelay_live_connections 1"), "{text}");
    let lag_count: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("eventrelay_bus_lag_seconds_count "))
        .and_then(|v| v.trim().parse().ok())
        .expect("bus lag histogram");
    assert!(lag_count > 0, "node 1 measured no announcement from node 0");
}

async fn readyz(node: &crate::helpers::Node) -> (u16, serde_json::Value) {
    let r = reqwest::get(format!("http://{}/readyz", node.http))
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn readiness_follows_postgres_and_reports_redis() {
    // Redis configured but not there: the node is ready (Redis is an accelerator) and says so.
    let dead_redis = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let c = TestCluster::start_with(1, |cfg| {
        cfg.redis_url = Some(format!("redis://127.0.0.1:{dead_redis}"));
        cfg.cluster_name = unique_cluster_name();
    })
    .await;
    let (code, body) = readyz(&c.nodes[0]).await;
    assert_eq!(
        (code, body["redis"].as_str()),
        (200, Some("disconnected")),
        "{body}"
    );

    // Postgres refusing connections: not ready; accepting again: ready again.
    let admin = eventrelay::db::connect(&admin_url(), 1).await.unwrap();
    let db = &c.db.name;
    let set_connections = |allow: bool| {
        sqlx::AssertSqlSafe(format!(
            "ALTER DATABASE \"{db}\" WITH ALLOW_CONNECTIONS {allow}"
        ))
    };
    sqlx::raw_sql(set_connections(false))
        .execute(&admin)
        .await
        .unwrap();
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
        .bind(db)
        .execute(&admin)
        .await
        .unwrap();
    let mut saw_unready = false;
    for _ in 0..50 {
        let (code, body) = readyz(&c.nodes[0]).await;
        if code == 503 {
            assert_eq!(body["postgres"], "unavailable", "{body}");
            saw_unready = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    sqlx::raw_sql(set_connections(true))
        .execute(&admin)
        .await
        .unwrap();
    assert!(
        saw_unready,
        "readiness stayed green with Postgres refusing connections"
    );
    let mut ready_again = false;
    for _ in 0..100 {
        if readyz(&c.nodes[0]).await.0 == 200 {
            ready_again = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(ready_again, "readiness did not recover with Postgres");
    // Liveness never depended on Postgres.
    let live = reqwest::get(format!("http://{}/healthz", c.nodes[0].http))
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
}

/// Calls open the node's pooled connections as they need them; a graceful stop still hands
/// the node's work over: it leaves the membership table before it returns, so other nodes
/// take its work at once instead of waiting out its TTL.
#[tokio::test]
async fn a_stopping_node_leaves_the_cluster_after_calls_opened_its_connections() {
    let mut c = TestCluster::start_with(1, |cfg| cfg.db_pool_size = 4).await;
    // Drop every connection the node opened at start, so the calls below open the pool's.
    let admin = eventrelay::db::connect(&admin_url(), 1).await.unwrap();
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind(&c.db.name)
    .execute(&admin)
    .await
    .unwrap();
    let mut calls = Vec::new();
    for _ in 0..4 {
        let mut client = c.client(0).await;
        let token = c.admin.clone();
        calls.push(tokio::spawn(async move {
            for _ in 0..25 {
                // A connection killed above may fail one call; the next gets a fresh one.
                let _ = client
                    .list_topics(authed(
                        &token,
                        eventrelay::proto::ListTopicsRequest::default(),
                    ))
                    .await;
            }
        }));
    }
    for call in calls {
        call.await.unwrap();
    }
    // A pool of its own: the test's was cut off above too.
    let check = eventrelay::db::connect(&c.db.url, 1).await.unwrap();
    let members = || sqlx::query_scalar::<_, i64>("SELECT count(*) FROM cluster_nodes");
    assert_eq!(members().fetch_one(&check).await.unwrap(), 1);
    c.nodes[0].stop().await;
    assert_eq!(
        members().fetch_one(&check).await.unwrap(),
        0,
        "the stopped node left the membership table"
    );
}
