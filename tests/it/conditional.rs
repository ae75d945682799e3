//! Conditional publishes: `expected_last_offset` stores only on the topic's exact last offset
//! (racing producers: exactly one wins), producer fencing refuses an epoch lower than one
//! already seen, and a refused conditional request fails nobody else.

use crate::helpers::*;
use eventrelay::proto::PublishEventsRequest;
use std::sync::Arc;
use tonic::Code;

fn expecting(topic: &str, last: i64, names: &[&str]) -> PublishEventsRequest {
    PublishEventsRequest {
        expected_last_offset: Some(last),
        ..durable(topic, names.iter().map(|n| event(n, "{}")).collect())
    }
}

fn as_producer(topic: &str, id: &str, epoch: i64) -> PublishEventsRequest {
    PublishEventsRequest {
        producer_id: id.into(),
        producer_epoch: epoch,
        ..durable(topic, vec![event("p", "{}")])
    }
}

#[tokio::test]
async fn expected_last_offset_accepts_the_exact_offset_and_refuses_another() {
    let c = TestCluster::start(1).await;
    create_topic(&c, "occ").await;
    // An empty topic's last offset is 0.
    let r = publish_request(&c, 0, expecting("occ", 0, &["a", "b"]))
        .await
        .unwrap();
    assert_eq!(offsets_of(&r.events), vec![1, 2]);
    let r = publish_request(&c, 0, expecting("occ", 2, &["c"]))
        .await
        .unwrap();
    assert_eq!(offsets_of(&r.events), vec![3]);
    let refused = publish_request(&c, 0, expecting("occ", 2, &["d"]))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(
        refused.message(),
        "expected last offset 2, but the topic's last offset is 3"
    );
    assert_eq!(refused.metadata().get("er-last-offset").unwrap(), "3");
    // Nothing was stored; the offset is not spent.
    let r = publish(&c, 0, "occ", vec![event("e", "{}")]).await;
    assert_eq!(offsets_of(&r), vec![4]);
    // Identifiers share the topic's offsets: the condition is on the topic.
    let r = publish_request(&c, 0, expecting("occ:x", 4, &["f"]))
        .await
        .unwrap();
    assert_eq!(offsets_of(&r.events), vec![5]);
    // Durable only.
    let live = PublishEventsRequest {
        durable: false,
        ..expecting("occ", 5, &["g"])
    };
    let e = publish_request(&c, 0, live).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn two_producers_racing_on_the_same_expected_offset_one_wins() {
    let c = Arc::new(TestCluster::start(2).await);
    create_topic(&c, "duel").await;
    publish(&c, 0, "duel", vec![event("seed", "{}")]).await;
    for round in 0..5 {
        let last = 1 + round;
        // Both wait for the topic's row, then check in turn: the second sees the first's.
        let holder = hold_offsets(&c, "duel").await;
        let racers: Vec<_> = (0..2)
            .map(|node| {
                let c = c.clone();
                tokio::spawn(async move {
                    publish_request(&c, node, expecting("duel", last, &["mine"])).await
                })
            })
            .collect();
        lock_waiters(&c, 2).await;
        holder.commit().await.unwrap();
        let mut won = 0;
        for r in racers {
            match r.await.unwrap() {
                Ok(r) => {
                    assert_eq!(offsets_of(&r.events), vec![last + 1]);
                    won += 1;
                }
                Err(e) => {
                    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
                    let current = (last + 1).to_string();
                    assert_eq!(
                        e.metadata().get("er-last-offset").unwrap(),
                        current.as_str()
                    );
                }
            }
        }
        assert_eq!(won, 1, "round {round}");
    }
    assert_eq!(stored_rows(&c, "duel").await.0, 6);
}

#[tokio::test]
async fn a_retry_of_an_acknowledged_keyed_conditional_publish_answers_its_duplicates() {
    let c = TestCluster::start(1).await;
    create_topic(&c, "occ_keys").await;
    let request = || PublishEventsRequest {
        expected_last_offset: Some(0),
        ..durable("occ_keys", vec![keyed("a"), keyed("b")])
    };
    let first = publish_request(&c, 0, request()).await.unwrap();
    assert_eq!(offsets_of(&first.events), vec![1, 2]);
    let retry = publish_request(&c, 0, request()).await.unwrap();
    assert_eq!(offsets_of(&retry.events), vec![1, 2]);
    assert_eq!(retry.duplicate_indexes, vec![0, 1]);
    // A new key with the stale offset is a real conflict.
    let stale = PublishEventsRequest {
        expected_last_offset: Some(0),
        ..durable("occ_keys", vec![keyed("a"), keyed("c")])
    };
    let e = publish_request(&c, 0, stale).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn a_lower_epoch_is_fenced_after_a_higher_one_published() {
    let c = TestCluster::start(2).await;
    create_topic(&c, "fenced").await;
    publish_request(&c, 0, as_producer("fenced", "billing", 1))
        .await
        .unwrap();
    // The replacement starts with epoch 2, through another node.
    publish_request(&c, 1, as_producer("fenced", "billing", 2))
        .await
        .unwrap();
    // The zombie with epoch 1 is refused, and stores nothing.
    let e = publish_request(&c, 0, as_producer("fenced", "billing", 1))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().starts_with("fenced:"), "{}", e.message());
    assert_eq!(e.metadata().get("er-producer-epoch").unwrap(), "2");
    // The current epoch goes on; other producer ids and topics are not concerned.
    publish_request(&c, 0, as_producer("fenced", "billing", 2))
        .await
        .unwrap();
    publish_request(&c, 0, as_producer("fenced", "shipping", 0))
        .await
        .unwrap();
    create_topic(&c, "elsewhere").await;
    publish_request(&c, 0, as_producer("elsewhere", "billing", 1))
        .await
        .unwrap();
    assert_eq!(stored_rows(&c, "fenced").await.0, 4);
    // Fencing and the expected offset combine; fencing is checked first.
    let both = PublishEventsRequest {
        expected_last_offset: Some(0),
        ..as_producer("fenced", "billing", 1)
    };
    let e = publish_request(&c, 0, both).await.unwrap_err();
    assert!(e.message().starts_with("fenced:"), "{}", e.message());
}

#[tokio::test]
async fn a_refused_conditional_request_fails_nobody_else() {
    let c = Arc::new(TestCluster::start_with(1, |cfg| cfg.writers = 1).await);
    create_topic(&c, "shared").await;
    let holder = hold_offsets(&c, "shared").await;
    let blocked = {
        let c = c.clone();
        tokio::spawn(async move { publish(&c, 0, "shared", vec![event("first", "{}")]).await })
    };
    lock_waiters(&c, 1).await;
    let stale = {
        let c = c.clone();
        tokio::spawn(async move { publish_request(&c, 0, expecting("shared", 7, &["x"])).await })
    };
    let plain = {
        let c = c.clone();
        tokio::spawn(async move { publish(&c, 0, "shared", vec![event("second", "{}")]).await })
    };
    holder.commit().await.unwrap();
    assert_eq!(offsets_of(&blocked.await.unwrap()), vec![1]);
    assert_eq!(offsets_of(&plain.await.unwrap()), vec![2]);
    let e = stale.await.unwrap().unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
}
