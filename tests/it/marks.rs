//! The durable mark (`topic_marks`): large batches commit without waiting for the WAL flush
//! and become visible only when a synchronously committed mark of `topics.last_offset` covers
//! them; small batches commit synchronously and move `topic_offsets.marked` themselves.
//! Readers stop at the larger of the two; an acknowledged publish is already covered; rows
//! committed by a node that died before marking them are made visible by any node's sweep,
//! which also keeps `topics.last_offset` (all a node of an earlier version reads) in step.

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

/// Pulls `topic` until `n` events are visible (the sweep runs once a second), at most 30 s;
/// returns how many were visible last.
async fn await_visible(c: &TestCluster, topic: &str, n: usize) -> usize {
    let mut seen = 0;
    for _ in 0..300 {
        seen = pull_all(c, 0, topic).await.events.len();
        if seen == n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    seen
}

#[tokio::test]
async fn acknowledged_large_publish_is_visible_on_every_node_at_once() {
    let c = TestCluster::start(2).await;
    create_topic(&c, "big").await;
    // 300 events: one batch over the threshold, so it commits without waiting for the flush.
    let events = (0..300)
        .map(|i| event("tick", &format!(r#"{{"i":{i}}}"#)))
        .collect();
    let stored = publish(&c, 0, "big", events).await;
    assert_eq!(stored.len(), 300);
    assert_eq!(stored[0].offset, 1);
    // Acknowledged means marked: the other node's first pull already sees all of it.
    let pulled = pull_all(&c, 1, "big").await;
    assert_eq!(pulled.total_count, 300);
    let offsets: Vec<i32> = pulled.events.iter().map(|e| e.offset).collect();
    assert_eq!(offsets, (1..=300).collect::<Vec<_>>());
    let (last, reserved): (i64, i64) = sqlx::query_as(
        "SELECT t.last_offset, o.reserved FROM topics t JOIN topic_offsets o USING (name)
         WHERE t.name = 'big'",
    )
    .fetch_one(&c.pool)
    .await
    .unwrap();
    assert_eq!((last, reserved), (300, 300));
}

#[tokio::test]
async fn small_publishes_mark_themselves_and_the_sweep_brings_topics_along() {
    let c = TestCluster::start(2).await;
    create_topic(&c, "small").await;
    // No update of the topic's row can happen while this is held: no raise, no sweep. A
    // publish may still reserve (its foreign-key check only needs KEY SHARE).
    let mut holder = c.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM topics WHERE name = 'small' FOR NO KEY UPDATE")
        .execute(&mut *holder)
        .await
        .unwrap();
    // A bound, not a timing: a small publish that still updated the topic's row would wait for
    // the holder forever.
    let published = tokio::time::timeout(
        Duration::from_secs(30),
        publish(&c, 0, "small", vec![event("a", "{}"), event("b", "{}")]),
    )
    .await
    .expect("a small publish must not need the topic's row");
    assert_eq!(published.last().map(|e| e.offset), Some(2));
    // Acknowledged means visible, on the other node too, with topics.last_offset untouched.
    let pulled = pull_all(&c, 1, "small").await;
    assert_eq!((pulled.total_count, pulled.events.len()), (2, 2));
    let marks = || {
        sqlx::query_as::<_, (i64, i64, i64)>(
            "SELECT t.last_offset, o.marked, m.last_offset
             FROM topics t JOIN topic_offsets o USING (name) JOIN topic_marks m USING (name)
             WHERE t.name = 'small'",
        )
        .fetch_one(&c.pool)
    };
    assert_eq!(marks().await.unwrap(), (0, 2, 2));
    holder.rollback().await.unwrap();

    // The sweep raises topics.last_offset too, bounded by 30 s.
    let mut seen = (0, 0, 0);
    for _ in 0..300 {
        seen = marks().await.unwrap();
        if seen.0 == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        seen,
        (2, 2, 2),
        "the sweep brought topics.last_offset along"
    );
}

#[tokio::test]
async fn rows_above_the_mark_stay_hidden_until_a_sweep_raises_it() {
    let c = TestCluster::start(1).await;
    create_topic(&c, "orphan").await;
    let first = publish(&c, 0, "orphan", vec![event("a", "{}"), event("b", "{}")]).await;
    assert_eq!(first.last().map(|e| e.offset), Some(2));

    // Hold the topic row so no mark can move it while we look.
    let mut holder = c.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM topics WHERE name = 'orphan' FOR UPDATE")
        .execute(&mut *holder)
        .await
        .unwrap();
    // What a node leaves behind when it dies after committing a batch and before marking it:
    // the rows and the reservation, committed; the mark where it was.
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
    holder.rollback().await.unwrap();

    // The node's sweep (once a second) raises the mark; wait for it, bounded.
    let seen = await_visible(&c, "orphan", 4).await;
    assert_eq!(seen, 4, "the sweep made the orphaned rows visible");
    // Publishing goes on after them.
    let next = publish(&c, 0, "orphan", vec![event("c", "{}")]).await;
    assert_eq!(next[0].offset, 5);
}

/// Rows `from..=to` written straight into `legacy_events` with only `topics.last_offset`
/// moved, as an older node or a bulk load leaves them.
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
    // Topics written before migration 0005 (or by an older node, or by a bulk load that only
    // moved topics.last_offset) have no reservation row, or one behind: publishing starts
    // after the larger counter and never reuses an offset.
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

#[tokio::test]
async fn a_failed_mark_is_reported_and_a_later_sweep_still_shows_the_events() {
    let c = TestCluster::start(1).await;
    create_topic(&c, "stuck").await;
    // A real fault in Postgres, not a stand-in: while this trigger exists, nothing can raise
    // the topic's mark.
    sqlx::raw_sql(
        r#"CREATE FUNCTION refuse_marks() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN RAISE EXCEPTION 'marks refused by the test'; END $$;
           CREATE TRIGGER refuse_marks BEFORE UPDATE OF last_offset ON topics
           FOR EACH ROW EXECUTE FUNCTION refuse_marks();"#,
    )
    .execute(&c.pool)
    .await
    .unwrap();
    // Large enough to commit without the flush: the rows commit, the mark fails.
    let events: Vec<_> = (0..150).map(|_| event("tick", "{}")).collect();
    let refused = try_publish(&c, 0, "stuck", events).await;
    let status = refused.expect_err("the publish must not be acknowledged");
    assert_eq!(
        status.code(),
        tonic::Code::Unavailable,
        "{}",
        status.message()
    );
    assert!(
        status.message().contains("could not be confirmed durable"),
        "{}",
        status.message()
    );
    assert_eq!(pull_all(&c, 0, "stuck").await.events.len(), 0);

    // Once marks work again, the sweep shows what was written (at least once).
    sqlx::raw_sql("DROP TRIGGER refuse_marks ON topics")
        .execute(&c.pool)
        .await
        .unwrap();
    let seen = await_visible(&c, "stuck", 150).await;
    assert_eq!(seen, 150, "the sweep made the written events visible");
}
