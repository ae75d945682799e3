//! Topics over gRPC: create, list with pagination, delete, the tables behind them, and every
//! bad input (SQL-looking names, too long, duplicates, unknown and malformed ids).

use crate::helpers::*;
use eventrelay::proto::{CreateTopicRequest, DeleteTopicRequest, ListTopicsRequest};
use tonic::Code;

async fn tables(c: &TestCluster) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public'
         AND (tablename LIKE '%\\_events' OR tablename LIKE '%\\_deliveries') ORDER BY 1",
    )
    .fetch_all(&c.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn create_list_delete_with_tables() {
    let c = TestCluster::start(1).await;
    let mut api = c.client(0).await;
    let users = create_topic(&c, "users").await;
    assert_eq!(users.name, "users");
    assert!(uuid::Uuid::parse_str(&users.id).is_ok());
    create_topic(&c, "metrics").await;
    assert_eq!(
        tables(&c).await,
        [
            "metrics_deliveries",
            "metrics_events",
            "users_deliveries",
            "users_events"
        ]
    );

    let list = api
        .list_topics(authed(&c.admin, ListTopicsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let names: Vec<_> = list.topics.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["metrics", "users"]);
    assert_eq!(
        (list.total_count, list.next_page, list.total_pages),
        (2, 0, 1)
    );

    let deleted = api
        .delete_topic(authed(
            &c.admin,
            DeleteTopicRequest {
                id: users.id.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .topic
        .unwrap();
    assert_eq!(deleted.name, "users");
    assert_eq!(tables(&c).await, ["metrics_deliveries", "metrics_events"]);
    assert_code(
        api.delete_topic(authed(&c.admin, DeleteTopicRequest { id: users.id }))
            .await,
        Code::NotFound,
        Some("Topic not found"),
    );
    // A dropped topic can be created again, empty.
    create_topic(&c, "users").await;
}

#[tokio::test]
async fn pagination() {
    let c = TestCluster::start(1).await;
    for i in 0..5 {
        create_topic(&c, &format!("t{i}")).await;
    }
    let mut api = c.client(0).await;
    let page = |page, page_size| authed(&c.admin, ListTopicsRequest { page, page_size });
    let p1 = api.list_topics(page(0, 2)).await.unwrap().into_inner();
    let names: Vec<_> = p1.topics.iter().map(|t| t.name.clone()).collect();
    assert_eq!(names, ["t0", "t1"]);
    assert_eq!(
        (
            p1.next_page,
            p1.previous_page,
            p1.total_pages,
            p1.total_count
        ),
        (2, 0, 3, 5)
    );
    let p3 = api.list_topics(page(3, 2)).await.unwrap().into_inner();
    assert_eq!(p3.topics.len(), 1);
    assert_eq!((p3.next_page, p3.previous_page), (0, 2));
}

#[tokio::test]
async fn bad_input_is_refused_and_nothing_is_half_made() {
    let c = TestCluster::start(1).await;
    let mut api = c.client(0).await;
    create_topic(&c, "users").await;
    assert_code(
        api.create_topic(authed(
            &c.admin,
            CreateTopicRequest {
                name: "users".into(),
                ..Default::default()
            },
        ))
        .await,
        Code::AlreadyExists,
        Some("Topic already exists"),
    );
    let long = "a".repeat(51);
    let bad = [
        "",
        "Users",
        "users; DROP TABLE topics; --",
        "users\"_events",
        "users-events",
        "ünicode",
        long.as_str(),
        "users:123",
    ];
    for name in bad {
        assert_code(
            api.create_topic(authed(
                &c.admin,
                CreateTopicRequest {
                    name: name.into(),
                    ..Default::default()
                },
            ))
            .await,
            Code::InvalidArgument,
            None,
        );
    }
    for id in ["", "not-a-uuid", "123", "'; drop table topics; --"] {
        assert_code(
            api.delete_topic(authed(&c.admin, DeleteTopicRequest { id: id.into() }))
                .await,
            Code::InvalidArgument,
            None,
        );
    }
    assert_code(
        api.delete_topic(authed(
            &c.admin,
            DeleteTopicRequest {
                id: uuid::Uuid::new_v4().to_string(),
            },
        ))
        .await,
        Code::NotFound,
        Some("Topic not found"),
    );
    assert_eq!(tables(&c).await, ["users_deliveries", "users_events"]);
    // The node still serves.
    let list = api
        .list_topics(authed(&c.admin, ListTopicsRequest::default()))
        .await
        .unwrap();
    assert_eq!(list.into_inner().topics.len(), 1);
}

/// The database's own guard on topic names (migration 0006: triggers instead of a CHECK that
/// ran on every update of a topic row): a row with a bad name cannot be inserted or renamed
/// into one, whoever writes it, while the mark (`last_offset`) moves freely.
#[tokio::test]
async fn database_refuses_bad_topic_names_itself() {
    let c = TestCluster::start(1).await;
    create_topic(&c, "users").await;
    // A topic nothing references yet, so a rename is not stopped by a foreign key first.
    sqlx::query("INSERT INTO topics (id, name) VALUES (gen_random_uuid(), 'spare')")
        .execute(&c.pool)
        .await
        .expect("a valid name is accepted");
    for bad in [
        "Users",
        "users; DROP TABLE topics; --",
        "a-b",
        &"a".repeat(51),
    ] {
        let inserted = sqlx::query("INSERT INTO topics (id, name) VALUES (gen_random_uuid(), $1)")
            .bind(bad)
            .execute(&c.pool)
            .await;
        let renamed = sqlx::query("UPDATE topics SET name = $1 WHERE name = 'spare'")
            .bind(bad)
            .execute(&c.pool)
            .await;
        for result in [inserted, renamed] {
            let err = result.expect_err(bad);
            let db = err.as_database_error().expect("a database error");
            assert_eq!(db.code().as_deref(), Some("23514"), "{bad}: {db}");
        }
    }
    sqlx::query("UPDATE topics SET last_offset = last_offset + 5 WHERE name = 'users'")
        .execute(&c.pool)
        .await
        .expect("moving the mark is not checked");
    let names: Vec<String> = sqlx::query_scalar("SELECT name FROM topics ORDER BY name")
        .fetch_all(&c.pool)
        .await
        .unwrap();
    assert_eq!(names, ["spare", "users"]);
}
