//! API-key management over gRPC: CreateApiKey output (key, secret, bearer token) and the
//! secret never stored in plain text, RevokeApiKey and the grant RPCs refusing unknown and
//! malformed ids, and Add/Delete Topics/Subscriptions answering exactly what changed (and
//! what a key may do afterwards).

use crate::helpers::*;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use eventrelay::auth::KeyType;
use eventrelay::proto::{self, ApiKeyStatus, ApiKeyType};
use tonic::{Code, Status};
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread")]
async fn create_api_key_returns_the_secret_once_and_stores_only_a_hash() {
    let c = TestCluster::start(1).await;
    create_topic(&c, "users").await;
    let sub = create_subscription(&c, "key_sub", "users", "").await;
    let mut cl = c.client(0).await;
    let create = |t: ApiKeyType, topics: &[&str], subs: &[&str]| proto::CreateApiKeyRequest {
        r#type: t as i32,
        name: "ci".into(),
        topic_names: topics.iter().map(|s| s.to_string()).collect(),
        subscription_ids: subs.iter().map(|s| s.to_string()).collect(),
    };
    let r = cl.create_api_key(authed(
        &c.admin,
        create(ApiKeyType::Producer, &["users"], &[]),
    ));
    let k = r
        .await
        .expect("create")
        .into_inner()
        .api_key
        .expect("api_key");
    Uuid::parse_str(&k.id).expect("id is a UUID");
    assert_eq!((k.key.len(), k.secret.len()), (42, 64), "{k:?}");
    let url_safe = |s: &str| {
        s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    assert!(url_safe(&k.key) && url_safe(&k.secret), "{k:?}");
    assert_eq!(
        k.bearer_token,
        STANDARD.encode(format!("{}:{}", k.key, k.secret))
    );
    assert_eq!(
        (k.status, k.r#type, k.name.as_str()),
        (
            ApiKeyStatus::Active as i32,
            ApiKeyType::Producer as i32,
            "ci"
        )
    );
    let stored = publish_as(&mut cl, &k.bearer_token, "users:9")
        .await
        .expect("token works");
    assert_eq!(event_topics(&stored.into_inner().events), ["users:9"]);

    // No column of any stored key holds the secret (plain, hex or base64) or the token.
    let rows: Vec<String> = sqlx::query_scalar("SELECT row_to_json(k)::text FROM api_keys k")
        .fetch_all(&c.pool)
        .await
        .expect("read api_keys");
    assert!(
        rows.iter().any(|r| r.contains(&k.key)),
        "the key's row is among {rows:?}"
    );
    for needle in [
        k.secret.clone(),
        hex::encode(&k.secret),
        STANDARD.encode(&k.secret),
    ] {
        assert!(
            rows.iter().all(|r| !r.contains(&needle)),
            "secret stored: {rows:?}"
        );
    }
    assert!(rows.iter().all(|r| !r.contains(&k.bearer_token)));

    let r = cl.create_api_key(authed(
        &c.admin,
        create(ApiKeyType::Consumer, &[], &[&sub.id]),
    ));
    let k2 = r
        .await
        .expect("consumer")
        .into_inner()
        .api_key
        .expect("api_key");
    assert_ne!((&k2.key, &k2.secret), (&k.key, &k.secret));
    pull_as(&mut cl, &k2.bearer_token, "users")
        .await
        .expect("consumer key pulls its topic");
    let r = cl.create_api_key(authed(&c.admin, create(ApiKeyType::Admin, &[], &[])));
    let admin = r
        .await
        .expect("admin")
        .into_inner()
        .api_key
        .expect("api_key");
    let r = cl.list_topics(authed(
        &admin.bearer_token,
        proto::ListTopicsRequest::default(),
    ));
    assert_eq!(
        r.await
            .expect("admin key lists topics")
            .into_inner()
            .topics
            .len(),
        1
    );
    let mut bad = create(ApiKeyType::Producer, &[], &[]);
    bad.r#type = 9;
    assert_code(
        cl.create_api_key(authed(&c.admin, bad)).await,
        Code::InvalidArgument,
        None,
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn revoke_and_grant_rpcs_refuse_bad_ids() {
    let c = TestCluster::start(1).await;
    let (_, id) = c.key(KeyType::Producer, &[], &[]).await;
    let mut cl = c.client(0).await;
    let revoke = |id: &str| authed(&c.admin, proto::RevokeApiKeyRequest { id: id.into() });

    let k = cl
        .revoke_api_key(revoke(&id.to_string()))
        .await
        .expect("revoke");
    let k = k.into_inner().api_key.expect("api_key");
    assert_eq!(
        (k.id, k.status),
        (id.to_string(), ApiKeyStatus::Revoked as i32)
    );
    assert_eq!((k.secret.as_str(), k.bearer_token.as_str()), ("", ""));
    let again = cl.revoke_api_key(revoke(&id.to_string())).await;
    assert_code(
        again,
        Code::FailedPrecondition,
        Some("ApiKey is already revoked"),
    );
    let unknown = Uuid::new_v4().to_string();
    assert_code(
        cl.revoke_api_key(revoke(&unknown)).await,
        Code::NotFound,
        Some("ApiKey not found"),
    );
    for bad in ["not-a-uuid", ""] {
        assert_code(
            cl.revoke_api_key(revoke(bad)).await,
            Code::InvalidArgument,
            None,
        );
    }

    let sub_ids = vec![];
    let topic_names = vec!["users".to_string()];
    for (key_id, code, message) in [
        (unknown.as_str(), Code::NotFound, Some("ApiKey not found")),
        ("123", Code::InvalidArgument, None),
    ] {
        let (id, a) = (key_id.to_string(), &c.admin);
        let (s, t) = (sub_ids.clone(), topic_names.clone());
        let r = proto::AddSubscriptionsToApiKeyRequest {
            id: id.clone(),
            subscription_ids: s.clone(),
        };
        assert_code(
            cl.add_subscriptions_to_api_key(authed(a, r)).await,
            code,
            message,
        );
        let r = proto::DeleteSubscriptionsFromApiKeyRequest {
            id: id.clone(),
            subscription_ids: s,
        };
        assert_code(
            cl.delete_subscriptions_from_api_key(authed(a, r)).await,
            code,
            message,
        );
        let r = proto::AddTopicsToApiKeyRequest {
            id: id.clone(),
            topic_names: t.clone(),
        };
        assert_code(cl.add_topics_to_api_key(authed(a, r)).await, code, message);
        let r = proto::DeleteTopicsFromApiKeyRequest { id, topic_names: t };
        assert_code(
            cl.delete_topics_from_api_key(authed(a, r)).await,
            code,
            message,
        );
    }
    let r = proto::AddSubscriptionsToApiKeyRequest {
        id: id.to_string(),
        subscription_ids: vec!["nope".into()],
    };
    assert_code(
        cl.add_subscriptions_to_api_key(authed(&c.admin, r)).await,
        Code::InvalidArgument,
        None,
    );
    let r = proto::AddTopicsToApiKeyRequest {
        id: id.to_string(),
        topic_names: vec!["Users!".into()],
    };
    assert_code(
        cl.add_topics_to_api_key(authed(&c.admin, r)).await,
        Code::InvalidArgument,
        None,
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn topic_grants_answer_exactly_what_changed() {
    let c = TestCluster::start(1).await;
    create_topic(&c, "users").await;
    create_topic(&c, "orders").await;
    let (token, id) = c.key(KeyType::Producer, &[], &[]).await;
    let mut cl = c.client(0).await;
    let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let mut add = async |v: &[&str]| {
        let r = proto::AddTopicsToApiKeyRequest {
            id: id.to_string(),
            topic_names: names(v),
        };
        let r = cl
            .add_topics_to_api_key(authed(&c.admin, r))
            .await
            .expect("add")
            .into_inner();
        assert_eq!(r.id, id.to_string());
        r.topic_names
    };
    assert_eq!(add(&["users", "orders:42"]).await, ["users", "orders:42"]);
    assert_eq!(
        add(&["users", "orders:42", "orders:43"]).await,
        ["orders:43"]
    );
    assert_eq!(add(&["users", "orders:43"]).await, Vec::<String>::new());
    let mut delete = async |v: &[&str]| {
        let r = proto::DeleteTopicsFromApiKeyRequest {
            id: id.to_string(),
            topic_names: names(v),
        };
        let r = cl
            .delete_topics_from_api_key(authed(&c.admin, r))
            .await
            .expect("delete");
        let r = r.into_inner();
        assert_eq!(r.id, id.to_string());
        r.topic_names
    };
    assert_eq!(
        delete(&["users", "nope", "orders:43"]).await,
        ["users", "orders:43"]
    );
    assert_eq!(delete(&["users"]).await, Vec::<String>::new());

    // First use of the key (nothing cached): only orders:42 is left.
    let mut cl = c.client(0).await;
    publish_as(&mut cl, &token, "orders:42")
        .await
        .expect("orders:42 still granted");
    for topic in ["users", "orders:43", "orders"] {
        assert_code(
            publish_as(&mut cl, &token, topic).await,
            Code::PermissionDenied,
            None,
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn subscription_grants_answer_exactly_what_changed() {
    let c = TestCluster::start(1).await;
    create_topic(&c, "users").await;
    create_topic(&c, "orders").await;
    let mut s = Vec::new();
    for (n, t) in [
        ("s1", "users"),
        ("s2", "orders"),
        ("s3", "users"),
        ("s4", "orders"),
    ] {
        s.push(create_subscription(&c, n, t, "").await.id);
    }
    let (token, id) = c.key(KeyType::Consumer, &[], &[]).await;
    let mut cl = c.client(0).await;
    let ids = |v: &[&String]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let mut add = async |v: &[&String]| {
        let r = proto::AddSubscriptionsToApiKeyRequest {
            id: id.to_string(),
            subscription_ids: ids(v),
        };
        cl.add_subscriptions_to_api_key(authed(&c.admin, r))
            .await
            .map(|r| r.into_inner())
    };
    let added = |r: Result<proto::AddSubscriptionsToApiKeyResponse, Status>| {
        let r = r.expect("add");
        assert_eq!(r.id, id.to_string());
        r.subscription_ids
    };
    assert_eq!(
        added(add(&[&s[0], &s[1]]).await),
        [s[0].clone(), s[1].clone()]
    );
    assert_eq!(added(add(&[&s[0], &s[1], &s[2]]).await), [s[2].clone()]);
    assert_eq!(added(add(&[&s[0]]).await), Vec::<String>::new());
    // An unknown subscription refuses the whole call: s4 is not added either.
    let unknown = Uuid::new_v4().to_string();
    let err = add(&[&s[3], &unknown])
        .await
        .expect_err("unknown subscription");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(
        err.message().starts_with("Subscription not found"),
        "{err:?}"
    );
    assert_eq!(added(add(&[&s[3]]).await), [s[3].clone()]);

    let mut delete = async |v: &[&String]| {
        let r = proto::DeleteSubscriptionsFromApiKeyRequest {
            id: id.to_string(),
            subscription_ids: ids(v),
        };
        let r = cl
            .delete_subscriptions_from_api_key(authed(&c.admin, r))
            .await
            .expect("delete");
        r.into_inner().subscription_ids
    };
    assert_eq!(
        delete(&[&s[0], &s[2], &unknown]).await,
        [s[0].clone(), s[2].clone()]
    );
    assert_eq!(delete(&[&s[0]]).await, Vec::<String>::new());

    // First use of the key (nothing cached): s2 and s4, both on orders, are left.
    let mut cl = c.client(0).await;
    pull_as(&mut cl, &token, "orders")
        .await
        .expect("orders via s2 and s4");
    assert_code(
        pull_as(&mut cl, &token, "users").await,
        Code::PermissionDenied,
        None,
    );
    let get = |id: &str| authed(&token, proto::GetSubscriptionRequest { id: id.into() });
    cl.get_subscription(get(&s[1]))
        .await
        .expect("s2 still associated");
    assert_code(
        cl.get_subscription(get(&s[0])).await,
        Code::PermissionDenied,
        None,
    );
}
