//! Subscriptions over gRPC: CreateSubscription / GetSubscription / ListSubscriptions (paging
//! defaults and next/previous/total numbers) / DeleteSubscription, the original README's
//! examples, every validation error with its status and message, and deleting a topic
//! deleting its subscriptions.

use crate::helpers::*;
use eventrelay::proto::{self, event_relay_client::EventRelayClient};
use std::collections::HashMap;
use tonic::transport::Channel;
use tonic::{Code, Response, Status};
use uuid::Uuid;

type Client = EventRelayClient<Channel>;

async fn create(
    c: &TestCluster,
    cl: &mut Client,
    new: Option<proto::NewSubscription>,
) -> Result<Response<proto::CreateSubscriptionResponse>, Status> {
    let r = proto::CreateSubscriptionRequest { subscription: new };
    cl.create_subscription(authed(&c.admin, r)).await
}

async fn get(
    c: &TestCluster,
    cl: &mut Client,
    id: &str,
) -> Result<Response<proto::GetSubscriptionResponse>, Status> {
    let r = proto::GetSubscriptionRequest { id: id.into() };
    cl.get_subscription(authed(&c.admin, r)).await
}

async fn delete(
    c: &TestCluster,
    cl: &mut Client,
    id: &str,
) -> Result<Response<proto::DeleteSubscriptionResponse>, Status> {
    let r = proto::DeleteSubscriptionRequest { id: id.into() };
    cl.delete_subscription(authed(&c.admin, r)).await
}

async fn list(
    c: &TestCluster,
    cl: &mut Client,
    page: i32,
    page_size: i32,
) -> proto::ListSubscriptionsResponse {
    let r = proto::ListSubscriptionsRequest { page, page_size };
    cl.list_subscriptions(authed(&c.admin, r))
        .await
        .expect("list subscriptions")
        .into_inner()
}

fn config(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn names(r: &proto::ListSubscriptionsResponse) -> Vec<&str> {
    r.subscriptions.iter().map(|s| s.name.as_str()).collect()
}

/// (total_count, next_page, previous_page, total_pages) of a list response.
fn numbers(r: &proto::ListSubscriptionsResponse) -> (i32, i32, i32, i32) {
    (r.total_count, r.next_page, r.previous_page, r.total_pages)
}

#[tokio::test(flavor = "multi_thread")]
async fn create_get_delete_round_trip() {
    let c = TestCluster::start(1).await;
    create_topic(&c, "users").await;
    let mut cl = c.client(0).await;
    let new = proto::NewSubscription {
        name: "pull_users".into(),
        topic_name: "users".into(),
        topic_identifier: "42".into(),
        config: config(&[("note", "pulled by the billing job")]),
        paused: true,
        ..Default::default()
    };
    let made = create(&c, &mut cl, Some(new)).await.expect("create");
    let made = made.into_inner().subscription.expect("subscription");
    Uuid::parse_str(&made.id).expect("id is a UUID");
    let want = proto::Subscription {
        id: made.id.clone(),
        name: "pull_users".into(),
        topic_name: "users".into(),
        topic_identifier: "42".into(),
        push: false,
        config: config(&[("note", "pulled by the billing job")]),
        paused: true,
        // Empty subscription_type means "api" (pull).
        subscription_type: "api".into(),
        signing_secret: String::new(),
    };
    // The signing secret is returned once, at creation, and never again.
    assert!(made.signing_secret.starts_with("whsec_"), "{made:?}");
    let made = proto::Subscription {
        signing_secret: String::new(),
        ..made
    };
    assert_eq!(made, want);

    let got = get(&c, &mut cl, &made.id).await.expect("get").into_inner();
    assert_eq!(got.subscription, Some(want.clone()));
    // An upper-case id names the same subscription (UUIDs are case-insensitive).
    let upper = get(&c, &mut cl, &made.id.to_uppercase())
        .await
        .expect("get upper-case id");
    assert_eq!(upper.into_inner().subscription, Some(want.clone()));

    let gone = delete(&c, &mut cl, &made.id)
        .await
        .expect("delete")
        .into_inner();
    assert_eq!(gone.subscription, Some(want));
    assert_code(
        get(&c, &mut cl, &made.id).await,
        Code::NotFound,
        Some("Subscription not found"),
    );
    assert_code(
        delete(&c, &mut cl, &made.id).await,
        Code::NotFound,
        Some("Subscription not found"),
    );
    assert_eq!(list(&c, &mut cl, 0, 0).await.total_count, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_original_readme_examples() {
    let c = TestCluster::start(1).await;
    create_topic(&c, "users").await;
    let mut cl = c.client(0).await;
    // grpcurl -d '{"subscription": {"name": "events4life", "topic_name": "users",
    //   "topic_identifier": "123", "config": {"endpoint_url": "https://example.com/webhooks/users"},
    //   "push": true, "subscription_type": "websocket"}}' ... CreateSubscription
    let websocket = proto::NewSubscription {
        name: "events4life".into(),
        topic_name: "users".into(),
        topic_identifier: "123".into(),
        config: config(&[("endpoint_url", "https://example.com/webhooks/users")]),
        push: true,
        subscription_type: "websocket".into(),
        ..Default::default()
    };
    let ws = create(&c, &mut cl, Some(websocket))
        .await
        .expect("websocket example");
    let ws = ws.into_inner().subscription.expect("subscription");
    assert_eq!(
        (
            ws.name.as_str(),
            ws.topic_name.as_str(),
            ws.topic_identifier.as_str()
        ),
        ("events4life", "users", "123")
    );
    assert_eq!(
        (ws.push, ws.subscription_type.as_str()),
        (true, "websocket")
    );
    assert_eq!(
        ws.config,
        config(&[("endpoint_url", "https://example.com/webhooks/users")])
    );

    // The second README example reuses the name: refused while the first exists.
    let plain = proto::NewSubscription {
        name: "events4life".into(),
        topic_name: "users".into(),
        push: true,
        subscription_type: "websocket".into(),
        ..Default::default()
    };
    assert_code(
        create(&c, &mut cl, Some(plain.clone())).await,
        Code::AlreadyExists,
        Some("Subscription with that name already exists"),
    );

    // grpcurl -d '{"subscription": {"name": "events4life_webhook", "topic_name": "users",
    //   "config": {"endpoint_url": "http://localhost:5006/webhook"}, "push": true,
    //   "subscription_type": "webhook"}}' ... CreateSubscription
    let webhook = proto::NewSubscription {
        name: "events4life_webhook".into(),
        topic_name: "users".into(),
        config: config(&[("endpoint_url", "http://localhost:5006/webhook")]),
        push: true,
        subscription_type: "webhook".into(),
        ..Default::default()
    };
    let wh = create(&c, &mut cl, Some(webhook))
        .await
        .expect("webhook example");
    let wh = wh.into_inner().subscription.expect("subscription");
    assert_eq!((wh.subscription_type.as_str(), wh.push), ("webhook", true));
    assert_eq!(
        wh.config,
        config(&[("endpoint_url", "http://localhost:5006/webhook")])
    );

    // grpcurl -d '{"page": 1, "page_size": 100}' ... ListSubscriptions
    let all = list(&c, &mut cl, 1, 100).await;
    assert_eq!(names(&all), ["events4life", "events4life_webhook"]);
    assert_eq!(numbers(&all), (2, 0, 0, 1));

    // grpcurl -d '{"id": "..."}' ... DeleteSubscription; then the name is free again.
    delete(&c, &mut cl, &ws.id).await.expect("delete example");
    let again = create(&c, &mut cl, Some(plain))
        .await
        .expect("name reusable");
    let again = again.into_inner().subscription.expect("subscription");
    assert_eq!(
        (again.topic_identifier.as_str(), again.config.len()),
        ("", 0)
    );
    assert_ne!(again.id, ws.id);
}

#[tokio::test(flavor = "multi_thread")]
async fn list_pages_with_defaults_and_numbers() {
    let c = TestCluster::start(1).await;
    create_topic(&c, "users").await;
    let mut cl = c.client(0).await;
    let empty = list(&c, &mut cl, 0, 0).await;
    assert_eq!((names(&empty).len(), numbers(&empty)), (0, (0, 0, 0, 0)));

    // 101 subscriptions, created out of name order: lists are ordered by name.
    let mut all: Vec<String> = (0..101).map(|i| format!("sub_{i:03}")).collect();
    all.reverse();
    for name in &all {
        create_subscription(&c, name, "users", "").await;
    }
    all.sort();

    // page 0 means 1, page_size 0 means 100.
    let first = list(&c, &mut cl, 0, 0).await;
    assert_eq!(names(&first), all[..100].to_vec());
    assert_eq!(numbers(&first), (101, 2, 0, 2));
    let second = list(&c, &mut cl, 2, 0).await;
    assert_eq!(names(&second), ["sub_100"]);
    assert_eq!(numbers(&second), (101, 0, 1, 2));

    // page_size 40: pages of 40, 40 and 21.
    let pages = [
        (1, 0..40, (101, 2, 0, 3)),
        (2, 40..80, (101, 3, 1, 3)),
        (3, 80..101, (101, 0, 2, 3)),
    ];
    for (page, range, nums) in pages {
        let r = list(&c, &mut cl, page, 40).await;
        assert_eq!(names(&r), all[range].to_vec(), "page {page}");
        assert_eq!(numbers(&r), nums, "page {page}");
    }
    let past = list(&c, &mut cl, 4, 40).await;
    assert_eq!((names(&past).len(), numbers(&past)), (0, (101, 0, 3, 3)));
    let negative = list(&c, &mut cl, -5, 40).await;
    assert_eq!(names(&negative), all[..40].to_vec());
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_requests_are_refused_and_create_nothing() {
    let c = TestCluster::start(1).await;
    create_topic(&c, "users").await;
    let mut cl = c.client(0).await;
    let base = proto::NewSubscription {
        name: "taken".into(),
        topic_name: "users".into(),
        ..Default::default()
    };
    create(&c, &mut cl, Some(base.clone()))
        .await
        .expect("first");
    let with = |f: &dyn Fn(&mut proto::NewSubscription)| {
        let mut s = proto::NewSubscription {
            name: "fresh".into(),
            ..base.clone()
        };
        f(&mut s);
        Some(s)
    };
    let webhook = |url: Option<&str>| {
        with(&|s| {
            s.subscription_type = "webhook".into();
            s.config = url
                .map(|u| config(&[("endpoint_url", u)]))
                .unwrap_or_default();
        })
    };
    let r = create(&c, &mut cl, Some(base.clone())).await;
    let taken = Some("Subscription with that name already exists");
    assert_code(r, Code::AlreadyExists, taken);
    let r = create(&c, &mut cl, with(&|s| s.topic_name = "nope".into())).await;
    assert_code(r, Code::NotFound, Some("Topic not found"));
    let invalid = [
        ("missing subscription", None),
        ("webhook without url", webhook(None)),
        ("webhook empty url", webhook(Some(""))),
        ("webhook ftp url", webhook(Some("ftp://x"))),
        ("webhook not a url", webhook(Some("not a url"))),
        (
            "unknown type",
            with(&|s| s.subscription_type = "pigeon".into()),
        ),
        ("blank name", with(&|s| s.name = "  ".into())),
        ("bad topic name", with(&|s| s.topic_name = "Users!".into())),
        ("empty topic name", with(&|s| s.topic_name = String::new())),
    ];
    for (what, new) in invalid {
        let s = create(&c, &mut cl, new).await.expect_err(what);
        assert_eq!(s.code(), Code::InvalidArgument, "{what}: {}", s.message());
        assert!(!s.message().is_empty(), "{what}: a readable message");
    }
    let all = list(&c, &mut cl, 0, 0).await;
    assert_eq!(names(&all), ["taken"], "failed creates stored nothing");

    let unknown = Uuid::new_v4().to_string();
    let not_found = Some("Subscription not found");
    assert_code(get(&c, &mut cl, &unknown).await, Code::NotFound, not_found);
    assert_code(
        delete(&c, &mut cl, &unknown).await,
        Code::NotFound,
        not_found,
    );
    for bad in ["not-a-uuid", "", "123"] {
        assert_code(get(&c, &mut cl, bad).await, Code::InvalidArgument, None);
        assert_code(delete(&c, &mut cl, bad).await, Code::InvalidArgument, None);
    }
    assert_eq!(list(&c, &mut cl, 0, 0).await.total_count, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_topic_deletes_its_subscriptions() {
    let c = TestCluster::start(1).await;
    let users = create_topic(&c, "users").await;
    create_topic(&c, "orders").await;
    let mut cl = c.client(0).await;
    let u1 = create_subscription(&c, "users_one", "users", "").await;
    let u2 = create_subscription(&c, "users_two", "users", "7").await;
    let o1 = create_subscription(&c, "orders_one", "orders", "").await;

    let r = proto::DeleteTopicRequest {
        id: users.id.clone(),
    };
    cl.delete_topic(authed(&c.admin, r))
        .await
        .expect("delete topic");

    for s in [&u1, &u2] {
        let r = get(&c, &mut cl, &s.id).await;
        assert_code(r, Code::NotFound, Some("Subscription not found"));
    }
    let left = list(&c, &mut cl, 0, 0).await;
    assert_eq!(names(&left), ["orders_one"]);
    assert_eq!(left.total_count, 1);
    let kept = get(&c, &mut cl, &o1.id)
        .await
        .expect("other topic's subscription");
    assert_eq!(kept.into_inner().subscription, Some(o1));

    // A subscription cannot be made on the deleted topic, and a recreated topic starts clean.
    let new = proto::NewSubscription {
        name: "users_three".into(),
        topic_name: "users".into(),
        ..Default::default()
    };
    let r = create(&c, &mut cl, Some(new.clone())).await;
    assert_code(r, Code::NotFound, Some("Topic not found"));
    create_topic(&c, "users").await;
    create(&c, &mut cl, Some(new))
        .await
        .expect("subscription on the recreated topic");
    assert_eq!(list(&c, &mut cl, 0, 0).await.total_count, 2);
}
