//! Webhook delivery on one node against real HTTP receivers: order, headers and signatures
//! (checked by the Standard Webhooks Python library), retries with backoff and Retry-After,
//! 410, undeliverable events, redirects, hangs, resets, address checks, and the control RPCs.

use crate::helpers::*;
use crate::receiver::{Receiver, Reply, in_order_at_least_once};
use eventrelay::proto;
use std::collections::BTreeMap;
use std::time::Duration;
use tonic::Code;

/// Nodes that may deliver to 127.0.0.1 and poll idle subscriptions quickly.
pub async fn webhook_cluster(n: usize) -> TestCluster {
    TestCluster::start_with(n, |c| {
        c.webhook_allowed_networks = vec!["127.0.0.0/8".parse().unwrap()];
        c.webhook_poll_ms = 200;
    })
    .await
}

/// Creates a webhook subscription; the response carries the signing secret.
pub async fn create_webhook(
    c: &TestCluster,
    name: &str,
    topic: &str,
    url: &str,
    extra: &[(&str, &str)],
) -> proto::Subscription {
    let mut config: BTreeMap<String, String> = extra
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    config.insert("endpoint_url".into(), url.into());
    c.client(0)
        .await
        .create_subscription(authed(
            &c.admin,
            proto::CreateSubscriptionRequest {
                subscription: Some(proto::NewSubscription {
                    name: name.into(),
                    topic_name: topic.into(),
                    push: true,
                    config: config.into_iter().collect(),
                    subscription_type: "webhook".into(),
                    ..Default::default()
                }),
            },
        ))
        .await
        .expect("create webhook subscription")
        .into_inner()
        .subscription
        .expect("subscription")
}

pub fn events(n: usize, tag: &str) -> Vec<proto::NewEvent> {
    (0..n)
        .map(|i| event("order.created", &format!(r#"{{"i": {i}, "tag": "{tag}"}}"#)))
        .collect()
}

async fn deliveries(c: &TestCluster, sub: &str) -> proto::ListDeliveriesResponse {
    c.client(0)
        .await
        .list_deliveries(authed(
            &c.admin,
            proto::ListDeliveriesRequest {
                subscription_id: sub.into(),
                page_size: 1000,
                ..Default::default()
            },
        ))
        .await
        .expect("list deliveries")
        .into_inner()
}

/// Verifies a received request with the Standard Webhooks reference library (Python).
fn verify_with_standardwebhooks(secret: &str, r: &crate::receiver::Received) -> Result<(), String> {
    let input = serde_json::json!({
        "secret": secret,
        "body": String::from_utf8_lossy(&r.body),
        "headers": {
            "webhook-id": r.headers["webhook-id"],
            "webhook-timestamp": r.headers["webhook-timestamp"],
            "webhook-signature": r.headers["webhook-signature"],
        },
    });
    let script = "import json, sys\n\
        from standardwebhooks.webhooks import Webhook\n\
        d = json.load(sys.stdin)\n\
        Webhook(d['secret']).verify(d['body'], d['headers'])\n\
        print('verified')\n";
    let mut child = std::process::Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    if String::from_utf8_lossy(&out.stdout).trim() == "verified" {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[tokio::test]
async fn delivers_in_order_with_headers_and_standard_webhooks_signatures() {
    let c = webhook_cluster(1).await;
    create_topic(&c, "orders").await;
    let rx = Receiver::start().await;
    // Events published before the subscription exists are not delivered.
    publish(&c, 0, "orders", events(2, "before")).await;
    let sub = create_webhook(&c, "orders_hook", "orders", &rx.url("/hook"), &[]).await;
    assert!(sub.signing_secret.starts_with("whsec_"), "{sub:?}");
    // Only the creation response carries the secret.
    let got = c
        .client(0)
        .await
        .get_subscription(authed(
            &c.admin,
            proto::GetSubscriptionRequest { id: sub.id.clone() },
        ))
        .await
        .unwrap()
        .into_inner()
        .subscription
        .unwrap();
    assert_eq!(got.signing_secret, "");

    let mut stored = Vec::new();
    for batch in 0..5 {
        stored.extend(publish(&c, 0, "orders", events(6, &format!("b{batch}"))).await);
    }
    rx.wait_for(30, "30 deliveries", |l| l.len() >= 30).await;
    let log = rx.log();
    let offsets: Vec<i64> = log.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, (3..=32).collect::<Vec<_>>(), "in order, once each");
    for (r, e) in log.iter().zip(&stored) {
        assert_eq!(r.headers["content-type"], "application/json");
        assert_eq!(r.headers["x-event-relay-subscription-id"], sub.id);
        assert_eq!(r.headers["x-event-relay-subscription-topic-name"], "orders");
        assert_eq!(r.headers["x-event-relay-subscription-topic-identifier"], "");
        assert_eq!(r.event_id, e.id, "webhook-id is the event id");
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["id"], e.id.as_str());
        assert_eq!(body["name"], "order.created");
        assert_eq!(body["topic_name"], "orders");
        assert!(body["data"]["tag"].is_string(), "data is an object: {body}");
        assert!(r.headers["webhook-signature"].starts_with("v1,"));
    }
    for r in log.iter().take(3) {
        verify_with_standardwebhooks(&sub.signing_secret, r)
            .unwrap_or_else(|e| panic!("standardwebhooks refused our signature: {e}"));
    }
    // A tampered body or another secret must not verify, so the check above can fail.
    let mut tampered = log[0].clone();
    tampered.body.push(b' ');
    assert!(verify_with_standardwebhooks(&sub.signing_secret, &tampered).is_err());
    assert!(
        verify_with_standardwebhooks("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", &log[0]).is_err()
    );

    let d = deliveries(&c, &sub.id).await;
    assert_eq!(d.delivered_offset, 32);
    assert_eq!(d.total_count, 30);
    assert!(
        d.deliveries
            .iter()
            .all(|x| x.status == "delivered" && x.attempt == 1 && x.response_status == 200)
    );
}

#[tokio::test]
async fn failing_receivers_are_retried_in_order_at_least_once() {
    let c = webhook_cluster(1).await;
    create_topic(&c, "orders").await;
    let rx = Receiver::start().await;
    // 500s, a reset connection, a redirect and a hang, interleaved with successes.
    rx.script([
        Reply::Status(500),
        Reply::Status(200),
        Reply::Reset,
        Reply::Status(503),
        Reply::Status(200),
        Reply::Redirect(rx.url("/elsewhere")),
        Reply::Status(200),
        Reply::Hang,
        Reply::Status(200),
    ]);
    let sub = create_webhook(
        &c,
        "orders_hook",
        "orders",
        &rx.url("/hook"),
        &[("retry_schedule", "0,0.05"), ("timeout_ms", "500")],
    )
    .await;
    publish(&c, 0, "orders", events(10, "x")).await;
    rx.wait_for(30, "all 10 acknowledged", |l| {
        l.iter()
            .filter(|r| matches!(r.reply, Reply::Status(200)))
            .count()
            >= 10
    })
    .await;
    let offsets = rx.offsets(&sub.id);
    assert!(in_order_at_least_once(&offsets, 1, 10), "{offsets:?}");
    assert_eq!(rx.acked_offsets(&sub.id), (1..=10).collect::<Vec<_>>());
    assert!(
        rx.log().iter().all(|r| r.path == "/hook"),
        "redirect followed"
    );

    let d = deliveries(&c, &sub.id).await;
    assert_eq!(d.delivered_offset, 10);
    let mut attempts: Vec<_> = d.deliveries.iter().collect();
    attempts.reverse();
    let summary: Vec<(i64, i32, &str, i32)> = attempts
        .iter()
        .map(|a| {
            (
                a.event_offset,
                a.attempt,
                a.status.as_str(),
                a.response_status,
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (1, 1, "failed", 500),
            (1, 2, "delivered", 200),
            (2, 1, "failed", 0),
            (2, 2, "failed", 503),
            (2, 3, "delivered", 200),
            (3, 1, "failed", 302),
            (3, 2, "delivered", 200),
            (4, 1, "failed", 0),
            (4, 2, "delivered", 200),
            (5, 1, "delivered", 200),
            (6, 1, "delivered", 200),
            (7, 1, "delivered", 200),
            (8, 1, "delivered", 200),
            (9, 1, "delivered", 200),
            (10, 1, "delivered", 200),
        ]
    );
    let hang = attempts.iter().find(|a| a.event_offset == 4).unwrap();
    assert!(hang.error.contains("timed out"), "{hang:?}");
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
                if let Some((n, Some(next))) = row {
                    if n == expect_attempts {
                        return (next - chrono::Utc::now()).num_milliseconds();
                    }
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
    c.client(0)
        .await
        .resume_subscription(authed(
            &c.admin,
            proto::ResumeSubscriptionRequest { id: sub.id.clone() },
        ))
        .await
        .unwrap();
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
    let get = || async {
        c.client(0)
            .await
            .get_subscription(authed(
                &c.admin,
                proto::GetSubscriptionRequest { id: sub.id.clone() },
            ))
            .await
            .unwrap()
            .into_inner()
            .subscription
            .unwrap()
    };
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

    c.client(0)
        .await
        .resume_subscription(authed(
            &c.admin,
            proto::ResumeSubscriptionRequest { id: sub.id.clone() },
        ))
        .await
        .unwrap();
    rx.wait_for(20, "redelivery after resume", |l| l.len() >= 4)
        .await;
    assert_eq!(rx.offsets(&sub.id), vec![1, 1, 2, 3]);
    assert!(!get().await.paused);
}

#[tokio::test]
async fn undeliverable_events_are_skipped_or_pause_after_max_attempts() {
    let c = webhook_cluster(1).await;
    create_topic(&c, "orders").await;
    let rx = Receiver::start().await;
    rx.on_offset(2, Reply::Status(500));
    let skip = create_webhook(
        &c,
        "skip_hook",
        "orders",
        &rx.url("/skip"),
        &[("retry_schedule", "0,0.02"), ("max_attempts", "3")],
    )
    .await;
    let pause = create_webhook(
        &c,
        "pause_hook",
        "orders",
        &rx.url("/pause"),
        &[
            ("retry_schedule", "0,0.02"),
            ("max_attempts", "2"),
            ("on_exhausted", "pause"),
        ],
    )
    .await;
    publish(&c, 0, "orders", events(4, "x")).await;
    rx.wait_for(30, "skip hook done", |_| {
        rx.acked_offsets(&skip.id).len() >= 3
    })
    .await;
    assert_eq!(rx.offsets(&skip.id), vec![1, 2, 2, 2, 3, 4]);
    let d = deliveries(&c, &skip.id).await;
    assert_eq!(d.delivered_offset, 4);
    let last = d
        .deliveries
        .iter()
        .find(|a| a.event_offset == 2 && a.attempt == 3);
    assert_eq!(last.map(|a| a.status.as_str()), Some("undeliverable"));

    rx.wait_for(30, "pause hook attempts", |_| {
        rx.offsets(&pause.id).len() >= 3
    })
    .await;
    let d = deliveries(&c, &pause.id).await;
    assert_eq!(d.delivered_offset, 1, "pause keeps the cursor at the event");
    let sub = c
        .client(0)
        .await
        .get_subscription(authed(
            &c.admin,
            proto::GetSubscriptionRequest {
                id: pause.id.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .subscription
        .unwrap();
    assert!(sub.paused);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        rx.offsets(&pause.id),
        vec![1, 2, 2],
        "no attempts while paused"
    );
}

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
    cl.resume_subscription(authed(
        &c.admin,
        proto::ResumeSubscriptionRequest {
            id: hook.id.clone(),
        },
    ))
    .await
    .unwrap();
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
