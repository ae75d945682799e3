//! PullEvents: keyset batches with the original's paging numbers, identifier scoping,
//! filters over columns and `data.<path>`, and refused bad input.

use crate::helpers::*;
use eventrelay::proto::{PullEventsFilter, PullEventsRequest, PullEventsResponse};
use tonic::Code;

fn filter(field: &str, comparison: &str, value: &str) -> PullEventsFilter {
    PullEventsFilter {
        field: field.into(),
        comparison: comparison.into(),
        value: value.into(),
    }
}

async fn pull(
    c: &TestCluster,
    topic: &str,
    batch_size: i32,
    offset: i32,
    filters: Vec<PullEventsFilter>,
) -> PullEventsResponse {
    c.client(0)
        .await
        .pull_events(authed(
            &c.admin,
            PullEventsRequest {
                topic: topic.into(),
                batch_size,
                offset,
                filters,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
}

fn offsets(r: &PullEventsResponse) -> Vec<i32> {
    r.events.iter().map(|e| e.offset).collect()
}

#[tokio::test]
async fn batches_and_paging_numbers() {
    let c = TestCluster::start(1).await;
    create_topic(&c, "users").await;
    let events = (0..25)
        .map(|i| event("e", &format!("{{\"i\": {i}}}")))
        .collect();
    publish(&c, 0, "users", events).await;

    let first = pull(&c, "users", 10, 0, vec![]).await;
    assert_eq!(offsets(&first), (1..=10).collect::<Vec<_>>());
    assert_eq!(
        (
            first.total_count,
            first.next_offset,
            first.previous_offset,
            first.total_batches
        ),
        (25, 10, 0, 3)
    );
    let second = pull(&c, "users", 10, first.next_offset, vec![]).await;
    assert_eq!(offsets(&second), (11..=20).collect::<Vec<_>>());
    assert_eq!((second.next_offset, second.previous_offset), (20, 0));
    let third = pull(&c, "users", 10, second.next_offset, vec![]).await;
    assert_eq!(offsets(&third), (21..=25).collect::<Vec<_>>());
    assert_eq!((third.next_offset, third.previous_offset), (0, 10));
    let back = pull(&c, "users", 10, third.previous_offset, vec![]).await;
    assert_eq!(offsets(&back), offsets(&second));

    // Defaults: batch 0 means 100; more than 1000 is capped.
    let all = pull(&c, "users", 0, 0, vec![]).await;
    assert_eq!(
        (all.events.len(), all.total_batches, all.next_offset),
        (25, 1, 0)
    );
    let capped = pull(&c, "users", 5000, 0, vec![]).await;
    assert_eq!(capped.total_batches, 1);
    let past = pull(&c, "users", 10, 1000, vec![]).await;
    assert!(past.events.is_empty());
    assert_eq!(past.total_count, 25);
}

#[tokio::test]
async fn identifiers_scope_reads() {
    let c = TestCluster::start(1).await;
    create_topic(&c, "users").await;
    publish(&c, 0, "users:1", vec![event("a", "{}"), event("b", "{}")]).await;
    publish(&c, 0, "users:2", vec![event("c", "{}")]).await;
    publish(&c, 0, "users", vec![event("d", "{}")]).await;
    let one = pull(&c, "users:1", 0, 0, vec![]).await;
    assert_eq!(offsets(&one), [1, 2]);
    assert!(one.events.iter().all(|e| e.topic == "users:1"));
    assert_eq!(one.total_count, 2);
    let two = pull(&c, "users:2", 0, 0, vec![]).await;
    assert_eq!((offsets(&two), two.total_count), (vec![3], 1));
    assert_eq!(pull(&c, "users", 0, 0, vec![]).await.events.len(), 4);
}

#[tokio::test]
async fn filters_on_columns_and_data_paths() {
    let c = TestCluster::start(1).await;
    create_topic(&c, "orders").await;
    let mut events = Vec::new();
    for i in 1..=6 {
        let mut e = event(
            if i % 2 == 0 {
                "order.paid"
            } else {
                "order.created"
            },
            &format!(
                r#"{{"total": {}, "customer": {{"name": "c{}"}}, "code": "{i}"}}"#,
                i * 10,
                i % 3
            ),
        );
        e.user_id = format!("u{}", i % 2);
        e.occurred_at = format!("2024-01-0{i}T00:00:00Z");
        events.push(e);
    }
    publish(&c, 0, "orders", events).await;
    let cases: Vec<(PullEventsFilter, Vec<i32>)> = vec![
        (filter("name", "==", "order.paid"), vec![2, 4, 6]),
        (filter("name", "!=", "order.paid"), vec![1, 3, 5]),
        (filter("user_id", "equal", "u1"), vec![1, 3, 5]),
        (filter("offset", ">", "4"), vec![5, 6]),
        (filter("offset", "<=", "2"), vec![1, 2]),
        (
            filter("occurred_at", ">=", "2024-01-05T00:00:00Z"),
            vec![5, 6],
        ),
        (filter("data.total", ">", "30"), vec![4, 5, 6]),
        (filter("data.total", "<", "30"), vec![1, 2]),
        (filter("data.total", "==", "20"), vec![2]),
        (filter("data.customer.name", "==", "c0"), vec![3, 6]),
        (filter("data.code", "==", "4"), vec![4]),
        (filter("data.missing", "==", "x"), vec![]),
    ];
    for (f, want) in cases {
        let desc = format!("{} {} {}", f.field, f.comparison, f.value);
        let r = pull(&c, "orders", 0, 0, vec![f]).await;
        assert_eq!(offsets(&r), want, "{desc}");
        assert_eq!(r.total_count as usize, want.len(), "{desc}");
    }
    let both = pull(
        &c,
        "orders",
        0,
        0,
        vec![
            filter("name", "==", "order.paid"),
            filter("data.total", ">=", "40"),
        ],
    )
    .await;
    assert_eq!(offsets(&both), [4, 6]);
    // Filtered paging: previous/next walk the filtered set.
    let page = pull(&c, "orders", 1, 2, vec![filter("name", "==", "order.paid")]).await;
    assert_eq!(
        (
            offsets(&page),
            page.next_offset,
            page.previous_offset,
            page.total_batches
        ),
        (vec![4], 4, 0, 3)
    );
}

#[tokio::test]
async fn bad_pulls_are_refused() {
    let c = TestCluster::start(1).await;
    create_topic(&c, "users").await;
    let mut api = c.client(0).await;
    let bad = [
        PullEventsRequest {
            topic: "users".into(),
            filters: vec![filter("nope", "==", "x")],
            ..Default::default()
        },
        PullEventsRequest {
            topic: "users".into(),
            filters: vec![filter("name", "like", "x")],
            ..Default::default()
        },
        PullEventsRequest {
            topic: "users".into(),
            filters: vec![filter("offset", ">", "x")],
            ..Default::default()
        },
        PullEventsRequest {
            topic: "users".into(),
            offset: -1,
            ..Default::default()
        },
        PullEventsRequest {
            topic: "users".into(),
            batch_size: -5,
            ..Default::default()
        },
        PullEventsRequest {
            topic: "".into(),
            ..Default::default()
        },
        PullEventsRequest {
            topic: "users\"; drop table topics; --".into(),
            ..Default::default()
        },
    ];
    for r in bad {
        assert_code(
            api.pull_events(authed(&c.admin, r)).await,
            Code::InvalidArgument,
            None,
        );
    }
    assert_code(
        api.pull_events(authed(
            &c.admin,
            PullEventsRequest {
                topic: "nosuch".into(),
                ..Default::default()
            },
        ))
        .await,
        Code::NotFound,
        Some("Topic not found"),
    );
}

#[tokio::test]
async fn offsets_past_2_pow_31_are_exact_in_the_64_bit_fields() {
    let c = TestCluster::start(1).await;
    create_topic(&c, "big").await;
    // A topic that has already stored three billion events (only its counter is moved).
    let base: i64 = 3_000_000_000;
    sqlx::query("UPDATE topics SET last_offset = $1 WHERE name = 'big'")
        .bind(base)
        .execute(&c.pool)
        .await
        .unwrap();
    let stored = publish(
        &c,
        0,
        "big",
        (0..3).map(|i| event(&format!("e{i}"), "{}")).collect(),
    )
    .await;
    let exact: Vec<i64> = stored.iter().map(|e| e.offset64).collect();
    assert_eq!(exact, vec![base + 1, base + 2, base + 3]);
    // The old 32-bit field stays at its largest value instead of wrapping.
    assert!(stored.iter().all(|e| e.offset == i32::MAX));

    let r = c
        .client(0)
        .await
        .pull_events(authed(
            &c.admin,
            PullEventsRequest {
                topic: "big".into(),
                batch_size: 1,
                offset64: Some(base + 1),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let got: Vec<i64> = r.events.iter().map(|e| e.offset64).collect();
    assert_eq!(got, vec![base + 2]);
    assert_eq!(r.next_offset64, base + 2);
    assert_eq!(r.next_offset, i32::MAX);
    assert_eq!(r.total_count64, base + 3);
    assert_eq!(r.total_count, i32::MAX);
}
