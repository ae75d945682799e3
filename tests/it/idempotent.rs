//! Idempotent publishing: an event whose idempotency key the topic stored inside its dedupe
//! window is not stored again; the answer carries the original's id and offset and lists it
//! as a duplicate. One copy whatever the timing: a retry, the same key twice in a request,
//! the same key at the same moment through two nodes, a node killed while its commits wait.

use crate::helpers::*;
use crate::live_support::{Ws, jwt, setup};
use eventrelay::auth::KeyType;
use eventrelay::proto::{CreateTopicRequest, PublishEventsRequest};
use eventrelay_testkit::NodeProcess;
use serde_json::json;
use std::sync::Arc;

#[tokio::test]
async fn a_retry_of_an_acknowledged_batch_stores_nothing_new_and_answers_the_same_events() {
    let c = TestCluster::start(2).await;
    create_topic(&c, "orders").await;
    let batch = || durable("orders", vec![keyed("a"), keyed("b"), keyed("c")]);
    let first = publish_request(&c, 0, batch()).await.unwrap();
    assert_eq!(offsets_of(&first.events), vec![1, 2, 3]);
    assert!(first.duplicate_indexes.is_empty());
    // The retry, through the other node.
    let retry = publish_request(&c, 1, batch()).await.unwrap();
    assert_eq!(offsets_of(&retry.events), vec![1, 2, 3]);
    assert_eq!(retry.duplicate_indexes, vec![0, 1, 2]);
    let ids = |r: &eventrelay::proto::PublishEventsResponse| -> Vec<String> {
        r.events.iter().map(|e| e.id.clone()).collect()
    };
    assert_eq!(ids(&first), ids(&retry));
    assert_eq!(stored_rows(&c, "orders").await, (3, 3));
    // A partial retry with a new key: only the new one is stored, right after the last
    // offset (duplicates take no offset).
    let mixed = publish_request(&c, 0, durable("orders", vec![keyed("b"), keyed("d")]))
        .await
        .unwrap();
    assert_eq!(offsets_of(&mixed.events), vec![2, 4]);
    assert_eq!(mixed.duplicate_indexes, vec![0]);
    // Events without keys are stored every time, as before.
    let plain = publish(&c, 0, "orders", vec![event("plain", "{}")]).await;
    assert_eq!(offsets_of(&plain), vec![5]);
    // Keys are per topic.
    create_topic(&c, "other").await;
    let other = publish_request(&c, 0, durable("other", vec![keyed("a")]))
        .await
        .unwrap();
    assert_eq!(
        (offsets_of(&other.events), other.duplicate_indexes),
        (vec![1], vec![])
    );
}

#[tokio::test]
async fn the_same_key_twice_in_one_request_or_one_group_commit_is_stored_once() {
    let c = Arc::new(TestCluster::start_with(1, |cfg| cfg.writers = 1).await);
    create_topic(&c, "twice").await;
    let r = publish_request(
        &c,
        0,
        durable("twice", vec![keyed("x"), keyed("y"), keyed("x")]),
    )
    .await
    .unwrap();
    assert_eq!(offsets_of(&r.events), vec![1, 2, 1]);
    assert_eq!(r.duplicate_indexes, vec![2]);
    assert_eq!(r.events[0].id, r.events[2].id);
    // Two requests with the same new key queued for one transaction of the writer.
    let holder = hold_offsets(&c, "twice").await;
    let first = {
        let c = c.clone();
        tokio::spawn(
            async move { publish_request(&c, 0, durable("twice", vec![keyed("z")])).await },
        )
    };
    lock_waiters(&c, 1).await;
    let queued: Vec<_> = (0..3)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(
                async move { publish_request(&c, 0, durable("twice", vec![keyed("w")])).await },
            )
        })
        .collect();
    // Let them queue behind the held transaction (they are answered only after it).
    tokio::task::yield_now().await;
    holder.commit().await.unwrap();
    assert_eq!(offsets_of(&first.await.unwrap().unwrap().events), vec![3]);
    let mut answers = Vec::new();
    for q in queued {
        answers.push(q.await.unwrap().unwrap());
    }
    let stored_now: Vec<_> = answers
        .iter()
        .filter(|a| a.duplicate_indexes.is_empty())
        .collect();
    assert_eq!(stored_now.len(), 1, "{answers:?}");
    for a in &answers {
        assert_eq!(offsets_of(&a.events), vec![4]);
    }
    assert_eq!(stored_rows(&c, "twice").await, (4, 4));
}

#[tokio::test]
async fn the_same_key_raced_through_two_nodes_is_stored_once() {
    let c = Arc::new(TestCluster::start(2).await);
    create_topic(&c, "raced").await;
    for round in 0..5 {
        // Both publishes take their snapshot, then wait for the row lock: neither sees the
        // other's key before it writes its own, so the loser meets it in the unique index.
        let holder = hold_offsets(&c, "raced").await;
        let key = format!("k{round}");
        let racers: Vec<_> = (0..2)
            .map(|node| {
                let c = c.clone();
                let key = key.clone();
                tokio::spawn(async move {
                    publish_request(
                        &c,
                        node,
                        durable("raced", vec![keyed(&key), event("n", "{}")]),
                    )
                    .await
                })
            })
            .collect();
        lock_waiters(&c, 2).await;
        holder.commit().await.unwrap();
        let mut answers = Vec::new();
        for r in racers {
            answers.push(r.await.unwrap().expect("both racers are answered"));
        }
        let keyed_offsets: Vec<i64> = answers.iter().map(|a| a.events[0].offset64).collect();
        assert_eq!(keyed_offsets[0], keyed_offsets[1], "{answers:?}");
        let dups: Vec<_> = answers
            .iter()
            .map(|a| a.duplicate_indexes.clone())
            .collect();
        assert!(
            dups.contains(&vec![]) && dups.contains(&vec![0]),
            "{dups:?}"
        );
    }
    // One copy of each key, and one of each unkeyed event; offsets without a gap.
    let (rows, keys): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE name = 'keyed'), count(DISTINCT data->>'k') FROM raced_events",
    )
    .fetch_one(&c.pool)
    .await
    .unwrap();
    assert_eq!((rows, keys), (5, 5));
    let (n, max): (i64, i64) = sqlx::query_as("SELECT count(*), max(\"offset\") FROM raced_events")
        .fetch_one(&c.pool)
        .await
        .unwrap();
    assert_eq!((n, max), (15, 15));
}

#[tokio::test]
async fn a_node_killed_with_open_group_commits_leaves_one_copy_after_retries_elsewhere() {
    let c = Arc::new(TestCluster::start(1).await);
    create_topic(&c, "killed").await;
    let spawn = || {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_eventrelay"));
        cmd.env_clear()
            .env("DATABASE_URL", &c.db.url)
            .env("ER_JWT_SECRET", "x".repeat(40))
            .env("ER_DB_POOL_SIZE", "4")
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null());
        NodeProcess::start(cmd)
    };
    let doomed = spawn().await.unwrap();
    let survivor = spawn().await.unwrap();
    let batches: Vec<Vec<String>> = (0..6)
        .map(|b| (0..10).map(|i| format!("b{b}-{i}")).collect())
        .collect();
    let request = |keys: &[String]| durable("killed", keys.iter().map(|k| keyed(k)).collect());
    // The first batch is acknowledged; the rest wait in the doomed node's writer while the
    // topic's row is held, one in Postgres, the others queued for its next transaction.
    let mut client = doomed.client().await.unwrap();
    client
        .publish_events(authed(&c.admin, request(&batches[0])))
        .await
        .unwrap();
    let holder = hold_offsets(&c, "killed").await;
    let mut pending = Vec::new();
    for keys in &batches[1..] {
        let mut client = doomed.client().await.unwrap();
        let r = authed(&c.admin, request(keys));
        pending.push(tokio::spawn(async move { client.publish_events(r).await }));
    }
    lock_waiters(&c, 1).await;
    drop(doomed); // SIGKILL
    holder.commit().await.unwrap();
    for p in pending {
        assert!(p.await.unwrap().is_err(), "the killed node answered");
    }
    // The producer retries every batch it holds no answer for (and, to be sure, the
    // acknowledged one) on the survivor.
    let mut client = survivor.client().await.unwrap();
    for keys in &batches {
        let r = client
            .publish_events(authed(&c.admin, request(keys)))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.events.len(), 10);
    }
    assert_eq!(stored_rows(&c, "killed").await, (60, 60));
    let max: i64 = sqlx::query_scalar("SELECT max(\"offset\") FROM killed_events")
        .fetch_one(&c.pool)
        .await
        .unwrap();
    assert_eq!(max, 60, "offsets without a gap");
}

#[tokio::test]
async fn keys_expire_with_the_topics_window_and_housekeeping_prunes_them() {
    let c = TestCluster::start(1).await;
    c.client(0)
        .await
        .create_topic(authed(
            &c.admin,
            CreateTopicRequest {
                name: "short".into(),
                dedupe_window_seconds: 60,
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    let first = publish_request(&c, 0, durable("short", vec![keyed("a"), keyed("b")]))
        .await
        .unwrap();
    assert_eq!(offsets_of(&first.events), vec![1, 2]);
    // Each key expires the topic's window after its event was stored.
    let windows: Vec<f64> = sqlx::query_scalar(
        "SELECT extract(epoch FROM k.expires_at - e.inserted_at)::float8
         FROM idempotency_digests k JOIN short_events e ON e.\"offset\" = k.\"offset\"
         ORDER BY k.\"offset\"",
    )
    .fetch_all(&c.pool)
    .await
    .unwrap();
    assert_eq!(windows, vec![60.0, 60.0]);
    // The window passes for key a (its expiry moved to the past: the clock, not a wait).
    expire_key(&c.pool, "short", "a").await;
    let again = publish_request(&c, 0, durable("short", vec![keyed("a"), keyed("b")]))
        .await
        .unwrap();
    // a is stored anew; b is still inside its window.
    assert_eq!(offsets_of(&again.events), vec![3, 2]);
    assert_eq!(again.duplicate_indexes, vec![1]);
    // Housekeeping removes expired keys, and only those.
    expire_key(&c.pool, "short", "b").await;
    let settings = eventrelay::retention::RetentionConfig::default();
    let swept = eventrelay::retention::housekeeping_step(&c.pool, &settings)
        .await
        .unwrap();
    assert_eq!(swept.keys, 1);
    let left: Vec<bool> = sqlx::query_scalar(
        "SELECT (digest_hi, digest_lo) = (SELECT * FROM idempotency_key_digest(
             (SELECT id FROM topics WHERE name = 'short'), 'a'))
         FROM idempotency_digests",
    )
    .fetch_all(&c.pool)
    .await
    .unwrap();
    assert_eq!(left, vec![true]);
}

#[tokio::test]
async fn keys_are_bounded_and_non_durable_publishes_ignore_them() {
    let c = TestCluster::start(1).await;
    create_topic(&c, "bounded").await;
    let long = "k".repeat(129);
    let r = publish_request(&c, 0, durable("bounded", vec![keyed(&long), keyed("ok")]))
        .await
        .unwrap();
    assert_eq!(r.dead_lettered_indexes, vec![0]);
    assert_eq!(offsets_of(&r.events), vec![1]);
    let live = PublishEventsRequest {
        durable: false,
        ..durable("bounded", vec![keyed("ok")])
    };
    let r = publish_request(&c, 0, live).await.unwrap();
    assert!(r.duplicate_indexes.is_empty());
    assert_eq!(offsets_of(&r.events), vec![0]);
}

#[tokio::test]
async fn a_websocket_publish_with_a_key_answers_the_duplicate() {
    let c = TestCluster::start(1).await;
    let s = setup(&c, "ws_keyed", "").await;
    let (producer, _) = c.key(KeyType::Producer, &["ws_keyed"], &[]).await;
    let producer_jwt = jwt(&c, &producer).await;
    let mut p = Ws::connect(c.nodes[0].http, true).await;
    let r = p.join(s.sub, json!({"producer_token": producer_jwt})).await;
    assert_eq!(r["status"], "ok", "{r}");
    let topic = format!("events:{}", s.sub);
    let payload = json!({"topic": "ws_keyed", "durable": true, "events": [
        {"name": "a", "idempotency_key": "order-1"},
        {"name": "b", "idempotency_key": "order-2", "reference_key": "free-form"}
    ]});
    let r = p.call(&topic, "publish_events", payload.clone()).await;
    assert_eq!(r, json!({"status": "ok", "response": {"offsets": [1, 2]}}));
    let r = p.call(&topic, "publish_events", payload).await;
    assert_eq!(
        r,
        json!({"status": "ok", "response": {"offsets": [1, 2], "duplicate_indexes": [0, 1]}})
    );
    // Conditions over the websocket: a stale expected_last_offset is refused with the
    // current one, as gRPC's metadata carries it.
    let r = p
        .call(
            &topic,
            "publish_events",
            json!({"topic": "ws_keyed", "durable": true, "expected_last_offset": 1,
                   "events": [{"name": "c"}]}),
        )
        .await;
    assert_eq!(r["status"], "error", "{r}");
    assert_eq!(r["response"]["last_offset"], 2, "{r}");
    assert_eq!(stored_rows(&c, "ws_keyed").await.0, 2);
}
