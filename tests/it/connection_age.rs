//! `ER_GRPC_MAX_CONNECTION_AGE_SECONDS`: the node ends a gRPC connection past its age
//! (GOAWAY, then the grace for calls in flight), and the client's next call succeeds on a
//! fresh connection. A counting TCP relay between client and node shows the new connection.

use crate::helpers::*;
use eventrelay::proto::{ListTopicsRequest, StreamEventsRequest};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

/// Relays every connection it accepts to `to`; returns its address and the count.
async fn counting_relay(to: std::net::SocketAddr) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                if let Ok(mut outbound) = TcpStream::connect(to).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    (addr, accepted)
}

#[tokio::test]
async fn a_connection_past_its_age_ends_and_the_next_call_takes_a_fresh_one() {
    let c = TestCluster::start_with(1, |cfg| {
        cfg.grpc_max_connection_age_seconds = 1;
        cfg.grpc_max_connection_age_grace_seconds = 1;
    })
    .await;
    create_topic(&c, "aged").await;
    let (relay, accepted) = counting_relay(c.nodes[0].grpc).await;
    let mut client = eventrelay_testkit::connect(relay).await.unwrap();
    client
        .list_topics(authed(&c.admin, ListTopicsRequest::default()))
        .await
        .unwrap();
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    // A stream on that connection: nothing is published, so only the connection's end
    // ends it (a bound of 30 s, far beyond the age and its grace).
    let mut stream = client
        .stream_events(authed(
            &c.admin,
            StreamEventsRequest {
                topic: "aged".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let ended = tokio::time::timeout(Duration::from_secs(30), stream.message()).await;
    assert!(
        matches!(ended, Ok(Err(_)) | Ok(Ok(None))),
        "the aged connection still streams: {ended:?}"
    );
    // The same client's next call succeeds, on a new connection.
    client
        .list_topics(authed(&c.admin, ListTopicsRequest::default()))
        .await
        .unwrap();
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}
