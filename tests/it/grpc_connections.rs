//! Many gRPC connections with many calls in flight on each: every call gets its own reply,
//! every event is stored once with contiguous offsets, and the node still stops gracefully.

use crate::helpers::*;
use eventrelay::proto::PublishEventsRequest;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_on_many_connections_each_get_their_own_reply() {
    let mut c = TestCluster::start(1).await;
    create_topic(&c, "spread").await;
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
                                ..Default::default()
                            },
                        ))
                        .await
                        .expect("publish")
                        .into_inner()
                        .events;
                    assert_eq!(out.len(), 1);
                    // The reply is this call's own, not a neighbour's.
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
        // A guard against a call that never returns (a hang, not a speed check).
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

    // A graceful stop drains the server and returns.
    c.nodes[0].stop().await;
}
