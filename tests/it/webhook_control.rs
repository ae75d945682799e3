//! Webhook control and safety on one node: back-off and Retry-After (read from the cursor
//! row, not timed), 410 pausing, pause and resume, replay from an offset, who may call the
//! control RPCs, invalid endpoints, and refusal of internal addresses.

use crate::helpers::*;
use crate::receiver::{Receiver, Reply};
use crate::webhooks::{create_webhook, deliveries, events, resume, subscription, webhook_cluster};
use eventrelay::proto;
use std::time::Duration;
use tonic::Code;

#[tokio::test]
async fn reset_cursor_replays_from_an_offset() {
    let c = webhook_cluster(1).await;
    create_topic(&c, "orders").await;
    let rx = Receiver::start().await;
    let sub = create_webhook(&c, "orders_hook", "orders", &rx.url("/hook"), &[]).await;
    publish(&c, 0, "orders", events(5, "x")).await;
    rx.wait_for(20, "5 deliveries", |l| l.len() >= 5).await;
    let mut cl = c.client(0).await;
    let reset = |offset| proto::ResetSubscriptionCursorRequest {
        id: sub.id.clone(),
        offset,
    };
    cl.reset_subscription_cursor(authed(&c.admin, reset(2)))
        .await
        .unwrap();
    rx.wait_for(20, "replay", |l| l.len() >= 8).await;
    assert_eq!(rx.offsets(&sub.id), vec![1, 2, 3, 4, 5, 3, 4, 5]);
    assert_code(
        cl.reset_subscription_cursor(authed(&c.admin, reset(6)))
            .await,
        Code::InvalidArgument,
        Some("offset 6 is past the topic's last offset 5"),
    );
    assert_code(
        cl.reset_subscription_cursor(authed(&c.admin, reset(-1)))
            .await,
        Code::InvalidArgument,
        None,
    );
}

#[tokio::test]
async fn control_rpcs_check_callers_and_subscriptions() {
    let c = webhook_cluster(1).await;
    create_topic(&c, "orders").await;
    let rx = Receiver::start().await;
    let hook = create_webhook(&c, "orders_hook", "orders", &rx.url("/hook"), &[]).await;
    let pull = create_subscription(&c, "orders_pull", "orders", "").await;
    let (consumer, _) = c
        .key(eventrelay::auth::KeyType::Consumer, &[], &[sub_id(&hook)])
        .await;
    let mut cl = c.client(0).await;
    let pause = |id: &str| proto::PauseSubscriptionRequest { id: id.into() };
    assert_code(
        cl.pause_subscription(authed(&consumer, pause(&hook.id)))
            .await,
        Code::PermissionDenied,
        None,
    );
    assert_code(
        cl.pause_subscription(authed(&c.admin, pause(&pull.id)))
            .await,
        Code::FailedPrecondition,
        None,
    );
    assert_code(
        cl.pause_subscription(authed(&c.admin, pause("nope"))).await,
        Code::InvalidArgument,
        None,
    );
    assert_code(
        cl.pause_subscription(authed(&c.admin, pause(&uuid::Uuid::new_v4().to_string())))
            .await,
        Code::NotFound,
        Some("Subscription not found"),
    );
    assert_code(
        cl.list_deliveries(authed(
            &consumer,
            proto::ListDeliveriesRequest {
                subscription_id: hook.id.clone(),
                ..Default::default()
            },
        ))
        .await,
        Code::PermissionDenied,
        None,
    );
    // Paused: nothing is delivered; resumed: everything, in order.
    let paused = cl
        .pause_subscription(authed(&c.admin, pause(&hook.id)))
        .await
        .unwrap()
        .into_inner()
        .subscription
        .unwrap();
    assert!(paused.paused && paused.signing_secret.is_empty());
    publish(&c, 0, "orders", events(3, "x")).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(rx.log().is_empty(), "delivered while paused");
    resume(&c, &hook.id).await;
    rx.wait_for(20, "3 deliveries after resume", |l| l.len() >= 3)
        .await;
    assert_eq!(rx.offsets(&hook.id), vec![1, 2, 3]);
    // Invalid endpoints are refused at creation.
    let bad = c
        .client(0)
        .await
        .create_subscription(authed(
            &c.admin,
            proto::CreateSubscriptionRequest {
                subscription: Some(proto::NewSubscription {
                    name: "bad".into(),
                    topic_name: "orders".into(),
                    subscription_type: "webhook".into(),
                    config: [("endpoint_url".to_string(), "ftp://x".to_string())].into(),
                    ..Default::default()
                }),
            },
        ))
        .await;
    assert_code(bad, Code::InvalidArgument, None);
}

#[tokio::test]
async fn private_addresses_are_refused_without_an_allow_list() {
    // Default configuration: no allowed networks.
    let c = TestCluster::start_with(1, |c| c.webhook_poll_ms = 200).await;
    create_topic(&c, "orders").await;
    let rx = Receiver::start().await;
    let by_ip = create_webhook(&c, "ip_hook", "orders", &rx.url("/hook"), &[]).await;
    let by_name = create_webhook(
        &c,
        "name_hook",
        "orders",
        &format!("http://localhost:{}/hook", rx.addr.port()),
        &[],
    )
    .await;
    publish(&c, 0, "orders", events(1, "x")).await;
    for sub in [&by_ip, &by_name] {
        let mut attempts = Vec::new();
        for _ in 0..100 {
            attempts = deliveries(&c, &sub.id).await.deliveries;
            if !attempts.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let a = attempts.first().expect("an attempt is recorded");
        assert_eq!(a.status, "failed");
        assert!(a.error.contains("loopback"), "{a:?}");
    }
    assert!(rx.log().is_empty(), "nothing reached the receiver");
}

#[tokio::test]
async fn backoff_follows_the_schedule_and_retry_after_is_honoured() {
    let c = webhook_cluster(1).await;
    create_topic(&c, "orders").await;
    let rx = Receiver::start().await;
    rx.set_default(Some(Reply::Status(500)));
    let sub = create_webhook(
        &c,
        "orders_hook",
        "orders",
        &rx.url("/hook"),
        &[("retry_schedule", "0,60,120")],
    )
    .await;
    publish(&c, 0, "orders", events(1, "x")).await;
    rx.wait_for(20, "first attempt", |l| !l.is_empty()).await;
    let id = sub_id(&sub);
    let wait_gap = |expect_attempts: i32| {
        let pool = c.pool.clone();
        async move {
            for _ in 0..200 {
                let row: Option<(i32, Option<chrono::DateTime<chrono::Utc>>)> = sqlx::query_as(
                    "SELECT attempts, next_attempt_at FROM subscription_cursors
                     WHERE subscription_id = $1",
                )
                .bind(id)
                .fetch_optional(&pool)
                .await
                .unwrap();
                if let Some((n, Some(next))) = row
                    && n == expect_attempts
                {
                    return (next - chrono::Utc::now()).num_milliseconds();
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("attempt {expect_attempts} was not recorded");
        }
    };
    // After the first failure the next attempt is about 60 s away (±10 % jitter).
    let gap = wait_gap(1).await;
    assert!((50_000..=66_500).contains(&gap), "gap {gap} ms");
    assert_eq!(rx.log().len(), 1, "no early retry");

    // Resume retries at once; a 429 with Retry-After longer than the schedule wins.
    rx.script([Reply::TooMany(600)]);
    resume(&c, &sub.id).await;
    rx.wait_for(20, "the 429", |l| l.len() >= 2).await;
    let gap = wait_gap(1).await;
    assert!(
        (590_000..=600_500).contains(&gap),
        "Retry-After ignored: {gap} ms"
    );
    let d = deliveries(&c, &sub.id).await;
    assert_eq!(d.deliveries[0].response_status, 429);
    assert_eq!(d.delivered_offset, 0);
}

#[tokio::test]
async fn gone_pauses_the_subscription_until_resumed() {
    let c = webhook_cluster(1).await;
    create_topic(&c, "orders").await;
    let rx = Receiver::start().await;
    rx.script([Reply::Status(410)]);
    let sub = create_webhook(&c, "orders_hook", "orders", &rx.url("/hook"), &[]).await;
    publish(&c, 0, "orders", events(3, "x")).await;
    rx.wait_for(20, "the 410", |l| !l.is_empty()).await;
    let get = || subscription(&c, &sub.id);
    for _ in 0..100 {
        if get().await.paused {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(get().await.paused, "410 pauses the subscription");
    let d = deliveries(&c, &sub.id).await;
    assert_eq!(d.deliveries.len(), 1);
    assert_eq!(d.deliveries[0].status, "gone");
    assert_eq!(rx.log().len(), 1);

    resume(&c, &sub.id).await;
    rx.wait_for(20, "redelivery after resume", |l| l.len() >= 4)
        .await;
    assert_eq!(rx.offsets(&sub.id), vec![1, 1, 2, 3]);
    assert!(!get().await.paused);
}
