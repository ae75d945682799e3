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
    ] {
        assert!(text.contains(want), "missing {want} in:\n{text}");
    }
}
