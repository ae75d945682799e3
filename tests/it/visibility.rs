//! What an acknowledgement means and what readers see: an acknowledged publish is durable and
//! visible on every node at once, readers stop at the topic's mark (`topic_offsets.marked`),
//! a small publish never needs the topic's own row, and offsets set outside the reservation
//! (a bulk load, a node of the previous version during a rolling upgrade) are carried into
//! the mark and never reused.

use crate::helpers::*;
use eventrelay::proto::{PullEventsRequest, PullEventsResponse};
use std::time::Duration;

async fn pull_all(c: &TestCluster, node: usize, topic: &str) -> PullEventsResponse {
    c.client(node)
        .await
        .pull_events(authed(
            &c.admin,
            PullEventsRequest {
                topic: topic.into(),
                batch_size: 1000,
                offset: 0,
                ..Default::default()
            },
        ))
        .await
        .expect("pull")
        .into_inner()
}

/// The topic's reservation and mark.
async fn offsets_row(c: &TestCluster, topic: &str) -> (i64, i64) {
    sqlx::query_as("SELECT reserved, marked FROM topic_offsets WHERE name = $1")
        .bind(topic)
        .fetch_one(&c.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn acknowledged_large_publish_is_visible_on_every_node_at_once() {
    let c = TestCluster::start(2).await;
    create_topic(&c, "big").await;
    let events = (0..300)
        .map(|i| event("tick", &format!(r#"{{"i":{i}}}"#)))
        .collect();
    let stored = publish(&c, 0, "big", events).await;
    assert_eq!(stored.len(), 300);
    assert_eq!(stored[0].offset, 1);
    // Acknowledged means visible: the other node's first pull already sees all of it.
    let pulled = pull_all(&c, 1, "big").await;
    assert_eq!(pulled.total_count, 300);
    let offsets: Vec<i32> = pulled.events.iter().map(|e| e.offset).collect();
    assert_eq!(offsets, (1..=300).collect::<Vec<_>>());
    assert_eq!(offsets_row(&c, "big").await, (300, 300));
}

#[tokio::test]
async fn a_small_publish_does_not_need_the_topics_row() {
    let c = TestCluster::start(2).await;
    create_topic(&c, "small").await;
    // No update of the topic's row can happen while this is held. A publish may still
    // reserve (its foreign-key check only needs KEY SHARE).
    let mut holder = c.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM topics WHERE name = 'small' FOR NO KEY UPDATE")
        .execute(&mut *holder)
        .await
        .unwrap();
    // A bound, not a timing: a publish that updated the topic's row would wait forever.
    let published = tokio::time::timeout(
        Duration::from_secs(30),
        publish(&c, 0, "small", vec![event("a", "{}"), event("b", "{}")]),
    )
    .await
    .expect("a publish must not need the topic's row");
    assert_eq!(published.last().map(|e| e.offset), Some(2));
    // Acknowledged means visible, on the other node too.
    let pulled = pull_all(&c, 1, "small").await;
    assert_eq!((pulled.total_count, pulled.events.len()), (2, 2));
    assert_eq!(offsets_row(&c, "small").await, (2, 2));
    holder.rollback().await.unwrap();
}

#[tokio::test]
async fn readers_stop_at_the_mark_and_a_raise_of_the_previous_versions_mark_moves_it() {
    let c = TestCluster::start(1).await;
    create_topic(&c, "orphan").await;
    let first = publish(&c, 0, "orphan", vec![event("a", "{}"), event("b", "{}")]).await;
    assert_eq!(first.last().map(|e| e.offset), Some(2));

    // What a node of the previous version leaves after committing a large batch without
    // waiting for the flush, before its mark: the rows and the reservation, not the mark.
    let mut tx = c.pool.begin().await.unwrap();
    sqlx::query(
        r#"INSERT INTO orphan_events ("offset", id, name, data, occurred_at)
           SELECT g, gen_random_uuid(), 'orphaned', '{}', now() FROM generate_series(3, 4) g"#,
    )
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query("UPDATE topic_offsets SET reserved = 4 WHERE name = 'orphan'")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let hidden = pull_all(&c, 0, "orphan").await;
    assert_eq!(hidden.total_count, 2);
    assert_eq!(hidden.events.len(), 2, "rows above the mark are not read");

    // Its mark (or its peers' sweep): `topics.last_offset` raised to the reservation. The
    // new readers see the rows at once.
    sqlx::query(
        "UPDATE topics t SET last_offset = o.reserved FROM topic_offsets o
         WHERE o.name = t.name AND o.reserved > t.last_offset",
    )
    .execute(&c.pool)
    .await
    .unwrap();
    assert_eq!(offsets_row(&c, "orphan").await, (4, 4));
    let shown = pull_all(&c, 0, "orphan").await;
    assert_eq!((shown.total_count, shown.events.len()), (4, 4));
    // Publishing goes on after them.
    let next = publish(&c, 0, "orphan", vec![event("c", "{}")]).await;
    assert_eq!(next[0].offset, 5);
}

/// Rows `from..=to` written straight into `legacy_events` with only `topics.last_offset`
/// moved, as a node of an earlier version or a bulk load leaves them.
async fn bulk_load(c: &TestCluster, from: i64, to: i64) {
    let mut tx = c.pool.begin().await.unwrap();
    sqlx::query(
        r#"INSERT INTO legacy_events ("offset", id, name, data, occurred_at)
           SELECT g, gen_random_uuid(), 'bulk', '{}', now() FROM generate_series($1, $2) g"#,
    )
    .bind(from)
    .bind(to)
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query("UPDATE topics SET last_offset = $1 WHERE name = 'legacy'")
        .bind(to)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn publishing_continues_from_offsets_set_outside_the_reservation() {
    let c = TestCluster::start(1).await;
    create_topic(&c, "legacy").await;
    bulk_load(&c, 1, 7).await;
    let small = publish(&c, 0, "legacy", vec![event("new", "{}")]).await;
    assert_eq!(small[0].offset, 8);
    bulk_load(&c, 9, 20).await;
    let large = publish(
        &c,
        0,
        "legacy",
        (0..250).map(|_| event("new", "{}")).collect(),
    )
    .await;
    assert_eq!(large[0].offset, 21);
    let all = pull_all(&c, 0, "legacy").await;
    assert_eq!(all.total_count, 270);
    let offsets: Vec<i32> = all.events.iter().map(|e| e.offset).collect();
    assert_eq!(
        offsets,
        (1..=270).collect::<Vec<_>>(),
        "no offset reused or skipped"
    );
}
