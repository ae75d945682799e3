//! Traces: a node started with `ER_OTLP_ENDPOINT` exports spans over OTLP/gRPC, and a gRPC
//! call that carries a W3C `traceparent` is recorded in the caller's trace; webhook attempts
//! pass their own `traceparent` on to the receiver. The collector is
//! a real HTTP/2 server recording what the node sends.

use crate::helpers::*;
use crate::receiver::Receiver;
use axum::body::Bytes;
use eventrelay::auth::{ApiKeys, KeyType};
use eventrelay::proto::event_relay_client::EventRelayClient;
use eventrelay::proto::{
    CreateSubscriptionRequest, CreateTopicRequest, NewSubscription, PublishEventsRequest,
};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";

/// An OTLP collector that keeps the raw export requests.
async fn collector() -> (String, Arc<Mutex<Vec<Bytes>>>) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let store = got.clone();
    let app = axum::Router::new().fallback(move |body: Bytes| {
        let store = store.clone();
        async move {
            store.lock().unwrap().push(body);
            // Trailers-only answer: status OK, no message (the exporter may log it; fine).
            (
                [("content-type", "application/grpc"), ("grpc-status", "0")],
                "",
            )
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), got)
}

#[tokio::test]
async fn grpc_calls_continue_the_callers_trace_and_are_exported() {
    eventrelay::install_crypto_provider();
    let db = TestDb::create().await;
    let (endpoint, exported) = collector().await;
    let mut command = Command::new(env!("CARGO_BIN_EXE_eventrelay"));
    command
        .env("DATABASE_URL", &db.url)
        .env("ER_JWT_SECRET", jwt_secret())
        .env("ER_OTLP_ENDPOINT", &endpoint)
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env("ER_WEBHOOK_ALLOWED_NETWORKS", "127.0.0.0/8")
        .env("ER_WEBHOOK_POLL_MS", "200")
        .env("RUST_LOG", "warn")
        .env_remove("REDIS_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let node = NodeProcess::start(command).await.expect("node ready");
    let grpc = node.grpc;
    let pool = eventrelay::db::connect(&db.url, 2).await.unwrap();
    let admin = ApiKeys::new(pool)
        .create(KeyType::Admin, "t", &[], &[])
        .await
        .unwrap()
        .bearer_token()
        .unwrap();

    let mut api = EventRelayClient::connect(format!("http://{grpc}"))
        .await
        .unwrap();
    api.create_topic(authed(
        &admin,
        CreateTopicRequest {
            name: "traced".into(),
            ..Default::default()
        },
    ))
    .await
    .unwrap();
    let receiver = Receiver::start().await;
    let mut config = std::collections::HashMap::new();
    config.insert("endpoint_url".to_string(), receiver.url("/hook"));
    api.create_subscription(authed(
        &admin,
        CreateSubscriptionRequest {
            subscription: Some(NewSubscription {
                name: "traced_hook".into(),
                topic_name: "traced".into(),
                push: true,
                config,
                subscription_type: "webhook".into(),
                ..Default::default()
            }),
        },
    ))
    .await
    .unwrap();
    let mut req = authed(
        &admin,
        PublishEventsRequest {
            topic: "traced".into(),
            events: vec![event("x", "{}")],
            durable: true,
            ..Default::default()
        },
    );
    req.metadata_mut().insert(
        "traceparent",
        format!("00-{TRACE_ID}-b7ad6b7169203331-01")
            .parse()
            .unwrap(),
    );
    api.publish_events(req).await.unwrap();

    // OTLP carries trace ids as raw bytes: the caller's id must appear in an export.
    let wanted = hex::decode(TRACE_ID).unwrap();
    let mut found = false;
    for _ in 0..100 {
        found = exported
            .lock()
            .unwrap()
            .iter()
            .any(|b| b.windows(16).any(|w| w == wanted.as_slice()));
        if found {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(found, "no exported span carried the caller's trace id");

    // Webhook attempts carry their span's traceparent, so receivers can join the trace.
    receiver
        .wait_for(10, "a webhook with a traceparent", |log| {
            log.iter().any(|r| {
                r.headers
                    .get("traceparent")
                    .is_some_and(|t| t.len() == 55 && t.starts_with("00-"))
            })
        })
        .await;
}
