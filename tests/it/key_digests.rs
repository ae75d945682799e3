//! Idempotency keys stored as digests of their topic's id and the key (migration 0021): a
//! topic dropped and created again under its name starts with no keys, and during a rolling upgrade what a
//! node of the previous version stores in `idempotency_keys` (migration 0020) is carried into
//! the digests, while its insert of a key a new node stored fails with ER409 (its writer's
//! "raced, run again") instead of storing a second copy.

use crate::helpers::*;
use eventrelay::proto::DeleteTopicRequest;

#[tokio::test]
async fn a_topic_created_again_under_its_name_does_not_inherit_the_dropped_ones_keys() {
    let c = TestCluster::start(1).await;
    let first = create_topic(&c, "again").await;
    let r = publish_request(&c, 0, durable("again", vec![keyed("a"), keyed("b")]))
        .await
        .unwrap();
    assert_eq!(offsets_of(&r.events), vec![1, 2]);
    c.client(0)
        .await
        .delete_topic(authed(&c.admin, DeleteTopicRequest { id: first.id }))
        .await
        .expect("delete");
    create_topic(&c, "again").await;
    let r = publish_request(&c, 0, durable("again", vec![keyed("a"), keyed("b")]))
        .await
        .unwrap();
    assert_eq!(offsets_of(&r.events), vec![1, 2]);
    assert!(r.duplicate_indexes.is_empty(), "{r:?}");
    assert_eq!(stored_rows(&c, "again").await, (2, 2));
}

#[tokio::test]
async fn keys_of_a_previous_version_node_and_of_a_new_one_dedupe_each_other() {
    let c = TestCluster::start(1).await;
    create_topic(&c, "mixed").await;
    // A node of the previous version stores key "old" (its statement's insert, simplified).
    let old_id = uuid::Uuid::new_v4();
    sqlx::query(
        "INSERT INTO idempotency_keys AS x (topic, key, event_id, \"offset\", expires_at)
         VALUES ('mixed', 'old', $1, 7, now() + interval '1 hour')
         ON CONFLICT (topic, key) DO UPDATE SET event_id = EXCLUDED.event_id
             WHERE x.expires_at <= now()",
    )
    .bind(old_id)
    .execute(&c.pool)
    .await
    .unwrap();
    // This version answers it as a duplicate, with the original.
    let r = publish_request(&c, 0, durable("mixed", vec![keyed("old"), keyed("new")]))
        .await
        .unwrap();
    assert_eq!(r.duplicate_indexes, vec![0]);
    assert_eq!(r.events[0].id, old_id.to_string());
    assert_eq!(offsets_of(&r.events), vec![7, 1]);
    // The previous version's insert of a key this version stored does not store a copy: it
    // fails with ER409, which that version's writer takes for a race and runs again.
    let refused = sqlx::query(
        "INSERT INTO idempotency_keys AS x (topic, key, event_id, \"offset\", expires_at)
         VALUES ('mixed', 'new', gen_random_uuid(), 2, now() + interval '1 hour')
         ON CONFLICT (topic, key) DO UPDATE SET event_id = EXCLUDED.event_id
             WHERE x.expires_at <= now()",
    )
    .execute(&c.pool)
    .await
    .unwrap_err();
    let code = refused
        .as_database_error()
        .and_then(|e| e.code())
        .map(|c| c.into_owned());
    assert_eq!(code.as_deref(), Some("ER409"), "{refused}");
    // An expired key the previous version takes over is carried over too.
    expire_key(&c.pool, "mixed", "new").await;
    let taken_id = uuid::Uuid::new_v4();
    sqlx::query(
        "INSERT INTO idempotency_keys AS x (topic, key, event_id, \"offset\", expires_at)
         VALUES ('mixed', 'new', $1, 9, now() + interval '1 hour')",
    )
    .bind(taken_id)
    .execute(&c.pool)
    .await
    .unwrap();
    let r = publish_request(&c, 0, durable("mixed", vec![keyed("new")]))
        .await
        .unwrap();
    assert_eq!(r.duplicate_indexes, vec![0]);
    assert_eq!(r.events[0].id, taken_id.to_string());
    assert_eq!(offsets_of(&r.events), vec![9]);
}
