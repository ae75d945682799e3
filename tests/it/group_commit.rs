//! Group commit across topics: one node stores the requests of every topic queued at once in
//! one transaction. A request that fails in Postgres fails alone, a topic deleted while its
//! publishes wait has them dead-lettered while the other topics' are stored, and two nodes
//! writing the same topics at once never deadlock (each locks the topics' offset rows in name
//! order).

use crate::helpers::*;
use eventrelay::proto::{DeleteTopicRequest, NewEvent};
use std::sync::Arc;
use std::time::Duration;

/// Holds topic `held`'s offset row, publishes to it in the background and waits until that
/// publish's transaction waits for the row: the node's writer is then busy, and whatever is
/// published next queues for its next transaction. Returns the holder and the publish.
async fn stall_the_writer(
    c: &Arc<TestCluster>,
) -> (
    sqlx::Transaction<'static, sqlx::Postgres>,
    tokio::task::JoinHandle<Vec<eventrelay::proto::Event>>,
) {
    create_topic(c, "held").await;
    publish(c, 0, "held", vec![event("first", "{}")]).await;
    let mut holder = c.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM topic_offsets WHERE name = 'held' FOR UPDATE")
        .execute(&mut *holder)
        .await
        .unwrap();
    let stalled = {
        let c = c.clone();
        tokio::spawn(async move { publish(&c, 0, "held", vec![event("second", "{}")]).await })
    };
    lock_waiters(c, 1).await;
    (holder, stalled)
}

/// Starts a publish of `events` to `topic` on node 0.
fn spawn_publish(
    c: &Arc<TestCluster>,
    topic: &'static str,
    events: Vec<NewEvent>,
) -> tokio::task::JoinHandle<Result<Vec<eventrelay::proto::Event>, tonic::Status>> {
    let c = c.clone();
    tokio::spawn(async move { try_publish(&c, 0, topic, events).await })
}

#[tokio::test]
async fn a_request_that_fails_in_postgres_fails_alone() {
    // One writer: every topic shares its transactions.
    let c = Arc::new(TestCluster::start_with(1, |cfg| cfg.writers = 1).await);
    create_topic(&c, "a").await;
    create_topic(&c, "b").await;
    // A real fault in Postgres for one event name in topic a, not a stand-in.
    sqlx::raw_sql(
        r#"CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN
             IF NEW.name = 'poison' THEN RAISE EXCEPTION 'poisoned by the test'; END IF;
             RETURN NEW;
           END $$;
           CREATE TRIGGER poison BEFORE INSERT ON a_events
           FOR EACH ROW EXECUTE FUNCTION poison();"#,
    )
    .execute(&c.pool)
    .await
    .unwrap();
    let (holder, stalled) = stall_the_writer(&c).await;
    let mut good = Vec::new();
    for i in 0..3 {
        good.push(spawn_publish(&c, "a", vec![event("ok", &format!("{i}"))]));
        good.push(spawn_publish(&c, "b", vec![event("ok", &format!("{i}"))]));
    }
    let poisoned = spawn_publish(&c, "a", vec![event("poison", "{}")]);
    // Let the requests reach the writer's queue, so they share its next transaction.
    tokio::time::sleep(Duration::from_millis(500)).await;
    holder.rollback().await.unwrap();

    assert_eq!(stalled.await.unwrap()[0].offset, 2);
    let refused = poisoned
        .await
        .unwrap()
        .expect_err("the poisoned request fails");
    assert_eq!(refused.code(), tonic::Code::Internal, "{refused:?}");
    let mut offsets = Vec::new();
    for p in good {
        let stored = p
            .await
            .unwrap()
            .expect("a neighbour of the bad request is stored");
        offsets.push((stored[0].topic.clone(), stored[0].offset));
    }
    offsets.sort();
    let expected: Vec<(String, i32)> = ["a", "b"]
        .iter()
        .flat_map(|t| (1..=3).map(move |o| (t.to_string(), o)))
        .collect();
    assert_eq!(
        offsets, expected,
        "contiguous offsets, none taken by the failure"
    );
}

#[tokio::test]
async fn a_topic_deleted_while_its_publishes_wait_has_them_dead_lettered() {
    // One writer: every topic shares its transactions.
    let c = Arc::new(TestCluster::start_with(1, |cfg| cfg.writers = 1).await);
    let doomed = create_topic(&c, "doomed").await;
    create_topic(&c, "kept").await;
    let (holder, stalled) = stall_the_writer(&c).await;
    let lost = spawn_publish(&c, "doomed", vec![event("late", "{}")]);
    let kept = spawn_publish(&c, "kept", vec![event("late", "{}")]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    c.client(0)
        .await
        .delete_topic(authed(&c.admin, DeleteTopicRequest { id: doomed.id }))
        .await
        .expect("delete");
    holder.rollback().await.unwrap();

    assert_eq!(stalled.await.unwrap()[0].offset, 2);
    assert_eq!(kept.await.unwrap().expect("kept")[0].offset, 1);
    let answered = lost.await.unwrap().expect("dead-lettered, not an error");
    assert!(answered.is_empty(), "nothing stored: {answered:?}");
    let dead: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM dead_letters WHERE topic_name = 'doomed' AND event->>'name' = 'late'",
    )
    .fetch_one(&c.pool)
    .await
    .unwrap();
    assert_eq!(dead, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_writing_the_same_topics_never_deadlock() {
    let c = TestCluster::start(2).await;
    const TOPICS: [&str; 6] = ["t_a", "t_b", "t_c", "t_d", "t_e", "t_f"];
    for t in TOPICS {
        create_topic(&c, t).await;
    }
    const PUBLISHERS: usize = 24;
    const REQUESTS: usize = 30;
    let c = Arc::new(c);
    let mut tasks = Vec::new();
    for p in 0..PUBLISHERS {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let mut api = c.client(p % 2).await;
            let mut sent = Vec::new();
            for r in 0..REQUESTS {
                // Each publisher walks the topics in its own direction, so every node's
                // batches hold several topics queued in every order.
                let i = if p % 2 == 0 { p + r } else { p + REQUESTS - r };
                let topic = TOPICS[i % TOPICS.len()];
                let out = api
                    .publish_events(authed(
                        &c.admin,
                        eventrelay::proto::PublishEventsRequest {
                            topic: topic.into(),
                            events: vec![event("tick", "{}")],
                            durable: true,
                            ..Default::default()
                        },
                    ))
                    .await
                    .expect("publish")
                    .into_inner()
                    .events;
                sent.push((topic, out[0].offset));
            }
            sent
        }));
    }
    let mut by_topic = std::collections::BTreeMap::<&str, Vec<i32>>::new();
    for t in tasks {
        for (topic, offset) in t.await.unwrap() {
            by_topic.entry(topic).or_default().push(offset);
        }
    }
    for (topic, mut offsets) in by_topic {
        offsets.sort_unstable();
        let n = offsets.len() as i32;
        assert_eq!(offsets, (1..=n).collect::<Vec<_>>(), "{topic}: contiguous");
    }
    let Ok(mut c) = Arc::try_unwrap(c) else {
        panic!("publishers still hold the cluster")
    };
    // The nodes' backends report their statistics as they exit.
    for node in &mut c.nodes {
        node.stop().await;
    }
    let admin = eventrelay::db::connect(&admin_url(), 1).await.unwrap();
    let mut deadlocks = 0;
    for _ in 0..50 {
        deadlocks = sqlx::query_scalar::<_, i64>(
            "SELECT deadlocks FROM pg_stat_database WHERE datname = $1",
        )
        .bind(&c.db.name)
        .fetch_one(&admin)
        .await
        .unwrap();
        if deadlocks > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        deadlocks, 0,
        "Postgres found deadlocks between the nodes' writers"
    );
}
