//! The gRPC listener's threads (`ER_GRPC_THREADS`): connections handed to several server
//! threads are all served, calls in flight together on one connection (whose replies go out
//! in shared writes) each get their own reply, and the node still stops gracefully.

use crate::helpers::*;
use eventrelay::proto::PublishEventsRequest;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_spread_over_grpc_threads_each_get_their_own_replies() {
    let mut c = TestCluster::start_with(1, |cfg| cfg.grpc_threads = 3).await;
    create_topic(&c, "spread").await;
    // Seven connections over three threads: every thread serves more than one.
    const CONNECTIONS: usize = 7;
    const CALLS: usize = 15;
    let mut tasks = Vec::new();
    for conn in 0..CONNECTIONS {
        let api = c.client(0).await;
        let admin = c.admin.clone();
        tasks.push(tokio::spawn(async move {
            let calls = (0..CALLS).map(|i| {
                let (mut api, admin) = (api.clone(), admin.clone());
                async move {
                    let data = format!(r#"{{"conn":{conn},"i":{i}}}"#);
                    let out = api
                        .publish_events(authed(
                            &admin,
                            PublishEventsRequest {
                                topic: "spread".into(),
                                events: vec![event("tick", &data)],
                                durable: true,
                            },
                        ))
                        .await
                        .expect("publish")
                        .into_inner()
                        .events;
                    assert_eq!(out.len(), 1);
                    // The reply is this call's own, not a neighbour's from the same write.
                    let got: serde_json::Value = serde_json::from_str(&out[0].data).unwrap();
                    assert_eq!(got, serde_json::json!({"conn": conn, "i": i}));
                    out[0].offset64
                }
            });
            futures::future::join_all(calls).await
        }));
    }
    let mut offsets = Vec::new();
    for t in tasks {
        // A guard against a thread that never answers (a hang, not a speed check).
        let done = tokio::time::timeout(std::time::Duration::from_secs(60), t).await;
        offsets.extend(
            done.expect("every connection answered")
                .expect("connection task"),
        );
    }
    offsets.sort_unstable();
    let expected: Vec<i64> = (1..=(CONNECTIONS * CALLS) as i64).collect();
    assert_eq!(
        offsets, expected,
        "every call stored once, offsets contiguous"
    );

    // A graceful stop drains every thread's server and returns.
    c.nodes[0].stop().await;
}
