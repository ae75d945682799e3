//! The real `eventrelay` binary's commands, run as a child process against a private test
//! database: `api-key create` prints one JSON object whose bearer token works on a node of the
//! same database, `migrate` applies the schema (twice is fine), and bad input (an unknown
//! `--type`, an invalid topic) exits non-zero with a clear message and stores nothing.

use crate::helpers::*;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use eventrelay::proto;
use serde_json::Value;
use std::process::Output;
use std::time::Duration;
use tonic::Code;
use uuid::Uuid;

/// Runs the binary with `DATABASE_URL` set, default logging, and a bound on its run time.
async fn run(database_url: &str, args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_eventrelay"));
    cmd.args(args)
        .env("DATABASE_URL", database_url)
        .env_remove("RUST_LOG")
        .env_remove("REDIS_URL")
        .kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("eventrelay {args:?} did not finish within 60 s"))
        .expect("run the eventrelay binary")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

async fn key_count(url: &str) -> i64 {
    let pool = eventrelay::db::connect(url, 4).await.expect("connect");
    // Whether or not the failed command got as far as migrating, count on a migrated schema.
    eventrelay::db::migrate(&pool).await.expect("migrate");
    count_rows(&pool, "api_keys").await
}

#[tokio::test(flavor = "multi_thread")]
async fn api_key_create_prints_one_json_object_whose_token_works() {
    let c = TestCluster::start(1).await;
    create_topic(&c, "users").await;
    create_topic(&c, "orders").await;
    let args = [
        "api-key",
        "create",
        "--type",
        "producer",
        "--topics",
        "users,orders:42",
        "--name",
        "ci",
    ];
    let out = run(&c.db.url, &args).await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success(),
        "exit {:?}; stderr: {stderr}",
        out.status
    );

    // Exactly one JSON object on stdout (scripts pipe it to jq): nothing else, no log lines.
    let v: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}): {stdout:?}"));
    assert_eq!(stdout.trim().lines().count(), 1, "stdout: {stdout:?}");
    let obj = v.as_object().expect("a JSON object");
    let mut fields: Vec<&str> = obj.keys().map(String::as_str).collect();
    fields.sort();
    assert_eq!(fields, ["bearer_token", "id", "key", "secret", "type"]);
    let field = |k: &str| {
        v[k].as_str()
            .unwrap_or_else(|| panic!("{k} is a string: {v}"))
    };
    let id = Uuid::parse_str(field("id")).expect("id is a UUID");
    let (key, secret, token) = (field("key"), field("secret"), field("bearer_token"));
    assert_eq!((key.len(), secret.len()), (42, 64), "{v}");
    assert_eq!(field("type"), "producer");
    assert_eq!(token, STANDARD.encode(format!("{key}:{secret}")));

    // Stored with its name and grants.
    let (name, key_type): (String, String) =
        sqlx::query_as("SELECT name, key_type FROM api_keys WHERE id = $1")
            .bind(id)
            .fetch_one(&c.pool)
            .await
            .expect("the key is stored");
    assert_eq!((name.as_str(), key_type.as_str()), ("ci", "producer"));
    let grants: Vec<(String, String)> = sqlx::query_as(
        "SELECT topic_name, topic_identifier FROM api_key_topics WHERE api_key_id = $1
         ORDER BY topic_name",
    )
    .bind(id)
    .fetch_all(&c.pool)
    .await
    .expect("grants");
    let grants: Vec<(&str, &str)> = grants
        .iter()
        .map(|(n, i)| (n.as_str(), i.as_str()))
        .collect();
    assert_eq!(grants, [("orders", "42"), ("users", "")]);

    // The token works on a node of the same database, for exactly those topics.
    let mut cl = c.client(0).await;
    for topic in ["users", "users:7", "orders:42"] {
        let r = proto::PublishEventsRequest {
            topic: topic.into(),
            events: vec![event("user.created", r#"{"id": 1}"#)],
            durable: true,
            ..Default::default()
        };
        let stored = cl
            .publish_events(authed(token, r))
            .await
            .unwrap_or_else(|s| panic!("publish to {topic} with the CLI token: {s:?}"));
        let stored = stored.into_inner().events;
        assert_eq!(stored.len(), 1, "{topic}");
        assert_eq!(stored[0].topic, topic);
    }
    for topic in ["orders", "orders:43"] {
        let r = proto::PublishEventsRequest {
            topic: topic.into(),
            events: vec![event("user.created", "{}")],
            durable: true,
            ..Default::default()
        };
        let refused = cl.publish_events(authed(token, r)).await;
        assert_code(refused, Code::PermissionDenied, None);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn migrate_applies_the_schema_and_can_run_again() {
    let db = TestDb::create().await;
    for run_no in 1..=2 {
        let out = run(&db.url, &["migrate"]).await;
        assert!(
            out.status.success(),
            "run {run_no}: exit {:?}; stderr: {}",
            out.status,
            text(&out.stderr)
        );
        assert!(
            text(&out.stdout).contains("migrations applied"),
            "run {run_no}"
        );
    }
    let pool = eventrelay::db::connect(&db.url, 4).await.expect("connect");
    let mut tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public'
         AND table_name = ANY($1)",
    )
    .bind([
        "topics",
        "subscriptions",
        "api_keys",
        "api_key_topics",
        "api_key_subscriptions",
        "dead_letters",
    ])
    .fetch_all(&pool)
    .await
    .expect("list tables");
    tables.sort();
    assert_eq!(
        tables,
        [
            "api_key_subscriptions",
            "api_key_topics",
            "api_keys",
            "dead_letters",
            "subscriptions",
            "topics"
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn api_key_create_refuses_bad_input_clearly() {
    let db = TestDb::create().await;
    let out = run(&db.url, &["api-key", "create", "--type", "superuser"]).await;
    let stderr = text(&out.stderr);
    assert!(
        !out.status.success(),
        "an invalid --type must fail; stdout: {}",
        text(&out.stdout)
    );
    assert!(
        stderr.contains("unknown key type \"superuser\"")
            && stderr.contains("admin, producer or consumer"),
        "stderr: {stderr}"
    );
    assert!(
        !text(&out.stdout).contains("bearer_token"),
        "no key is printed"
    );

    let out = run(
        &db.url,
        &[
            "api-key", "create", "--type", "producer", "--topics", "Users!",
        ],
    )
    .await;
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "an invalid topic must fail");
    assert!(
        stderr.contains("Topic name may only contain"),
        "stderr: {stderr}"
    );

    assert_eq!(key_count(&db.url).await, 0, "nothing was stored");
}
