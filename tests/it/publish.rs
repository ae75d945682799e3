//! Publishing over gRPC: durable storage in request order, identifiers, non-durable events,
//! dead letters for invalid events and unknown or missing topics, and the request limits.

use crate::helpers::*;
use eventrelay::proto::{
    ListDeadLettersRequest, NewEvent, PublishEventsRequest, PullEventsRequest,
};
use tonic::Code;

fn req(topic: &str, events: Vec<NewEvent>, durable: bool) -> PublishEventsRequest {
    PublishEventsRequest {
        topic: topic.into(),
        events,
        durable,
        ..Default::default()
    }
}

async fn stored(c: &TestCluster, topic: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM \"{topic}_events\""
    )))
    .fetch_one(&c.pool)
    .await
    .unwrap()
}

async fn dead_letters(c: &TestCluster) -> Vec<eventrelay::proto::DeadLetter> {
    c.client(0)
        .await
        .list_dead_letters(authed(&c.admin, ListDeadLettersRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .dead_letters
}

#[tokio::test]
async fn durable_events_are_stored_in_order() {
    let c = TestCluster::start(1).await;
    create_topic(&c, "users").await;
    let mut e = event("user.created", r#"{"first_name": "Thomas"}"#);
    e.context.insert("ip_address".into(), "127.0.0.1".into());
    e.occurred_at = "2020-01-01T00:00:00.000Z".into();
    e.group_key = "g".into();
    let out = publish(&c, 0, "users", vec![e, event("user.updated", "[1,2]")]).await;
    assert_eq!(out.len(), 2);
    assert_eq!((out[0].offset, out[1].offset), (1, 2));
    assert_eq!(out[0].name, "user.created");
    assert_eq!(out[0].topic, "users");
    assert_eq!(out[0].occurred_at, "2020-01-01T00:00:00.000Z");
    assert_eq!(out[0].context["ip_address"], "127.0.0.1");
    assert_eq!(out[0].group_key, "g");
    assert!(uuid::Uuid::parse_str(&out[0].id).is_ok());

    let with_id = publish(&c, 0, "users:123", vec![event("user.created", "{}")]).await;
    assert_eq!(
        (with_id[0].topic.as_str(), with_id[0].offset),
        ("users:123", 3)
    );
    assert_eq!(stored(&c, "users").await, 3);

    let pulled = c
        .client(0)
        .await
        .pull_events(authed(
            &c.admin,
            PullEventsRequest {
                topic: "users".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .events;
    let data: serde_json::Value = serde_json::from_str(&pulled[0].data).unwrap();
    assert_eq!(data["first_name"], "Thomas");
    assert_eq!(pulled[0].id, out[0].id);
    assert_eq!(pulled[2].topic, "users:123");
}

#[tokio::test]
async fn non_durable_events_are_not_stored() {
    let c = TestCluster::start(1).await;
    create_topic(&c, "users").await;
    let out = c
        .client(0)
        .await
        .publish_events(authed(
            &c.admin,
            req("users", vec![event("ping", "{}")], false),
        ))
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].offset, 0);
    assert_eq!(stored(&c, "users").await, 0);
}

#[tokio::test]
async fn invalid_events_go_to_dead_letters_and_valid_ones_are_kept() {
    let c = TestCluster::start(1).await;
    create_topic(&c, "users").await;
    let mut bad_time = event("user.created", "{}");
    bad_time.occurred_at = "yesterday".into();
    let events = vec![
        event("ok.one", "{}"),
        event("user.created", "{not json"),
        event("", "{}"),
        bad_time,
        event("ok.two", r#"{"a": 1}"#),
    ];
    let out = publish(&c, 0, "users", events).await;
    let names: Vec<_> = out.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["ok.one", "ok.two"]);
    assert_eq!((out[0].offset, out[1].offset), (1, 2));
    let dl = dead_letters(&c).await;
    assert_eq!(dl.len(), 3);
    let mut errors: Vec<String> = dl.iter().flat_map(|d| d.errors.clone()).collect();
    errors.sort();
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("data is not valid JSON")),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|e| e == "name can't be blank"),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|e| e.starts_with("occurred_at")),
        "{errors:?}"
    );
    assert!(dl.iter().all(|d| d.topic == "users"));
}

#[tokio::test]
async fn missing_topic_answers_invalid_argument_and_dead_letters() {
    let c = TestCluster::start(1).await;
    let mut e = event("user.updated2", r#"{"first_name": "Bob"}"#);
    e.group_key = "testgroup".into();
    assert_code(
        c.client(0)
            .await
            .publish_events(authed(&c.admin, req("", vec![e], true)))
            .await,
        Code::InvalidArgument,
        Some("A topic must be provided to publish_events"),
    );
    let dl = dead_letters(&c).await;
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0].event.as_ref().unwrap().group_key, "testgroup");
    assert_eq!(dl[0].errors, ["A topic must be provided to publish_events"]);

    // A malformed topic string: refused the same way.
    assert_code(
        c.client(0)
            .await
            .publish_events(authed(
                &c.admin,
                req("Bad Topic!", vec![event("x", "{}")], true),
            ))
            .await,
        Code::InvalidArgument,
        None,
    );
    assert_eq!(dead_letters(&c).await.len(), 2);
}

#[tokio::test]
async fn unknown_topic_dead_letters_its_events() {
    let c = TestCluster::start(1).await;
    for durable in [true, false] {
        let out = c
            .client(0)
            .await
            .publish_events(authed(
                &c.admin,
                req("nosuch", vec![event("x", "{}")], durable),
            ))
            .await
            .unwrap()
            .into_inner()
            .events;
        assert!(out.is_empty());
    }
    let dl = dead_letters(&c).await;
    assert_eq!(dl.len(), 2);
    assert!(dl.iter().all(|d| d.errors == ["Topic not found"]));
}

#[tokio::test]
async fn limits_refuse_the_whole_request() {
    let c = TestCluster::start_with(1, |cfg| {
        cfg.max_events_per_request = 3;
        cfg.max_event_bytes = 2048;
    })
    .await;
    create_topic(&c, "users").await;
    let mut api = c.client(0).await;
    assert_code(
        api.publish_events(authed(
            &c.admin,
            req("users", vec![event("x", "{}"); 4], true),
        ))
        .await,
        Code::InvalidArgument,
        Some("too many events: 4 in one request, at most 3 allowed"),
    );
    let big = format!("{{\"a\": \"{}\"}}", "x".repeat(3000));
    assert_code(
        api.publish_events(authed(
            &c.admin,
            req("users", vec![event("x", "{}"), event("x", &big)], true),
        ))
        .await,
        Code::InvalidArgument,
        None,
    );
    assert_code(
        api.publish_events(authed(&c.admin, req("users", vec![], true)))
            .await,
        Code::InvalidArgument,
        Some("events must contain at least one event"),
    );
    assert_eq!(stored(&c, "users").await, 0);
    assert!(dead_letters(&c).await.is_empty());
    // Still serving.
    assert_eq!(
        publish(&c, 0, "users", vec![event("x", "{}")]).await.len(),
        1
    );
}
