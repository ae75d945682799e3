//! Retention across nodes and versions: the pruner's owner killed with SIGKILL in the middle of
//! a prune (a partition half-detached) is replaced by another node, which finishes the prune;
//! and topics with data in the plain tables of the layout before retention (made before the
//! migration, or by a node of an earlier version afterwards) move to partitions while a
//! producer keeps publishing, and retention then removes their old table too.

use crate::helpers::*;
use crate::retention::eventually;
use crate::webhook_cluster::ProcNode;
use eventrelay::auth::{ApiKeys, KeyType};
use eventrelay::proto::{self, TopicRetention};
use std::borrow::Cow;
use uuid::Uuid;

/// Events partition `table` of the partitions schema exists.
async fn exists(pool: &sqlx::PgPool, table: &str) -> bool {
    sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(format!("eventrelay_partitions.\"{table}\""))
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Whether any partition of `parent` is half-detached.
async fn half_detached(pool: &sqlx::PgPool, parent: &str) -> bool {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_inherits WHERE inhparent = to_regclass($1)
                        AND inhdetachpending)",
    )
    .bind(parent)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn the_pruners_owner_killed_mid_prune_is_replaced_and_the_prune_finished() {
    let db = TestDb::create().await;
    let env = [
        ("ER_RETENTION_INTERVAL_MS", "200"),
        ("ER_RETENTION_PARTITION_EVENTS", "4"),
        ("ER_RETENTION_DROP_PAUSE_MS", "20"),
    ];
    let mut nodes = vec![
        ProcNode::spawn_with(&db.url, "node-a", &env).await,
        ProcNode::spawn_with(&db.url, "node-b", &env).await,
    ];
    let pool = eventrelay::db::connect(&db.url, 4).await.unwrap();
    let admin = ApiKeys::new(pool.clone())
        .create(KeyType::Admin, "admin", &[], &[])
        .await
        .unwrap()
        .bearer_token()
        .unwrap();
    let mut api = nodes[0].client().await;
    let topic = api
        .create_topic(authed(
            &admin,
            proto::CreateTopicRequest {
                name: "pruned".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .topic
        .unwrap();
    let publish = |mut api: proto::event_relay_client::EventRelayClient<_>, n: usize| {
        let r = proto::PublishEventsRequest {
            topic: "pruned".into(),
            events: (0..n).map(|i| event(&format!("e{i}"), "{}")).collect(),
            durable: true,
            ..Default::default()
        };
        let req = authed(&admin, r);
        async move { api.publish_events(req).await.map(|r| r.into_inner().events) }
    };
    for _ in 0..12 {
        publish(api.clone(), 1).await.unwrap();
    }

    // A long reader, so the owner's detach waits with the partition half-detached.
    let mut reader = pool.begin().await.unwrap();
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .execute(&mut *reader)
        .await
        .unwrap();
    sqlx::query("SELECT count(*) FROM pruned_events")
        .execute(&mut *reader)
        .await
        .unwrap();
    api.update_topic(authed(
        &admin,
        proto::UpdateTopicRequest {
            id: topic.id.clone(),
            retention: Some(TopicRetention {
                max_events: 2,
                ..Default::default()
            }),
            ..Default::default()
        },
    ))
    .await
    .unwrap();
    eventually("a detach to wait", || async {
        half_detached(&pool, "pruned_events").await
    })
    .await;
    let (owner, epoch): (String, i64) = sqlx::query_as(
        "SELECT n.name, r.epoch FROM topic_retention r JOIN cluster_nodes n ON n.id = r.owner_node
         WHERE r.name = 'pruned'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let dead = if owner == "node-a" { 0 } else { 1 };
    nodes[dead].kill();
    reader.commit().await.unwrap();

    // The survivor takes the topic over (after the dead node's heartbeat expires) under a new
    // epoch, finishes the half-done detach and drops what lies below the mark.
    eventually("the partitions below the mark to be dropped", || async {
        !half_detached(&pool, "pruned_events").await
            && !exists(&pool, "pruned_e1").await
            && !exists(&pool, "pruned_e2").await
    })
    .await;
    let (owner_now, epoch_now): (String, i64) = sqlx::query_as(
        "SELECT n.name, r.epoch FROM topic_retention r JOIN cluster_nodes n ON n.id = r.owner_node
         WHERE r.name = 'pruned'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_ne!(owner_now, owner);
    assert!(epoch_now > epoch);
    let api = nodes[1 - dead].client().await;
    let next = publish(api.clone(), 1).await.unwrap();
    assert_eq!(next[0].offset64, 13);
    let pull = || {
        let mut api = api.clone();
        let req = authed(
            &admin,
            proto::PullEventsRequest {
                topic: "pruned".into(),
                ..Default::default()
            },
        );
        async move { api.pull_events(req).await.unwrap().into_inner() }
    };
    eventually(
        "the survivor to prune the new event's predecessors",
        || async { pull().await.first_offset == 12 },
    )
    .await;
    let r = pull().await;
    assert_eq!(
        r.events.iter().map(|e| e.offset64).collect::<Vec<_>>(),
        [12, 13]
    );
    drop(nodes);
}

/// The topic tables before retention, as nodes of the earlier version make them.
const PLAIN_DDL: &str = r#"
CREATE TABLE {t}_events (
    "offset" bigint PRIMARY KEY, id uuid NOT NULL, name text NOT NULL,
    topic_identifier text NOT NULL DEFAULT '', data jsonb NOT NULL,
    source text NOT NULL DEFAULT '', group_key text NOT NULL DEFAULT '',
    reference_key text NOT NULL DEFAULT '', trace_key text NOT NULL DEFAULT '',
    user_id text NOT NULL DEFAULT '', anonymous_id text NOT NULL DEFAULT '',
    occurred_at timestamptz NOT NULL, context jsonb NOT NULL DEFAULT '{}',
    inserted_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ON {t}_events (topic_identifier, "offset");
CREATE INDEX ON {t}_events (name, "offset");
CREATE TABLE {t}_deliveries (
    id uuid PRIMARY KEY, subscription_id uuid NOT NULL, event_offset bigint NOT NULL,
    event_id uuid NOT NULL, attempt integer NOT NULL, status text NOT NULL,
    response_status integer, error text, duration_ms integer NOT NULL DEFAULT 0,
    epoch bigint NOT NULL DEFAULT 0, attempted_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ON {t}_deliveries (subscription_id, event_offset);
INSERT INTO topics (id, name, last_offset) VALUES ('{id}', '{t}', {n});
INSERT INTO {t}_events ("offset", id, name, data, occurred_at)
    SELECT g, gen_random_uuid(), 'old', jsonb_build_object('g', g), now()
    FROM generate_series(1, {n}) g;
INSERT INTO {t}_deliveries (id, subscription_id, event_offset, event_id, attempt, status)
    SELECT gen_random_uuid(), gen_random_uuid(), g, gen_random_uuid(), 1, 'delivered'
    FROM generate_series(1, 3) g;
"#;

/// A topic with `n` events in the plain layout, as a node of the earlier version leaves it.
async fn plain_topic(pool: &sqlx::PgPool, name: &str, n: i64) -> Uuid {
    let id = Uuid::now_v7();
    let ddl = PLAIN_DDL
        .replace("{t}", name)
        .replace("{id}", &id.to_string())
        .replace("{n}", &n.to_string());
    sqlx::raw_sql(sqlx::AssertSqlSafe(ddl))
        .execute(pool)
        .await
        .unwrap();
    id
}

async fn partitioned(pool: &sqlx::PgPool, table: &str) -> bool {
    sqlx::query_scalar("SELECT relkind = 'p' FROM pg_class WHERE oid = to_regclass($1)")
        .bind(table)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn topics_with_data_in_plain_tables_move_to_partitions_while_publishing_goes_on() {
    // A database of the version before retention, with a topic holding 5,000 events.
    let db = TestDb::create().await;
    let pool = eventrelay::db::connect(&db.url, 4).await.unwrap();
    let before = sqlx::migrate::Migrator {
        migrations: Cow::Owned(
            eventrelay::db::MIGRATOR
                .iter()
                .filter(|m| m.version < 12)
                .cloned()
                .collect(),
        ),
        ..sqlx::migrate::Migrator::DEFAULT
    };
    before.run(&pool).await.unwrap();
    plain_topic(&pool, "legacy", 5_000).await;

    // The new version starts: it migrates, and the topic's pruner converts the tables.
    let mut config = eventrelay::Config::for_database(&db.url);
    config.db_pool_size = 4;
    config.retention_interval_ms = 200;
    config.retention_partition_events = 100;
    config.retention_drop_pause_ms = 20;
    let node = Node::start(config).await;
    let admin = ApiKeys::new(pool.clone())
        .create(KeyType::Admin, "admin", &[], &[])
        .await
        .unwrap()
        .bearer_token()
        .unwrap();
    // A producer publishes throughout; every publish must succeed.
    let producer = {
        let mut api = node.client().await;
        let admin = admin.clone();
        tokio::spawn(async move {
            let mut offsets = Vec::new();
            for i in 0..300 {
                let r = proto::PublishEventsRequest {
                    topic: "legacy".into(),
                    events: vec![event(&format!("new{i}"), "{}")],
                    durable: true,
                    ..Default::default()
                };
                let e = api
                    .publish_events(authed(&admin, r))
                    .await
                    .expect("publish");
                offsets.push(e.into_inner().events[0].offset64);
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            offsets
        })
    };
    eventually("the plain tables to become partitioned", || async {
        partitioned(&pool, "legacy_events").await && partitioned(&pool, "legacy_deliveries").await
    })
    .await;
    let offsets = producer.await.unwrap();
    assert_eq!(
        offsets,
        (5_001..=5_300).collect::<Vec<_>>(),
        "none lost, none skipped"
    );

    // Old rows stay where they were (partition 0), readable as before.
    let home: String = sqlx::query_scalar(
        "SELECT tableoid::regclass::text FROM legacy_events WHERE \"offset\" = 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(home, "eventrelay_partitions.legacy_e0");
    let attempts: i64 = sqlx::query_scalar("SELECT count(*) FROM legacy_deliveries")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(attempts, 3);
    let c = ClientOf(node.client().await, admin.clone());
    let all = c.pull(0).await;
    assert_eq!((all.first_offset, all.total_count64), (1, 5_300));

    // Offsets past the old table's bound (its end when the conversion began, plus ten
    // partitions) go to new
    // partitions; retention then removes the old table whole.
    let mut api = node.client().await;
    for _ in 0..2 {
        let r = proto::PublishEventsRequest {
            topic: "legacy".into(),
            events: (0..1000).map(|i| event(&format!("b{i}"), "{}")).collect(),
            durable: true,
            ..Default::default()
        };
        api.publish_events(authed(&admin, r)).await.unwrap();
    }
    let id: Uuid = sqlx::query_scalar("SELECT id FROM topics WHERE name = 'legacy'")
        .fetch_one(&pool)
        .await
        .unwrap();
    retain(&node, &admin, id, 50).await;
    eventually("the old table to be dropped", || async {
        !exists(&pool, "legacy_e0").await
    })
    .await;
    let r = c.pull(0).await;
    assert_eq!((r.first_offset, r.total_count64), (7_251, 50));

    // A topic made by a node of the earlier version after the upgrade began converts too.
    plain_topic(&pool, "late", 10).await;
    eventually("the late topic to become partitioned", || async {
        partitioned(&pool, "late_events").await && partitioned(&pool, "late_deliveries").await
    })
    .await;
    let span: i64 =
        sqlx::query_scalar("SELECT partition_span FROM topic_retention WHERE name = 'late'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        span, 100,
        "its retention row took the node's partition size"
    );
}

/// Pulls of `legacy` through one node.
struct ClientOf(
    proto::event_relay_client::EventRelayClient<tonic::transport::Channel>,
    String,
);

impl ClientOf {
    async fn pull(&self, after: i64) -> proto::PullEventsResponse {
        self.0
            .clone()
            .pull_events(authed(
                &self.1,
                proto::PullEventsRequest {
                    topic: "legacy".into(),
                    offset64: Some(after),
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner()
    }
}

/// Sets the topic's retention to its newest `n` events, through `node`.
async fn retain(node: &Node, admin: &str, id: Uuid, n: i64) {
    node.client()
        .await
        .update_topic(authed(
            admin,
            proto::UpdateTopicRequest {
                id: id.to_string(),
                retention: Some(TopicRetention {
                    max_events: n,
                    ..Default::default()
                }),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
}
