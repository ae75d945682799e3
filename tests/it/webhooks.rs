//! Webhook delivery on one node against real HTTP receivers: order, headers and signatures
//! (checked by the Standard Webhooks Python library), retries in order under 500s, resets,
//! redirects and hangs, and undeliverable events. Shared helpers for the other
//! webhook test files live here too.

use crate::helpers::*;
use crate::receiver::{Receiver, Reply, in_order_at_least_once};
use eventrelay::proto;
use std::collections::BTreeMap;
use std::time::Duration;

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

/// The subscription as GetSubscription shows it now (as the admin, through node 0).
pub async fn subscription(c: &TestCluster, id: &str) -> proto::Subscription {
    c.client(0)
        .await
        .get_subscription(authed(
            &c.admin,
            proto::GetSubscriptionRequest { id: id.into() },
        ))
        .await
        .expect("get subscription")
        .into_inner()
        .subscription
        .expect("subscription")
}

/// Resumes a subscription (as the admin, through node 0).
pub async fn resume(c: &TestCluster, id: &str) {
    c.client(0)
        .await
        .resume_subscription(authed(
            &c.admin,
            proto::ResumeSubscriptionRequest { id: id.into() },
        ))
        .await
        .expect("resume subscription");
}

pub fn events(n: usize, tag: &str) -> Vec<proto::NewEvent> {
    (0..n)
        .map(|i| event("order.created", &format!(r#"{{"i": {i}, "tag": "{tag}"}}"#)))
        .collect()
}

pub async fn deliveries(c: &TestCluster, sub: &str) -> proto::ListDeliveriesResponse {
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

/// ListDeliveries once the cursor has reached `offset`: the receiver logs a request before it
/// answers, so the worker may not have recorded it yet when a test sees it arrive.
pub async fn deliveries_at(
    c: &TestCluster,
    sub: &str,
    offset: i64,
) -> proto::ListDeliveriesResponse {
    for _ in 0..400 {
        let d = deliveries(c, sub).await;
        if d.delivered_offset >= offset {
            return d;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the cursor of {sub} did not reach {offset}");
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
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("No module named"),
        "the reference checker is missing: python3 -m pip install standardwebhooks ({stderr})"
    );
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
    let got = subscription(&c, &sub.id).await;
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

    let d = deliveries_at(&c, &sub.id, 32).await;
    assert_eq!(d.delivered_offset, 32);
    assert_eq!(d.total_count, 30);
    assert!(
        d.deliveries
            .iter()
            .all(|x| x.status == "delivered" && x.attempt == 1 && x.response_status == 200)
    );
    let metrics = reqwest::get(format!("http://{}/metrics", c.nodes[0].http))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        r#"eventrelay_webhook_attempts_total{outcome="delivered"} 30"#,
        "eventrelay_owned_subscriptions 1",
        "eventrelay_webhook_attempt_duration_seconds_count 30",
    ] {
        assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
    }
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

    let d = deliveries_at(&c, &sub.id, 10).await;
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
    let d = deliveries_at(&c, &skip.id, 4).await;
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
    let mut paused = false;
    for _ in 0..200 {
        let got = subscription(&c, &pause.id).await;
        if got.paused {
            paused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(paused, "exhaustion pauses the subscription");
    let d = deliveries(&c, &pause.id).await;
    assert_eq!(d.delivered_offset, 1, "pause keeps the cursor at the event");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        rx.offsets(&pause.id),
        vec![1, 2, 2],
        "no attempts while paused"
    );
}
