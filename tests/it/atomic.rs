//! Atomic batches: with `all_or_nothing`, one event that would be dead-lettered refuses the
//! whole request (INVALID_ARGUMENT naming each refused event) and nothing is stored, not
//! even dead letters. Without it, the answer lists the dead-lettered indexes.

use crate::helpers::*;
use eventrelay::proto::PublishEventsRequest;
use tonic::Code;

fn atomic(topic: &str, events: Vec<eventrelay::proto::NewEvent>) -> PublishEventsRequest {
    PublishEventsRequest {
        all_or_nothing: true,
        ..durable(topic, events)
    }
}

async fn dead_letters(c: &TestCluster) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM dead_letters")
        .fetch_one(&c.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_atomic_batch_with_a_bad_event_stores_nothing_and_names_each() {
    let c = TestCluster::start(1).await;
    create_topic(&c, "atomic").await;
    let events = vec![
        event("ok", "{}"),
        event("", "{}"),
        event("ok", "{not json"),
        event("ok", "[1]"),
    ];
    let e = publish_request(&c, 0, atomic("atomic", events.clone()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().starts_with(
            "all_or_nothing: nothing was stored; event 1: name can't be blank; event 2: data is not valid JSON"
        ),
        "{}",
        e.message()
    );
    assert_eq!(stored_rows(&c, "atomic").await.0, 0);
    assert_eq!(dead_letters(&c).await, 0);
    // Without the option: the good events are stored, the others dead-lettered and listed.
    let r = publish_request(&c, 0, durable("atomic", events))
        .await
        .unwrap();
    assert_eq!(r.dead_lettered_indexes, vec![1, 2]);
    assert_eq!(offsets_of(&r.events), vec![1, 2]);
    assert_eq!(dead_letters(&c).await, 2);
    // A good atomic batch is stored whole.
    let r = publish_request(
        &c,
        0,
        atomic("atomic", vec![event("a", "{}"), event("b", "{}")]),
    )
    .await
    .unwrap();
    assert_eq!(
        (offsets_of(&r.events), r.dead_lettered_indexes),
        (vec![3, 4], vec![])
    );
}

#[tokio::test]
async fn an_atomic_batch_to_a_missing_topic_stores_nothing() {
    let c = TestCluster::start(1).await;
    let e = publish_request(
        &c,
        0,
        atomic("nowhere", vec![event("a", "{}"), event("b", "{}")]),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(
        e.message(),
        "all_or_nothing: nothing was stored; event 0: Topic not found; event 1: Topic not found"
    );
    assert_eq!(dead_letters(&c).await, 0);
    // Without the option, as before: dead-lettered, now listed.
    let r = publish_request(&c, 0, durable("nowhere", vec![event("a", "{}")]))
        .await
        .unwrap();
    assert_eq!((r.events.len(), r.dead_lettered_indexes), (0, vec![0]));
    assert_eq!(dead_letters(&c).await, 1);
}
