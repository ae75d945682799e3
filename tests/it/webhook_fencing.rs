//! The worker step driven directly (`Worker::try_deliver_next`), with no node owning the
//! subscription: a deposed owner whose attempt is in flight when a new owner takes over cannot
//! move the cursor, and the new owner repeats only that one event. Also: every Postgres session
//! of a node ended at once (as a database restart does), after which delivery resumes by itself;
//! and the per-subscription rate limit holding the next event back.

use crate::helpers::*;
use crate::receiver::Receiver;
use crate::webhooks::{create_webhook, events, webhook_cluster};
use eventrelay::delivery::{Delivery, Step, StopReason, store};
use eventrelay::live::Live;
use eventrelay::metrics::Metrics;
use std::time::Duration;
use uuid::Uuid;

async fn cursor(pool: &sqlx::PgPool, id: Uuid) -> (i64, i64) {
    sqlx::query_as(
        "SELECT delivered_offset, epoch FROM subscription_cursors WHERE subscription_id = $1",
    )
    .bind(id)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Publishes `n` events to `orders` while the subscription is paused (so the node lets go of
/// it), then stops the node and resumes the subscription: the test alone drives its worker.
async fn backlog_without_owner(c: &mut TestCluster, id: Uuid, n: usize) {
    let set_paused = |paused: bool| {
        sqlx::query("UPDATE subscriptions SET paused = $2 WHERE id = $1")
            .bind(id)
            .bind(paused)
    };
    set_paused(true).execute(&c.pool).await.unwrap();
    publish(c, 0, "orders", events(n, "x")).await;
    c.nodes[0].stop().await;
    set_paused(false).execute(&c.pool).await.unwrap();
}

/// A delivery service of its own over the cluster's database and configuration, outside
/// every node, so the test decides who owns what.
fn delivery_service(c: &TestCluster) -> Delivery {
    let settings = c.config.settings().unwrap();
    Delivery::new(
        c.pool.clone(),
        &settings.delivery,
        settings.retention,
        Live::new(),
        Metrics::new(),
    )
    .unwrap()
}

#[tokio::test]
async fn a_deposed_owner_cannot_move_the_cursor() {
    let mut c = webhook_cluster(1).await;
    create_topic(&c, "orders").await;
    let rx = Receiver::start_with_delay(Duration::from_millis(400)).await;
    // Paused (so the node lets go of it), then the node stops: this test alone owns it.
    let sub = create_webhook(&c, "orders_hook", "orders", &rx.url("/hook"), &[]).await;
    let id = sub_id(&sub);
    backlog_without_owner(&mut c, id, 3).await;

    let delivery = delivery_service(&c);
    let node = Uuid::new_v4();
    let e1 = store::acquire(&c.pool, id, node).await.unwrap().unwrap();
    let mut old = delivery.worker(id, e1).await.unwrap();
    assert_eq!(old.try_deliver_next().await.unwrap(), Step::Advanced);
    assert_eq!(cursor(&c.pool, id).await, (1, e1));

    // The old owner's second attempt is in flight when a new owner acquires.
    let in_flight = tokio::spawn(async move { old.try_deliver_next().await });
    rx.wait_for(5, "the in-flight attempt", |l| l.len() == 2)
        .await;
    let e2 = store::acquire(&c.pool, id, Uuid::new_v4())
        .await
        .unwrap()
        .unwrap();
    assert!(e2 > e1);
    let step = in_flight.await.unwrap().unwrap();
    assert_eq!(
        step,
        Step::Stop(StopReason::Fenced),
        "the deposed owner must stop"
    );
    assert_eq!(
        cursor(&c.pool, id).await,
        (1, e2),
        "fenced write changed nothing"
    );

    let mut new = delivery.worker(id, e2).await.unwrap();
    assert_eq!(new.try_deliver_next().await.unwrap(), Step::Advanced);
    assert_eq!(new.try_deliver_next().await.unwrap(), Step::Advanced);
    assert_eq!(new.try_deliver_next().await.unwrap(), Step::Idle);
    assert_eq!(cursor(&c.pool, id).await, (3, e2));
    // Offset 2 reached the receiver twice (the in-flight event), nothing else repeated.
    assert_eq!(rx.offsets(&sub.id), vec![1, 2, 2, 3]);
    let epochs: Vec<i64> = sqlx::query_scalar(
        r#"SELECT epoch FROM "orders_deliveries" WHERE subscription_id = $1 ORDER BY id"#,
    )
    .bind(id)
    .fetch_all(&c.pool)
    .await
    .unwrap();
    assert_eq!(
        epochs,
        vec![e1, e2, e2],
        "only the current owner's attempts are recorded"
    );
}

#[tokio::test]
async fn delivery_resumes_by_itself_when_postgres_drops_every_connection() {
    let c = webhook_cluster(1).await;
    create_topic(&c, "orders").await;
    let rx = Receiver::start().await;
    let sub = create_webhook(&c, "orders_hook", "orders", &rx.url("/hook"), &[]).await;
    let id = sub_id(&sub);
    publish(&c, 0, "orders", events(5, "before")).await;
    rx.wait_for(20, "the first 5", |l| l.len() >= 5).await;
    let (_, epoch_before) = cursor(&c.pool, id).await;

    // What a Postgres restart does to a node: every session ends, the lock session included.
    let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&admin_url())
        .await
        .unwrap();
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind(&c.db.name)
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert!(
        killed.len() >= 2,
        "the node's pool and lock sessions were ended"
    );

    // Publishing may fail while the pool notices; the events that were stored must arrive.
    let mut cl = c.client(0).await;
    let mut stored = 5;
    for _ in 0..50 {
        let r = eventrelay::proto::PublishEventsRequest {
            topic: "orders".into(),
            events: events(5, "after"),
            durable: true,
            ..Default::default()
        };
        if cl.publish_events(authed(&c.admin, r)).await.is_ok() {
            stored += 5;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(stored, 10, "publishing recovered");
    rx.wait_for(30, "delivery after the connections came back", |l| {
        l.iter().any(|r| r.offset == 10)
    })
    .await;
    let offsets = rx.offsets(&sub.id);
    assert!(
        crate::receiver::in_order_at_least_once(&offsets, 1, 10),
        "{offsets:?}"
    );
    // The node noticed its lock session was gone (it checks every half second), stopped, and
    // took the subscription again under a new epoch.
    // The test's own pool lost its sessions too; a fresh one reads the cursor.
    let fresh = eventrelay::db::connect(&c.db.url, 1).await.unwrap();
    let mut epoch_after = epoch_before;
    for _ in 0..100 {
        epoch_after = cursor(&fresh, id).await.1;
        if epoch_after > epoch_before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        epoch_after > epoch_before,
        "the lock was lost and taken again"
    );
    // The cursor moves once the receiver's answer is recorded, just after the receiver saw
    // offset 10: wait for it (a bound, not a timing).
    let mut position = 0;
    for _ in 0..100 {
        position = cursor(&fresh, id).await.0;
        if position == 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(position, 10);
}

#[tokio::test]
async fn the_rate_limit_spaces_deliveries() {
    let mut c = webhook_cluster(1).await;
    create_topic(&c, "orders").await;
    let rx = Receiver::start().await;
    // One delivery every 10 s at most.
    let sub = create_webhook(
        &c,
        "orders_hook",
        "orders",
        &rx.url("/hook"),
        &[("rate_limit", "0.1")],
    )
    .await;
    let id = sub_id(&sub);
    // Paused (so the node lets go of it) while the events are published, then the node stops.
    backlog_without_owner(&mut c, id, 2).await;

    let delivery = delivery_service(&c);
    let epoch = store::acquire(&c.pool, id, Uuid::new_v4())
        .await
        .unwrap()
        .unwrap();
    let mut w = delivery.worker(id, epoch).await.unwrap();
    assert_eq!(w.try_deliver_next().await.unwrap(), Step::Advanced);
    match w.try_deliver_next().await.unwrap() {
        Step::Wait(d) => assert!(
            d > Duration::from_secs(1) && d <= Duration::from_secs(10),
            "{d:?}"
        ),
        other => panic!("expected the rate limit to hold the second event, got {other:?}"),
    }
    assert_eq!(rx.offsets(&sub.id), vec![1]);
}
