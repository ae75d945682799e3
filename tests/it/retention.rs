//! Retention on real nodes: by count, age and size the low-water mark moves to exactly the
//! first event the policy keeps, partitions wholly below it are dropped, and nothing a webhook
//! subscription still has to deliver goes unless the topic says so (then the subscription
//! records the skipped range); pulls, streams and websocket joins from offset 0 start at the
//! first retained event and say so; UpdateTopic is admin-only and checked. Helpers here serve
//! the other `retention_*` files.

use crate::helpers::*;
use crate::live_support::{Ws, setup, stream_offsets};
use crate::receiver::Receiver;
use crate::webhooks::{deliveries, resume, subscription};
use eventrelay::auth::KeyType;
use eventrelay::proto::{self, PullEventsRequest, TopicRetention};
use serde_json::json;
use std::future::Future;
use std::time::Duration;
use tonic::Code;

/// Nodes whose pruners run every 100 ms, with events partitions of `span` offsets, that may
/// deliver webhooks to 127.0.0.1.
pub async fn retention_cluster(n: usize, span: u64) -> TestCluster {
    TestCluster::start_with(n, move |c| {
        c.retention_interval_ms = 100;
        c.retention_drop_pause_ms = 20;
        c.retention_partition_events = span;
        c.webhook_allowed_networks = vec!["127.0.0.0/8".parse().unwrap()];
        c.webhook_poll_ms = 200;
    })
    .await
}

/// Waits (bounded: a liveness deadline, not a timing) until `f` holds.
pub async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !f().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Creates a topic with a retention through the API.
pub async fn create_retained(c: &TestCluster, name: &str, r: TopicRetention) -> proto::Topic {
    c.client(0)
        .await
        .create_topic(authed(
            &c.admin,
            proto::CreateTopicRequest {
                name: name.into(),
                retention: Some(r),
                ..Default::default()
            },
        ))
        .await
        .expect("create topic")
        .into_inner()
        .topic
        .expect("topic")
}

/// Changes a topic's retention through the API.
pub async fn set_retention(c: &TestCluster, id: &str, r: TopicRetention) -> proto::Topic {
    c.client(0)
        .await
        .update_topic(authed(
            &c.admin,
            proto::UpdateTopicRequest {
                id: id.into(),
                retention: Some(r),
                ..Default::default()
            },
        ))
        .await
        .expect("update topic")
        .into_inner()
        .topic
        .expect("topic")
}

/// A pull of `topic` after `offset`.
pub async fn pull_from(c: &TestCluster, topic: &str, offset: i64) -> proto::PullEventsResponse {
    c.client(0)
        .await
        .pull_events(authed(
            &c.admin,
            PullEventsRequest {
                topic: topic.into(),
                offset64: Some(offset),
                batch_size: 1000,
                ..Default::default()
            },
        ))
        .await
        .expect("pull")
        .into_inner()
}

/// Waits until the topic's first retained offset is `want`.
pub async fn wait_first(c: &TestCluster, topic: &str, want: i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let now = pull_from(c, topic, 0).await.first_offset;
        if now == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{topic} retains from offset {now}, not {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The topic's events partitions now: (table, half-detached).
pub async fn children(c: &TestCluster, parent: &str) -> Vec<(String, bool)> {
    sqlx::query_as(
        "SELECT c.relname::text, i.inhdetachpending FROM pg_inherits i
         JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass($1)
         ORDER BY 1",
    )
    .bind(parent)
    .fetch_all(&c.pool)
    .await
    .unwrap()
}

/// Whether a table of the partitions schema exists (attached or not).
pub async fn partition_exists(c: &TestCluster, table: &str) -> bool {
    sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(format!("eventrelay_partitions.\"{table}\""))
        .fetch_one(&c.pool)
        .await
        .unwrap()
}

fn offsets(r: &proto::PullEventsResponse) -> Vec<i64> {
    r.events.iter().map(|e| e.offset64).collect()
}

/// Publishes `n` one-event requests.
pub async fn publish_each(c: &TestCluster, topic: &str, n: usize) {
    for i in 0..n {
        publish(c, 0, topic, vec![event(&format!("e{i}"), "{}")]).await;
    }
}

#[tokio::test]
async fn by_count_keeps_the_newest_and_drops_partitions_wholly_below() {
    let c = retention_cluster(1, 4).await;
    let counted = TopicRetention {
        max_events: 3,
        ..Default::default()
    };
    let t = create_retained(&c, "counted", counted).await;
    assert_eq!(t.retention.as_ref().map(|r| r.max_events), Some(3));
    publish_each(&c, "counted", 10).await;
    wait_first(&c, "counted", 8).await;

    let r = pull_from(&c, "counted", 0).await;
    assert_eq!(offsets(&r), [8, 9, 10]);
    assert_eq!(
        (r.first_offset, r.total_count64, r.previous_offset64),
        (8, 3, 0)
    );
    // Partition 1 ([1, 5)) is wholly below the mark and goes; partition 2 ([5, 9)) holds
    // offset 8 and stays, with 5-7 in it still on disk but never read again.
    eventually("partition 1 to be dropped", || async {
        !partition_exists(&c, "counted_e1").await
    })
    .await;
    assert!(partition_exists(&c, "counted_e2").await);
    let on_disk: i64 = sqlx::query_scalar("SELECT count(*) FROM eventrelay_partitions.counted_e2")
        .fetch_one(&c.pool)
        .await
        .unwrap();
    assert_eq!(on_disk, 4);
    assert_eq!(offsets(&pull_from(&c, "counted", 5).await), [8, 9, 10]);
    // Offsets are never reused.
    let next = publish(&c, 0, "counted", vec![event("after", "{}")]).await;
    assert_eq!(next[0].offset64, 11);
    let listed = c
        .client(0)
        .await
        .list_topics(authed(&c.admin, proto::ListTopicsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let stats = listed.topics[0].stats.clone().expect("stats");
    assert!(stats.pruned_events >= 7, "{stats:?}");
    assert_eq!(stats.last_offset, 11);
}

#[tokio::test]
async fn by_age_removes_exactly_the_events_stored_before_the_cutoff() {
    let c = retention_cluster(1, 4).await;
    let t = create_topic(&c, "aged").await;
    publish(
        &c,
        0,
        "aged",
        (0..6).map(|i| event(&format!("e{i}"), "{}")).collect(),
    )
    .await;
    // Four events stored two hours ago, two now.
    sqlx::query(
        "UPDATE aged_events SET inserted_at = now() - interval '2 hours' WHERE \"offset\" <= 4",
    )
    .execute(&c.pool)
    .await
    .unwrap();
    let hour = TopicRetention {
        max_age_seconds: 3_600,
        ..Default::default()
    };
    let updated = set_retention(&c, &t.id, hour).await;
    assert_eq!(updated.retention.map(|r| r.max_age_seconds), Some(3_600));
    wait_first(&c, "aged", 5).await;
    assert_eq!(offsets(&pull_from(&c, "aged", 0).await), [5, 6]);
}

#[tokio::test]
async fn by_size_keeps_the_newest_events_that_fit() {
    let c = retention_cluster(1, 8).await;
    let t = create_topic(&c, "sized").await;
    let events = (1..=20)
        .map(|i| event("e", &format!("{{\"pad\": \"{}\"}}", "x".repeat(40 * i))))
        .collect();
    publish(&c, 0, "sized", events).await;
    // The stored size of each row, as retention counts it.
    let sizes: Vec<i64> = sqlx::query_scalar(
        "SELECT pg_column_size(e.*)::bigint FROM sized_events e ORDER BY \"offset\"",
    )
    .fetch_all(&c.pool)
    .await
    .unwrap();
    // One byte short of what offsets 12..=20 take: 13..=20 fit, 12 does not.
    let budget: i64 = sizes[11..].iter().sum::<i64>() - 1;
    let by_size = TopicRetention {
        max_bytes: budget,
        ..Default::default()
    };
    set_retention(&c, &t.id, by_size).await;
    wait_first(&c, "sized", 13).await;
    assert_eq!(
        offsets(&pull_from(&c, "sized", 0).await),
        (13..=20).collect::<Vec<_>>()
    );
}

/// A webhook subscription created paused: its cursor holds retention until the topic drops
/// undelivered events.
async fn paused_webhook(c: &TestCluster, topic: &str, url: &str) -> proto::Subscription {
    c.client(0)
        .await
        .create_subscription(authed(
            &c.admin,
            proto::CreateSubscriptionRequest {
                subscription: Some(proto::NewSubscription {
                    name: format!("{topic}_hook"),
                    topic_name: topic.into(),
                    push: true,
                    paused: true,
                    config: [("endpoint_url".to_string(), url.to_string())].into(),
                    subscription_type: "webhook".into(),
                    ..Default::default()
                }),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .subscription
        .unwrap()
}

/// Waits for two more prune steps of the topic (each rewrites its statistics).
async fn two_steps(c: &TestCluster, topic: &str) {
    for _ in 0..2 {
        let before: chrono::DateTime<chrono::Utc> =
            sqlx::query_scalar("SELECT updated_at FROM topic_retention WHERE name = $1")
                .bind(topic)
                .fetch_one(&c.pool)
                .await
                .unwrap();
        eventually("a prune step", || async {
            let now: chrono::DateTime<chrono::Utc> =
                sqlx::query_scalar("SELECT updated_at FROM topic_retention WHERE name = $1")
                    .bind(topic)
                    .fetch_one(&c.pool)
                    .await
                    .unwrap();
            now > before
        })
        .await;
    }
}

#[tokio::test]
async fn undelivered_events_are_kept_unless_the_topic_drops_them_and_then_skips_are_recorded() {
    let c = retention_cluster(1, 4).await;
    let rx = Receiver::start().await;
    let keep_two = TopicRetention {
        max_events: 2,
        ..Default::default()
    };
    let t = create_retained(&c, "held", keep_two).await;
    let sub = paused_webhook(&c, "held", &rx.url("/hook")).await;
    publish_each(&c, "held", 6).await;
    two_steps(&c, "held").await;
    assert_eq!(
        pull_from(&c, "held", 0).await.first_offset,
        1,
        "the paused subscription has delivered nothing: retention waits for it"
    );

    let dropping = TopicRetention {
        max_events: 2,
        drop_undelivered: true,
        ..Default::default()
    };
    set_retention(&c, &t.id, dropping).await;
    wait_first(&c, "held", 5).await;
    resume(&c, &sub.id).await;
    rx.wait_for(20, "events 5 and 6", |log| log.len() >= 2)
        .await;
    assert_eq!(
        rx.offsets(&sub.id),
        [5, 6],
        "the removed events are not sent"
    );
    let d = deliveries(&c, &sub.id).await;
    let skip = d
        .deliveries
        .iter()
        .find(|d| d.status == "skipped")
        .expect("a skipped record");
    assert_eq!(skip.event_offset, 4);
    assert!(skip.error.contains("offsets 1-4"), "{}", skip.error);
    eventually("the cursor to reach 6", || async {
        deliveries(&c, &sub.id).await.delivered_offset == 6
    })
    .await;
}

#[tokio::test]
async fn a_cursor_behind_retention_pauses_on_a_topic_that_waits_and_reset_clamps() {
    let c = retention_cluster(1, 4).await;
    let rx = Receiver::start().await;
    create_topic(&c, "behind").await;
    let sub = paused_webhook(&c, "behind", &rx.url("/hook")).await;
    publish_each(&c, "behind", 6).await;
    // What a reset racing a prune on a node of an earlier version could leave: the mark past
    // the cursor of a topic that does not drop undelivered events.
    sqlx::query("UPDATE topic_retention SET first_offset = 4 WHERE name = 'behind'")
        .execute(&c.pool)
        .await
        .unwrap();
    resume(&c, &sub.id).await;
    eventually("the subscription to pause", || async {
        subscription(&c, &sub.id).await.paused
    })
    .await;
    let d = deliveries(&c, &sub.id).await;
    assert_eq!(d.deliveries[0].status, "behind_retention");
    assert!(d.deliveries[0].error.contains("offsets 1-3"));
    assert!(rx.log().is_empty(), "nothing was delivered past the gap");

    // Replaying from 0 means from the first retained event.
    c.client(0)
        .await
        .reset_subscription_cursor(authed(
            &c.admin,
            proto::ResetSubscriptionCursorRequest {
                id: sub.id.clone(),
                offset: 0,
            },
        ))
        .await
        .unwrap();
    resume(&c, &sub.id).await;
    rx.wait_for(20, "events 4 to 6", |log| log.len() >= 3).await;
    assert_eq!(rx.offsets(&sub.id), [4, 5, 6]);
}

#[tokio::test]
async fn pull_stream_and_join_from_zero_start_at_the_first_retained_event() {
    let c = retention_cluster(1, 4).await;
    let s = setup(&c, "readers", "").await;
    let t = &list_topic(&c, "readers").await;
    publish_each(&c, "readers", 10).await;
    let three = TopicRetention {
        max_events: 3,
        ..Default::default()
    };
    set_retention(&c, &t.id, three).await;
    wait_first(&c, "readers", 8).await;

    let r = pull_from(&c, "readers", 0).await;
    assert_eq!(
        (offsets(&r), r.first_offset, r.total_count),
        (vec![8, 9, 10], 8, 3)
    );

    let res = c
        .client(0)
        .await
        .stream_events(authed(
            &s.consumer_bearer,
            proto::StreamEventsRequest {
                topic: "readers".into(),
                after_offset: Some(0),
                ..Default::default()
            },
        ))
        .await
        .expect("stream");
    let header = res
        .metadata()
        .get("first-offset")
        .map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(header.as_deref(), Some("8"));
    let mut stream = res.into_inner();
    assert_eq!(stream_offsets(&mut stream, 3).await, [8, 9, 10]);

    let mut ws = Ws::connect(c.nodes[0].http, true).await;
    let reply = ws
        .join(
            s.sub,
            json!({"consumer_token": s.consumer_token, "after_offset": 0}),
        )
        .await;
    assert_eq!(reply["status"], "ok", "{reply}");
    assert_eq!(reply["response"]["first_offset"], 8, "{reply}");
    assert_eq!(ws.offsets(3).await, [8, 9, 10]);
}

/// A topic as ListTopics shows it.
pub async fn list_topic(c: &TestCluster, name: &str) -> proto::Topic {
    c.client(0)
        .await
        .list_topics(authed(&c.admin, proto::ListTopicsRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .topics
        .into_iter()
        .find(|t| t.name == name)
        .expect("listed")
}

#[tokio::test]
async fn update_topic_is_for_admins_and_checks_its_input_and_metrics_show_retention() {
    let c = retention_cluster(1, 4).await;
    let t = create_topic(&c, "ruled").await;
    publish_each(&c, "ruled", 3).await;
    let (producer, _) = c.key(KeyType::Producer, &["ruled"], &[]).await;
    let ask = |token: String, id: String, r: Option<TopicRetention>| {
        let c = &c;
        async move {
            c.client(0)
                .await
                .update_topic(authed(
                    &token,
                    proto::UpdateTopicRequest {
                        id,
                        retention: r,
                        ..Default::default()
                    },
                ))
                .await
        }
    };
    let some = Some(TopicRetention {
        max_events: 1,
        ..Default::default()
    });
    assert_code(
        ask(producer, t.id.clone(), some).await,
        Code::PermissionDenied,
        None,
    );
    let negative = Some(TopicRetention {
        max_bytes: -1,
        ..Default::default()
    });
    assert_code(
        ask(c.admin.clone(), t.id.clone(), negative).await,
        Code::InvalidArgument,
        None,
    );
    assert_code(
        ask(c.admin.clone(), t.id.clone(), None).await,
        Code::InvalidArgument,
        None,
    );
    let unknown = uuid::Uuid::new_v4().to_string();
    assert_code(
        ask(c.admin.clone(), unknown, some).await,
        Code::NotFound,
        None,
    );
    assert_code(
        ask(c.admin.clone(), "nope".into(), some).await,
        Code::InvalidArgument,
        None,
    );

    let listed = list_topic(&c, "ruled").await;
    assert_eq!(
        listed.retention,
        Some(TopicRetention::default()),
        "forever by default"
    );
    assert_eq!(
        listed.stats.map(|s| (s.first_offset, s.event_count)),
        Some((1, 3))
    );

    let body = reqwest::get(format!("http://{}/metrics", c.nodes[0].http))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for want in [
        r#"eventrelay_topic_events{topic="ruled"} 3"#,
        r#"eventrelay_topic_first_offset{topic="ruled"} 1"#,
        "eventrelay_owned_topics",
        "eventrelay_topic_bytes",
        r#"eventrelay_topic_pruned_events{topic="ruled"} 0"#,
    ] {
        assert!(body.contains(want), "{want} in /metrics");
    }
}
