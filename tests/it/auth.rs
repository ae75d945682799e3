//! Authentication beyond the matrix in `auth_matrix.rs`: topic-identifier scoping of producer
//! grants and consumer subscriptions, revocation reaching another node within 2 s, CreateJWT
//! claims, and JWTs as gRPC bearers (forged, expired and tampered ones refused). API-key
//! management RPCs are in `auth_keys.rs`.

use crate::helpers::*;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use eventrelay::auth::KeyType;
use eventrelay::proto::{self, ApiKeyStatus, event_relay_client::EventRelayClient};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tonic::transport::Channel;
use tonic::{Code, Response, Status};
use uuid::Uuid;

type Client = EventRelayClient<Channel>;
type Rpc<T> = Result<Response<T>, Status>;

async fn jwt_as(c: &mut Client, token: &str, expiration: i64) -> Rpc<proto::CreateJwtResponse> {
    c.create_jwt(authed(token, proto::CreateJwtRequest { expiration }))
        .await
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Header and claims of a JWT (base64 URL-safe without padding, JSON).
fn jwt_parts(jwt: &str) -> (Value, Value) {
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3, "a JWT has three parts: {jwt}");
    let json = |p: &str| -> Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).expect("base64url")).expect("JSON")
    };
    (json(parts[0]), json(parts[1]))
}

fn strings(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| s.as_str().expect("string").to_owned())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn producer_grants_are_scoped_by_topic_identifier() {
    let c = TestCluster::start(1).await;
    create_topic(&c, "users").await;
    create_topic(&c, "orders").await;
    let (one, _) = c.key(KeyType::Producer, &["users:123"], &[]).await;
    let (all, _) = c.key(KeyType::Producer, &["users"], &[]).await;
    let mut cl = c.client(0).await;

    let stored = publish_as(&mut cl, &one, "users:123")
        .await
        .expect("users:123 granted");
    assert_eq!(event_topics(&stored.into_inner().events), ["users:123"]);
    for topic in ["users:124", "users", "users:1234", "orders:123", "orders"] {
        assert_code(
            publish_as(&mut cl, &one, topic).await,
            Code::PermissionDenied,
            None,
        );
    }
    for topic in ["users", "users:123", "users:124", "users:x"] {
        let stored = publish_as(&mut cl, &all, topic)
            .await
            .expect("every users identifier");
        assert_eq!(event_topics(&stored.into_inner().events), [topic]);
    }
    assert_code(
        publish_as(&mut cl, &all, "orders").await,
        Code::PermissionDenied,
        None,
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn consumer_subscriptions_are_scoped_by_topic_identifier() {
    let c = TestCluster::start(1).await;
    create_topic(&c, "users").await;
    create_topic(&c, "orders").await;
    for topic in ["users:123", "users:123", "users:124", "users"] {
        publish(&c, 0, topic, vec![event("e", "{}")]).await;
    }
    let s123 = create_subscription(&c, "users_123", "users", "123").await;
    let s_all = create_subscription(&c, "users_all", "users", "").await;
    let (one, _) = c.key(KeyType::Consumer, &[], &[sub_id(&s123)]).await;
    let (all, _) = c.key(KeyType::Consumer, &[], &[sub_id(&s_all)]).await;
    let mut cl = c.client(0).await;

    let got = pull_as(&mut cl, &one, "users:123")
        .await
        .expect("users:123")
        .into_inner();
    assert_eq!(event_topics(&got.events), ["users:123", "users:123"]);
    assert_eq!(got.total_count, 2);
    for topic in ["users:124", "users", "orders", "orders:123"] {
        assert_code(
            pull_as(&mut cl, &one, topic).await,
            Code::PermissionDenied,
            None,
        );
    }
    let got = pull_as(&mut cl, &all, "users")
        .await
        .expect("users")
        .into_inner();
    assert_eq!(
        event_topics(&got.events),
        ["users:123", "users:123", "users:124", "users"]
    );
    let got = pull_as(&mut cl, &all, "users:124")
        .await
        .expect("users:124")
        .into_inner();
    assert_eq!(event_topics(&got.events), ["users:124"]);
    assert_code(
        pull_as(&mut cl, &all, "orders").await,
        Code::PermissionDenied,
        None,
    );

    // GetSubscription: only the subscription the key is associated with.
    let get = |id: &str| proto::GetSubscriptionRequest { id: id.into() };
    let mine = cl
        .get_subscription(authed(&one, get(&s123.id)))
        .await
        .expect("own");
    assert_eq!(mine.into_inner().subscription, Some(s123.clone()));
    let other = cl.get_subscription(authed(&one, get(&s_all.id))).await;
    assert_code(other, Code::PermissionDenied, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn revoked_key_is_refused_by_another_node_within_two_seconds() {
    let c = TestCluster::start(2).await;
    create_topic(&c, "users").await;
    let (token, id) = c.key(KeyType::Producer, &["users"], &[]).await;
    let mut n1 = c.client(1).await;
    // Use the key and a JWT of it on node 1 first, so node 1 has both cached as active.
    let jwt = jwt_as(&mut n1, &token, 0)
        .await
        .expect("jwt on node 1")
        .into_inner()
        .jwt;
    publish_as(&mut n1, &token, "users")
        .await
        .expect("key works on node 1");
    publish_as(&mut n1, &jwt, "users")
        .await
        .expect("jwt works on node 1");

    let mut n0 = c.client(0).await;
    let r = authed(&c.admin, proto::RevokeApiKeyRequest { id: id.to_string() });
    let r = n0.revoke_api_key(r).await.expect("revoke on node 0");
    let revoked = r.into_inner().api_key.expect("api_key");
    assert_eq!(revoked.status, ApiKeyStatus::Revoked as i32);
    let start = Instant::now();

    // Product requirement: every node refuses a revoked key within 2 s (2.5 s with slack).
    let deadline = Duration::from_millis(2500);
    let (mut key_refused, mut jwt_refused) = (None, None);
    while start.elapsed() < deadline && (key_refused.is_none() || jwt_refused.is_none()) {
        for (cred, refused) in [(&token, &mut key_refused), (&jwt, &mut jwt_refused)] {
            if refused.is_some() {
                continue;
            }
            match jwt_as(&mut n1, cred, 0).await {
                Ok(_) => {}
                Err(s) if s.code() == Code::Unauthenticated => {
                    assert_eq!(s.message(), "Invalid credentials");
                    *refused = Some(start.elapsed());
                }
                Err(s) => panic!("unexpected error while polling node 1: {s:?}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        key_refused.is_some(),
        "node 1 still accepted the revoked key after {deadline:?}"
    );
    assert!(
        jwt_refused.is_some(),
        "node 1 still accepted the revoked key's JWT after {deadline:?}"
    );
    assert_code(
        publish_as(&mut n1, &token, "users").await,
        Code::Unauthenticated,
        None,
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn create_jwt_carries_the_original_claims() {
    let c = TestCluster::start(1).await;
    create_topic(&c, "users").await;
    let sub = create_subscription(&c, "jwt_sub", "users", "").await;
    let (producer, pid) = c.key(KeyType::Producer, &["users", "orders:42"], &[]).await;
    let (consumer, cid) = c.key(KeyType::Consumer, &[], &[sub_id(&sub)]).await;
    let mut cl = c.client(0).await;

    let jwt = jwt_as(&mut cl, &producer, 0)
        .await
        .expect("producer jwt")
        .into_inner()
        .jwt;
    let (header, claims) = jwt_parts(&jwt);
    assert_eq!(header["alg"], "HS256");
    assert_eq!(claims["api_key_id"], pid.to_string());
    assert_eq!(claims["api_key_type"], "producer");
    assert_eq!(strings(&claims["topic_names"]), ["orders:42", "users"]);
    assert_eq!(strings(&claims["sub_ids"]), Vec::<String>::new());
    let exp = claims["exp"].as_i64().expect("exp is a number");
    assert!(
        (exp - (now() + 3600)).abs() <= 60,
        "exp {exp} is not about an hour ahead"
    );
    // Signed with the server's secret, and only that.
    let verify = |secret: &str| {
        let key = jsonwebtoken::DecodingKey::from_secret(secret.as_bytes());
        let v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        jsonwebtoken::decode::<Value>(&jwt, &key, &v).map(|d| d.claims)
    };
    assert_eq!(
        verify(c.config.jwt_secret()).expect("valid signature"),
        claims
    );
    assert!(verify("some-other-secret").is_err());

    let jwt = jwt_as(&mut cl, &consumer, 0)
        .await
        .expect("consumer jwt")
        .into_inner()
        .jwt;
    let (_, claims) = jwt_parts(&jwt);
    assert_eq!(claims["api_key_id"], cid.to_string());
    assert_eq!(claims["api_key_type"], "consumer");
    assert_eq!(strings(&claims["sub_ids"]), vec![sub.id.clone()]);
    assert_eq!(strings(&claims["topic_names"]), Vec::<String>::new());

    let at = now() + 600;
    let jwt = jwt_as(&mut cl, &consumer, at)
        .await
        .expect("explicit expiration")
        .into_inner()
        .jwt;
    assert_eq!(jwt_parts(&jwt).1["exp"], at);
    let past = jwt_as(&mut cl, &consumer, now() - 60).await;
    assert_code(past, Code::InvalidArgument, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn jwt_works_as_bearer_and_forged_or_expired_jwts_do_not() {
    let c = TestCluster::start(1).await;
    create_topic(&c, "users").await;
    create_topic(&c, "orders").await;
    publish(&c, 0, "users", vec![event("e", "{}")]).await;
    let sub = create_subscription(&c, "bearer_sub", "users", "").await;
    let (producer, pid) = c.key(KeyType::Producer, &["users"], &[]).await;
    let (consumer, _) = c.key(KeyType::Consumer, &[], &[sub_id(&sub)]).await;
    let mut cl = c.client(0).await;

    let pjwt = jwt_as(&mut cl, &producer, 0)
        .await
        .expect("jwt")
        .into_inner()
        .jwt;
    let stored = publish_as(&mut cl, &pjwt, "users")
        .await
        .expect("producer JWT publishes");
    assert_eq!(event_topics(&stored.into_inner().events), ["users"]);
    assert_code(
        publish_as(&mut cl, &pjwt, "orders").await,
        Code::PermissionDenied,
        None,
    );
    assert_code(
        pull_as(&mut cl, &pjwt, "users").await,
        Code::PermissionDenied,
        None,
    );
    let cjwt = jwt_as(&mut cl, &consumer, 0)
        .await
        .expect("jwt")
        .into_inner()
        .jwt;
    let pulled = pull_as(&mut cl, &cjwt, "users")
        .await
        .expect("consumer JWT pulls");
    assert_eq!(pulled.into_inner().total_count, 2);

    let admin_id: Uuid = sqlx::query_scalar("SELECT id FROM api_keys WHERE key_type = 'admin'")
        .fetch_one(&c.pool)
        .await
        .expect("admin key id");
    let sign = |claims: Value, secret: &str| {
        let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
        jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).expect("sign")
    };
    let claims = |id: Uuid, exp: i64| json!({"api_key_id": id.to_string(), "api_key_type": "admin", "exp": exp});
    // The producer's own token with its payload swapped for the admin's id.
    let (h, _) = pjwt.split_once('.').expect("header");
    let sig = pjwt.rsplit_once('.').expect("signature").1;
    let payload = URL_SAFE_NO_PAD.encode(claims(admin_id, now() + 600).to_string());
    let refused = [
        ("payload swapped", format!("{h}.{payload}.{sig}")),
        (
            "wrong secret",
            sign(claims(admin_id, now() + 600), "not-the-server-secret"),
        ),
        (
            "expired",
            sign(claims(pid, now() - 120), c.config.jwt_secret()),
        ),
        (
            "unknown key",
            sign(claims(Uuid::new_v4(), now() + 600), c.config.jwt_secret()),
        ),
        (
            "alg none",
            format!("{}.{payload}.", URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#)),
        ),
    ];
    for (what, token) in refused {
        let r = jwt_as(&mut cl, &token, 0).await;
        let s = r.expect_err(what);
        assert_eq!(
            (s.code(), s.message()),
            (Code::Unauthenticated, "Invalid credentials"),
            "{what}"
        );
    }
}
