//! The authorization matrix: every RPC of the EventRelay service called with every kind of
//! credential (no header, another scheme, undecodable token, wrong secret, admin, producer,
//! consumer and revoked keys, and JWTs made from those keys). One table (`POLICY`) says what
//! each key type may call; every (RPC, credential) cell is asserted against it, and allowed
//! cells must actually succeed.

use crate::helpers::*;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use eventrelay::auth::KeyType;
use eventrelay::proto::{self, event_relay_client::EventRelayClient};
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

#[derive(Clone, Copy, Debug)]
enum Rpc {
    PublishEvents,
    PullEvents,
    ListTopics,
    CreateTopic,
    DeleteTopic,
    ListSubscriptions,
    GetSubscription,
    CreateSubscription,
    DeleteSubscription,
    CreateApiKey,
    RevokeApiKey,
    AddSubscriptionsToApiKey,
    DeleteSubscriptionsFromApiKey,
    AddTopicsToApiKey,
    DeleteTopicsFromApiKey,
    CreateJwt,
    ListDeadLetters,
}

/// The policy under test: (RPC, a producer may call it, a consumer may call it). Admins may
/// call everything; a caller that fails authentication may call nothing. The producer is
/// granted topic `users`; the consumer has a subscription on `users`; the calls below publish
/// to, pull from, and get exactly those.
const POLICY: [(Rpc, bool, bool); 17] = [
    (Rpc::PublishEvents, true, false),
    (Rpc::PullEvents, false, true),
    (Rpc::ListTopics, false, false),
    (Rpc::CreateTopic, false, false),
    (Rpc::DeleteTopic, false, false),
    (Rpc::ListSubscriptions, false, false),
    (Rpc::GetSubscription, false, true),
    (Rpc::CreateSubscription, false, false),
    (Rpc::DeleteSubscription, false, false),
    (Rpc::CreateApiKey, false, false),
    (Rpc::RevokeApiKey, false, false),
    (Rpc::AddSubscriptionsToApiKey, false, false),
    (Rpc::DeleteSubscriptionsFromApiKey, false, false),
    (Rpc::AddTopicsToApiKey, false, false),
    (Rpc::DeleteTopicsFromApiKey, false, false),
    (Rpc::CreateJwt, true, true),
    (Rpc::ListDeadLetters, false, false),
];

const NO_TOKEN: &str = "Invalid credentials: could not find bearer token";
const UNDECODABLE: &str = "Invalid credentials: could not decode bearer token";
const INVALID: &str = "Invalid credentials";

/// What a credential is, as far as the policy is concerned.
#[derive(Clone, Copy)]
enum Role {
    Admin,
    Producer,
    Consumer,
    /// Authentication fails with UNAUTHENTICATED and this message.
    Refused(&'static str),
}

/// The expected outcome of one cell.
#[derive(Debug)]
enum Expect {
    Success,
    PermissionDenied,
    Unauthenticated(&'static str),
}

fn expected(role: Role, producer_may: bool, consumer_may: bool) -> Expect {
    let allowed = |may: bool| {
        if may {
            Expect::Success
        } else {
            Expect::PermissionDenied
        }
    };
    match role {
        Role::Admin => Expect::Success,
        Role::Producer => allowed(producer_may),
        Role::Consumer => allowed(consumer_may),
        Role::Refused(m) => Expect::Unauthenticated(m),
    }
}

/// A problem with one cell, or None when it behaved as expected.
fn check(want: &Expect, got: &Result<(), Status>) -> Option<String> {
    let ok = match (want, got) {
        (Expect::Success, Ok(())) => true,
        (Expect::PermissionDenied, Err(s)) => {
            s.code() == Code::PermissionDenied && !s.message().is_empty()
        }
        (Expect::Unauthenticated(m), Err(s)) => {
            s.code() == Code::Unauthenticated && s.message() == *m
        }
        _ => false,
    };
    let got = match got {
        Ok(()) => "Ok".to_owned(),
        Err(s) => format!("{:?} {:?}", s.code(), s.message()),
    };
    (!ok).then(|| format!("expected {want:?}, got {got}"))
}

/// Per-credential objects the admin-only calls act on, so that a credential that is allowed
/// to delete or revoke things does not change what the next credential sees.
struct Targets {
    victim_topic_id: String,
    victim_sub_id: String,
    victim_key_id: String,
    producer_grantee_id: String,
    consumer_grantee_id: String,
    new_topic: String,
    new_sub: String,
}

async fn targets(c: &TestCluster, row: usize) -> Targets {
    let victim_topic = create_topic(c, &format!("victim_{row}")).await;
    let victim_sub = create_subscription(c, &format!("victim_sub_{row}"), "users", "").await;
    let (_, victim_key) = c.key(KeyType::Producer, &["users"], &[]).await;
    let (_, producer_grantee) = c.key(KeyType::Producer, &[], &[]).await;
    let (_, consumer_grantee) = c.key(KeyType::Consumer, &[], &[]).await;
    Targets {
        victim_topic_id: victim_topic.id,
        victim_sub_id: victim_sub.id,
        victim_key_id: victim_key.to_string(),
        producer_grantee_id: producer_grantee.to_string(),
        consumer_grantee_id: consumer_grantee.to_string(),
        new_topic: format!("new_{row}"),
        new_sub: format!("new_sub_{row}"),
    }
}

/// A request with this `authorization` header value, or none.
fn req<T>(header: Option<&str>, msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    if let Some(h) = header {
        r.metadata_mut()
            .insert("authorization", h.parse().expect("metadata value"));
    }
    r
}

fn bearer(token: &str) -> Option<String> {
    Some(format!("Bearer {token}"))
}

/// Calls one RPC with valid arguments and header `b`; `sub_id` is the consumer's subscription
/// on `users`.
async fn call(
    c: &mut EventRelayClient<Channel>,
    rpc: Rpc,
    b: Option<&str>,
    sub_id: &str,
    t: &Targets,
) -> Result<(), Status> {
    let id = |s: &str| s.to_owned();
    match rpc {
        Rpc::PublishEvents => {
            let events = vec![event("user.created", r#"{"id": 1}"#)];
            let r = proto::PublishEventsRequest {
                topic: "users".into(),
                events,
                durable: true,
                ..Default::default()
            };
            let stored = c.publish_events(req(b, r)).await?.into_inner().events;
            // An accepted publish stores the event (a dead-lettered one would be left out).
            if stored.len() != 1 {
                return Err(Status::internal(format!("publish stored {stored:?}")));
            }
            Ok(())
        }
        Rpc::PullEvents => {
            let r = proto::PullEventsRequest {
                topic: "users".into(),
                ..Default::default()
            };
            let pulled = c.pull_events(req(b, r)).await?.into_inner();
            if pulled.events.is_empty() {
                return Err(Status::internal("pull returned no events"));
            }
            Ok(())
        }
        Rpc::ListTopics => {
            let r = proto::ListTopicsRequest::default();
            c.list_topics(req(b, r)).await.map(|_| ())
        }
        Rpc::CreateTopic => {
            let r = proto::CreateTopicRequest {
                name: t.new_topic.clone(),
                ..Default::default()
            };
            c.create_topic(req(b, r)).await.map(|_| ())
        }
        Rpc::DeleteTopic => {
            let r = proto::DeleteTopicRequest {
                id: id(&t.victim_topic_id),
            };
            c.delete_topic(req(b, r)).await.map(|_| ())
        }
        Rpc::ListSubscriptions => {
            let r = proto::ListSubscriptionsRequest::default();
            c.list_subscriptions(req(b, r)).await.map(|_| ())
        }
        Rpc::GetSubscription => {
            let r = proto::GetSubscriptionRequest { id: id(sub_id) };
            c.get_subscription(req(b, r)).await.map(|_| ())
        }
        Rpc::CreateSubscription => {
            let new = proto::NewSubscription {
                name: t.new_sub.clone(),
                topic_name: "users".into(),
                ..Default::default()
            };
            let r = proto::CreateSubscriptionRequest {
                subscription: Some(new),
            };
            c.create_subscription(req(b, r)).await.map(|_| ())
        }
        Rpc::DeleteSubscription => {
            let r = proto::DeleteSubscriptionRequest {
                id: id(&t.victim_sub_id),
            };
            c.delete_subscription(req(b, r)).await.map(|_| ())
        }
        Rpc::CreateApiKey => {
            let r = proto::CreateApiKeyRequest {
                r#type: proto::ApiKeyType::Consumer as i32,
                ..Default::default()
            };
            c.create_api_key(req(b, r)).await.map(|_| ())
        }
        Rpc::RevokeApiKey => {
            let r = proto::RevokeApiKeyRequest {
                id: id(&t.victim_key_id),
            };
            c.revoke_api_key(req(b, r)).await.map(|_| ())
        }
        Rpc::AddSubscriptionsToApiKey => {
            let r = proto::AddSubscriptionsToApiKeyRequest {
                id: id(&t.consumer_grantee_id),
                subscription_ids: vec![id(sub_id)],
            };
            c.add_subscriptions_to_api_key(req(b, r)).await.map(|_| ())
        }
        Rpc::DeleteSubscriptionsFromApiKey => {
            let r = proto::DeleteSubscriptionsFromApiKeyRequest {
                id: id(&t.consumer_grantee_id),
                subscription_ids: vec![id(sub_id)],
            };
            c.delete_subscriptions_from_api_key(req(b, r))
                .await
                .map(|_| ())
        }
        Rpc::AddTopicsToApiKey => {
            let r = proto::AddTopicsToApiKeyRequest {
                id: id(&t.producer_grantee_id),
                topic_names: vec!["users".into()],
            };
            c.add_topics_to_api_key(req(b, r)).await.map(|_| ())
        }
        Rpc::DeleteTopicsFromApiKey => {
            let r = proto::DeleteTopicsFromApiKeyRequest {
                id: id(&t.producer_grantee_id),
                topic_names: vec!["users".into()],
            };
            c.delete_topics_from_api_key(req(b, r)).await.map(|_| ())
        }
        Rpc::CreateJwt => {
            let jwt = c
                .create_jwt(req(b, proto::CreateJwtRequest { expiration: 0 }))
                .await?;
            if jwt.into_inner().jwt.split('.').count() != 3 {
                return Err(Status::internal("CreateJWT returned no JWT"));
            }
            Ok(())
        }
        Rpc::ListDeadLetters => {
            let r = proto::ListDeadLettersRequest::default();
            c.list_dead_letters(req(b, r)).await.map(|_| ())
        }
    }
}

async fn jwt_of(c: &mut EventRelayClient<Channel>, token: &str) -> String {
    c.create_jwt(authed(token, proto::CreateJwtRequest { expiration: 0 }))
        .await
        .expect("create jwt")
        .into_inner()
        .jwt
}

async fn revoke(c: &TestCluster, id: uuid::Uuid) {
    c.client(0)
        .await
        .revoke_api_key(authed(
            &c.admin,
            proto::RevokeApiKeyRequest { id: id.to_string() },
        ))
        .await
        .expect("revoke");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_rpc_with_every_credential() {
    let c = TestCluster::start(1).await;
    let mut client = c.client(0).await;
    create_topic(&c, "users").await;
    publish(&c, 0, "users", vec![event("seed", "{}")]).await;
    let sub = create_subscription(&c, "matrix_sub", "users", "").await;
    let (producer, _) = c.key(KeyType::Producer, &["users"], &[]).await;
    let (consumer, _) = c.key(KeyType::Consumer, &[], &[sub_id(&sub)]).await;
    // Never used before it is revoked, so no node has it cached as active.
    let (revoked, revoked_id) = c.key(KeyType::Producer, &["users"], &[]).await;
    revoke(&c, revoked_id).await;
    // A JWT made while its key was active, then the key revoked.
    let (to_revoke, to_revoke_id) = c.key(KeyType::Producer, &["users"], &[]).await;
    let revoked_jwt = jwt_of(&mut client, &to_revoke).await;
    revoke(&c, to_revoke_id).await;
    // The admin's real key with another secret (the admin key is in the node's cache by now).
    let admin_key = String::from_utf8(STANDARD.decode(&c.admin).expect("base64")).expect("utf8");
    let (key_part, _) = admin_key.split_once(':').expect("key:secret");
    let wrong_secret = STANDARD.encode(format!("{key_part}:{}", "x".repeat(64)));

    let callers: Vec<(&str, Option<String>, Role)> = vec![
        ("no header", None, Role::Refused(NO_TOKEN)),
        (
            "basic scheme",
            Some(format!("Basic {}", c.admin)),
            Role::Refused(NO_TOKEN),
        ),
        (
            "empty bearer",
            Some("Bearer ".into()),
            Role::Refused(NO_TOKEN),
        ),
        ("undecodable", bearer("!!!"), Role::Refused(UNDECODABLE)),
        (
            "no colon",
            bearer(&STANDARD.encode("justakey")),
            Role::Refused(UNDECODABLE),
        ),
        (
            "wrong secret",
            bearer(&wrong_secret),
            Role::Refused(INVALID),
        ),
        (
            "unknown key",
            bearer(&STANDARD.encode("nokey:nosecret")),
            Role::Refused(INVALID),
        ),
        ("revoked key", bearer(&revoked), Role::Refused(INVALID)),
        ("revoked jwt", bearer(&revoked_jwt), Role::Refused(INVALID)),
        ("producer", bearer(&producer), Role::Producer),
        ("consumer", bearer(&consumer), Role::Consumer),
        (
            "producer jwt",
            bearer(&jwt_of(&mut client, &producer).await),
            Role::Producer,
        ),
        (
            "consumer jwt",
            bearer(&jwt_of(&mut client, &consumer).await),
            Role::Consumer,
        ),
        ("admin", bearer(&c.admin), Role::Admin),
        (
            "admin jwt",
            bearer(&jwt_of(&mut client, &c.admin).await),
            Role::Admin,
        ),
    ];

    let mut failures = Vec::new();
    let mut cells = 0;
    for (row, (label, header, role)) in callers.iter().enumerate() {
        let t = targets(&c, row).await;
        for (rpc, producer_may, consumer_may) in POLICY {
            let want = expected(*role, producer_may, consumer_may);
            let got = call(&mut client, rpc, header.as_deref(), &sub.id, &t).await;
            cells += 1;
            if let Some(problem) = check(&want, &got) {
                failures.push(format!("{label:>13} × {rpc:?}: {problem}"));
            }
        }
    }
    assert_eq!(cells, callers.len() * POLICY.len());
    assert!(
        failures.is_empty(),
        "{} of {cells} cells wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
