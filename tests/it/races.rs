//! Creating and dropping topics while others publish and pull: no half-made topic, no
//! orphaned table, every error a clean status, and the nodes keep serving.

use crate::helpers::*;
use eventrelay::proto::{
    CreateTopicRequest, DeleteTopicRequest, PublishEventsRequest, PullEventsRequest,
};
use std::sync::Arc;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn create_and_drop_while_publishing_and_pulling() {
    let c = Arc::new(TestCluster::start(2).await);
    let names = ["race_a", "race_b", "race_c"];
    let mut tasks = Vec::new();

    // Churners: create and drop the same topics over and over, on both nodes.
    for w in 0..2 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let mut api = c.client(w).await;
            for i in 0..15 {
                let name = names[(i + w) % names.len()];
                match api
                    .create_topic(authed(
                        &c.admin,
                        CreateTopicRequest {
                            name: name.into(),
                            ..Default::default()
                        },
                    ))
                    .await
                {
                    Ok(r) => {
                        let id = r.into_inner().topic.unwrap().id;
                        let d = api
                            .delete_topic(authed(&c.admin, DeleteTopicRequest { id }))
                            .await;
                        if let Err(s) = d {
                            assert_eq!(s.code(), Code::NotFound, "{s:?}");
                        }
                    }
                    Err(s) => assert_eq!(s.code(), Code::AlreadyExists, "{s:?}"),
                }
            }
        }));
    }
    // Publishers and pullers on the same names.
    for w in 0..4 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let mut api = c.client(w % 2).await;
            for i in 0..30 {
                let topic = names[(i + w) % names.len()].to_string();
                let events = vec![event("x", "{}"); 3];
                let p = api
                    .publish_events(authed(
                        &c.admin,
                        PublishEventsRequest {
                            topic: topic.clone(),
                            events,
                            durable: true,
                            ..Default::default()
                        },
                    ))
                    .await;
                // Published, or dead-lettered because the topic was gone: never an error.
                let stored = p
                    .expect("publish never fails on a racing drop")
                    .into_inner()
                    .events;
                assert!(stored.is_empty() || stored.len() == 3);
                let r = api
                    .pull_events(authed(
                        &c.admin,
                        PullEventsRequest {
                            topic,
                            ..Default::default()
                        },
                    ))
                    .await;
                if let Err(s) = r {
                    assert_eq!(s.code(), Code::NotFound, "{s:?}");
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }

    // Every events/deliveries table belongs to a live topic and every topic has both.
    let orphans: Vec<String> = sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public'
           AND (tablename LIKE '%\\_events' OR tablename LIKE '%\\_deliveries')
           AND regexp_replace(tablename, '_(events|deliveries)$', '') NOT IN (SELECT name FROM topics)",
    )
    .fetch_all(&c.pool)
    .await
    .unwrap();
    assert!(orphans.is_empty(), "orphaned tables: {orphans:?}");
    let incomplete: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM topics t WHERE to_regclass(t.name || '_events') IS NULL
            OR to_regclass(t.name || '_deliveries') IS NULL",
    )
    .fetch_one(&c.pool)
    .await
    .unwrap();
    assert_eq!(incomplete, 0);
    // Both nodes still serve.
    for n in 0..2 {
        create_topic(&c, &format!("after_{n}")).await;
        assert_eq!(
            publish(&c, n, &format!("after_{n}"), vec![event("x", "{}")])
                .await
                .len(),
            1
        );
    }
}
